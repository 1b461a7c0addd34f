"""The relay-ticket signing keys, kept in the database so every gateway instance signs and
publishes the same set (table `ticket_keys`, revision 0003).

Each key is an Ed25519 key named by its RFC 7638 thumbprint (`xiezhi.jwks`). The public half
is stored in the clear and served as the JWK Set at /.well-known/jwks.json; the private half
is sealed under the current data key (`gateway.sealing`, context naming the table and kid),
so the database alone signs nothing.

The current key is the newest one not superseded (newest `created_at`, then the greatest
kid), so every instance that reads the table agrees on it. Changes are serialised across
instances (`gateway.db.serialise_changes`):
two instances starting at once on an empty table make one key, not two. A rotation
supersedes every unsuperseded key and inserts a new one in one transaction; the older keys
stay published until pruned, so a ticket signed just before verifies. Instances re-read the
table at most once per `reload_seconds`: a rotation by another instance or by
`xiezhi keys rotate-tickets` reaches them within that time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, func, insert, select, update

from gateway.db import TicketKey, serialise_changes
from gateway.sealing import Sealer
from xiezhi.crypto import SigningKey, ed25519_from_seed, ed25519_generate, ed25519_public, ed25519_seed
from xiezhi.errors import Conflict, NotFound, Unavailable
from xiezhi.jwks import TicketKeys, jwk_thumbprint, public_jwk

_TABLE = TicketKey.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class _Row:
    kid: str
    public_key: bytes
    sealed: bytes
    created_at: datetime
    superseded_at: datetime | None


class StoredTicketKeys:
    """The `ticket_keys` table: the keys that sign relay tickets and the set that verifies them.

    Thread-safe. Private keys are opened once per process and kept in memory only."""

    def __init__(
        self,
        engine: Engine,
        sealer: Sealer,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        reload_seconds: float = 1.0,
    ) -> None:
        self._engine = engine
        self._sealer = sealer
        self._clock = clock
        self._reload = timedelta(seconds=reload_seconds)
        self._lock = threading.RLock()
        self._checked_at: datetime | None = None
        self._rows: list[_Row] = []  # the current key first (if any), then the others newest first
        self._current: _Row | None = None
        self._opened: dict[str, SigningKey] = {}

    def ensure(self, now: datetime) -> str:
        """The current kid, creating the first key if the table has none."""
        with self._lock:
            return self._insert(ed25519_generate(), now, supersede=False)

    def rotate(self, now: datetime) -> str:
        """Create a key and make it current; the previous ones stay published. Returns the new kid."""
        with self._lock:
            return self._insert(ed25519_generate(), now, supersede=True)

    def current(self) -> tuple[str, SigningKey]:
        """The kid and key that sign tickets now; raises Unavailable if there is none.

        Raises SealError if the stored key does not open (another KEK, a changed row)."""
        with self._lock:
            self._refresh()
            row = self._signing_row()
            if row.kid not in self._opened:
                self._opened[row.kid] = ed25519_from_seed(self._sealer.open(row.sealed, _context(row.kid)))
            return row.kid, self._opened[row.kid]

    def kids(self) -> list[str]:
        """Every published kid: the current one first, then the others newest first."""
        with self._lock:
            self._refresh()
            return [row.kid for row in self._rows]

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The RFC 7517 JWK Set of every published key's public half, current first."""
        with self._lock:
            self._refresh()
            return {"keys": [public_jwk(row.public_key) for row in self._rows]}

    def retire(self, kid: str) -> None:
        """Stop publishing `kid` and delete its key. Refuses the current key (Conflict) and an
        unknown kid (NotFound)."""
        with self._lock:
            self._load()
            if kid not in {row.kid for row in self._rows}:
                raise NotFound("no ticket key has this kid", code="unknown_ticket_key")
            if self._current is not None and kid == self._current.kid:
                raise Conflict("the current ticket key cannot be retired; rotate first", code="ticket_key_current")
            self._delete([kid])

    def prune(self, superseded_before: datetime) -> list[str]:
        """Drop every key superseded at or before `superseded_before` (so all its tickets have
        expired if that is now minus the ticket lifetime), never the current one; returns their kids."""
        with self._lock:
            self._load()
            old = [
                row.kid
                for row in self._rows
                if row is not self._current and row.superseded_at is not None and row.superseded_at <= superseded_before
            ]
            self._delete(old)
            return sorted(old)

    def adopt(self, folder: TicketKeys) -> list[str]:
        """Import the keys of a ticket key folder (an earlier release's `ticket_keys`) into an
        empty table, so tickets they signed keep verifying; returns the kids imported, none if
        the table already holds keys."""
        kept = folder.export()
        rows = [self._row(key, created_at, superseded_at) for _kid, key, created_at, superseded_at in kept]
        with self._lock:
            with self._engine.begin() as connection:
                serialise_changes(connection, _TABLE)
                if connection.execute(select(func.count()).select_from(_TABLE)).scalar_one():
                    rows = []
                for row in rows:
                    connection.execute(insert(_TABLE).values(**vars(row)))
            self._load()
            return [row.kid for row in rows]

    # ---- the table ------------------------------------------------------------------------

    def _row(self, key: SigningKey, created_at: datetime, superseded_at: datetime | None) -> _Row:
        public = ed25519_public(key)
        kid = jwk_thumbprint(public)
        return _Row(kid, public, self._sealer.seal(ed25519_seed(key), _context(kid)), created_at, superseded_at)

    def _insert(self, key: SigningKey, now: datetime, *, supersede: bool) -> str:
        """Make `key` current, superseding the others (`supersede`), or only if the table is
        empty (otherwise nothing changes). Returns the current kid."""
        row = self._row(key, now, None)
        with self._engine.begin() as connection:
            serialise_changes(connection, _TABLE)
            if supersede:
                unsuperseded = _TABLE.c.superseded_at.is_(None)
                connection.execute(update(_TABLE).where(unsuperseded).values(superseded_at=now))
            empty = supersede or not connection.execute(select(func.count()).select_from(_TABLE)).scalar_one()
            if empty:
                connection.execute(insert(_TABLE).values(**vars(row)))
        if empty:
            self._opened[row.kid] = key
        self._load()
        return self._signing_row().kid

    def _delete(self, kids: list[str]) -> None:
        if kids:
            with self._engine.begin() as connection:
                connection.execute(delete(_TABLE).where(_TABLE.c.kid.in_(kids)))
            for kid in kids:
                self._opened.pop(kid, None)
        self._load()

    def _signing_row(self) -> _Row:
        if self._current is None:
            raise Unavailable("the gateway has no ticket signing key", code="ticket_key_missing")
        return self._current

    def _refresh(self) -> None:
        """Re-read the table if the last read is older than the reload interval."""
        now = self._clock()
        if self._checked_at is not None and self._checked_at <= now < self._checked_at + self._reload:
            return
        self._load()

    def _load(self) -> None:
        with self._engine.connect() as connection:
            rows = [_Row(**row._mapping) for row in connection.execute(select(_TABLE))]
        self._current, self._rows = _ordered(rows)
        self._checked_at = self._clock()


def _ordered(rows: list[_Row]) -> tuple[_Row | None, list[_Row]]:
    """The current key (the newest unsuperseded one; none if every key is superseded, and
    then nothing signs until a rotation) and every key, the current one first, then newest first."""
    newest_first = sorted(rows, key=lambda row: (row.created_at, row.kid), reverse=True)
    current = next((row for row in newest_first if row.superseded_at is None), None)
    return current, sorted(newest_first, key=lambda row: row is not current)


def _context(kid: str) -> dict[str, str]:
    return {"table": "ticket_keys", "kid": kid}


__all__ = ["StoredTicketKeys"]
