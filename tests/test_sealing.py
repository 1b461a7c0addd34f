"""Envelope encryption: the primitives against published vectors, then sealing, rotation and the keyring."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.db import make_engine
from gateway.keyring import KeyringError, LocalKeyring
from gateway.sealing import DataKeyStore, MemoryDataKeys, Sealer, SealError, SqlDataKeys, canonical_context
from xiezhi import crypto
from xiezhi.errors import InvalidInput, Unavailable

VECTORS = json.loads((Path(__file__).parent / "vectors" / "aes-gcm-keywrap-vectors.json").read_text())
AT = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
CONTEXT = {"connector": "court", "request": "6f1c3f0e-1b7a-4a57-9a8e-1e0b5c1d2e3f", "table": "results"}
SECRET = b"330803199001011234 flagged row 17"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = AT

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def keyring(tmp_path: Path) -> LocalKeyring:
    return LocalKeyring.create(tmp_path / "keys" / "keyring.json", AT)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DataKeyStore]:
    if request.param == "memory":
        yield MemoryDataKeys()
        return
    engine = make_engine(f"sqlite:///{tmp_path / 'keys.sqlite'}", migrate_empty=True)
    yield SqlDataKeys(engine)
    engine.dispose()


@pytest.fixture
def sealer(keyring: LocalKeyring, store: DataKeyStore) -> Sealer:
    return Sealer(keyring, store, Clock())


# ---- the primitives against published vectors ------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["aes_256_gcm"], ids=lambda v: v["name"])
def test_aes256gcm_matches_the_gcm_specification(vector: dict[str, str]) -> None:
    key, iv, aad = (bytes.fromhex(vector[name]) for name in ("key", "iv", "aad"))
    plaintext, expected = bytes.fromhex(vector["plaintext"]), bytes.fromhex(vector["ciphertext"] + vector["tag"])
    assert crypto.aes256gcm_seal(key, iv, plaintext, aad) == expected
    assert crypto.aes256gcm_open(key, iv, expected, aad) == plaintext
    with pytest.raises(crypto.CryptoError):
        crypto.aes256gcm_open(key, iv, expected[:-1] + bytes([expected[-1] ^ 1]), aad)
    with pytest.raises(crypto.CryptoError):
        crypto.aes256gcm_open(key, iv, expected, aad + b"\x00")


@pytest.mark.parametrize("vector", VECTORS["rfc3394_key_wrap"], ids=lambda v: v["name"][:3])
def test_key_wrap_matches_rfc3394(vector: dict[str, str]) -> None:
    kek, data, wrapped = (bytes.fromhex(vector[name]) for name in ("kek", "key_data", "wrapped"))
    assert crypto.wrap_key(kek, data) == wrapped
    assert crypto.unwrap_key(kek, wrapped) == data
    with pytest.raises(crypto.CryptoError):
        crypto.unwrap_key(bytes(32), wrapped)


def test_the_primitives_refuse_other_sizes() -> None:
    with pytest.raises(crypto.CryptoError):
        crypto.aes256gcm_seal(bytes(16), bytes(12), b"", b"")  # AES-128 key
    with pytest.raises(crypto.CryptoError):
        crypto.aes256gcm_seal(bytes(32), bytes(8), b"", b"")  # short nonce
    with pytest.raises(crypto.CryptoError):
        crypto.wrap_key(bytes(16), bytes(32))
    with pytest.raises(crypto.CryptoError):
        crypto.unwrap_key(bytes(32), bytes(7))
    assert len(crypto.random_key()) == 32 and crypto.random_key() != crypto.random_key()


# ---- sealing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 4096, 100_003])
def test_round_trip(sealer: Sealer, size: int) -> None:
    plaintext = os.urandom(size)
    blob = sealer.seal(plaintext, CONTEXT)
    assert sealer.open(blob, CONTEXT) == plaintext
    assert sealer.seal(plaintext, CONTEXT) != blob  # a fresh nonce every time


def test_context_is_canonical_json_in_any_order(sealer: Sealer) -> None:
    assert canonical_context(CONTEXT) == (
        b'{"connector":"court","request":"6f1c3f0e-1b7a-4a57-9a8e-1e0b5c1d2e3f","table":"results"}'
    )
    assert canonical_context({"表": "结果"}) == '{"表":"结果"}'.encode()
    blob = sealer.seal(SECRET, CONTEXT)
    assert sealer.open(blob, dict(reversed(CONTEXT.items()))) == SECRET


@pytest.mark.parametrize("field", sorted(CONTEXT))
def test_every_context_field_is_bound(sealer: Sealer, field: str) -> None:
    blob = sealer.seal(SECRET, CONTEXT)
    for changed in ({**CONTEXT, field: CONTEXT[field] + "x"}, {k: v for k, v in CONTEXT.items() if k != field}):
        with pytest.raises(SealError):
            sealer.open(blob, changed)
    with pytest.raises(SealError):
        sealer.open(blob, {**CONTEXT, "extra": ""})


def test_an_empty_context_is_refused(sealer: Sealer) -> None:
    with pytest.raises(InvalidInput):
        sealer.seal(SECRET, {})


def test_any_flipped_bit_fails(keyring: LocalKeyring) -> None:
    sealer = Sealer(keyring, MemoryDataKeys(), Clock())
    blob = sealer.seal(SECRET, CONTEXT)
    for position in range(len(blob)):
        for bit in range(8):
            tampered = bytearray(blob)
            tampered[position] ^= 1 << bit
            with pytest.raises(SealError):
                sealer.open(bytes(tampered), CONTEXT)


def test_truncation_and_extension_fail(keyring: LocalKeyring) -> None:
    sealer = Sealer(keyring, MemoryDataKeys(), Clock())
    blob = sealer.seal(SECRET, CONTEXT)
    for length in range(len(blob)):
        with pytest.raises(SealError):
            sealer.open(blob[:length], CONTEXT)
    with pytest.raises(SealError):
        sealer.open(blob + b"\x00", CONTEXT)


def test_the_header_is_versioned_and_names_its_key(sealer: Sealer) -> None:
    blob = sealer.seal(SECRET, CONTEXT)
    key_id = Sealer.blob_key_id(blob)
    assert blob.startswith(b"XZS\x01" + bytes([len(key_id)]) + key_id.encode())
    for version in (0, 2, 255):
        with pytest.raises(SealError):
            sealer.open(blob[:3] + bytes([version]) + blob[4:], CONTEXT)
    with pytest.raises(SealError):
        sealer.open(b"XZT" + blob[3:], CONTEXT)
    with pytest.raises(SealError):
        Sealer.blob_key_id(b"XZS\x01\x00")


def test_a_blob_naming_an_unknown_data_key_fails(keyring: LocalKeyring) -> None:
    blob = Sealer(keyring, MemoryDataKeys(), Clock()).seal(SECRET, CONTEXT)
    with pytest.raises(SealError):
        Sealer(keyring, MemoryDataKeys(), Clock()).open(blob, CONTEXT)


def test_seal_errors_carry_no_context_values(sealer: Sealer) -> None:
    blob = sealer.seal(SECRET, CONTEXT)
    failures = [
        (blob, {**CONTEXT, "request": "another-request-4b1d"}),
        (blob[:-1], CONTEXT),
        (blob[:3] + b"\x09" + blob[4:], CONTEXT),
        (b"XZS\x01\x08dek-gone" + bytes(40), CONTEXT),
    ]
    for bad_blob, context in failures:
        with pytest.raises(SealError) as caught:
            sealer.open(bad_blob, context)
        shown = f"{caught.value} {caught.value!r} {caught.value.public_message} {caught.value.extensions}"
        assert shown.count("sealed data could not be opened") >= 2
        for value in [*CONTEXT.values(), *context.values(), Sealer.blob_key_id(blob), SECRET.decode()]:
            assert value not in shown
        assert caught.value.__cause__ is None  # nothing chained for a traceback to show
        assert caught.value.__context__ is None or caught.value.__suppress_context__


def test_a_provider_that_cannot_be_reached_is_not_folded_in(keyring: LocalKeyring) -> None:
    store = MemoryDataKeys()
    blob = Sealer(keyring, store, Clock()).seal(SECRET, CONTEXT)

    class Down(LocalKeyring):
        def unwrap(self, kek_id: str, wrapped: bytes) -> bytes:
            raise Unavailable("key service unreachable")

    with pytest.raises(Unavailable):
        Sealer(Down(keyring.path), store, Clock()).open(blob, CONTEXT)


# ---- rotation --------------------------------------------------------------------------------


def test_data_key_rotation(sealer: Sealer, store: DataKeyStore) -> None:
    old = sealer.seal(SECRET, CONTEXT)
    first = Sealer.blob_key_id(old)
    second = sealer.rotate_data_key()
    new = sealer.seal(SECRET, CONTEXT)
    assert second != first and Sealer.blob_key_id(new) == second
    assert sealer.open(old, CONTEXT) == sealer.open(new, CONTEXT) == SECRET
    retired = store.get(first)
    assert retired is not None and retired.retired
    assert store.current() == store.get(second)


def test_another_process_sees_a_rotation_after_the_ttl(keyring: LocalKeyring, store: DataKeyStore) -> None:
    clock = Clock()
    one, two = (Sealer(keyring, store, clock, current_ttl=timedelta(seconds=60)) for _ in range(2))
    first = Sealer.blob_key_id(one.seal(SECRET, CONTEXT))
    assert Sealer.blob_key_id(two.seal(SECRET, CONTEXT)) == first  # the stored current key, not a new one
    second = one.rotate_data_key()
    assert Sealer.blob_key_id(two.seal(SECRET, CONTEXT)) == first
    clock.now += timedelta(seconds=61)
    assert Sealer.blob_key_id(two.seal(SECRET, CONTEXT)) == second


def _seal_under_three_data_keys(sealer: Sealer) -> dict[bytes, dict[str, str]]:
    blobs = {}
    for n in range(6):
        context = {**CONTEXT, "request": f"request-{n}"}
        blobs[sealer.seal(f"row {n}".encode(), context)] = context
        if n % 2:
            sealer.rotate_data_key()
    return blobs


def test_kek_rotation_then_rewrap(keyring: LocalKeyring, store: DataKeyStore, tmp_path: Path) -> None:
    sealer = Sealer(keyring, store, Clock())
    blobs = _seal_under_three_data_keys(sealer)
    key_ids = {Sealer.blob_key_id(blob) for blob in blobs}
    old_kek = keyring.current_kek_id()
    new_kek = keyring.rotate(AT + timedelta(days=90))
    assert keyring.kek_ids() == [old_kek, new_kek]
    first_blob, first_context = next(iter(blobs.items()))
    assert sealer.open(first_blob, first_context) == b"row 0"  # before rewrap, through the old KEK

    # Four data keys: three sealed the blobs, the fourth is current and has sealed nothing yet.
    assert [sealer.rewrap(limit=3) for _ in range(3)] == [3, 1, 0]
    assert store.not_under(new_kek, 100) == []
    for key_id in key_ids:
        row = store.get(key_id)
        assert row is not None and row.kek_id == new_kek
        assert not store.set_wrapping(key_id, old_kek, old_kek, b"stale")  # a late rewrapper changes nothing

    without_old = _copy_dropping(keyring, old_kek, tmp_path / "copy" / "keyring.json")
    assert without_old.kek_ids() == [new_kek]
    fresh = Sealer(without_old, store, Clock())
    for blob, context in blobs.items():
        assert fresh.open(blob, context).startswith(b"row ")


def test_dropping_a_kek_before_rewrap_loses_its_data_keys(keyring: LocalKeyring, tmp_path: Path) -> None:
    store = MemoryDataKeys()
    blob = Sealer(keyring, store, Clock()).seal(SECRET, CONTEXT)
    old_kek = keyring.current_kek_id()
    keyring.rotate(AT)
    without_old = _copy_dropping(keyring, old_kek, tmp_path / "copy.json")
    with pytest.raises(SealError):
        Sealer(without_old, store, Clock()).open(blob, CONTEXT)
    with pytest.raises(SealError):
        Sealer(without_old, store, Clock()).rewrap(limit=10)


def _copy_dropping(keyring: LocalKeyring, kek_id: str, path: Path) -> LocalKeyring:
    document = json.loads(keyring.path.read_text())
    document["keys"] = [entry for entry in document["keys"] if entry["id"] != kek_id]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    path.chmod(0o600)
    return LocalKeyring(path)


def test_rewrap_runs_beside_sealing_and_opening(keyring: LocalKeyring, store: DataKeyStore) -> None:
    sealer = Sealer(keyring, store, Clock())
    for _ in range(20):
        sealer.rotate_data_key()
    keyring.rotate(AT)
    totals: list[int] = []

    def rewrap_all() -> None:
        other = Sealer(keyring, store, Clock())
        while done := other.rewrap(limit=3):
            totals.append(done)

    worker = threading.Thread(target=rewrap_all)
    worker.start()
    blobs = [sealer.seal(bytes([n]) * 100, CONTEXT) for n in range(200)]
    assert [sealer.open(blob, CONTEXT) for blob in blobs] == [bytes([n]) * 100 for n in range(200)]
    worker.join()
    assert sum(totals) == 20 and store.not_under(keyring.current_kek_id(), 100) == []


def test_rewrap_needs_a_positive_limit(sealer: Sealer) -> None:
    with pytest.raises(InvalidInput):
        sealer.rewrap(limit=0)


def test_the_data_key_cache_is_bounded(keyring: LocalKeyring) -> None:
    unwraps: list[str] = []

    class Counting(LocalKeyring):
        def unwrap(self, kek_id: str, wrapped: bytes) -> bytes:
            unwraps.append(kek_id)
            return super().unwrap(kek_id, wrapped)

    store = MemoryDataKeys()
    writer = Sealer(keyring, store, Clock())
    a = writer.seal(SECRET, CONTEXT)
    writer.rotate_data_key()
    b = writer.seal(SECRET, CONTEXT)
    reader = Sealer(Counting(keyring.path), store, Clock(), cache_size=1)
    for blob in (a, a, b, b, a):
        reader.open(blob, CONTEXT)
    assert len(unwraps) == 3


# ---- storage across a restart ----------------------------------------------------------------


def test_sql_data_keys_survive_a_restart(tmp_path: Path) -> None:
    url, keyring_path = f"sqlite:///{tmp_path / 'gateway.sqlite'}", tmp_path / "keyring.json"
    engine = make_engine(url, migrate_empty=True)
    before = Sealer(LocalKeyring.create(keyring_path, AT), SqlDataKeys(engine), Clock())
    blob = before.seal(SECRET, CONTEXT)
    engine.dispose()

    engine = make_engine(url)
    after = Sealer(LocalKeyring(keyring_path), SqlDataKeys(engine), Clock())
    assert after.open(blob, CONTEXT) == SECRET
    assert Sealer.blob_key_id(after.seal(b"more", CONTEXT)) == Sealer.blob_key_id(blob)
    with engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT id, kek_id, wrapped, retired FROM sealing_data_keys").all()
    assert len(rows) == 1 and len(rows[0].wrapped) == 40  # an RFC 3394 wrapped 32-byte key, nothing else
    engine.dispose()


# ---- the local keyring -----------------------------------------------------------------------


def _document(keyring: LocalKeyring) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(keyring.path.read_text())
    return document


def test_keyring_file_is_owner_only_and_never_overwritten(keyring: LocalKeyring) -> None:
    path = keyring.path
    assert path.stat().st_mode & 0o777 == 0o600
    keyring.rotate(AT)
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    with pytest.raises(KeyringError, match="never overwritten"):
        LocalKeyring.create(path, AT)


def test_keyring_rotation_persists_and_keeps_old_keys(keyring: LocalKeyring) -> None:
    first = keyring.current_kek_id()
    wrapped = keyring.wrap(first, bytes(32))
    second = keyring.rotate(AT + timedelta(days=1))
    assert second != first and second.startswith("kek-") and len(second) == 12
    reloaded = LocalKeyring(keyring.path)
    assert reloaded.current_kek_id() == second and reloaded.kek_ids() == [first, second]
    assert reloaded.unwrap(first, wrapped) == bytes(32)
    with pytest.raises(KeyringError):
        reloaded.unwrap(second, wrapped)
    with pytest.raises(KeyringError):
        reloaded.wrap("kek-00000000", bytes(32))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_keyring_readable_by_others_is_refused(keyring: LocalKeyring, mode: int) -> None:
    keyring.path.chmod(mode)
    with pytest.raises(KeyringError, match="chmod 600"):
        LocalKeyring(keyring.path)


def _rewritten(keyring: LocalKeyring, change: dict[str, Any]) -> Path:
    document = _document(keyring) | change
    keyring.path.write_text(json.dumps(document))
    return keyring.path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"keys": []}, "keys"),
        ({"current": "kek-ffffffff"}, "current key"),
        ({"version": 2}, "version"),
        ({"spare": 1}, "spare"),
    ],
)
def test_a_malformed_keyring_is_refused(keyring: LocalKeyring, change: dict[str, Any], message: str) -> None:
    with pytest.raises(KeyringError, match=message):
        LocalKeyring(_rewritten(keyring, change))


def test_keyring_load_errors(keyring: LocalKeyring, tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="no keyring"):
        LocalKeyring(tmp_path / "absent.json")
    keyring.path.write_text("{not json")
    with pytest.raises(KeyringError, match="not a valid keyring"):
        LocalKeyring(keyring.path)


@pytest.mark.parametrize(
    "key", [base64.b64encode(bytes(16)).decode(), "not base64!", base64.b64encode(bytes(33)).decode()]
)
def test_a_key_of_the_wrong_size_is_refused_without_showing_it(keyring: LocalKeyring, key: str) -> None:
    document = _document(keyring)
    document["keys"][0]["key"] = key
    with pytest.raises(KeyringError) as caught:
        LocalKeyring(_rewritten(keyring, document))
    assert key not in str(caught.value)


def test_a_repeated_kek_id_is_refused(keyring: LocalKeyring) -> None:
    document = _document(keyring)
    with pytest.raises(KeyringError, match="repeats"):
        LocalKeyring(_rewritten(keyring, {"keys": document["keys"] * 2}))


def test_keyring_repr_shows_no_key_material(keyring: LocalKeyring, tmp_path: Path) -> None:
    keyring.rotate(AT)
    keys = [base64.b64decode(entry["key"]) for entry in _document(keyring)["keys"]]
    shown = f"{keyring!r} {keyring!s} {LocalKeyring(keyring.path)!r}"
    assert keyring.current_kek_id() in shown
    for key in keys:
        for form in (base64.b64encode(key).decode(), key.hex(), key.hex().upper(), repr(key)[2:-1]):
            assert form[:12] not in shown
    store = MemoryDataKeys()
    Sealer(keyring, store, Clock()).seal(SECRET, CONTEXT)
    row = store.current()
    assert row is not None and row.wrapped.hex()[:12] not in repr(row)
