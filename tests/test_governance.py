"""Quotas, separated administration, the policy store and the audit of decisions, over HTTP.

Runs a gateway with a movable clock. Two gateway instances share one database to show a
policy change made through one is in force on the other without a restart.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from devkit.environment import REPO_ROOT
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.stack import HTTP, LEGAL_BASIS, PURPOSE, Clock, LoopbackServer, Stack, start_stack

pytestmark = pytest.mark.integration  # every test runs a stack

POLICY = (REPO_ROOT / "policies" / "policy.csv").read_text(encoding="utf-8")


@pytest.fixture
def clocked(tmp_path: Path, generated: Path) -> Iterator[tuple[Stack, Clock]]:
    clock = Clock(datetime(2026, 6, 1, 1, 30, 5, tzinfo=UTC))  # 09:30 in China
    running = start_stack(tmp_path / "stack", clock)
    try:
        running.publish(generated, connectors=("court",))
        yield running, clock
    finally:
        running.stop()


def _call(url: str, method: str, path: str, token: str, json: Any = None) -> httpx.Response:
    return HTTP.request(method, url + path, json=json, headers={"authorization": f"Bearer {token}"})


def _create(stack: Stack, token: str, subjects: int) -> httpx.Response:
    body = {"model": "repeated_debtor", "subject_count": subjects, "purpose": PURPOSE, "legal_basis": LEGAL_BASIS}
    return _call(stack.gateway_url, "POST", "/v1/requests", token, body)


def _code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json().get("code", "")


# ---- quotas ---------------------------------------------------------------------------


def test_requests_per_minute_quota(clocked: tuple[Stack, Clock]) -> None:
    stack, clock = clocked
    assistant = stack.user_token(["assistant"], subject="assistant-330803-01", clearance=1)
    for _ in range(10):  # limits.yaml: assistants make 10 requests a minute
        assert _create(stack, assistant, 5).status_code == 201
    refused = _create(stack, assistant, 5)
    assert _code(refused) == (429, "quota_requests_per_minute")
    problem = refused.json()
    assert problem["limit"] == 10 and problem["resets_at"].startswith("2026-06-01T01:31:00")
    assert int(refused.headers["retry-after"]) >= 1
    clock.advance(minutes=1)
    assert _create(stack, assistant, 5).status_code == 201


def test_subjects_per_day_quota_resets_at_china_midnight_and_refunds_rejections(clocked: tuple[Stack, Clock]) -> None:
    stack, clock = clocked
    assistant = stack.user_token(["assistant"], subject="assistant-330803-02", clearance=1)
    first = _create(stack, assistant, 5000)  # over the assistant's batch limit: waits, and counts
    assert _code(first) == (409, "approval_required")
    assert _code(_create(stack, assistant, 5000)) == (409, "approval_required")
    refused = _create(stack, assistant, 1)
    assert _code(refused) == (429, "quota_subjects_per_day")
    assert refused.json()["limit"] == 10_000
    assert refused.json()["resets_at"].startswith("2026-06-01T16:00:00")  # midnight in China
    # A rejected request gives its subjects back.
    head = stack.user_token(["dept_head"], subject="dept-head-330803-01")
    reject = f"/v1/approvals/{first.json()['request_id']}/reject"
    assert _call(stack.gateway_url, "POST", reject, head, {"reason": "范围过大"}).status_code == 200
    assert _create(stack, assistant, 1).status_code == 201
    clock.advance(hours=15)  # past midnight in China: a new day
    assert _code(_create(stack, assistant, 5000)) == (409, "approval_required")


# ---- separated administration (三员分立) -----------------------------------------------


def test_the_three_administrators_and_connectors_stay_in_their_lanes(clocked: tuple[Stack, Clock]) -> None:
    stack, _ = clocked
    url = stack.gateway_url
    system = stack.user_token(["system_admin"], subject="sysadmin-330000-01", org="330000")
    security = stack.user_token(["security_admin"], subject="secadmin-330000-01", org="330000")
    auditor = stack.user_token(["security_auditor"], subject="auditor-330000-01", org="330000")
    connector = stack.connector_token("court")
    for token in (system, security, auditor, connector):
        assert _code(_create(stack, token, 5)) == (403, "denied_by_policy")
    assert _code(_call(url, "GET", "/v1/audit/entries", system)) == (403, "denied_by_policy")
    assert _code(_call(url, "GET", "/v1/audit/entries", security)) == (403, "denied_by_policy")
    assert _code(_call(url, "PUT", "/v1/policy", system, {"policy": POLICY})) == (403, "denied_by_policy")
    assert _code(_call(url, "PUT", "/v1/policy", auditor, {"policy": POLICY})) == (403, "denied_by_policy")
    assert _code(_call(url, "GET", "/v1/system/status", auditor)) == (403, "not_granted")
    assert _call(url, "GET", "/v1/system/status", system).status_code == 200
    assert _call(url, "GET", "/v1/audit/policy-changes", security).status_code == 200
    assert _call(url, "GET", "/v1/policy", security).status_code == 200
    entries = _call(url, "GET", "/v1/audit/entries", auditor)
    assert entries.status_code == 200 and len(entries.json()["entries"]) > 0
    # Two administrators' roles in one token: refused by the policy where one client system's
    # certificate carries both, and at the channel where none does.
    two_hats = stack.user_token(["security_admin", "system_admin"], subject="x-330000-01", org="330000")
    assert _code(_call(url, "GET", "/v1/system/status", two_hats)) == (403, "separation_of_duties")
    two_systems = stack.user_token(["security_admin", "security_auditor"], subject="x-330000-01", org="330000")
    assert _code(_call(url, "GET", "/v1/audit/entries", two_systems)) == (401, "certificate_role_mismatch")


def test_every_decision_is_audited_with_who_what_why_rule_and_version(clocked: tuple[Stack, Clock]) -> None:
    stack, _ = clocked
    prosecutor = stack.user_token(["prosecutor"])
    assert _create(stack, prosecutor, 5).status_code == 201
    bad_purpose = {"model": "repeated_debtor", "subject_count": 5, "purpose": "查一下", "legal_basis": LEGAL_BASIS}
    assert _code(_call(stack.gateway_url, "POST", "/v1/requests", prosecutor, bad_purpose)) == (
        403,
        "purpose_malformed",
    )
    auditor = stack.user_token(["security_auditor"], subject="auditor-330000-01", org="330000")
    decisions = _call(stack.gateway_url, "GET", "/v1/audit/entries?kind=decision", auditor).json()["entries"]
    assert len(decisions) >= 3
    for entry in decisions:
        detail = entry["detail"]
        assert entry["actor"] and entry["action"] and entry["outcome"] in ("allow", "deny", "needs_approval")
        assert detail["object"] and detail["rule"] and detail["reason"] and len(detail["policy_version"]) == 17
        assert "roles" in detail and "clearance" in detail
    runs = [d for d in decisions if d["action"] == "run" and d["model"]]
    allowed = next(e for e in runs if e["outcome"] == "allow")
    assert allowed["purpose"] == PURPOSE and allowed["detail"]["rule"].startswith("p, prosecutor")
    refused = next(e for e in runs if e["outcome"] == "deny")
    assert refused["detail"]["reason"] == "purpose_malformed" and refused["purpose"] is None


# ---- the policy store and its changes -------------------------------------------------


def test_policy_changes_are_gated_audited_and_reach_another_instance(clocked: tuple[Stack, Clock]) -> None:
    stack, clock = clocked
    settings = GatewaySettings.from_file(stack.dev.gateway_config).model_copy(update={"policy_reload_seconds": 0})
    second = LoopbackServer(create_app(settings, clock), settings.tls).start()  # a second instance, same TLS
    try:
        security = stack.user_token(["security_admin"], subject="secadmin-330000-01", org="330000")
        before = _call(stack.gateway_url, "GET", "/v1/policy", security).json()
        assert _call(second.url, "GET", "/v1/policy", security).json()["version"] == before["version"]
        # A change that breaks the decision tables is refused and changes nothing.
        narrowed = POLICY.replace(
            "p, prosecutor, *, model:*, run, subtree, allow", "p, prosecutor, *, model:*, run, self, allow"
        )
        refused = _call(stack.gateway_url, "PUT", "/v1/policy", security, {"policy": narrowed})
        assert _code(refused) == (409, "policy_tests_failed") and "run.csv:" in refused.json()["detail"]
        garbage = _call(
            stack.gateway_url,
            "PUT",
            "/v1/policy",
            security,
            {"policy": "p, prosecutor, *, model:*, run, self, maybe\n"},
        )
        assert _code(garbage) == (400, "policy_invalid")
        assert _call(stack.gateway_url, "GET", "/v1/policy", security).json()["version"] == before["version"]
        # A change that passes is stored, audited, and in force on the other instance.
        extended = POLICY + "p, prosecutor, *, model:bail_deposit, run, any, deny\n"
        changed = _call(stack.gateway_url, "PUT", "/v1/policy", security, {"policy": extended})
        assert changed.status_code == 200 and changed.json()["version"] != before["version"]
        assert changed.json()["revision"] == before["revision"] + 1
        assert _call(second.url, "GET", "/v1/policy", security).json()["version"] == changed.json()["version"]
        changes = _call(stack.gateway_url, "GET", "/v1/audit/policy-changes", security).json()["entries"]
        last = changes[0]  # newest first
        assert last["actor"] == "secadmin-330000-01" and last["detail"]["before"] == before["version"]
        assert last["detail"]["version"] == changed.json()["version"]
    finally:
        second.stop()
    # The rules live in Casbin's table, written through the adapter's schema.
    with sqlite3.connect(stack.root / "gateway" / "gateway.sqlite") as db:
        lines = db.execute("SELECT ptype, v0, v1, v2, v3, v4, v5 FROM casbin_rule WHERE ptype = 'p'").fetchall()
    assert ("p", "prosecutor", "*", "model:bail_deposit", "run", "any", "deny") in lines


def test_a_change_made_on_a_stale_instance_is_refused_not_lost(clocked: tuple[Stack, Clock]) -> None:
    """The second instance has not re-read the policy when it is asked for a change: it
    refuses (409 `policy_changed`) rather than overwrite the first instance's change with its
    stale tree, and takes the change once asked again."""
    stack, clock = clocked
    settings = GatewaySettings.from_file(stack.dev.gateway_config).model_copy(update={"policy_reload_seconds": 3600})
    stale = LoopbackServer(create_app(settings, clock), settings.tls).start()
    try:
        admin = stack.user_token(["security_admin"], subject="secadmin-330000-01", org="330000")
        first = {"code": "330805", "name": "甲区人民检察院", "parent": "330800"}
        second = {"code": "330806", "name": "乙区人民检察院", "parent": "330800"}
        assert _call(stack.gateway_url, "POST", "/v1/orgs", admin, first).status_code == 201
        assert _code(_call(stale.url, "POST", "/v1/orgs", admin, second)) == (409, "policy_changed")
        again = _call(stale.url, "POST", "/v1/orgs", admin, second)
        assert again.status_code == 201, again.text
        clock.advance(seconds=6)  # past the first instance's reload interval
        for url in (stale.url, stack.gateway_url):
            codes = {o["code"] for o in _call(url, "GET", "/v1/orgs", admin).json()}
            assert {"330805", "330806"} <= codes, url  # neither change lost
    finally:
        stale.stop()


def test_organisations_are_managed_through_the_api(clocked: tuple[Stack, Clock]) -> None:
    stack, _ = clocked
    url = stack.gateway_url
    newcomer = stack.user_token(["prosecutor"], subject="prosecutor-330804-01", org="330804")
    assert _code(_create(stack, newcomer, 5)) == (403, "unknown_org")
    district_admin = stack.user_token(["security_admin"], subject="secadmin-330803-01", org="330803")
    org = {"code": "330804", "name": "衢州市智造新城人民检察院", "parent": "330800"}
    assert _code(_call(url, "POST", "/v1/orgs", district_admin, org)) == (403, "not_granted")
    province_admin = stack.user_token(["security_admin"], subject="secadmin-330000-01", org="330000")
    added = _call(url, "POST", "/v1/orgs", province_admin, org)
    assert added.status_code == 201 and any(o["code"] == "330804" for o in added.json())
    assert _create(stack, newcomer, 5).status_code == 201
    assert _code(_call(url, "POST", "/v1/orgs", province_admin, org)) == (409, "org_exists")
    assert _code(_call(url, "DELETE", "/v1/orgs/330800", province_admin)) == (409, "org_has_children")
    bad = {"code": "330804", "name": "x", "parent": "330100"}
    assert _call(url, "POST", "/v1/orgs", province_admin, bad).status_code in (400, 409)
    listed = _call(url, "GET", "/v1/orgs", stack.user_token(["prosecutor"])).json()
    assert {"code": "330804", "name": org["name"], "parent": "330800", "level": "district"} in listed
