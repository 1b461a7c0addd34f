"""Relay-ticket signing keys as JWK Sets, and a folder of Ed25519 ticket keys.

The gateway keeps its ticket keys in its database (`gateway.ticket_keys`); the folder below
is what releases before that kept, read once to move its keys into the database, and a
simple key set for tools and tests.

    <folder>/state.json   {"version": 1, "current": kid,
                           "keys": {kid: {"created_at": …, "superseded_at": … or null}}}
    <folder>/<kid>.key    the private key (PKCS#8 PEM, mode 0600)
    <folder>/<kid>.pub    its public key (PEM)

A key id is the key's RFC 7638 JWK thumbprint (base64url of SHA-256 over the canonical
{"crv","kty","x"} members), so ids are derived from keys, never invented. The public set is
an RFC 7517 JWK Set of RFC 8037 OKP/Ed25519 keys, served by the gateway at
/.well-known/jwks.json and read by connectors with `parse_jwks`.

Rotation makes a new key current and keeps the older ones published, so a ticket signed
just before a rotation still verifies. `prune` drops keys superseded long enough ago that
every ticket they signed has expired; the current key is never dropped. A rotation done by
another process (`xiezhi keys rotate-tickets`) reaches a running gateway because
`TicketKeys` re-reads the state file when it changed, checking at most once per
`reload_seconds`. Changes take an exclusive lock on `<folder>/.lock`.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from xiezhi.crypto import (
    SigningKey,
    VerifyKey,
    ed25519_public,
    ed25519_verify_key,
    generate_signing_key,
    load_private_key,
    public_path,
    sha256,
    write_secret,
)
from xiezhi.errors import Conflict, InvalidInput, NotFound, Unavailable, XiezhiError

STATE_FILE = "state.json"
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
_KID = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url of a SHA-256 digest


class TicketKeysError(XiezhiError):
    """The ticket key folder is malformed: a state file that does not parse, a key file
    missing or holding another key than its name says. Never names key bytes."""

    code = "ticket_keys_invalid"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url (RFC 7515 §2); raises ValueError for anything else."""
    if not _B64URL.match(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not unpadded base64url") from None


def jwk_thumbprint(public: bytes) -> str:
    """The RFC 7638 thumbprint of an Ed25519 public key (32 raw bytes): the key's kid."""
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": b64url(public)}, separators=(",", ":"), sort_keys=True)
    return b64url(sha256(canonical.encode("utf-8")))


def public_jwk(public: bytes) -> dict[str, str]:
    """The RFC 8037 JWK of an Ed25519 verification key, named by its thumbprint."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(public),
        "kid": jwk_thumbprint(public),
        "use": "sig",
        "alg": "EdDSA",
    }


# ---- reading a published set (the connector's side) -------------------------------------


def parse_jwks(data: object) -> dict[str, VerifyKey]:
    """The keys of a JWK Set by kid. Raises InvalidInput (code `jwks_invalid`) naming the key
    index and member of the first problem: an empty set, a key that is not a public
    OKP/Ed25519 signing key for EdDSA, a missing or repeated kid, a private member."""
    if not isinstance(data, dict):
        raise _invalid("the JWKS is not a JSON object")
    keys = data.get("keys")
    if not isinstance(keys, list):
        raise _invalid('the JWKS has no "keys" list')
    if not keys:
        raise _invalid('the JWKS "keys" list is empty: no key could verify a ticket')
    result: dict[str, VerifyKey] = {}
    for index, jwk in enumerate(keys):
        kid, key = _parse_jwk(jwk, f"keys[{index}]")
        if kid in result:
            raise _invalid(f"JWKS keys[{index}].kid repeats the kid of an earlier key")
        result[kid] = key
    return result


def _parse_jwk(jwk: object, where: str) -> tuple[str, VerifyKey]:
    if not isinstance(jwk, dict):
        raise _invalid(f"JWKS {where} is not a JSON object")
    if "d" in jwk:
        raise _invalid(f"JWKS {where}.d is present: a published set must hold public keys only")
    for member, required in (("kty", "OKP"), ("crv", "Ed25519")):
        if jwk.get(member) != required:
            raise _invalid(f'JWKS {where}.{member} must be "{required}"')
    for member, allowed in (("use", "sig"), ("alg", "EdDSA")):
        if member in jwk and jwk[member] != allowed:
            raise _invalid(f'JWKS {where}.{member} must be "{allowed}" when present')
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _invalid(f"JWKS {where}.kid is missing or empty")
    x = jwk.get("x")
    try:
        key = ed25519_verify_key(b64url_decode(x if isinstance(x, str) else ""))
    except ValueError:
        raise _invalid(f"JWKS {where}.x is not the base64url of a 32-byte Ed25519 public key") from None
    return kid, key


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, code="jwks_invalid")


# ---- the signing side (the gateway's folder) ----------------------------------------------


@dataclass(frozen=True)
class _Entry:
    key: SigningKey
    created_at: datetime
    superseded_at: datetime | None


class TicketKeys:
    """The ticket key folder, thread-safe; see the module docstring for its layout."""

    def __init__(
        self,
        folder: Path,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        reload_seconds: float = 1.0,
    ) -> None:
        self._folder = folder
        self._clock = clock
        self._reload = timedelta(seconds=reload_seconds)
        self._lock = threading.RLock()
        self._checked_at: datetime | None = None
        self._signature: tuple[int, int, int] | None = None
        self._current: str | None = None
        self._entries: dict[str, _Entry] = {}

    @property
    def folder(self) -> Path:
        return self._folder

    def ensure(self, now: datetime) -> str:
        """The current kid, creating the first key if the folder has none."""
        with self._changing():
            return self._current if self._current is not None else self._add(now)

    def rotate(self, now: datetime) -> str:
        """Create a key and make it current; the previous key stays published. Returns the new kid."""
        with self._changing():
            return self._add(now)

    def current(self) -> tuple[str, SigningKey]:
        """The kid and key that sign tickets now; raises Unavailable if there is none."""
        with self._lock:
            self._refresh()
            if self._current is None:
                raise Unavailable("the gateway has no ticket signing key", code="ticket_key_missing")
            return self._current, self._entries[self._current].key

    def kids(self) -> list[str]:
        """Every published kid: the current one first, then the others newest first."""
        with self._lock:
            self._refresh()
            return self._ordered()

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The RFC 7517 JWK Set of every published key's public half, current first."""
        with self._lock:
            self._refresh()
            return {"keys": [public_jwk(ed25519_public(self._entries[kid].key)) for kid in self._ordered()]}

    def export(self) -> list[tuple[str, SigningKey, datetime, datetime | None]]:
        """Every key with its kid, creation and supersession times, current first (for moving
        the folder's keys into the gateway's database)."""
        with self._lock:
            self._load()
            return [
                (kid, e.key, e.created_at, e.superseded_at) for kid in self._ordered() for e in [self._entries[kid]]
            ]

    def retire(self, kid: str) -> None:
        """Stop publishing `kid` and delete its key. Refuses the current key (Conflict) and an
        unknown kid (NotFound)."""
        with self._changing():
            if kid not in self._entries:
                raise NotFound("no ticket key has this kid", code="unknown_ticket_key")
            if kid == self._current:
                raise Conflict("the current ticket key cannot be retired; rotate first", code="ticket_key_current")
            self._drop([kid])

    def prune(self, superseded_before: datetime) -> list[str]:
        """Drop every key superseded at or before `superseded_before` (so all its tickets have
        expired if that is now minus the ticket lifetime); returns their kids."""
        with self._changing():
            old = [
                kid
                for kid, entry in self._entries.items()
                if kid != self._current and entry.superseded_at is not None and entry.superseded_at <= superseded_before
            ]
            self._drop(old)
            return sorted(old)

    # ---- state on disk --------------------------------------------------------------------

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Hold the thread lock and the folder's file lock, with the state freshly read."""
        with self._lock:
            self._folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self._folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._load()
                yield
            finally:
                os.close(fd)  # releases the lock

    def _refresh(self) -> None:
        """Re-read the state if another process changed it; look at most once per interval."""
        now = self._clock()
        if self._checked_at is not None and self._checked_at <= now < self._checked_at + self._reload:
            return
        self._checked_at = now
        if self._stat() != self._signature:
            self._load()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._folder / STATE_FILE)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> None:
        signature = self._stat()
        current, entries = (None, {}) if signature is None else self._read()
        self._current, self._entries, self._signature = current, entries, signature

    def _read(self) -> tuple[str | None, dict[str, _Entry]]:
        path = self._folder / STATE_FILE
        try:
            raw: Any = json.loads(path.read_text(encoding="utf-8"))
            current = raw["current"]
            listed = raw["keys"]
            if not isinstance(current, str) or not isinstance(listed, dict) or current not in listed:
                raise ValueError("the current kid is not among the keys")
            entries = {
                kid: _Entry(self._load_key(kid), _time(meta["created_at"]), _optional_time(meta.get("superseded_at")))
                for kid, meta in listed.items()
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TicketKeysError(
                f"ticket key folder {self._folder}: {path.name} or a key is unreadable ({exc})"
            ) from None
        return current, entries

    def _load_key(self, kid: str) -> SigningKey:
        if not _KID.match(kid):
            raise ValueError("a kid in the state file is not a JWK thumbprint")
        key = load_private_key(self._folder / f"{kid}.key")
        if jwk_thumbprint(ed25519_public(key)) != kid:
            raise ValueError(f"{kid}.key holds another key than its name says")
        return key

    def _write(self) -> None:
        state = {
            "version": 1,
            "current": self._current,
            "keys": {
                kid: {
                    "created_at": entry.created_at.isoformat(),
                    "superseded_at": entry.superseded_at.isoformat() if entry.superseded_at else None,
                }
                for kid, entry in self._entries.items()
            },
        }
        write_secret(self._folder / STATE_FILE, json.dumps(state, indent=2).encode("utf-8"))
        self._signature = self._stat()

    def _add(self, now: datetime) -> str:
        # The key file is in place before the state names it: a crash leaves an unused file,
        # never a state that names a missing key.
        pending = self._folder / f"pending-{uuid.uuid4().hex}.key"
        generate_signing_key(pending)
        key = load_private_key(pending)
        kid = jwk_thumbprint(ed25519_public(key))
        os.replace(pending, self._folder / f"{kid}.key")
        os.replace(public_path(pending), self._folder / f"{kid}.pub")
        if self._current is not None:
            old = self._entries[self._current]
            self._entries[self._current] = _Entry(old.key, old.created_at, now)
        self._entries[kid] = _Entry(key, now, None)
        self._current = kid
        self._write()
        return kid

    def _drop(self, kids: list[str]) -> None:
        # The state stops naming the keys before their files go.
        for kid in kids:
            del self._entries[kid]
        if kids:
            self._write()
        for kid in kids:
            (self._folder / f"{kid}.key").unlink(missing_ok=True)
            (self._folder / f"{kid}.pub").unlink(missing_ok=True)

    def _ordered(self) -> list[str]:
        others = sorted(
            (kid for kid in self._entries if kid != self._current),
            key=lambda kid: self._entries[kid].created_at,
            reverse=True,
        )
        return ([self._current] if self._current is not None else []) + others


def _optional_time(value: object) -> datetime | None:
    return None if value is None else _time(value)


def _time(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("a time in the state file is not a string")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("a time in the state file has no timezone")
    return moment
