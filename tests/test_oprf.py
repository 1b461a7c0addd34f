"""RFC 9497 OPRF/VOPRF over ristretto255-SHA512: the RFC's vectors, then the failure cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from xiezhi import group, oprf
from xiezhi.errors import InvalidInput, ProofError
from xiezhi.oprf import Mode

VECTORS = Path(__file__).parent / "vectors" / "rfc9497-oprf-vectors.json"
SUITES = [s for s in json.loads(VECTORS.read_text()) if s["mode"] in (0, 1)]
CASES = [
    pytest.param(suite, vector, id=f"mode{suite['mode']}-vector{i}")
    for suite in SUITES
    for i, vector in enumerate(suite["vectors"])
]
FIELD_PRIME = 2**255 - 19


def _split(vector: dict[str, Any], key: str) -> list[bytes]:
    return [bytes.fromhex(part) for part in vector[key].split(",")]


def _key(suite: dict[str, Any]) -> oprf.KeyPair:
    mode = Mode(suite["mode"])
    return oprf.derive_key_pair(bytes.fromhex(suite["seed"]), bytes.fromhex(suite["keyInfo"]), mode)


def test_vector_file_covers_both_modes() -> None:
    assert sorted({s["mode"] for s in SUITES}) == [0, 1]
    assert len(CASES) == 5
    assert any(v["Batch"] > 1 for s in SUITES for v in s["vectors"])


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: f"mode{s['mode']}")
def test_derive_key_pair(suite: dict[str, Any]) -> None:
    keys = _key(suite)
    assert keys.sk.hex() == suite["skSm"]
    if "pkSm" in suite:
        assert keys.pk.hex() == suite["pkSm"]
    assert keys.pk == group.scalar_mult_base(keys.sk)


@pytest.mark.parametrize(("suite", "vector"), CASES)
def test_vector(suite: dict[str, Any], vector: dict[str, Any]) -> None:
    mode, keys = Mode(suite["mode"]), _key(suite)
    inputs, blinds = _split(vector, "Input"), _split(vector, "Blind")
    assert len(inputs) == vector["Batch"]

    blinded = oprf.blind(inputs, mode, blinds)
    assert [b.blinded_element for b in blinded] == _split(vector, "BlindedElement")
    assert [b.blind for b in blinded] == blinds

    r = bytes.fromhex(vector["Proof"]["r"]) if mode is Mode.VOPRF else None
    evaluation = oprf.blind_evaluate(keys.sk, [b.blinded_element for b in blinded], mode, r)
    assert list(evaluation.evaluated_elements) == _split(vector, "EvaluationElement")
    if mode is Mode.VOPRF:
        assert evaluation.proof is not None
        assert evaluation.proof.hex() == vector["Proof"]["proof"]
    else:
        assert evaluation.proof is None

    outputs = oprf.finalize(
        inputs,
        blinds,
        _split(vector, "EvaluationElement"),
        _split(vector, "BlindedElement"),
        bytes.fromhex(vector["Proof"]["proof"]) if mode is Mode.VOPRF else None,
        keys.pk,
        mode,
    )
    assert outputs == _split(vector, "Output")
    assert [oprf.evaluate(keys.sk, x, mode) for x in inputs] == _split(vector, "Output")
    assert oprf.evaluate_batch(keys.sk, inputs, mode) == _split(vector, "Output")


# --- VOPRF proofs -------------------------------------------------------------------------

BATCH_VECTOR = next(v for v in SUITES[1]["vectors"] if v["Batch"] == 2)


def _voprf_finalize(evaluated: list[bytes], proof: bytes | None, public_key: bytes | None = None) -> list[bytes]:
    keys = _key(SUITES[1])
    return oprf.finalize(
        _split(BATCH_VECTOR, "Input"),
        _split(BATCH_VECTOR, "Blind"),
        evaluated,
        _split(BATCH_VECTOR, "BlindedElement"),
        proof,
        keys.pk if public_key is None else public_key,
        Mode.VOPRF,
    )


def _flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 1]) + data[position + 1 :]


def _batch_parts() -> tuple[list[bytes], bytes]:
    return _split(BATCH_VECTOR, "EvaluationElement"), bytes.fromhex(BATCH_VECTOR["Proof"]["proof"])


def test_batch_fixture_verifies() -> None:
    evaluated, proof = _batch_parts()
    assert _voprf_finalize(evaluated, proof) == _split(BATCH_VECTOR, "Output")


@pytest.mark.parametrize("position", [0, 1, 15, 31])
def test_tampered_evaluated_element_fails(position: int) -> None:
    evaluated, proof = _batch_parts()
    evaluated[1] = _flip(evaluated[1], position)
    with pytest.raises(ProofError):
        _voprf_finalize(evaluated, proof)


def test_valid_but_wrong_evaluated_element_fails_the_proof() -> None:
    evaluated, proof = _batch_parts()
    with pytest.raises(ProofError, match="proof does not verify"):
        _voprf_finalize([evaluated[1], evaluated[0]], proof)
    other = group.scalar_mult_base(group.random_scalar())
    with pytest.raises(ProofError, match="proof does not verify"):
        _voprf_finalize([evaluated[0], other], proof)


@pytest.mark.parametrize("position", [0, 5, 31, 32, 40, 63])
def test_tampered_proof_byte_fails(position: int) -> None:
    evaluated, proof = _batch_parts()
    with pytest.raises(ProofError):
        _voprf_finalize(evaluated, _flip(proof, position))


@pytest.mark.parametrize("proof", [None, b"", bytes(63), bytes(65)])
def test_missing_or_misshapen_proof_fails(proof: bytes | None) -> None:
    evaluated, _ = _batch_parts()
    with pytest.raises(ProofError):
        _voprf_finalize(evaluated, proof)


def test_non_canonical_proof_scalars_fail() -> None:
    evaluated, proof = _batch_parts()
    for bad in (b"\xff" * 32 + proof[32:], proof[:32] + group.ORDER.to_bytes(32, "little")):
        with pytest.raises(ProofError, match="scalar is not canonical"):
            _voprf_finalize(evaluated, bad)


def test_proof_for_one_key_fails_against_another() -> None:
    evaluated, proof = _batch_parts()
    other = oprf.generate_key_pair(Mode.VOPRF)
    with pytest.raises(ProofError, match="proof does not verify"):
        _voprf_finalize(evaluated, proof, other.pk)


def test_server_key_swap_is_caught() -> None:
    honest, rogue = oprf.generate_key_pair(Mode.VOPRF), oprf.generate_key_pair(Mode.VOPRF)
    inputs = [b"110101199003074578", b"91350100M000100Y43"]
    blinded = oprf.blind(inputs, Mode.VOPRF)
    elements = [b.blinded_element for b in blinded]
    evaluation = oprf.blind_evaluate(rogue.sk, elements, Mode.VOPRF)
    with pytest.raises(ProofError):
        oprf.finalize(
            inputs,
            [b.blind for b in blinded],
            evaluation.evaluated_elements,
            elements,
            evaluation.proof,
            honest.pk,
            Mode.VOPRF,
        )


def test_voprf_needs_a_public_key() -> None:
    evaluated, proof = _batch_parts()
    keys = _key(SUITES[1])
    with pytest.raises(ProofError):
        oprf.finalize(
            _split(BATCH_VECTOR, "Input"),
            _split(BATCH_VECTOR, "Blind"),
            evaluated,
            _split(BATCH_VECTOR, "BlindedElement"),
            proof,
            None,
            Mode.VOPRF,
        )
    with pytest.raises(ProofError, match="identity"):
        _voprf_finalize(evaluated, proof, bytes(32))
    assert keys.pk != bytes(32)


def test_evaluation_of_the_wrong_length_fails() -> None:
    evaluated, proof = _batch_parts()
    with pytest.raises(ProofError, match="batch size"):
        _voprf_finalize(evaluated[:1], proof)
    with pytest.raises(ProofError, match="batch size"):
        _voprf_finalize([*evaluated, evaluated[0]], proof)


# --- encodings ----------------------------------------------------------------------------

GOOD = group.scalar_mult_base(group.random_scalar())
BAD_ELEMENTS = {
    "top-bit-set": GOOD[:31] + bytes([GOOD[31] | 0x80]),
    "field-element-p": FIELD_PRIME.to_bytes(32, "little"),
    "field-element-p-plus-1": (FIELD_PRIME + 1).to_bytes(32, "little"),
    "negative": (1).to_bytes(32, "little"),
    "all-ff": b"\xff" * 32,
    "identity": bytes(32),
    "short": GOOD[:31],
    "long": GOOD + b"\x00",
}


@pytest.mark.parametrize("bad", BAD_ELEMENTS.values(), ids=BAD_ELEMENTS.keys())
def test_server_rejects_bad_blinded_element(bad: bytes) -> None:
    keys = oprf.generate_key_pair(Mode.VOPRF)
    for mode in Mode:
        with pytest.raises(ProofError):
            oprf.blind_evaluate(keys.sk, [GOOD, bad], mode)


@pytest.mark.parametrize("bad", BAD_ELEMENTS.values(), ids=BAD_ELEMENTS.keys())
def test_client_rejects_bad_evaluated_element(bad: bytes) -> None:
    keys = oprf.generate_key_pair(Mode.OPRF)
    blinded = oprf.blind([b"a"], Mode.OPRF)
    with pytest.raises(ProofError):
        oprf.finalize(
            [b"a"],
            [blinded[0].blind],
            [bad],
            [blinded[0].blinded_element],
            None,
            keys.pk,
            Mode.OPRF,
        )


def test_error_messages_do_not_echo_bytes() -> None:
    bad = BAD_ELEMENTS["top-bit-set"]
    with pytest.raises(ProofError) as caught:
        group.deserialize_element(bad)
    assert bad.hex() not in str(caught.value)
    assert caught.value.public_message == "element is not a canonical ristretto255 encoding"


# --- malformed calls ----------------------------------------------------------------------


def test_empty_batches_are_rejected() -> None:
    keys = oprf.generate_key_pair(Mode.VOPRF)
    for mode in Mode:
        with pytest.raises(InvalidInput, match="empty batch"):
            oprf.blind([], mode)
        with pytest.raises(InvalidInput, match="empty batch"):
            oprf.blind_evaluate(keys.sk, [], mode)
        with pytest.raises(InvalidInput, match="empty batch"):
            oprf.evaluate_batch(keys.sk, [], mode)
        with pytest.raises(InvalidInput, match="empty batch"):
            oprf.finalize([], [], [], [], b"\x00" * 64, keys.pk, mode)


@pytest.mark.parametrize("sk", [bytes(32), b"\xff" * 32, group.ORDER.to_bytes(32, "little"), bytes(31)])
def test_bad_secret_keys_are_rejected(sk: bytes) -> None:
    with pytest.raises(InvalidInput, match="secret key"):
        oprf.evaluate(sk, b"x", Mode.OPRF)
    with pytest.raises(InvalidInput, match="secret key"):
        oprf.blind_evaluate(sk, [GOOD], Mode.VOPRF)
    with pytest.raises(InvalidInput, match="secret key"):
        oprf.key_pair_from_secret(sk)


def test_bad_blinds_and_seeds_are_rejected() -> None:
    with pytest.raises(InvalidInput, match="blind"):
        oprf.blind([b"x"], Mode.OPRF, [bytes(32)])
    with pytest.raises(InvalidInput, match="one blind"):
        oprf.blind([b"x", b"y"], Mode.OPRF, [(1).to_bytes(32, "little")])
    with pytest.raises(InvalidInput, match="seed"):
        oprf.derive_key_pair(bytes(31), b"", Mode.OPRF)
    with pytest.raises(InvalidInput, match="key info"):
        oprf.derive_key_pair(bytes(32), bytes(0x10000), Mode.OPRF)
    with pytest.raises(InvalidInput, match="input"):
        oprf.evaluate(oprf.generate_key_pair(Mode.OPRF).sk, bytes(0x10000), Mode.OPRF)
    with pytest.raises(ValueError):
        oprf.blind([b"x"], 2)  # type: ignore[arg-type]


def test_derive_key_pair_gives_up_after_256_zero_scalars(monkeypatch: pytest.MonkeyPatch) -> None:
    counters: list[int] = []

    def zero(msg: bytes, dst: bytes) -> group.Scalar:
        counters.append(msg[-1])
        return group.ZERO_SCALAR

    monkeypatch.setattr(group, "hash_to_scalar", zero)
    with pytest.raises(oprf.DeriveKeyPairError):
        oprf.derive_key_pair(bytes(32), b"", Mode.OPRF)
    assert counters == list(range(256))


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(Mode))
def test_round_trip_with_random_blinds_matches_evaluate(mode: Mode) -> None:
    keys = oprf.generate_key_pair(mode)
    inputs = [b"", b"110101199003074578", b"x" * 1000, bytes(range(256))]
    blinded = oprf.blind(inputs, mode)
    assert len({b.blind for b in blinded}) == len(inputs)
    elements = [b.blinded_element for b in blinded]
    evaluation = oprf.blind_evaluate(keys.sk, elements, mode)
    outputs = oprf.finalize(
        inputs,
        [b.blind for b in blinded],
        evaluation.evaluated_elements,
        elements,
        evaluation.proof,
        keys.pk,
        mode,
    )
    assert outputs == oprf.evaluate_batch(keys.sk, inputs, mode)
    assert all(len(out) == oprf.OUTPUT_BYTES for out in outputs)
    assert len(set(outputs)) == len(inputs)


def test_modes_and_keys_separate_outputs() -> None:
    seed = bytes(range(32))
    oprf_key = oprf.derive_key_pair(seed, b"info", Mode.OPRF)
    voprf_key = oprf.derive_key_pair(seed, b"info", Mode.VOPRF)
    assert oprf_key.sk != voprf_key.sk
    as_oprf = oprf.evaluate(oprf_key.sk, b"x", Mode.OPRF)
    assert as_oprf != oprf.evaluate(oprf_key.sk, b"x", Mode.VOPRF)
    assert oprf.derive_key_pair(seed, b"other", Mode.OPRF).sk != oprf_key.sk


def test_generate_key_pair_uses_rng_and_hides_secret() -> None:
    fixed = oprf.generate_key_pair(Mode.OPRF, rng=lambda n: b"\xa3" * n)
    assert fixed == oprf.derive_key_pair(b"\xa3" * 32, b"", Mode.OPRF)
    assert fixed == oprf.key_pair_from_secret(fixed.sk)
    assert fixed.sk.hex() not in repr(fixed) and str(fixed.sk) not in repr(fixed)
    blinded = oprf.blind([b"x"], Mode.OPRF)[0]
    assert str(blinded.blind) not in repr(blinded)
