from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DatabaseError
from sqlmodel import SQLModel

from audit_log import AuditEvent, AuditLog, EventKind, canonical_entry, leaf_hash
from audit_log.entries import UnsafeAuditEntry

AT = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)


def _event(**detail: str | int | bool | None) -> AuditEvent:
    return AuditEvent(
        kind=EventKind.LOOKUP,
        at=AT,
        actor="prosecutor-1",
        org="330803",
        request_id="r-1",
        action="lookup",
        outcome="ok",
        detail=detail,
    )


def _log(tmp_path: Path) -> tuple[AuditLog, object]:
    engine = create_engine(f"sqlite:///{tmp_path / 'a.sqlite'}")
    SQLModel.metadata.create_all(engine)
    return AuditLog(engine), engine


def test_entries_are_canonical_json_with_rfc9162_leaf_hash() -> None:
    entry = canonical_entry(_event(rows=3, clues=1))
    assert entry == json.dumps(json.loads(entry), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert leaf_hash(entry) == hashlib.sha256(b"\x00" + entry).digest()


@pytest.mark.parametrize("value", ["11010519491231002X", "prefix 130503670401001 suffix", "110105194912310021"])
def test_identifier_like_values_are_refused(value: str) -> None:
    with pytest.raises(UnsafeAuditEntry):
        canonical_entry(_event(note=value))


def test_log_refuses_update_and_delete_at_the_database(tmp_path: Path) -> None:
    log, engine = _log(tmp_path)
    log.append_now(_event(rows=1))
    log.append_now(_event(rows=2))
    assert [json.loads(r.entry)["detail"]["rows"] for r in log.entries()] == [1, 2]
    for statement in ("UPDATE audit_entries SET kind = 'x'", "DELETE FROM audit_entries"):
        with engine.begin() as connection, pytest.raises(DatabaseError, match="append-only"):  # type: ignore[attr-defined]
            connection.execute(text(statement))
    assert len(log.entries()) == 2
