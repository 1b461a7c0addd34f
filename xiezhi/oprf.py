"""RFC 9497 OPRF (mode 0) and VOPRF (mode 1) for the ristretto255-SHA512 ciphersuite.

Pure protocol code: bytes in, bytes out, no I/O and no clock. Randomness comes from
libsodium unless the caller fixes it (the blinds, the proof nonce `r`, the key `rng`), which
is how the RFC's test vectors are replayed.

    client                                        server (sk)
    blinded = blind(inputs, mode)           ───▶
                                            ◀───  evaluation = blind_evaluate(sk, elements, mode)
    outputs = finalize(inputs, blinds, evaluation..., public_key, mode)

In VOPRF mode the server adds one batched DLEQ proof (c || s, 64 bytes) that every
evaluated element used the key behind `public_key`, and `finalize` checks it before it
unblinds. `evaluate(sk, input, mode)` computes the same 64-byte output on the server
without blinding; the token index is built with it.

Errors: `ProofError` for anything from the other party that fails to decode or verify;
`InvalidInput` for a malformed call (an empty batch, a bad key or blind, mismatched lengths).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from xiezhi import group
from xiezhi.errors import InvalidInput, ProofError, XiezhiError
from xiezhi.group import Element, Scalar

SUITE_ID: Final = b"ristretto255-SHA512"
SEED_BYTES: Final = 32  # Ns: DeriveKeyPair takes a seed of one serialised scalar
PROOF_BYTES: Final = 2 * group.SCALAR_BYTES
OUTPUT_BYTES: Final = group.HASH_BYTES
MAX_PROOF_BATCH: Final = 0xFFFF  # composite transcripts number elements with I2OSP(i, 2)
_MAX_FIELD: Final = 0xFFFF  # inputs and info are length-prefixed with I2OSP(len, 2)


class Mode(IntEnum):
    OPRF = 0
    VOPRF = 1


class DeriveKeyPairError(XiezhiError):
    """DeriveKeyPair drew a zero scalar 256 times in a row (probability about 2^-2000)."""

    code = "derive_key_pair_failed"


@dataclass(frozen=True, slots=True)
class KeyPair:
    sk: Scalar = field(repr=False)
    pk: Element


@dataclass(frozen=True, slots=True)
class Blinded:
    """The client's state for one input: keep `blind`, send `blinded_element`."""

    blind: Scalar = field(repr=False)
    blinded_element: Element


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The server's answer: one element per blinded element, and in VOPRF mode a proof."""

    evaluated_elements: tuple[Element, ...]
    proof: bytes | None


@dataclass(frozen=True, slots=True)
class _Domain:
    """The context string of one mode and the domain separation tags derived from it."""

    hash_to_group: bytes
    hash_to_scalar: bytes
    derive_key_pair: bytes
    seed: bytes

    @classmethod
    def of(cls, mode: Mode) -> _Domain:
        context = b"OPRFV1-" + bytes([mode]) + b"-" + SUITE_ID
        return cls(
            hash_to_group=b"HashToGroup-" + context,
            hash_to_scalar=b"HashToScalar-" + context,
            derive_key_pair=b"DeriveKeyPair" + context,
            seed=b"Seed-" + context,
        )


_DOMAINS: Final = {mode: _Domain.of(mode) for mode in Mode}


# --- keys ---------------------------------------------------------------------------------


def derive_key_pair(seed: bytes, info: bytes, mode: Mode) -> KeyPair:
    """RFC 9497 §3.2.1 DeriveKeyPair. Raises InvalidInput unless `seed` is 32 bytes and
    `info` at most 65535; DeriveKeyPairError if 256 counters all give a zero scalar."""
    if len(seed) != SEED_BYTES:
        raise InvalidInput("key seed must be 32 bytes")
    derive_input = seed + _prefixed(info, "key info")
    dst = _DOMAINS[Mode(mode)].derive_key_pair
    for counter in range(256):
        sk = group.hash_to_scalar(derive_input + bytes([counter]), dst)
        if sk != group.ZERO_SCALAR:
            return KeyPair(sk, group.scalar_mult_base(sk))
    raise DeriveKeyPairError("DeriveKeyPair found no nonzero scalar")


def generate_key_pair(mode: Mode, rng: Callable[[int], bytes] | None = None) -> KeyPair:
    """A fresh key pair: DeriveKeyPair over a 32-byte seed from `rng` (default os.urandom)
    and empty info. Raises InvalidInput if `rng` returns other than 32 bytes."""
    seed = (rng or os.urandom)(SEED_BYTES)
    return derive_key_pair(seed, b"", mode)


def key_pair_from_secret(sk: bytes) -> KeyPair:
    """The key pair of a stored secret key; raises InvalidInput unless `sk` is a canonical
    nonzero scalar."""
    key = _nonzero_scalar(sk, "secret key")
    return KeyPair(key, group.scalar_mult_base(key))


# --- client -------------------------------------------------------------------------------


def blind(inputs: Sequence[bytes], mode: Mode, blinds: Sequence[bytes] | None = None) -> list[Blinded]:
    """RFC 9497 Blind for each input, with random blinds unless `blinds` fixes them.

    Raises InvalidInput for an empty batch, an input over 65535 bytes, a blind that is not a
    canonical nonzero scalar, a `blinds` of another length, or an input that hashes to the
    identity element."""
    _check_batch(inputs, MAX_PROOF_BATCH)
    if blinds is None:
        scalars = [group.random_scalar() for _ in inputs]
    elif len(blinds) != len(inputs):
        raise InvalidInput("one blind is needed per input")
    else:
        scalars = [_nonzero_scalar(b, "blind") for b in blinds]
    dst = _DOMAINS[Mode(mode)].hash_to_group
    return [Blinded(r, group.scalar_mult(r, _input_element(x, dst))) for x, r in zip(inputs, scalars, strict=True)]


def finalize(
    inputs: Sequence[bytes],
    blinds: Sequence[bytes],
    evaluated_elements: Sequence[bytes],
    blinded_elements: Sequence[bytes],
    proof: bytes | None,
    public_key: bytes | None,
    mode: Mode,
) -> list[bytes]:
    """RFC 9497 Finalize over a batch: the 64-byte output of each input.

    In VOPRF mode the batched proof is verified first, against `public_key`; in OPRF mode
    `proof` and `public_key` are not used. Raises ProofError if the server's elements, the
    public key or the proof fail to decode or verify, or the evaluation has the wrong
    length; InvalidInput for an empty batch or local lists that do not pair up."""
    _check_batch(inputs, MAX_PROOF_BATCH)
    if not len(blinds) == len(blinded_elements) == len(inputs):
        raise InvalidInput("inputs, blinds and blinded elements must pair up")
    if len(evaluated_elements) != len(inputs):
        raise ProofError("evaluation does not match the batch size")
    evaluated = [group.deserialize_element(e) for e in evaluated_elements]
    if Mode(mode) is Mode.VOPRF:
        if public_key is None:
            raise ProofError("VOPRF mode needs the server's public key")
        blinded = [group.deserialize_element(e) for e in blinded_elements]
        pk = group.deserialize_element(public_key)
        _verify_proof(pk, blinded, evaluated, proof, _DOMAINS[Mode.VOPRF])
    return [_unblind(x, r, e) for x, r, e in zip(inputs, blinds, evaluated, strict=True)]


# --- server -------------------------------------------------------------------------------


def blind_evaluate(sk: bytes, blinded_elements: Sequence[bytes], mode: Mode, r: bytes | None = None) -> Evaluation:
    """RFC 9497 BlindEvaluate over a batch; in VOPRF mode, with one batched proof whose
    nonce is random unless `r` fixes it.

    Raises ProofError if a blinded element is not a canonical non-identity encoding;
    InvalidInput for an empty or oversized batch, or a bad `sk` or `r`."""
    key = _nonzero_scalar(sk, "secret key")
    _check_batch(blinded_elements, MAX_PROOF_BATCH)
    # The multiplication decodes and validates each element: one decode, not two.
    evaluated = group.scalar_mult_batch(key, blinded_elements)
    if Mode(mode) is Mode.OPRF:
        return Evaluation(tuple(evaluated), None)
    nonce = group.random_scalar() if r is None else _nonzero_scalar(r, "proof nonce")
    blinded = [Element(bytes(e)) for e in blinded_elements]  # validated just above
    pk = group.scalar_mult_base(key)
    proof = _generate_proof(key, pk, blinded, evaluated, nonce, _DOMAINS[Mode.VOPRF])
    return Evaluation(tuple(evaluated), proof)


def evaluate(sk: bytes, input: bytes, mode: Mode) -> bytes:
    """RFC 9497 Evaluate (§3.3.1, §3.3.2): the 64-byte output for `input`, computed with the
    secret key and no blinding. Raises InvalidInput for a bad key or input."""
    return evaluate_batch(sk, [input], mode)[0]


def evaluate_batch(sk: bytes, inputs: Sequence[bytes], mode: Mode) -> list[bytes]:
    """`evaluate` over many inputs (no batch limit: nothing here is numbered). Raises
    InvalidInput for an empty batch, a bad key or an input over 65535 bytes."""
    key = _nonzero_scalar(sk, "secret key")
    _check_batch(inputs, None)
    dst = _DOMAINS[Mode(mode)].hash_to_group
    issued = group.scalar_mult_batch(key, [_input_element(x, dst) for x in inputs])
    return [_finalize_hash(x, e) for x, e in zip(inputs, issued, strict=True)]


# --- proofs (RFC 9497 §2.2) ---------------------------------------------------------------


def _generate_proof(k: Scalar, pk: Element, cs: list[Element], ds: list[Element], r: Scalar, dom: _Domain) -> bytes:
    """GenerateProof(k, G, pk, Cs, Ds) with ComputeCompositesFast; returns c || s."""
    m = _weighted_sum(_composite_scalars(pk, cs, ds, dom), cs)
    z = group.scalar_mult(k, m)
    t2 = group.scalar_mult_base(r)
    t3 = group.scalar_mult(r, m)
    c = _challenge(pk, m, z, t2, t3, dom)
    return c + group.scalar_sub(r, group.scalar_mul(c, k))


def _verify_proof(pk: Element, cs: list[Element], ds: list[Element], proof: bytes | None, dom: _Domain) -> None:
    """VerifyProof(G, pk, Cs, Ds, proof) with ComputeComposites; raises ProofError.

    A zero c or s, or a zero composite, makes a multiplication fail and so the proof fail:
    an honest server produces one with negligible probability."""
    if proof is None or len(proof) != PROOF_BYTES:
        raise ProofError("proof must be 64 bytes")
    c = group.deserialize_scalar(proof[: group.SCALAR_BYTES])
    s = group.deserialize_scalar(proof[group.SCALAR_BYTES :])
    weights = _composite_scalars(pk, cs, ds, dom)
    m, z = _weighted_sum(weights, cs), _weighted_sum(weights, ds)
    t2 = group.element_add(group.scalar_mult_base(s), group.scalar_mult(c, pk))
    t3 = group.element_add(group.scalar_mult(s, m), group.scalar_mult(c, z))
    if not hmac.compare_digest(_challenge(pk, m, z, t2, t3, dom), c):
        raise ProofError("proof does not verify")


def _composite_scalars(pk: Element, cs: list[Element], ds: list[Element], dom: _Domain) -> list[Scalar]:
    """The weights d_i of ComputeComposites, from the seed and composite transcripts."""
    seed = group.digest(_lp(pk) + _lp(dom.seed))
    return [
        group.hash_to_scalar(
            _lp(seed) + i.to_bytes(2, "big") + _lp(c) + _lp(d) + b"Composite",
            dom.hash_to_scalar,
        )
        for i, (c, d) in enumerate(zip(cs, ds, strict=True))
    ]


def _weighted_sum(weights: list[Scalar], elements: list[Element]) -> Element:
    total = group.IDENTITY
    for w, e in zip(weights, elements, strict=True):
        total = group.element_add(group.scalar_mult(w, e), total)
    return total


def _challenge(pk: Element, m: Element, z: Element, t2: Element, t3: Element, dom: _Domain) -> Scalar:
    transcript = b"".join(_lp(x) for x in (pk, m, z, t2, t3)) + b"Challenge"
    return group.hash_to_scalar(transcript, dom.hash_to_scalar)


# --- helpers ------------------------------------------------------------------------------


def _lp(data: bytes) -> bytes:
    """I2OSP(len(data), 2) || data."""
    return len(data).to_bytes(2, "big") + data


def _prefixed(data: bytes, what: str) -> bytes:
    if len(data) > _MAX_FIELD:
        raise InvalidInput(f"{what} must be at most 65535 bytes")
    return _lp(data)


def _input_element(data: bytes, dst: bytes) -> Element:
    _prefixed(data, "input")
    element = group.hash_to_group(data, dst)
    if element == group.IDENTITY:
        raise InvalidInput("input maps to the identity element")
    return element


def _unblind(data: bytes, blind: bytes, evaluated: Element) -> bytes:
    inverse = group.scalar_invert(_nonzero_scalar(blind, "blind"))
    return _finalize_hash(data, group.scalar_mult(inverse, evaluated))


def _finalize_hash(data: bytes, element: Element) -> bytes:
    return group.digest(_prefixed(data, "input") + _lp(element) + b"Finalize")


def _nonzero_scalar(data: bytes, what: str) -> Scalar:
    try:
        scalar = group.deserialize_scalar(data)
    except ProofError:
        scalar = group.ZERO_SCALAR
    if scalar == group.ZERO_SCALAR:
        raise InvalidInput(f"{what} must be a canonical nonzero scalar")
    return scalar


def _check_batch(items: Sequence[object], limit: int | None) -> None:
    if not items:
        raise InvalidInput("empty batch: at least one element is required")
    if limit is not None and len(items) > limit:
        raise InvalidInput(f"batch larger than {limit} elements")
