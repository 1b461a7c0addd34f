"""The gateway's whole lifecycle on PostgreSQL 15, connected as the application's role.

The operator's steps, literally: `xiezhi gateway migrate` as the migration role (the owner),
then the gateway started with `database_url` naming the application's role, which owns
nothing. On it: indexes published by every connector, every supervision model run (approvals
given where the model needs them, quotas spent), each report equal to the plain SQL join of
the agency tables; the keys rotated while results stay readable; expired results deleted by
retention; and the whole audit log verified, its rows still refusing rewrites by that role.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, select

from audit_log.export import DatabaseSource
from audit_log.note import load_signer
from audit_log.store import AuditLog
from audit_log.verify import verify
from devkit.environment import REPO_ROOT, init_dev
from gateway.api import gateway_services
from gateway.db import MatchRequest, QuotaUsage, ResultBatch, make_engine
from gateway.settings import GatewaySettings
from requester.gateway_client import GatewayClient
from requester.job import MatchSummary, match_file
from requester.protocol import MatchSpec
from tests.agreement import assert_report_agrees, subjects_file
from tests.polling import wait_until
from tests.stack import (
    LEGAL_BASIS,
    PURPOSE,
    Clock,
    Stack,
    client_env,
    client_for,
    run_cli,
    session_pki,
    start_stack,
)
from tests.test_migrations import Roles, two_roles
from xiezhi.errors import Gone
from xiezhi.supervision import ModelCatalog, SupervisionModel

pytestmark = pytest.mark.integration

CATALOG = ModelCatalog.load(REPO_ROOT / "policies" / "models")


class PostgresStack:
    def __init__(self, stack: Stack, clock: Clock, roles: Roles, generated: Path, out: Path) -> None:
        self.stack, self.clock, self.roles, self.generated, self.out = stack, clock, roles, generated, out

    def run(self, model: SupervisionModel, name: str) -> MatchSummary:
        return match_file(
            self.stack.gateway_url,
            self.stack.user_token(["prosecutor"]),
            MatchSpec(model.id, PURPOSE, LEGAL_BASIS, batch_size=97),
            subjects_file(self.generated, model),
            self.out / f"{name}.csv",
            show_progress=False,
            workers=1,
            on_pending=self.stack.approver(),
        )

    def client(self, roles: list[str], **kwargs: object) -> GatewayClient:
        return self.stack.client(roles, **kwargs)

    def engine(self) -> Engine:
        """The database as the gateway sees it: the application's role."""
        return make_engine(self.roles.app_url)

    def entries(self, kind: str) -> list[dict[str, object]]:
        engine = self.engine()
        try:
            entries = [json.loads(r.entry) for r in AuditLog.existing(engine).entries()]
        finally:
            engine.dispose()
        return [e for e in entries if e["kind"] == kind]


@pytest.fixture(scope="module")
def on_postgres(postgres: str, generated: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresStack]:
    roles = two_roles(postgres)
    root = tmp_path_factory.mktemp("pg-stack")
    # The operator's migration, through the command, as the owner; the settings name the app's role.
    dev = init_dev(root, connectors={}, database_url=roles.app_url, pki=session_pki())
    migrated = run_cli("gateway", "migrate", "--config", str(dev.gateway_config), "--database-url", roles.owner_url)
    assert migrated.returncode == 0, migrated.stderr
    assert f"role {roles.app} granted rows only" in migrated.stdout
    clock = Clock(datetime.now(UTC))
    stack = start_stack(root, clock, database_url=roles.app_url)
    try:
        stack.publish(generated)
        yield PostgresStack(stack, clock, roles, generated, tmp_path_factory.mktemp("pg-reports"))
    finally:
        stack.stop()


def test_every_model_matches_the_reference_join_on_postgresql(on_postgres: PostgresStack) -> None:
    for model in CATALOG:
        summary = on_postgres.run(model, model.id)
        assert assert_report_agrees(on_postgres.generated, model, summary.report) > 0
    approvals_given = [e for e in on_postgres.entries("approval") if e["action"] == "approve"]
    engine = on_postgres.engine()
    with Session(engine) as session:
        requests = session.exec(select(MatchRequest)).all()
        quotas = session.exec(select(QuotaUsage)).all()
    engine.dispose()
    assert {r.model for r in requests} == {m.id for m in CATALOG}
    assert all(r.status == "completed" for r in requests), [r.status for r in requests]
    assert sum(q.used for q in quotas) >= sum(r.subject_count for r in requests)  # quotas spent, per window
    assert approvals_given, "the catalog has a model that needs a department head's approval"
    assert not (on_postgres.stack.root / "gateway" / "gateway.sqlite").exists()  # all state on PostgreSQL


def test_keys_rotate_and_retention_deletes_on_postgresql(on_postgres: PostgresStack) -> None:
    model = CATALOG.get("housing_fund")
    before = on_postgres.run(model, "before-rotation")
    assert before.request_id is not None
    old_result = on_postgres.client(["prosecutor"]).result(before.request_id)
    token_file = on_postgres.out / "security_admin.token"
    token_file.write_text(
        on_postgres.stack.user_token(["security_admin"], subject="security_admin-330000-01", org="330000"),
        encoding="utf-8",
    )
    rotated = run_cli(
        "keys", "rotate", "--gateway", on_postgres.stack.gateway_url, "--token-file", str(token_file),
        timeout=60, env=client_env(client_for(["security_admin"])),
    )  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr
    admin = on_postgres.client(["security_admin"], subject="security_admin-330000-01", org="330000")
    wait_until(lambda: admin.key_status().awaiting_rewrap == 0, "every data key rewrapped")
    assert on_postgres.client(["prosecutor"]).result(before.request_id) == old_result

    on_postgres.clock.advance(days=31)  # past the default 30-day retention
    try:
        assert gateway_services(on_postgres.stack.servers[-1].app).retention.sweep() >= 1
    finally:
        on_postgres.clock.advance(days=-31)
    with pytest.raises(Gone):
        on_postgres.client(["prosecutor"]).result(before.request_id)
    engine = on_postgres.engine()
    with Session(engine) as session:
        assert session.exec(select(ResultBatch).where(ResultBatch.request_id == before.request_id)).all() == []
    engine.dispose()
    assert [e for e in on_postgres.entries("result.deleted") if e["request_id"] == before.request_id]
    assert any(e["action"] == "rotate" for e in on_postgres.entries("key.rotation"))


def test_the_audit_log_verifies_and_refuses_the_application_role(on_postgres: PostgresStack) -> None:
    on_postgres.run(CATALOG.get("housing_fund"), "audited")
    settings = GatewaySettings.from_file(on_postgres.stack.dev.gateway_config)
    log_key = load_signer(settings.audit.signing_key).verifier()
    engine = on_postgres.engine()
    log = AuditLog.existing(engine)
    wait_until(lambda: log.latest_size() is not None, "a signed checkpoint")
    report = verify(DatabaseSource(log), log_key)
    assert report.ok, report.problems
    assert report.entries == log.size() > 0
    for statement in ("UPDATE audit_entries SET kind = 'x'", "DROP TRIGGER audit_entries_no_change ON audit_entries"):
        with engine.begin() as connection, pytest.raises(DBAPIError, match=r"permission denied|must be owner"):
            connection.execute(text(statement))
    engine.dispose()
