"""gateway.storage: the database errors that become 503s, from real SQLite failures and psycopg's classes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from psycopg import errors as pg
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from audit_log import AuditUnavailable
from gateway import storage


def _full_database_error(path: Path) -> DBAPIError:
    """What SQLAlchemy raises when SQLite's database is full (held at its page count)."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (x BLOB)"))
        with engine.begin() as connection:
            pages = connection.execute(text("PRAGMA page_count")).scalar_one()
            connection.execute(text(f"PRAGMA max_page_count = {pages}"))
            with pytest.raises(OperationalError) as full:
                for _ in range(100):
                    connection.execute(text("INSERT INTO t VALUES (zeroblob(4096))"))
        return full.value
    finally:
        engine.dispose()


def test_a_full_sqlite_database_is_storage_full(tmp_path: Path) -> None:
    error = _full_database_error(tmp_path / "full.sqlite")
    assert isinstance(error.orig, sqlite3.OperationalError) and "full" in str(error.orig)
    unavailable = storage.translate(error)
    assert unavailable is not None and (unavailable.status, unavailable.code) == (503, "storage_full")


def test_an_audit_append_that_failed_on_a_full_disk_says_so(tmp_path: Path) -> None:
    refused = AuditUnavailable("the audit log could not record this action")
    refused.__cause__ = _full_database_error(tmp_path / "full.sqlite")  # as audit_log.writer chains it
    unavailable = storage.translate(refused)
    assert unavailable is not None and unavailable.code == "storage_full"
    assert storage.translate(AuditUnavailable("the audit log is closed")) is None


def test_postgresql_disk_full_is_storage_full() -> None:
    error = OperationalError("INSERT …", {}, pg.DiskFull("could not extend file"))
    unavailable = storage.translate(error)
    assert unavailable is not None and unavailable.code == "storage_full"


def test_a_locked_sqlite_database_is_busy(tmp_path: Path) -> None:
    path = tmp_path / "busy.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")  # holds the write lock
    try:
        engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
        with pytest.raises(OperationalError) as locked, engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (1)"))
        engine.dispose()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    unavailable = storage.translate(locked.value)
    assert unavailable is not None and (unavailable.status, unavailable.code) == (503, "database_busy")


def test_other_database_errors_stay_internal(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.sqlite'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x PRIMARY KEY)"))
        connection.execute(text("INSERT INTO t VALUES (1)"))
    with pytest.raises(IntegrityError) as duplicate, engine.begin() as connection:
        connection.execute(text("INSERT INTO t VALUES (1)"))
    engine.dispose()
    assert storage.translate(duplicate.value) is None
    assert storage.translate(OperationalError("SELECT …", {}, pg.UndefinedTable("no such table"))) is None
    assert storage.translate(ValueError("full")) is None
