"""Database failures a caller should wait out, recognised in one place.

A database out of space — SQLite's SQLITE_FULL ("database or disk is full", also what a
database at its `max_page_count` reports) or PostgreSQL's disk_full (SQLSTATE 53100) — is
`Unavailable` with code `storage_full` (503): the transaction that hit it rolled back, so
nothing of the call was written, and the same call succeeds once space is freed. A database
too busy to take the write in time (SQLite's SQLITE_BUSY or SQLITE_LOCKED after the busy
timeout) is `Unavailable` with code `database_busy`. Anything else is not this module's to
name: `translate` returns None and the error stays an internal one.

`gateway.app` calls `translate` for every database error a route lets through; the
exception's text is never shown or logged (it can quote a statement's parameters).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from xiezhi.errors import Unavailable

_DISK_FULL = "53100"  # PostgreSQL: class 53, insufficient resources; disk_full
_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def translate(exc: BaseException) -> Unavailable | None:
    """`Unavailable` (storage_full or database_busy) for a database that cannot take a write
    now, looking through SQLAlchemy's wrapper and the exception's causes; None otherwise."""
    for error in _chain(exc):
        if _is_full(error):
            return Unavailable("the gateway's storage is full; nothing of this call was saved", code="storage_full")
        if isinstance(error, sqlite3.OperationalError) and _sqlite_code(error) in _BUSY:
            return Unavailable("the gateway's database is busy; try again", code="database_busy")
    return None


def _is_full(error: BaseException) -> bool:
    if isinstance(error, sqlite3.Error):
        return _sqlite_code(error) == sqlite3.SQLITE_FULL
    return getattr(error, "sqlstate", None) == _DISK_FULL  # psycopg's errors.DiskFull


def _sqlite_code(error: sqlite3.Error) -> int | None:
    # Extended result codes (SQLITE_IOERR_…, SQLITE_BUSY_…) keep the primary code in the low byte.
    code = getattr(error, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, the DB-API error SQLAlchemy wrapped (`orig`), and their causes, each once."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        orig = getattr(error, "orig", None)
        pending += [orig if isinstance(orig, BaseException) else None, error.__cause__, error.__context__]


__all__ = ["translate"]
