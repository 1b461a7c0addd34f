"""Every decision-table row, replayed against a running gateway over real HTTP.

Each `run` row becomes a POST /v1/requests by a token carrying the row's user, org, roles
and clearance: a denial must answer 403 with the row's reason code, a row that needs
approval 409 `approval_required` naming the reasons and the approving organisation, an
allowed row 201. Each `access` denial is replayed on the endpoint that serves its object
and must answer 403 with the row's reason. The gateway's clock is set to the row's day.

Each token goes over the certificate of the development client system that carries its
roles (tests/stack.py). A row whose roles no one system carries (an unknown role, a pair no
one may hold that two systems would have to share) never reaches the policy: the gateway
refuses it at the channel, 401 `certificate_role_mismatch`; test_policy_tables decides
those rows in process.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest

from devkit.environment import REPO_ROOT, dev_client_for, issue_token
from gateway.authz.tables import Row, read_tables
from gateway.quotas import CHINA
from tests.stack import HTTP, Clock, Stack, start_stack

TABLES = list(read_tables(REPO_ROOT / "policies" / "tests"))
RUN_ROWS = [row for row in TABLES if row.kind == "run"]
# Objects an access row can be replayed on with the row's own target (its own organisation).
ENDPOINTS = {
    ("audit:entries", "read"): ("GET", "/v1/audit/entries", None),
    ("audit:policy", "read"): ("GET", "/v1/audit/policy-changes", None),
    ("policy:rules", "read"): ("GET", "/v1/policy", None),
    ("policy:rules", "reload"): ("POST", "/v1/policy/reload", None),
    ("policy:rules", "manage"): ("PUT", "/v1/policy", "current"),
    ("system:status", "read"): ("GET", "/v1/system/status", None),
}
ACCESS_DENIALS = [
    row
    for row in TABLES
    if row.kind == "access"
    and row.values["expect"] == "deny"
    and not row.values["target"]
    and (row.values["object"], row.values["action"]) in ENDPOINTS
]


@pytest.fixture(scope="module")
def dated(tmp_path_factory: pytest.TempPathFactory, generated: Path) -> Iterator[tuple[Stack, Clock]]:
    clock = Clock(datetime(2026, 6, 1, 2, 0, tzinfo=UTC))
    running = start_stack(tmp_path_factory.mktemp("dated"), clock)
    try:
        running.publish(generated)
        yield running, clock
    finally:
        running.stop()


def _token(stack: Stack, row: Row, subject: str) -> str:
    principal = row.principal()
    return issue_token(
        stack.dev.idp_key,
        subject=subject,
        roles=sorted(principal.roles),
        org=principal.org,
        connector=principal.connector,
        clearance=int(row.values["clearance"]) if row.values.get("clearance") else None,
    )


def _body(row: Row) -> dict[str, Any]:
    values = row.values
    body: dict[str, Any] = {"model": values["model"], "subject_count": int(values["subjects"])}
    for field in ("purpose", "legal_basis", "scope"):
        if values[field]:
            body[field] = values[field]
    return body


@pytest.mark.integration
@pytest.mark.parametrize("row", RUN_ROWS, ids=lambda r: f"{r.table}:{r.case}")
def test_run_row_over_http(dated: tuple[Stack, Clock], row: Row) -> None:
    stack, clock = dated
    clock.now = datetime.combine(date.fromisoformat(row.values["on"]), time(10), CHINA).astimezone(UTC)
    # One user per row, so the rows do not share a quota.
    token = _token(stack, row, subject=f"{row.values['user']}~{row.case}")
    response = HTTP.post(f"{stack.gateway_url}/v1/requests", json=_body(row), headers=_auth(token))
    expect, reason = row.values["expect"], row.values["reason"]
    body = response.json()
    if not _carried(row):
        assert (response.status_code, body["code"]) == (401, "certificate_role_mismatch"), response.text
    elif expect == "allow":
        assert response.status_code == 201, response.text
        assert body["status"] == "evaluating" and body["connectors"]
    elif expect == "needs_approval":
        assert response.status_code == 409, response.text
        assert body["code"] == "approval_required" and body["reasons"] == reason.split("+")
        assert body["request_id"] and (not row.values.get("approver") or body["approver_org"] == row.values["approver"])
    else:
        assert (response.status_code, body["code"]) == (403, reason), response.text
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.integration
@pytest.mark.parametrize("row", ACCESS_DENIALS, ids=lambda r: f"{r.table}:{r.case}")
def test_access_denial_over_http(dated: tuple[Stack, Clock], row: Row) -> None:
    stack, _ = dated
    method, path, body = ENDPOINTS[(row.values["object"], row.values["action"])]
    payload = {"policy": (REPO_ROOT / "policies" / "policy.csv").read_text(encoding="utf-8")} if body else None
    token = _token(stack, row, subject=row.values["user"])
    response = HTTP.request(method, stack.gateway_url + path, json=payload, headers=_auth(token))
    expected = (403, row.values["reason"]) if _carried(row) else (401, "certificate_role_mismatch")
    assert (response.status_code, response.json()["code"]) == expected, response.text


def test_every_run_outcome_and_many_access_denials_are_replayed() -> None:
    outcomes = {row.values["expect"] for row in RUN_ROWS if _carried(row)}
    assert outcomes == {"allow", "deny", "needs_approval"}
    assert len([row for row in ACCESS_DENIALS if _carried(row)]) >= 15
    reasons = {row.values["reason"] for row in [*RUN_ROWS, *ACCESS_DENIALS] if _carried(row)}
    assert "separation_of_duties" in reasons  # exclusive roles one system carries reach the policy


def _carried(row: Row) -> bool:
    """Whether one development client system's certificate carries all of the row's roles (a
    connector's certificate carries `connector` alone)."""
    principal = row.principal()
    if principal.connector is not None:
        return principal.roles <= {"connector"}
    return dev_client_for(principal.roles) is not None


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
