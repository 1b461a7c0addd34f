"""Envelope encryption at rest: AES-256-GCM under data keys (DEKs) wrapped by a `KeyProvider`'s KEKs.

A sealed blob names the data key that sealed it and binds a context as associated data:

    b"XZS" | version (1 byte) | len(dek_id) (1 byte) | dek_id (ASCII) | nonce (12) | ciphertext+tag
    \\_______________________ header ________________________/
    associated data = header || canonical JSON of the context (sorted keys, compact, UTF-8)

so a blob copied to another row, request or table does not open. Data keys are stored only
wrapped (`DataKeyStore`); the one unretired key seals, every stored key opens. After the
provider rotates its KEK, `rewrap` moves data keys to it in batches while sealing goes on.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, LargeBinary, RowMapping, false, func, insert, select, update
from sqlmodel import Column, Field, SQLModel

from gateway.keyring import KeyProvider, KeyringError
from xiezhi import crypto
from xiezhi.errors import InvalidInput, XiezhiError

MAGIC = b"XZS"
VERSION = 1
_PREFIX = len(MAGIC) + 2  # magic, version, id length
_NONCE, _TAG = crypto.GCM_NONCE_BYTES, 16
_OPAQUE = "sealed data could not be opened"


class SealError(XiezhiError):
    """A blob did not open: wrong context, tampered or truncated bytes, unknown key or version.

    Every cause folds into this one error and one message on purpose: no bytes, no context
    values, and nothing about which check failed."""

    code = "seal_error"


@dataclass(frozen=True)
class StoredKey:
    """A data key as stored: only wrapped, under the provider's KEK `kek_id`. Retired keys open, never seal."""

    id: str
    kek_id: str
    wrapped: bytes = field(repr=False)
    created_at: datetime
    retired: bool = False


class DataKeyStore(Protocol):
    """Where wrapped data keys live. Implementations are safe to share between threads."""

    def add_current(self, key: StoredKey) -> None:
        """Store `key` and retire every other key, in one transaction."""

    def current(self) -> StoredKey | None:
        """The newest unretired key, or None before the first."""

    def get(self, key_id: str) -> StoredKey | None: ...

    def not_under(self, kek_id: str, limit: int) -> list[StoredKey]:
        """Up to `limit` keys wrapped under a KEK other than `kek_id`."""

    def set_wrapping(self, key_id: str, was_kek_id: str, kek_id: str, wrapped: bytes) -> bool:
        """Replace a key's wrapping if it is still under `was_kek_id`; True if it changed."""

    def count(self, not_under: str | None = None) -> int:
        """How many keys are stored; with `not_under`, how many are wrapped under another KEK."""


class SealingDataKey(SQLModel, table=True):
    __tablename__ = "sealing_data_keys"

    id: str = Field(primary_key=True)
    kek_id: str = Field(index=True)
    wrapped: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime
    retired: bool = False


_TABLE = SealingDataKey.__table__  # type: ignore[attr-defined]


class SqlDataKeys:
    """DataKeyStore over the `sealing_data_keys` table (the migrations make it, `gateway.schema`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add_current(self, key: StoredKey) -> None:
        with self._engine.begin() as connection:
            connection.execute(update(_TABLE).where(_TABLE.c.retired == false()).values(retired=True))
            connection.execute(insert(_TABLE).values(**vars(key)))

    def current(self) -> StoredKey | None:
        newest = _TABLE.c.created_at.desc(), _TABLE.c.id.desc()
        return self._first(select(_TABLE).where(_TABLE.c.retired == false()).order_by(*newest).limit(1))

    def get(self, key_id: str) -> StoredKey | None:
        return self._first(select(_TABLE).where(_TABLE.c.id == key_id))

    def not_under(self, kek_id: str, limit: int) -> list[StoredKey]:
        query = select(_TABLE).where(_TABLE.c.kek_id != kek_id).order_by(_TABLE.c.id).limit(limit)
        with self._engine.connect() as connection:
            return [_stored(row._mapping) for row in connection.execute(query)]

    def set_wrapping(self, key_id: str, was_kek_id: str, kek_id: str, wrapped: bytes) -> bool:
        where = (_TABLE.c.id == key_id) & (_TABLE.c.kek_id == was_kek_id)
        with self._engine.begin() as connection:
            return connection.execute(update(_TABLE).where(where).values(kek_id=kek_id, wrapped=wrapped)).rowcount == 1

    def count(self, not_under: str | None = None) -> int:
        query = select(func.count()).select_from(_TABLE)
        if not_under is not None:
            query = query.where(_TABLE.c.kek_id != not_under)
        with self._engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def _first(self, query: Any) -> StoredKey | None:
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else _stored(row._mapping)


def _stored(row: RowMapping) -> StoredKey:
    created = row["created_at"]  # SQLite hands datetimes back without their zone; the clock's is UTC
    created = created.replace(tzinfo=UTC) if created.tzinfo is None else created
    return StoredKey(row["id"], row["kek_id"], bytes(row["wrapped"]), created, bool(row["retired"]))


class MemoryDataKeys:
    """DataKeyStore in a dict, for unit tests and tools that need no database."""

    def __init__(self) -> None:
        self._keys: dict[str, StoredKey] = {}
        self._lock = threading.Lock()

    def add_current(self, key: StoredKey) -> None:
        with self._lock:
            self._keys = {i: replace(k, retired=True) for i, k in self._keys.items()} | {key.id: key}

    def current(self) -> StoredKey | None:
        with self._lock:
            live = [k for k in self._keys.values() if not k.retired]
        return max(live, key=lambda k: (k.created_at, k.id), default=None)

    def get(self, key_id: str) -> StoredKey | None:
        return self._keys.get(key_id)

    def not_under(self, kek_id: str, limit: int) -> list[StoredKey]:
        with self._lock:
            return sorted((k for k in self._keys.values() if k.kek_id != kek_id), key=lambda k: k.id)[:limit]

    def set_wrapping(self, key_id: str, was_kek_id: str, kek_id: str, wrapped: bytes) -> bool:
        with self._lock:
            key = self._keys.get(key_id)
            if key is None or key.kek_id != was_kek_id:
                return False
            self._keys[key_id] = replace(key, kek_id=kek_id, wrapped=wrapped)
            return True

    def count(self, not_under: str | None = None) -> int:
        with self._lock:
            return sum(1 for k in self._keys.values() if not_under is None or k.kek_id != not_under)


def canonical_context(context: Mapping[str, str]) -> bytes:
    """The context as compact JSON with sorted keys, UTF-8: `{"connector":"court","table":"results"}`."""
    return json.dumps(dict(context), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _header(key_id: str) -> bytes:
    encoded = key_id.encode("ascii")
    return MAGIC + bytes([VERSION, len(encoded)]) + encoded


def _split(blob: bytes) -> tuple[bytes, str, bytes, memoryview]:
    """(header, dek id, nonce, a view of ciphertext+tag: no copy) of a blob. Raises SealError if not one."""
    end = _PREFIX + (blob[_PREFIX - 1] if len(blob) >= _PREFIX else 0)
    if end == _PREFIX or len(blob) < end + _NONCE + _TAG or not blob.startswith(MAGIC + bytes([VERSION])):
        raise SealError(_OPAQUE)
    try:
        key_id = blob[_PREFIX:end].decode("ascii")
    except UnicodeDecodeError:
        raise SealError(_OPAQUE) from None
    return blob[:end], key_id, blob[end : end + _NONCE], memoryview(blob)[end + _NONCE :]


class Sealer:
    """Seals and opens blobs under the store's data keys. Thread-safe; share one per process.

    Unwrapped data keys stay in memory only (the `cache_size` most recently used), never
    logged. The current key is re-read every `current_ttl`, so another process's rotation
    reaches this one within that time."""

    def __init__(
        self,
        provider: KeyProvider,
        store: DataKeyStore,
        clock: Callable[[], datetime],
        *,
        cache_size: int = 1024,
        current_ttl: timedelta = timedelta(seconds=60),
    ) -> None:
        self._provider, self._store, self._clock = provider, store, clock
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_size, self._ttl = cache_size, current_ttl
        self._current: tuple[str, datetime] | None = None  # (dek id, re-read after)
        self._lock = threading.Lock()

    def seal(self, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        """Encrypt `plaintext` bound to `context` under the current data key (made on first use).

        Raises InvalidInput for an empty context (a blob bound to nothing could go anywhere)
        and what the provider raises if a new data key cannot be wrapped."""
        if not context:
            raise InvalidInput("sealing needs a context naming where the data belongs")
        key_id = self._current_key_id()
        header, nonce = _header(key_id), os.urandom(_NONCE)
        sealed = crypto.aes256gcm_seal(self._data_key(key_id), nonce, plaintext, header + canonical_context(context))
        return header + nonce + sealed

    def open(self, blob: bytes, context: Mapping[str, str]) -> bytes:
        """The plaintext `seal` was given with this same `context`.

        Raises SealError if the blob is malformed, truncated, tampered with, of an unknown
        version or data key, or sealed with another context. A provider that cannot be
        reached raises its own `Unavailable`, deliberately not folded in (it is retryable)."""
        header, key_id, nonce, sealed = _split(blob)
        try:
            return crypto.aes256gcm_open(self._data_key(key_id), nonce, sealed, header + canonical_context(context))
        except (crypto.CryptoError, KeyringError):
            raise SealError(_OPAQUE) from None

    @staticmethod
    def blob_key_id(blob: bytes) -> str:
        """The id of the data key that sealed `blob`, for re-sealing jobs. Raises SealError if malformed.

        NOTE: read from the header without authenticating it; only `open` proves it."""
        return _split(blob)[1]

    @property
    def provider(self) -> KeyProvider:
        return self._provider

    @property
    def store(self) -> DataKeyStore:
        return self._store

    def current_data_key_id(self) -> str | None:
        """The id of the data key new seals use, or None before the first seal."""
        row = self._store.current()
        return None if row is None else row.id

    def rotate_data_key(self) -> str:
        """Make a new current data key and return its id. New seals use it; older blobs still open."""
        return self._new_data_key()

    def rewrap(self, limit: int) -> int:
        """Rewrap up to `limit` stored data keys not under the provider's current KEK; return how many.

        Call again until it returns 0. Idempotent and safe beside `seal`, `open` and other
        rewrappers: a row changes only if it still names the KEK it was read under, and the
        data key itself never changes. Raises InvalidInput for `limit` < 1 and SealError if a
        stored key does not unwrap (its KEK is gone or the row is damaged)."""
        if limit < 1:
            raise InvalidInput("rewrap needs a positive batch size")
        kek_id = self._provider.current_kek_id()
        done = 0
        for row in self._store.not_under(kek_id, limit):
            try:
                dek = self._provider.unwrap(row.kek_id, row.wrapped)
            except KeyringError:
                raise SealError("a stored data key could not be unwrapped", extensions={"key_id": row.id}) from None
            done += self._store.set_wrapping(row.id, row.kek_id, kek_id, self._provider.wrap(kek_id, dek))
        return done

    def _current_key_id(self) -> str:
        now = self._clock()
        with self._lock:
            if self._current is not None and now < self._current[1]:
                return self._current[0]
        row = self._store.current()
        if row is None:
            return self._new_data_key()
        with self._lock:
            self._current = (row.id, now + self._ttl)
        return row.id

    def _new_data_key(self) -> str:
        dek, kek_id = crypto.random_key(), self._provider.current_kek_id()
        row = StoredKey(_new_key_id(), kek_id, self._provider.wrap(kek_id, dek), self._clock())
        self._store.add_current(row)
        self._remember(row.id, dek)
        with self._lock:
            self._current = (row.id, self._clock() + self._ttl)
        return row.id

    def _data_key(self, key_id: str) -> bytes:
        """The unwrapped data key `key_id`. Raises SealError if unknown, KeyringError if it does not unwrap."""
        with self._lock:
            if key_id in self._cache:
                self._cache.move_to_end(key_id)
                return self._cache[key_id]
        row = self._store.get(key_id)
        if row is None:
            raise SealError(_OPAQUE)
        dek = self._provider.unwrap(row.kek_id, row.wrapped)
        self._remember(key_id, dek)
        return dek

    def _remember(self, key_id: str, dek: bytes) -> None:
        with self._lock:
            self._cache[key_id] = dek
            self._cache.move_to_end(key_id)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)


def _new_key_id() -> str:
    """A data key's id: 16 characters of base32 (letters and the digits 2–7). Hex could hold a
    run of 15 digits, which the audit log refuses as a possible ID number."""
    return "dek-" + base64.b32encode(os.urandom(10)).decode("ascii").lower()
