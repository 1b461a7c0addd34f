"""RFC 9162 Merkle hashing and proofs, against published vectors and a brute-force reference."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from audit_log.merkle import (
    EMPTY_ROOT,
    CompactRange,
    LeafList,
    ProofFailed,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

VECTORS = json.loads((Path(__file__).parent / "vectors" / "rfc6962-merkle-vectors.json").read_text())
LEAVES = [leaf_hash(bytes.fromhex(h)) for h in VECTORS["leaves_hex"]]
ROOTS = [bytes.fromhex(h) for h in VECTORS["roots_by_size"]]


def _reference_root(leaves: list[bytes]) -> bytes:
    """MTH straight from RFC 9162 §2.1.1, recursively."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(_reference_root(leaves[:k]), _reference_root(leaves[k:]))


def test_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert EMPTY_ROOT == ROOTS[0]


@pytest.mark.parametrize("size", range(9))
def test_roots_match_the_published_tree(size: int) -> None:
    assert root_of(LEAVES[:size]) == ROOTS[size]


@pytest.mark.parametrize("vector", VECTORS["inclusion"], ids=lambda v: f"{v['index']}-of-{v['size']}")
def test_inclusion_proofs_match_the_published_ones(vector: dict[str, Any]) -> None:
    index, size = vector["index"], vector["size"]
    proof = [bytes.fromhex(h) for h in vector["proof"]]
    assert inclusion_proof(LeafList(LEAVES), index, size) == proof
    verify_inclusion(index, size, LEAVES[index], proof, ROOTS[size])


@pytest.mark.parametrize("vector", VECTORS["consistency"], ids=lambda v: f"{v['first']}-to-{v['second']}")
def test_consistency_proofs_match_the_published_ones(vector: dict[str, Any]) -> None:
    first, second = vector["first"], vector["second"]
    proof = [bytes.fromhex(h) for h in vector["proof"]]
    assert consistency_proof(LeafList(LEAVES), first, second) == proof
    verify_consistency(first, second, ROOTS[first], ROOTS[second], proof)


def test_every_proof_of_every_small_tree_verifies_and_corruptions_fail() -> None:
    leaves = [leaf_hash(bytes([i, i * 7 % 256])) for i in range(40)]
    source = LeafList(leaves)
    for size in range(1, len(leaves) + 1):
        root = _reference_root(leaves[:size])
        assert root_of(leaves[:size]) == root
        for index in range(size):
            proof = inclusion_proof(source, index, size)
            verify_inclusion(index, size, leaves[index], proof, root)
            with pytest.raises(ProofFailed):
                verify_inclusion(index, size, leaves[(index + 1) % len(leaves)], proof, root)
            if proof:
                with pytest.raises(ProofFailed):
                    verify_inclusion(index, size, leaves[index], proof[:-1], root)
                flipped = [bytes([proof[0][0] ^ 8]) + proof[0][1:], *proof[1:]]
                with pytest.raises(ProofFailed):
                    verify_inclusion(index, size, leaves[index], flipped, root)
        for first in range(size + 1):
            proof = consistency_proof(source, first, size)
            first_root = _reference_root(leaves[:first])
            verify_consistency(first, size, first_root, root, proof)
            if 0 < first < size:
                with pytest.raises(ProofFailed):
                    verify_consistency(first, size, first_root, leaves[0], proof)
                with pytest.raises(ProofFailed):
                    verify_consistency(first, size, first_root, root, proof[:-1])


def test_compact_range_reports_every_completed_subtree() -> None:
    seen: dict[tuple[int, int], bytes] = {}
    tree = CompactRange()
    for leaf in LEAVES:
        tree.append(leaf, lambda level, index, node: seen.__setitem__((level, index), node))
    assert tree.root() == ROOTS[8]
    assert seen[(3, 0)] == ROOTS[8]
    assert seen[(2, 1)] == _reference_root(LEAVES[4:8])
    assert sorted(seen) == [(1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (2, 1), (3, 0)]
    again = CompactRange.from_bytes(tree.size, tree.to_bytes())
    assert again.root() == tree.root()
    with pytest.raises(ValueError):
        CompactRange(3, [ROOTS[1]])


def test_proofs_refuse_sizes_that_make_no_sense() -> None:
    with pytest.raises(ValueError):
        inclusion_proof(LeafList(LEAVES), 8, 8)
    with pytest.raises(ValueError):
        consistency_proof(LeafList(LEAVES), 5, 4)
    with pytest.raises(ProofFailed):
        verify_consistency(5, 4, ROOTS[5], ROOTS[4], [])
    with pytest.raises(ProofFailed):
        verify_inclusion(0, 2, LEAVES[0], [b"short"], ROOTS[2])
