"""A full disk answers 503 `storage_full`, writes nothing of the refused call, and passes.

Two real ways of running out of space, each under a whole stack on loopback over mutual TLS:

- `filesystem`: the gateway's folder is a small tmpfs (mounting one needs root, which the
  development and CI machines have; elsewhere this case is skipped), filled to the last byte
  with a file of its own, so SQLite's next write fails with ENOSPC, reported as SQLITE_FULL.
- `database`: SQLite's `PRAGMA max_page_count` holds the database at its current size, so the
  next page it needs is refused with the same SQLITE_FULL ("database or disk is full") a full
  disk gives — the same error code, reported through the same path.

Either way the call fails whole (its transaction rolls back, the audit log keeps no half of
it), the answer is a problem detail that says why, and once space is free again the same
call succeeds and the log still verifies.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event

from gateway.api import gateway_services
from tests.stack import HTTP, LEGAL_BASIS, PURPOSE, Stack, start_stack

pytestmark = pytest.mark.integration

ATTEMPTS = 60  # calls until the database needs a page it cannot have (a few suffice)


@contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[None]:
    """A tmpfs of `size` mounted at `folder` for the block; skips the test where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Write a file into `folder` until its filesystem has not one byte left; returns the file."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as handle:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    handle.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def gateway_engine(stack: Stack) -> Engine:
    return gateway_services(stack.servers[-1].app).audit.engine


@contextmanager
def page_limit(engine: Engine, *, but_audit_writer: bool = False) -> Iterator[None]:
    """No connection of `engine` may grow the database past its size when it is checked out;
    with `but_audit_writer`, except the audit writer's thread, so the log still takes entries
    and only the call's own transaction runs out of space."""

    def hold(dbapi_connection: sqlite3.Connection, _record: object, _proxy: object) -> None:
        spared = but_audit_writer and threading.current_thread().name == "audit-writer"  # audit_log/writer.py
        pages = 1 << 30 if spared else dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
        dbapi_connection.execute(f"PRAGMA max_page_count = {int(pages)}")

    event.listen(engine, "checkout", hold)
    try:
        yield
    finally:
        event.remove(engine, "checkout", hold)
        engine.dispose()  # the limit is a connection's: new ones start without it


def create(stack: Stack, token: str) -> httpx.Response:
    body = {"model": "housing_fund", "subject_count": 3, "purpose": PURPOSE, "legal_basis": LEGAL_BASIS}
    return HTTP.post(f"{stack.gateway_url}/v1/requests", json=body, headers={"authorization": f"Bearer {token}"})


def stored(database: Path) -> tuple[int, int, int]:
    """Requests, audit entries and the audit tail's size, as the database file holds them;
    checks the file's integrity and that the day's quota spent is the requests' subjects."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        requests = db.execute("SELECT COUNT(*), SUM(subject_count) FROM match_requests").fetchone()
        spent = db.execute("SELECT SUM(used) FROM quota_usage WHERE \"window\" LIKE 'day:%'").fetchone()[0]
        entries = db.execute("SELECT COUNT(*) FROM audit_entries").fetchone()[0]
        tail = db.execute("SELECT size FROM audit_tail").fetchone()[0]
    assert spent == requests[1]  # no quota spent on a request that was not stored
    return int(requests[0]), int(entries), int(tail)


def verification(stack: Stack) -> dict[str, Any]:
    auditor = stack.user_token(["security_auditor"], subject="auditor-330000-01", org="330000")
    response = HTTP.get(f"{stack.gateway_url}/v1/audit/verification", headers={"authorization": f"Bearer {auditor}"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def until_refused(stack: Stack, token: str) -> tuple[int, httpx.Response]:
    """Create requests until one is refused; returns how many were created first, and the refusal."""
    for created in range(ATTEMPTS):
        response = create(stack, token)
        if response.status_code != 201:
            return created, response
    raise AssertionError(f"{ATTEMPTS} requests created on a full disk")


@contextmanager
def full_filesystem(folder: Path) -> Iterator[None]:
    """`folder`'s filesystem full for the block: not one byte left for the database to grow into."""
    with sqlite3.connect(folder / "gateway.sqlite") as db:
        # An emptied write-ahead log, so the next commit needs new space, not the log's old pages.
        assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    filler = fill(folder)
    try:
        yield
    finally:
        filler.unlink()


@contextmanager
def no_storage(filling: str, stack: Stack, folder: Path) -> Iterator[None]:
    if filling == "filesystem":
        with full_filesystem(folder):
            yield
    else:
        with page_limit(gateway_engine(stack), but_audit_writer=filling == "request-transaction"):
            yield


@contextmanager
def gateway_folder(filling: str, folder: Path) -> Iterator[None]:
    """The gateway's folder: on a small tmpfs of its own when the filesystem is what fills up."""
    if filling == "filesystem":
        with tmpfs(folder, "24m"):
            yield
    else:
        yield


@pytest.mark.parametrize("filling", ["filesystem", "database", "request-transaction"])
def test_a_full_disk_is_503_storage_full_and_writes_nothing(filling: str, tmp_path: Path, generated: Path) -> None:
    folder = tmp_path / "gateway"  # where start_stack puts the gateway's database
    with gateway_folder(filling, folder):
        stack = start_stack(tmp_path)
        try:
            stack.publish(generated, connectors=("housing_fund",))
            token = stack.user_token(["prosecutor"])
            assert create(stack, token).status_code == 201
            with no_storage(filling, stack, folder):
                created, refused = until_refused(stack, token)
                assert refused.status_code == 503, refused.text
                assert refused.headers["content-type"] == "application/problem+json"
                assert refused.json()["code"] == "storage_full" and int(refused.headers["retry-after"]) > 0
                requests, entries, tail = stored(folder / "gateway.sqlite")
                assert requests == 1 + created  # the refused call left no request behind …
                assert entries == tail  # … and no entry beyond the log's tail
            assert create(stack, token).status_code == 201  # space again: the same call goes through
            assert stored(folder / "gateway.sqlite")[0] == 2 + created
            report = verification(stack)
            assert report["ok"] and report["entries"] > entries, report
        finally:
            stack.stop()


def test_the_filler_leaves_no_byte(tmp_path: Path) -> None:
    """`fill` really exhausts a filesystem (checked on a tiny tmpfs of its own)."""
    with tmpfs(tmp_path / "tiny", "256k"):
        fill(tmp_path / "tiny")
        assert os.statvfs(tmp_path / "tiny").f_bavail == 0
