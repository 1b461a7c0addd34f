"""Key-encryption keys (KEKs): the `KeyProvider` interface and `LocalKeyring`, its file-backed provider.

Envelope encryption (`gateway.sealing`) keeps every data key wrapped by a KEK. Who holds the
KEKs is behind `KeyProvider`, so production can put them in a KMS or HSM and development and
CI can use `LocalKeyring`, a JSON file readable by its owner only:

    {"version": 1, "current": "kek-1a2b3c4d",
     "keys": [{"id": "kek-1a2b3c4d", "created_at": "2026-11-21T09:30:00Z", "key": "<base64>"}]}

Rotation adds a KEK and makes it current; the old ones stay so that data keys wrapped under
them still unwrap until `Sealer.rewrap` has moved them to the new one.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import stat
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from xiezhi import crypto
from xiezhi.errors import XiezhiError

KEK_ID_PATTERN = r"^kek-[0-9a-f]{8}$"


class KeyringError(XiezhiError):
    """A keyring file is missing, malformed or too widely readable, or a KEK id is unknown."""

    code = "keyring_error"


class KeyProvider(Protocol):
    """Holds key-encryption keys and wraps data keys under them; the interface a KMS or HSM adapter implements.

    An adapter maps each method onto its service and never lets key material out of it:
    `current_kek_id` names the key (a KMS key ARN or alias version, an HSM key label) that new
    data keys are wrapped under; `wrap` and `unwrap` are the KMS Encrypt and Decrypt calls (or
    the HSM's C_WrapKey / C_UnwrapKey, returning the unwrapped data key to the caller's memory
    only); `kek_ids` lists the keys still enabled for unwrapping. Rotation happens in the KMS;
    the adapter then reports the new id from `current_kek_id`.

    Contract: `wrap` and `unwrap` raise KeyringError for an unknown `kek_id` or wrapped bytes
    that do not unwrap under it; an adapter raises `Unavailable` when its service cannot be
    reached, so callers can tell "cannot open" from "try again".
    """

    def current_kek_id(self) -> str: ...

    def wrap(self, kek_id: str, dek: bytes) -> bytes: ...

    def unwrap(self, kek_id: str, wrapped: bytes) -> bytes: ...

    def kek_ids(self) -> list[str]: ...


@runtime_checkable
class RotatableKeyProvider(KeyProvider, Protocol):
    """A provider the gateway can rotate itself (`LocalKeyring`). A KMS rotates its own keys;
    its adapter then reports the new id from `current_kek_id`."""

    def rotate(self, now: datetime) -> str: ...


class _KekEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    id: str = Field(pattern=KEK_ID_PATTERN)
    created_at: datetime = Field(strict=False)
    key: SecretStr  # SecretStr so that no repr or validation error shows it


class _KeyringFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    version: Literal[1]
    current: str
    keys: list[_KekEntry] = Field(min_length=1)


class LocalKeyring:
    """A KeyProvider over a local JSON file (mode 0600) for development and CI; not for production.

    Thread-safe. Another process's `rotate` (the `xiezhi keys` command, another gateway
    instance) is picked up when the file changes: every call checks the file's modification
    time and size, at most once per `recheck_seconds`, and reloads it if they changed.
    """

    def __init__(self, path: Path, recheck_seconds: float = 1.0) -> None:
        """Load the keyring at `path`.

        Raises KeyringError if the file is missing, unreadable, readable by group or others,
        not valid keyring JSON, holds a key that is not 32 bytes of base64, repeats a KEK id,
        or names a current KEK it does not hold.
        """
        self._path = path
        self._lock = threading.Lock()
        self._recheck = recheck_seconds
        self._stamp = _stamp(path)
        self._checked = time.monotonic()
        self._current, self._entries = _load(path)

    @classmethod
    def create(cls, path: Path, now: datetime) -> LocalKeyring:
        """Write a new keyring with one fresh KEK at `path`. Raises KeyringError if `path` exists."""
        if path.exists():
            raise KeyringError(f"{path} exists; a keyring is never overwritten")
        entry = _new_entry(now, taken=set())
        _write(path, entry.id, [entry])
        return cls(path)

    def __repr__(self) -> str:
        return f"LocalKeyring(path={str(self._path)!r}, current={self._current!r}, kek_ids={self.kek_ids()!r})"

    @property
    def path(self) -> Path:
        return self._path

    def current_kek_id(self) -> str:
        self._refresh()
        return self._current

    def kek_ids(self) -> list[str]:
        self._refresh()
        return [entry.id for entry in self._entries]

    def wrap(self, kek_id: str, dek: bytes) -> bytes:
        """`dek` wrapped (RFC 3394) under KEK `kek_id`. Raises KeyringError for an unknown id or bad size."""
        try:
            return crypto.wrap_key(self._kek(kek_id), dek)
        except crypto.CryptoError:
            raise KeyringError("a data key could not be wrapped") from None

    def unwrap(self, kek_id: str, wrapped: bytes) -> bytes:
        """The data key in `wrapped`. Raises KeyringError for an unknown id or bytes that do not unwrap."""
        try:
            return crypto.unwrap_key(self._kek(kek_id), wrapped)
        except crypto.CryptoError:
            raise KeyringError("a data key could not be unwrapped") from None

    def rotate(self, now: datetime) -> str:
        """Add a fresh KEK, make it current and return its id; older KEKs stay for unwrapping.

        The file is rewritten atomically before the change is visible in memory, so a failed
        write leaves both as they were.
        """
        self._refresh(force=True)
        with self._lock:
            entry = _new_entry(now, taken={e.id for e in self._entries})
            entries = [*self._entries, entry]
            _write(self._path, entry.id, entries)
            self._entries, self._current = entries, entry.id
            self._stamp = _stamp(self._path)
        return entry.id

    def _refresh(self, force: bool = False) -> None:
        """Reload the file if another process changed it since it was read."""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._checked < self._recheck:
                return
            self._checked = now
            stamp = _stamp(self._path)
            if stamp == self._stamp:
                return
            self._current, self._entries = _load(self._path)
            self._stamp = stamp

    def _kek(self, kek_id: str) -> bytes:
        if kek_id not in {entry.id for entry in self._entries}:
            self._refresh(force=True)  # a KEK another process added since
        for entry in self._entries:
            if entry.id == kek_id:
                return _key_bytes(entry)
        raise KeyringError("unknown key-encryption key", extensions={"kek_id": kek_id})


def _stamp(path: Path) -> tuple[int, int, int]:
    """What changes when the file is replaced: inode, modification time, size."""
    try:
        info = path.stat()
    except OSError:
        return (0, 0, 0)
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def _new_entry(now: datetime, taken: set[str]) -> _KekEntry:
    kek_id = f"kek-{secrets.token_hex(4)}"
    while kek_id in taken:
        kek_id = f"kek-{secrets.token_hex(4)}"
    key = SecretStr(base64.b64encode(crypto.random_key()).decode("ascii"))
    return _KekEntry(id=kek_id, created_at=now, key=key)


def _key_bytes(entry: _KekEntry) -> bytes:
    return base64.b64decode(entry.key.get_secret_value(), validate=True)


def _parsed(path: Path) -> _KeyringFile:
    try:
        info = path.stat()
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyringError(f"{path} is accessible to group or others; run chmod 600 on it")
        return _KeyringFile.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise KeyringError(f"no keyring at {path}") from None
    except OSError as error:
        raise KeyringError(f"{path} cannot be read: {error.strerror}") from None
    except ValidationError as error:
        # Only locations and messages: the input values could be key material.
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in error.errors())
        raise KeyringError(f"{path} is not a valid keyring: {problems}") from None


def _load(path: Path) -> tuple[str, list[_KekEntry]]:
    parsed = _parsed(path)
    ids = [entry.id for entry in parsed.keys]
    if len(set(ids)) != len(ids):
        raise KeyringError(f"{path} repeats a key-encryption key id")
    if parsed.current not in ids:
        raise KeyringError(f"{path} names a current key it does not hold")
    for entry in parsed.keys:
        try:
            size = len(_key_bytes(entry))
        except binascii.Error:
            raise KeyringError(f"{path}: key {entry.id} is not base64") from None
        if size != crypto.AES256_KEY_BYTES:
            raise KeyringError(f"{path}: key {entry.id} is {size} bytes, not {crypto.AES256_KEY_BYTES}")
    return parsed.current, list(parsed.keys)


def _write(path: Path, current: str, entries: list[_KekEntry]) -> None:
    """Write the keyring atomically, owner-only. A unique temp file (mkstemp, created 0600) rather than
    `crypto.write_secret`'s fixed name, whose mode would be kept if a stale temp file already existed."""
    document = {
        "version": 1,
        "current": current,
        "keys": [{**e.model_dump(mode="json", exclude={"key"}), "key": e.key.get_secret_value()} for e in entries],
    }
    data = json.dumps(document, indent=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
