"""A gateway database as the release before migrations left it, with data in it.

That release made its schema at run time: `make_engine` ran `SQLModel.metadata.create_all`,
the policy store's Casbin adapter created `casbin_rule`, and `AuditLog(engine)` ran
`install_append_only` (the log's tables, triggers and tail). This module makes that schema,
then writes what a running gateway writes: audit entries with signed checkpoints, a quota, a
connector epoch, an organisation, an alarm.

It builds that schema with the first revision (`gateway/migrations/versions/0001_initial_schema.py`,
which is that release's schema exactly, triggers and tail included) and then removes what
only migrations add (`alembic_version`), so it stays that release's schema as later
revisions change the models.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import Engine, create_engine, text
from sqlmodel import Session

from audit_log.entries import AuditEvent, EventKind
from audit_log.note import Signer, generate_signer
from audit_log.store import AuditLog
from audit_log.writer import AuditWriter, CheckpointSigner
from gateway import schema
from gateway.authz.store import OrgRecord
from gateway.db import Alarm, ConnectorEpoch, QuotaUsage

AT = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
LOG_KEY: Signer = generate_signer("xiezhi.test/previous-release")
ENTRIES = 300  # enough for a stored level-8 node


@dataclass(frozen=True)
class Written:
    entries: int
    checkpoints: int


def create_previous_release(database_url: str) -> Written:
    """Create the previous release's schema at `database_url` and fill it; returns what was written."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(schema._config(connection), schema.BASELINE)
            connection.execute(text("DROP TABLE alembic_version"))
        return _fill(engine)
    finally:
        engine.dispose()


def _fill(engine: Engine) -> Written:
    log = AuditLog.existing(engine)
    writer = AuditWriter(log, CheckpointSigner(log, LOG_KEY, lambda: AT), every_entries=100, every_seconds=3600)
    for n in range(ENTRIES):
        writer.append(_event(n))
    writer.close()  # signs a last checkpoint
    with Session(engine) as session:
        session.add(QuotaUsage(user="prosecutor-1", window="day:2026-11-30", used=42))
        session.add(ConnectorEpoch(connector="court", epoch=1, public_key=b"\x01" * 32, active=True, activated_at=AT))
        session.add(OrgRecord(code="330803", name="越城区人民检察院", parent="330800"))
        session.add(
            Alarm(id="a-1", kind="witness_refusal", source="court", reason="stale", message="1 checkpoint",
                  raised_at=AT, last_at=AT)
        )  # fmt: skip
        session.commit()
    return Written(ENTRIES, len(log.checkpoints()))


def _event(n: int) -> AuditEvent:
    return AuditEvent(
        kind=EventKind.LOOKUP,
        at=AT + timedelta(seconds=n),
        actor="prosecutor-1",
        org="330803",
        request_id=f"r-{n % 7}",
        action="lookup",
        outcome="ok",
        model="asset_sweep",
        detail={"rows": n},
    )
