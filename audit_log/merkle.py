"""RFC 9162 Merkle tree hashing, compact ranges, and inclusion and consistency proofs.

Leaf hash `SHA-256(0x00 || entry)`, node hash `SHA-256(0x01 || left || right)`; a tree of n
leaves splits at the largest power of two below n (RFC 9162 §2.1.1). Proof generation works
from a `NodeSource`, anything that can return the hash of a perfect subtree (a level and an
index at that level); verification needs only the hashes in the proof.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Protocol

from xiezhi.errors import XiezhiError

EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF = hashlib.sha256(b"\x00")
_sha256 = hashlib.sha256


class ProofFailed(XiezhiError):
    """A proof does not lead to the expected root, or its shape is wrong for the sizes given.

    Only verification raises it; asking to *make* a proof for sizes that make no sense is a
    plain ValueError, a caller's mistake rather than evidence about the log.
    """

    status = 422
    code = "proof_failed"


def leaf_hash(entry: bytes) -> bytes:
    h = _LEAF.copy()
    h.update(entry)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


class CompactRange:
    """The roots of the perfect subtrees that make up the first `size` leaves, largest first.

    Appending a leaf merges equal-sized subtrees like a binary counter; the hash of every
    perfect subtree completed on the way is reported to `on_node(level, index, hash)`.
    """

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != size.bit_count():
            raise ValueError(f"a compact range of size {size} holds {size.bit_count()} hashes, not {len(hashes)}")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes, on_node: NodeSink | None = None) -> None:
        node, level, index = leaf, 0, self.size
        size = self.size
        while size & 1:
            node = node_hash(self.hashes.pop(), node)
            level += 1
            index >>= 1
            size >>= 1
            if on_node is not None:
                on_node(level, index, node)
        self.hashes.append(node)
        self.size += 1

    def append_subtree(self, level: int, node: bytes) -> None:
        """Append a whole perfect subtree of 2^level leaves; the size must be a multiple of it."""
        if self.size % (1 << level):
            raise ValueError(f"a subtree of level {level} cannot start at leaf {self.size}")
        size = self.size >> level
        while size & 1:
            node = node_hash(self.hashes.pop(), node)
            size >>= 1
        self.hashes.append(node)
        self.size += 1 << level

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        return fold(self.hashes)

    def to_bytes(self) -> bytes:
        return b"".join(self.hashes)

    @classmethod
    def from_bytes(cls, size: int, blob: bytes) -> CompactRange:
        return cls(size, [blob[i : i + 32] for i in range(0, len(blob), 32)])


class NodeSink(Protocol):
    def __call__(self, level: int, index: int, node: bytes) -> None: ...


class NodeSource(Protocol):
    def node(self, level: int, index: int) -> bytes:
        """The hash of the perfect subtree over leaves [index·2^level, (index+1)·2^level)."""
        ...


def levels_of(leaves: list[bytes]) -> list[list[bytes]]:
    """Every complete node over `leaves` (a power-of-two count), level by level, leaves first."""
    levels = [leaves]
    sha = _sha256
    while len(leaves) > 1:
        pairs = iter(leaves)
        leaves = [sha(b"\x01" + left + right).digest() for left, right in zip(pairs, pairs, strict=False)]
        levels.append(leaves)
    return levels


def fold(hashes: Sequence[bytes]) -> bytes:
    """The root over perfect subtrees given largest first (a compact range's hashes)."""
    if not hashes:
        return EMPTY_ROOT
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = node_hash(left, root)
    return root


def prefix_nodes(levels: list[list[bytes]], count: int) -> list[bytes]:
    """The perfect subtrees, largest first, that make up the first `count` leaves of a chunk
    given as `levels`; appended to the compact range before the chunk, they fold to the root."""
    return [
        levels[level][(count >> level) - 1] for level in range(count.bit_length() - 1, -1, -1) if count >> level & 1
    ]


def root_of(leaves: Sequence[bytes]) -> bytes:
    tree = CompactRange()
    tree.extend(leaves)
    return tree.root()


# ---- proofs ---------------------------------------------------------------------------


def _subtree(source: NodeSource, start: int, end: int) -> bytes:
    """MTH of leaves [start, end); `start` is aligned to the largest power of two in the range."""
    if end - start == 1:
        return source.node(0, start)
    size = end - start
    if size & (size - 1) == 0:
        level = size.bit_length() - 1
        return source.node(level, start >> level)
    split = 1 << ((size - 1).bit_length() - 1)
    return node_hash(_subtree(source, start, start + split), _subtree(source, start + split, end))


def inclusion_proof(source: NodeSource, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1, leaf side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    proof: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        split = 1 << ((end - start - 1).bit_length() - 1)
        if index < start + split:
            proof.append(_subtree(source, start + split, end))
            end = start + split
        else:
            proof.append(_subtree(source, start, start + split))
            start = start + split
    proof.reverse()
    return proof


def consistency_proof(source: NodeSource, first: int, second: int) -> list[bytes]:
    """PROOF(first, D[0:second]) of RFC 9162 §2.1.4.1."""
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    if first == 0 or first == second:
        return []
    proof: list[bytes] = []
    start, end, whole = 0, second, True
    while True:
        if first - start == end - start:
            if not whole:
                proof.append(_subtree(source, start, end))
            break
        split = 1 << ((end - start - 1).bit_length() - 1)
        if first - start <= split:
            proof.append(_subtree(source, start + split, end))
            end = start + split
        else:
            proof.append(_subtree(source, start, start + split))
            start = start + split
            whole = False
    proof.reverse()
    return proof


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """Walk `proof` from `leaf` up to the root it implies (RFC 9162 §2.1.3.2)."""
    if not 0 <= index < size:
        raise ProofFailed(f"leaf {index} is not in a tree of size {size}")
    _check_hashes([leaf, *proof])
    fn, sn = index, size - 1
    root = leaf
    for node in proof:
        if sn == 0:
            raise ProofFailed("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            root = node_hash(node, root)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            root = node_hash(root, node)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofFailed("the inclusion proof is shorter than the tree is deep")
    return root


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofFailed(f"leaf {index} is not included in the tree of size {size} with that root")


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2: the tree of size `second` extends the tree of size `first`."""
    if not 0 <= first <= second:
        raise ProofFailed(f"size {first} cannot precede size {second}")
    _check_hashes(proof)
    if first == second:
        if proof or first_root != second_root:
            raise ProofFailed("equal sizes need equal roots and an empty proof")
        return
    if first == 0:
        if proof:
            raise ProofFailed("a proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofFailed("the consistency proof is empty")
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for node in path[1:]:
        if sn == 0:
            raise ProofFailed("the consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(node, fr)
            sr = node_hash(node, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, node)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofFailed("the consistency proof is shorter than the tree is deep")
    if fr != first_root:
        raise ProofFailed(f"the proof does not lead to the root of size {first}")
    if sr != second_root:
        raise ProofFailed(f"the proof does not lead to the root of size {second}")


def _check_hashes(hashes: Iterable[bytes]) -> None:
    if any(len(h) != 32 for h in hashes):
        raise ProofFailed("a proof hash is not 32 bytes")


class LeafList:
    """A NodeSource over leaf hashes held in memory (tests, the verifier, small exports)."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self._leaves = leaves

    def node(self, level: int, index: int) -> bytes:
        start = index << level
        return root_of(self._leaves[start : start + (1 << level)])
