"""Keys that seal the gateway's data, on a running stack: rotation without downtime, retention.

`xiezhi keys rotate` (the real CLI, over mutual TLS) rotates the key-encryption key and the
data key while the gateway serves; results sealed before still open — on this instance and
on a second instance started afterwards — new runs match exactly as before, the background
rewrap moves every data key to the new KEK, and the audit log shows both steps. Then a
connector rotates its OPRF epoch: old results still open, a new run on the new epoch gives
the same report, and the log shows the key rotation and the epoch activation. Retention
deletes expired results, audits the deletion, and a read then answers 410.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from audit_log import AuditRecord
from devkit.environment import REPO_ROOT
from devkit.reference import read_report
from gateway.api import gateway_services
from gateway.app import create_app
from gateway.db import MatchRequest, ResultBatch, make_engine
from gateway.keyring import LocalKeyring
from gateway.sealing import Sealer
from gateway.settings import GatewaySettings
from requester.gateway_client import GatewayClient
from requester.job import MatchSummary, match_file
from requester.protocol import MatchSpec
from tests.agreement import subjects_file
from tests.polling import wait_until
from tests.stack import (
    LEGAL_BASIS,
    PURPOSE,
    Clock,
    LoopbackServer,
    Stack,
    client_env,
    client_for,
    run_cli,
    start_stack,
)
from xiezhi.errors import Gone
from xiezhi.supervision import ModelCatalog

pytestmark = pytest.mark.integration  # every test runs a stack

MODEL = ModelCatalog.load(REPO_ROOT / "policies" / "models").get("housing_fund")


@dataclass
class Live:
    stack: Stack
    clock: Clock
    generated: Path
    out: Path

    def run(self, name: str) -> MatchSummary:
        return match_file(
            self.stack.gateway_url,
            self.stack.user_token(["prosecutor"]),
            MatchSpec(MODEL.id, PURPOSE, LEGAL_BASIS, batch_size=97),
            subjects_file(self.generated, MODEL),
            self.out / f"{name}.csv",
            show_progress=False,
            workers=1,
            on_pending=self.stack.approver(),
        )

    def client(self, roles: list[str], **kwargs: object) -> GatewayClient:
        return self.stack.client(roles, **kwargs)

    def entries(self, kind: str) -> list[dict[str, Any]]:
        engine = make_engine(f"sqlite:///{self.stack.root / 'gateway' / 'gateway.sqlite'}")
        try:
            with Session(engine) as session:
                rows = [json.loads(r.entry) for r in session.exec(select(AuditRecord))]
        finally:
            engine.dispose()
        return [e for e in rows if e["kind"] == kind]

    def batches(self, request_id: str) -> list[bytes]:
        engine = make_engine(f"sqlite:///{self.stack.root / 'gateway' / 'gateway.sqlite'}")
        try:
            with Session(engine) as session:
                return [b.sealed for b in session.exec(select(ResultBatch).where(ResultBatch.request_id == request_id))]
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, generated: Path) -> Iterator[Live]:
    clock = Clock(datetime.now(UTC))
    stack = start_stack(tmp_path_factory.mktemp("keys"), clock)
    try:
        stack.publish(generated, connectors=("housing_fund",))
        yield Live(stack, clock, generated, tmp_path_factory.mktemp("reports"))
    finally:
        stack.stop()


def _xiezhi_keys(live: Live, *args: str, roles: str = "security_admin") -> subprocess.CompletedProcess[str]:
    token = live.stack.user_token([roles], subject=f"{roles}-330000-01", org="330000")
    token_file = live.out / f"{roles}.token"
    token_file.write_text(token, encoding="utf-8")
    # Over the certificate of the client system that carries the role (XIEZHI_TLS_*).
    return run_cli(
        "keys", *args, "--gateway", live.stack.gateway_url, "--token-file", str(token_file),
        timeout=60, env=client_env(client_for([roles])),
    )  # fmt: skip


def test_rotation_keeps_old_results_open_and_new_runs_matching(live: Live) -> None:
    before = live.run("before")
    assert before.request_id is not None and before.clues > 0
    old_result = live.client(["prosecutor"]).result(before.request_id)
    keyring = LocalKeyring(live.stack.dev.root / "keys" / "keyring.json")
    old_kek = keyring.current_kek_id()
    old_dek = Sealer.blob_key_id(live.batches(before.request_id)[0])

    rotated = _xiezhi_keys(live, "rotate")
    assert rotated.returncode == 0, rotated.stderr
    new_kek = LocalKeyring(keyring.path).current_kek_id()
    assert new_kek != old_kek and new_kek in rotated.stdout
    assert LocalKeyring(keyring.path).kek_ids() == [old_kek, new_kek]  # the old KEK still unwraps

    # The background rewrap moves every data key to the new KEK while the gateway serves.
    admin = live.client(["security_admin"], subject="security_admin-330000-01", org="330000")
    wait_until(lambda: admin.key_status().awaiting_rewrap == 0, "every data key rewrapped")
    status = admin.key_status()
    assert status.kek == new_kek and status.data_keys == 2 and status.data_key not in (None, old_dek)

    # Results sealed under the old data key still open, unchanged.
    assert live.client(["prosecutor"]).result(before.request_id) == old_result
    # New runs seal under the new data key and match exactly as before.
    after = live.run("after")
    assert read_report(after.report)[1] == read_report(before.report)[1]
    assert after.request_id is not None
    assert {Sealer.blob_key_id(b) for b in live.batches(after.request_id)} == {status.data_key}

    # A second gateway instance, started after the rotation, opens both.
    settings = GatewaySettings.from_file(live.stack.dev.gateway_config)
    second = LoopbackServer(create_app(settings, live.clock), settings.tls).start()
    try:
        client = GatewayClient(second.url, live.stack.user_token(["prosecutor"]))
        assert client.result(before.request_id) == old_result
        assert client.result(after.request_id).rows == live.client(["prosecutor"]).result(after.request_id).rows
    finally:
        second.stop()

    # Then the connector rotates its OPRF key: a new epoch, its index published and activated.
    (report,) = live.stack.publish(live.generated, ("housing_fund",), rotate=True)
    assert report.built.epoch == 2
    assert live.client(["prosecutor"]).result(before.request_id) == old_result
    assert live.client(["prosecutor"]).result(after.request_id).rows == old_result.rows
    epoch_two = live.run("epoch-2")
    assert read_report(epoch_two.report)[1] == read_report(before.report)[1]
    activated = [e for e in live.entries("epoch.activated") if e["connector"] == "housing_fund"]
    assert [e["detail"]["epoch"] for e in activated] == [1, 2]

    rotations = live.entries("key.rotation")
    rotate = [e for e in rotations if e["action"] == "rotate"]
    assert len(rotate) == 1 and rotate[0]["actor"] == "security_admin-330000-01"
    assert rotate[0]["detail"]["kek"] == new_kek and rotate[0]["detail"]["previous_kek"] == old_kek
    assert rotate[0]["detail"]["previous_data_key"] == old_dek
    rewraps = [e for e in rotations if e["action"] == "rewrap"]
    assert rewraps and sum(e["detail"]["rewrapped"] for e in rewraps) >= 1
    assert all(e["detail"]["kek"] == new_kek for e in rewraps)
    assert rotate[0]["seq"] < activated[-1]["seq"]  # both rotations, in the order they happened


def test_only_the_security_admin_sees_or_rotates_keys(live: Live) -> None:
    for role in ("system_admin", "security_auditor", "prosecutor"):
        refused = _xiezhi_keys(live, "rotate", roles=role)
        assert refused.returncode != 0 and "403" in refused.stderr + refused.stdout, (role, refused.stderr)
    status = _xiezhi_keys(live, "status")
    assert status.returncode == 0 and "await rewrapping" in status.stdout
    denied = [e for e in live.entries("decision") if e["detail"].get("object") == "keys:gateway"]
    assert {e["outcome"] for e in denied} >= {"deny", "allow"}


def test_nothing_to_rotate_is_refused(live: Live) -> None:
    refused = _xiezhi_keys(live, "rotate", "--no-kek", "--no-data-key")
    assert refused.returncode != 0 and "nothing_to_rotate" in refused.stderr + refused.stdout


def test_expired_results_are_deleted_audited_and_gone(live: Live) -> None:
    summary = live.run("expiring")
    assert summary.request_id is not None and live.batches(summary.request_id)
    live.clock.advance(days=31)  # past the default 30-day retention
    try:
        retention = gateway_services(live.stack.servers[-1].app).retention
        assert retention.sweep() >= 1
    finally:
        live.clock.advance(days=-31)
    assert live.batches(summary.request_id) == []
    with pytest.raises(Gone) as gone:
        live.client(["prosecutor"]).result(summary.request_id)
    assert gone.value.code == "result_deleted"
    deleted = [e for e in live.entries("result.deleted") if e["request_id"] == summary.request_id]
    assert len(deleted) == 1 and deleted[0]["actor"] == "gateway" and deleted[0]["detail"]["rows"] == summary.rows
    engine = make_engine(f"sqlite:///{live.stack.root / 'gateway' / 'gateway.sqlite'}")
    with Session(engine) as session:
        request = session.get(MatchRequest, summary.request_id)
        assert request is not None and request.results_deleted_at is not None
    engine.dispose()
