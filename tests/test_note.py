"""Signed notes, checkpoints and cosignatures in the C2SP formats, against published vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit_log.note import (
    COSIGNATURE_V1,
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    cosignature_time,
    generate_signer,
    open_checkpoint,
    open_note,
    signer_key,
    split_note,
)

VECTORS = json.loads((Path(__file__).parent / "vectors" / "signed-note-vectors.json").read_text())


def test_signing_reproduces_the_go_note_example() -> None:
    v = VECTORS["ed25519"]
    signer = Signer.parse(v["signer_key"])
    assert str(signer.verifier()) == v["verifier_key"]
    assert v["text"] + "\n" + signer.sign(v["text"]) == v["signed"]
    assert open_note(v["signed"], Verifier.parse(v["verifier_key"])) == v["text"]
    assert signer_key(signer) == v["signer_key"]


def test_the_c2sp_example_verifies_and_a_changed_text_does_not() -> None:
    v = VECTORS["c2sp_example"]
    verifier = Verifier.parse(v["verifier_key"])
    assert open_note(v["signed"], verifier) == "This is an example message.\n"
    with pytest.raises(NoteError, match="does not verify"):
        open_note(v["signed"].replace("example", "exampel", 1), verifier)


def test_cosignature_key_ids_and_timestamps_follow_the_published_vector() -> None:
    v = VECTORS["cosignature_v1"]
    witness = Verifier.parse(v["verifier_key"])
    assert witness.kind == COSIGNATURE_V1
    assert str(witness) == v["verifier_key"]
    raw = __import__("base64").b64decode(v["signature_base64"])
    assert int.from_bytes(raw[4:12], "big") == v["timestamp"]


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong key id
        "PeterNeumann+c74f20a3",  # no key
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # space in name
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",  # short key
    ],
)
def test_malformed_verifier_keys_are_refused(vkey: str) -> None:
    with pytest.raises(NoteError):
        Verifier.parse(vkey)


def test_checkpoints_round_trip_and_need_the_logs_own_signature() -> None:
    log = generate_signer("xiezhi.test/audit")
    checkpoint = Checkpoint("xiezhi.test/audit", 42, bytes(range(32)))
    note = checkpoint.text() + "\n" + log.sign(checkpoint.text())
    assert open_checkpoint(note, log.verifier()) == checkpoint
    other = generate_signer("xiezhi.test/audit")
    with pytest.raises(NoteError, match="not signed by"):
        open_checkpoint(checkpoint.text() + "\n" + other.sign(checkpoint.text()), log.verifier())
    with pytest.raises(NoteError, match="tree size"):
        Checkpoint.parse("origin\n042\nAAAA\n")


def test_witness_cosignatures_verify_and_a_forged_one_is_caught() -> None:
    log, witness = generate_signer("xiezhi.test/audit"), generate_signer("court.witness")
    text = Checkpoint("xiezhi.test/audit", 7, bytes(32)).text()
    note = text + "\n" + log.sign(text) + witness.cosign(text, 1_790_000_000)
    assert cosignature_time(note, witness.verifier(COSIGNATURE_V1)) == 1_790_000_000
    assert cosignature_time(note, generate_signer("tax.witness").verifier(COSIGNATURE_V1)) is None
    forged = text + "\n" + log.sign(text) + witness.cosign(text.replace("7", "8"), 1_790_000_000)
    with pytest.raises(NoteError, match="does not verify"):
        cosignature_time(forged, witness.verifier(COSIGNATURE_V1))
    # A cosignature is not a plain note signature: the Ed25519 verifier of the same key ignores it.
    with pytest.raises(NoteError, match="not signed by"):
        open_note(text + "\n" + witness.cosign(text, 1), witness.verifier())


def test_notes_with_control_characters_or_no_signature_are_refused() -> None:
    with pytest.raises(NoteError):
        split_note("text\n\n")
    with pytest.raises(NoteError):
        split_note("te\x07xt\n\n\u2014 a AAAAAAA=\n")


def test_libsodiums_signature_check_agrees_with_openssls() -> None:
    """Notes are checked with libsodium; it must accept and refuse exactly what OpenSSL does."""
    import os

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    from xiezhi.crypto import ed25519_verify

    def openssl(public: bytes, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    for n in range(40):
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes_raw()
        message = os.urandom(n * 7)
        signature = key.sign(message)
        at = n % 64
        flipped = signature[:at] + bytes([signature[at] ^ (1 << (n % 8))]) + signature[at + 1 :]
        cases = [
            (public, signature, message, True),
            (public, flipped, message, False),
            (public, signature, message + b"x", False),
            (Ed25519PrivateKey.generate().public_key().public_bytes_raw(), signature, message, False),
            (public, signature[:63], message, False),
        ]
        for pub, sig, msg, expected in cases:
            assert ed25519_verify(pub, sig, msg) is expected
            assert openssl(pub, sig, msg) is expected
