"""Append-only audit storage on SQLModel.

The table refuses UPDATE and DELETE at the database (triggers), so neither a bug nor an
operator with SQL access can quietly rewrite history. `append` takes the caller's session
so an entry commits in the same transaction as the state change it records: no audit, no
answer.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, text
from sqlmodel import Field, Session, SQLModel, select

from audit_log.entries import AuditEvent, canonical_entry, leaf_hash


class AuditRecord(SQLModel, table=True):
    __tablename__ = "audit_entries"

    seq: int | None = Field(default=None, primary_key=True)
    recorded_at: datetime
    kind: str = Field(index=True)
    request_id: str | None = Field(default=None, index=True)
    entry: bytes
    leaf_hash: bytes


_TRIGGERS = {
    "sqlite": [
        "CREATE TRIGGER IF NOT EXISTS audit_entries_no_update BEFORE UPDATE ON audit_entries "
        "BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END",
        "CREATE TRIGGER IF NOT EXISTS audit_entries_no_delete BEFORE DELETE ON audit_entries "
        "BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END",
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION audit_entries_refuse() RETURNS trigger AS $$ "
        "BEGIN RAISE EXCEPTION 'audit log is append-only'; END $$ LANGUAGE plpgsql",
        "CREATE OR REPLACE TRIGGER audit_entries_no_change BEFORE UPDATE OR DELETE "
        "ON audit_entries FOR EACH ROW EXECUTE FUNCTION audit_entries_refuse()",
    ],
}


def install_append_only(engine: Engine) -> None:
    """Create the triggers that make `audit_entries` refuse UPDATE and DELETE."""
    statements = _TRIGGERS.get(engine.dialect.name)
    if statements is None:
        raise RuntimeError(f"no append-only triggers for dialect {engine.dialect.name}")
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))


class AuditLog:
    """Appends events; reads them back in order."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        install_append_only(engine)

    def append(self, session: Session, audit_event: AuditEvent) -> AuditRecord:
        """Stage `audit_event` in `session`; it is durable when the session commits."""
        entry = canonical_entry(audit_event)
        record = AuditRecord(
            recorded_at=audit_event.at,
            kind=audit_event.kind.value,
            request_id=audit_event.request_id,
            entry=entry,
            leaf_hash=leaf_hash(entry),
        )
        session.add(record)
        return record

    def append_now(self, audit_event: AuditEvent) -> None:
        """Append and commit in a transaction of its own (for refusals, which change nothing else)."""
        with Session(self._engine) as session:
            self.append(session, audit_event)
            session.commit()

    def entries(self, request_id: str | None = None) -> list[AuditRecord]:
        with Session(self._engine) as session:
            query = select(AuditRecord).order_by(AuditRecord.seq)  # type: ignore[arg-type]
            if request_id is not None:
                query = query.where(AuditRecord.request_id == request_id)
            return list(session.exec(query))


__all__ = ["AuditLog", "AuditRecord", "install_append_only"]
