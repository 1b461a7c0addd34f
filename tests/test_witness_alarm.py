"""A gateway restarted on a rolled-back database: its witnesses refuse, and that is an alarm.

A real stack (four connectors witnessing the gateway's log, mutual TLS on loopback) runs
until every witness has cosigned; the gateway's database is backed up; more happens and is
cosigned; the gateway stops and the backup is restored, as an administrator rolling the log
back would; the gateway restarts with its real key and signs the old log again. Its own
published checkpoints are ahead of the database, and every witness remembers a larger log
and refuses. Each refusal must be logged, counted in the
metrics, written to the audit log as its own entry, listed for operators and auditors, and
must turn the readiness check unhealthy until an operator resolves it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from audit_log import AuditLog
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.polling import wait_until
from tests.stack import HTTP, LoopbackServer, Stack, client_env, run_cli, start_stack

pytestmark = pytest.mark.integration

WITNESSES = {"court", "tax", "housing_fund", "civil_affairs"}
PUBLISHED = "published_checkpoints"  # the gateway's own copy of its checkpoints, outside the database


def _log(stack: Stack) -> AuditLog:
    return AuditLog.existing(create_engine(f"sqlite:///{stack.root / 'gateway' / 'gateway.sqlite'}"))


def _cosigned_everywhere(log: AuditLog) -> int | None:
    """The newest checkpoint size every witness has cosigned, if the newest checkpoint is one."""
    latest = log.latest_size()
    if latest is None:
        return None
    return latest if {c.witness for c in log.cosignatures(latest)} == WITNESSES else None


def _busy(stack: Stack, url: str, token: str, calls: int) -> None:
    for _ in range(calls):  # each read writes its decision to the audit log
        assert HTTP.get(f"{url}/v1/audit/log-key", headers={"authorization": f"Bearer {token}"}).status_code == 200


def _metric_points(folder: Path, name: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (folder / "gateway.jsonl").read_text(encoding="utf-8").splitlines()]
    return [p for r in rows if r["signal"] == "metric" and r["name"] == name for p in r["points"]]


def test_witnesses_refusing_a_rolled_back_log_raise_alarms_until_an_operator_resolves_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = tmp_path / "telemetry"
    stack = start_stack(tmp_path, audit={"checkpoint_every_entries": 4}, telemetry=telemetry)
    try:
        auditor = stack.user_token(["security_auditor"], subject="auditor-330803", org="330803")
        log = _log(stack)
        _busy(stack, stack.gateway_url, auditor, 3)
        wait_until(lambda: _cosigned_everywhere(log), "every witness cosigning the newest checkpoint")
        backup = tmp_path / "backup.sqlite"
        with sqlite3.connect(stack.root / "gateway" / "gateway.sqlite") as live, sqlite3.connect(backup) as copy:
            live.backup(copy)
        backed_up = _cosigned_everywhere(log) or 0
        _busy(stack, stack.gateway_url, auditor, 6)
        wait_until(lambda: (_cosigned_everywhere(log) or 0) > backed_up + 4, "the witnesses cosigning a larger log")
        log.engine.dispose()

        # The administrator's rollback: the gateway stops, the old backup replaces its database.
        stack.servers.pop().stop()
        with sqlite3.connect(backup) as old, sqlite3.connect(stack.root / "gateway" / "gateway.sqlite") as live:
            old.backup(live)
        settings = GatewaySettings.from_file(stack.dev.gateway_config)
        with caplog.at_level(logging.ERROR, logger="xiezhi.gateway.alarms"):
            restarted = LoopbackServer(create_app(settings), settings.tls).start()
            stack.servers.append(restarted)
            url = restarted.url

            def not_ready() -> bool:
                return HTTP.get(f"{url}/readyz").status_code == 503

            wait_until(not_ready, "the readiness check failing on the witnesses' refusal")
            headers = {"authorization": f"Bearer {auditor}"}

            def every_witness_refused() -> bool:
                listed = HTTP.get(f"{url}/v1/system/alarms", headers=headers).json()
                return {a["source"] for a in listed} == WITNESSES | {PUBLISHED}

            wait_until(every_witness_refused, "an alarm from every witness")
        problem = HTTP.get(f"{url}/readyz").json()
        assert problem["code"] == "alarm_open" and "5 open alarm(s)" in problem["detail"]
        assert "witness_refusal from court" in problem["detail"]
        alarms = HTTP.get(f"{url}/v1/system/alarms", headers=headers).json()
        # A witness's first refusal: it cosigned a larger log than the one submitted, or (had
        # the restarted gateway already signed up to or past that size) another checkpoint of
        # its size, or a log this one does not extend.
        assert {(a["source"] == PUBLISHED, a["kind"]) for a in alarms} == {
            (False, "witness_refusal"),
            (True, "checkpoint_rollback"),
        }
        refusals = {"witness_ahead", "witness_conflicting_checkpoint", "witness_inconsistent_log"}
        assert {a["reason"] for a in alarms if a["source"] != PUBLISHED} <= refusals
        assert all("rolled back" in a["message"] or "rewritten" in a["message"] for a in alarms)
        # Logged …
        logged = [r.getMessage() for r in caplog.records if r.name == "xiezhi.gateway.alarms"]
        assert {message.split(" from ")[1].split(":")[0] for message in logged} == WITNESSES | {PUBLISHED}
        # … and in the audit log, one entry each, by the gateway itself.
        raised = [json.loads(e.entry) for e in _log(stack).entries() if e.kind == "alarm"]
        assert {(e["actor"], e["action"], e["detail"]["source"]) for e in raised} == {
            ("gateway", "raise", name) for name in WITNESSES | {PUBLISHED}
        }

        # The gateway's own verification (the console's banner) reads what each witness holds
        # and reports the rollback, though the restored log is consistent with itself: shorter
        # than what they cosigned, or (grown again since the restart) another log at that size.
        verification = HTTP.get(f"{url}/v1/audit/verification", headers=headers).json()
        codes = {p["code"] for p in verification["problems"]}
        assert verification["ok"] is False and codes & {"log_rolled_back", "checkpoint_mismatch"}, verification

        # The operator acts (the witnesses are taken out of service while the log is
        # investigated) and resolves each alarm; then no alarm holds readiness back (the
        # stopped connectors still do, and say so).
        for server in stack.servers[:-1]:
            server.stop()
        del stack.servers[:-1]
        admin_token = stack.user_token(["system_admin"], subject="sysadmin-1", org="330000")
        admin = {"authorization": f"Bearer {admin_token}"}
        (tmp_path / "sysadmin.token").write_text(admin_token)
        listed = run_cli(
            "gateway",
            "alarms",
            "--gateway",
            url,
            "--token-file",
            str(tmp_path / "sysadmin.token"),
            env=client_env("admin"),
        )
        assert listed.returncode == 1 and listed.stdout.count("OPEN") == 5, listed.stdout + listed.stderr
        for alarm in alarms[1:]:
            assert HTTP.get(f"{url}/readyz").status_code == 503
            answer = HTTP.post(
                f"{url}/v1/system/alarms/{alarm['id']}/resolve",
                headers=admin,
                json={"reason": "日志回滚，已报告并调查"},
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["resolved_by"] == "sysadmin-1"
        resolved_by_cli = run_cli(
            "gateway", "resolve-alarm", alarms[0]["id"], "--gateway", url,
            "--token-file", str(tmp_path / "sysadmin.token"), "--reason", "日志回滚，已报告并调查",
            env=client_env("admin"),
        )  # fmt: skip
        assert resolved_by_cli.returncode == 0, resolved_by_cli.stdout + resolved_by_cli.stderr
        after = HTTP.get(f"{url}/readyz")
        assert after.status_code == 503 and after.json()["code"] == "connector_unreachable", after.text
        assert "alarm" not in after.json()["detail"]
        none_open = run_cli(
            "gateway",
            "alarms",
            "--gateway",
            url,
            "--token-file",
            str(tmp_path / "sysadmin.token"),
            env=client_env("admin"),
        )
        assert none_open.returncode == 0 and "no open alarms" in none_open.stdout
        again = HTTP.post(f"{url}/v1/system/alarms/{alarms[0]['id']}/resolve", headers=admin, json={"reason": "again"})
        assert again.status_code == 409
        auditor_try = HTTP.post(
            f"{url}/v1/system/alarms/{alarms[0]['id']}/resolve", headers=headers, json={"reason": "not mine"}
        )
        assert auditor_try.status_code == 403
        resolved = [
            json.loads(e.entry) for e in _log(stack).entries() if e.kind == "alarm" and '"resolve"' in e.entry.decode()
        ]
        assert len(resolved) == len(WITNESSES) + 1
    finally:
        stack.stop()
    # Counted in the metrics (exported as the gateway stopped).
    points = _metric_points(telemetry, "xiezhi.alarms")
    assert {(p["attributes"]["xiezhi.connector"], p["attributes"]["xiezhi.alarm"]) for p in points} == {
        *((name, "witness_refusal") for name in WITNESSES),
        (PUBLISHED, "checkpoint_rollback"),
    }


def test_readiness_follows_the_connectors(tmp_path: Path) -> None:
    """/readyz is 503 connector_unreachable while a connector is down, ready again once it is
    back, 503 schema_outdated on a database migrated past this release, and names each
    connector's active epoch and index time."""
    stack = start_stack(tmp_path)
    try:
        ready = HTTP.get(f"{stack.gateway_url}/readyz")
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["connectors"]) == WITNESSES
        stack.stop_connector("tax")
        down = HTTP.get(f"{stack.gateway_url}/readyz")
        assert down.status_code == 503 and down.json()["code"] == "connector_unreachable"
        assert "tax" in down.json()["detail"] and "court" not in down.json()["detail"]
        stack.start_connector("tax")
        assert HTTP.get(f"{stack.gateway_url}/readyz").status_code == 200
        # Another instance of a newer release migrated the database past this one's head.
        with sqlite3.connect(stack.root / "gateway" / "gateway.sqlite") as db:
            (head,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
            db.execute("UPDATE alembic_version SET version_num = 'ffff_newer'")
        newer = HTTP.get(f"{stack.gateway_url}/readyz")
        assert newer.status_code == 503 and newer.json()["code"] == "schema_outdated"
        with sqlite3.connect(stack.root / "gateway" / "gateway.sqlite") as db:
            db.execute("UPDATE alembic_version SET version_num = ?", (head,))
        assert HTTP.get(f"{stack.gateway_url}/readyz").status_code == 200
    finally:
        stack.stop()
