"""The two-person rule end to end, over real HTTP: request → pending → approved → runs.

Approval by the requester, by a department head of an unrelated organisation, after the
approval period, or twice is refused; a rejected request never runs; an approved request
not started in time expires. The `xiezhi approvals` and `xiezhi match --request-id`
commands drive the same flow as separate processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from devkit.environment import REPO_ROOT
from requester.job import match_file
from requester.protocol import MatchSpec
from requester.subjects import read_subjects
from tests.agreement import assert_report_agrees
from tests.stack import HTTP, LEGAL_BASIS, PURPOSE, Clock, Stack, start_stack
from xiezhi.errors import ApprovalRequired, Conflict
from xiezhi.supervision import ModelCatalog

pytestmark = pytest.mark.integration  # every test runs a stack

CATALOG = ModelCatalog.load(REPO_ROOT / "policies" / "models")
REQUESTER = "prosecutor-330803-07"


@pytest.fixture
def clocked(tmp_path: Path, generated: Path) -> Iterator[tuple[Stack, Clock]]:
    clock = Clock(datetime.now(UTC))
    running = start_stack(tmp_path / "stack", clock)
    try:
        running.publish(generated, connectors=("court", "civil_affairs"))
        yield running, clock
    finally:
        running.stop()


def _call(stack: Stack, method: str, path: str, token: str, json: Any = None) -> httpx.Response:
    return HTTP.request(method, stack.gateway_url + path, json=json, headers={"authorization": f"Bearer {token}"})


def _pending(stack: Stack, generated: Path, model: str = "spouse_property") -> str:
    """Create a request that waits (marriage records are tier 3) over the generated list; return its id."""
    subjects = len(read_subjects(generated / "subjects.csv")[0])
    token = stack.user_token(["prosecutor"], subject=REQUESTER)
    body = {"model": model, "subject_count": subjects, "purpose": PURPOSE, "legal_basis": LEGAL_BASIS}
    response = _call(stack, "POST", "/v1/requests", token, body)
    assert response.status_code == 409, response.text
    problem = response.json()
    assert problem["code"] == "approval_required" and problem["approver_org"] == "330803"
    assert problem["reasons"] == ["tier3_capability"]
    return str(problem["request_id"])


def _head(stack: Stack, org: str = "330803", subject: str | None = None) -> str:
    return stack.user_token(["dept_head"], subject=subject or f"dept-head-{org}-01", org=org)


def _decide(stack: Stack, request_id: str, token: str, verb: str = "approve") -> httpx.Response:
    return _call(stack, "POST", f"/v1/approvals/{request_id}/{verb}", token, {"reason": "核查必要，同意"})


def _resume_refused(stack: Stack, generated: Path, request_id: str) -> str:
    """Resume `request_id` as its requester; return the code of the Conflict that refuses it."""
    requester = stack.user_token(["prosecutor"], subject=REQUESTER)
    spec = MatchSpec("spouse_property", PURPOSE, LEGAL_BASIS, request_id=request_id)
    out = stack.root / "refused.csv"
    with pytest.raises(Conflict) as refused:
        match_file(stack.gateway_url, requester, spec, generated / "subjects.csv", out, show_progress=False)
    assert not out.exists()
    return refused.value.code


def _code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json().get("code", "")


def test_request_waits_then_runs_after_the_right_approval(clocked: tuple[Stack, Clock], generated: Path) -> None:
    stack, _ = clocked
    request_id = _pending(stack, generated)
    requester = stack.user_token(["prosecutor"], subject=REQUESTER)
    # Waiting: no blind evaluation, no lookup.
    view = _call(stack, "GET", f"/v1/requests/{request_id}", requester).json()
    assert view["status"] == "pending_approval" and view["connectors"] == []
    evaluate = _call(stack, "POST", f"/v1/requests/{request_id}/evaluations/civil_affairs", requester, {})
    assert _code(evaluate)[0] in (400, 409)
    # The department head sees it in their list, with why it waits.
    listed = _call(stack, "GET", "/v1/approvals", _head(stack)).json()
    assert [(a["request_id"], a["reasons"]) for a in listed] == [(request_id, ["tier3_capability"])]
    assert _call(stack, "GET", "/v1/approvals", _head(stack, "330100")).json() == []
    # Refused approvers: the requester, an unrelated org's head, a prosecutor, a system admin.
    assert _code(_decide(stack, request_id, requester)) == (403, "self_approval")
    assert _code(_decide(stack, request_id, _head(stack, "330100"))) == (403, "approver_out_of_scope")
    assert _code(_decide(stack, request_id, _head(stack, "420582"))) == (403, "approver_out_of_scope")
    colleague = stack.user_token(["prosecutor"], subject="prosecutor-330803-08")
    assert _code(_decide(stack, request_id, colleague)) == (403, "not_granted")
    admin = stack.user_token(["system_admin"], subject="sysadmin-330803-01")
    assert _code(_decide(stack, request_id, admin)) == (403, "denied_by_policy")
    # The right head (the city's, whose reach covers its districts) approves; it cannot be decided twice.
    approved = _decide(stack, request_id, _head(stack, "330800"))
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    assert _code(_decide(stack, request_id, _head(stack))) == (409, "approval_not_pending")
    # The requester resumes the approved request and gets a correct report.
    out = Path(stack.root) / "spouse.csv"
    spec = MatchSpec("spouse_property", PURPOSE, LEGAL_BASIS, request_id=request_id)
    summary = match_file(stack.gateway_url, requester, spec, generated / "subjects.csv", out, show_progress=False)
    assert summary.request_id == request_id
    assert_report_agrees(generated, CATALOG.get("spouse_property"), out, request_id=request_id)


def test_a_head_who_requests_cannot_approve_their_own(clocked: tuple[Stack, Clock]) -> None:
    stack, _ = clocked
    head = _head(stack, subject="dept-head-330803-09")
    body = {"model": "spouse_property", "subject_count": 5, "purpose": PURPOSE, "legal_basis": LEGAL_BASIS}
    request_id = _call(stack, "POST", "/v1/requests", head, body).json()["request_id"]
    assert _code(_decide(stack, request_id, head)) == (403, "self_approval")
    assert _decide(stack, request_id, _head(stack)).status_code == 200


def test_approval_after_the_period_is_refused_and_the_request_expires(
    clocked: tuple[Stack, Clock], generated: Path
) -> None:
    stack, clock = clocked
    request_id = _pending(stack, generated)
    clock.advance(hours=72, seconds=1)
    assert _code(_decide(stack, request_id, _head(stack))) == (409, "approval_expired")
    requester = stack.user_token(["prosecutor"], subject=REQUESTER)
    assert _call(stack, "GET", f"/v1/requests/{request_id}", requester).json()["status"] == "expired"
    expired = _call(stack, "GET", "/v1/approvals?status=expired", _head(stack)).json()
    assert [a["request_id"] for a in expired] == [request_id]


def test_an_approved_request_must_start_in_time(clocked: tuple[Stack, Clock], generated: Path) -> None:
    stack, clock = clocked
    request_id = _pending(stack, generated)
    assert _decide(stack, request_id, _head(stack)).status_code == 200
    clock.advance(hours=24, seconds=1)
    assert _resume_refused(stack, generated, request_id) == "approval_expired"


def test_a_rejected_request_never_runs(clocked: tuple[Stack, Clock], generated: Path) -> None:
    stack, _ = clocked
    request_id = _pending(stack, generated)
    no_reason = _call(stack, "POST", f"/v1/approvals/{request_id}/reject", _head(stack), {"reason": ""})
    assert _code(no_reason) == (400, "invalid_body")
    leaky = _call(
        stack, "POST", f"/v1/approvals/{request_id}/reject", _head(stack), {"reason": "查 330803199001011234"}
    )
    assert _code(leaky) == (400, "identifier_in_reason")
    rejected = _decide(stack, request_id, _head(stack), "reject")
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert _resume_refused(stack, generated, request_id) == "request_rejected"


def test_the_client_reports_a_waiting_request(clocked: tuple[Stack, Clock], generated: Path) -> None:
    stack, _ = clocked
    requester = stack.user_token(["prosecutor"], subject=REQUESTER)
    spec = MatchSpec("spouse_property", PURPOSE, LEGAL_BASIS)
    with pytest.raises(ApprovalRequired) as waiting:
        match_file(stack.gateway_url, requester, spec, generated / "subjects.csv", stack.root / "o.csv")
    assert waiting.value.extensions["approver_org"] == "330803"
    assert waiting.value.extensions["reasons"] == ("tier3_capability",)


def _xiezhi(*args: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={
            "XIEZHI_TOKEN": token,
            "PATH": "/usr/bin:/bin",
            "COLUMNS": "200",
            **{name: value for name, value in os.environ.items() if name.startswith("XIEZHI_TLS_")},
        },
        timeout=300,
    )


def test_approval_commands(clocked: tuple[Stack, Clock], generated: Path, tmp_path: Path) -> None:
    stack, _ = clocked
    requester = stack.user_token(["prosecutor"], subject=REQUESTER)
    out = tmp_path / "clues.csv"
    match = ["match", "--gateway", stack.gateway_url, "--model", "spouse_property", "--purpose", PURPOSE]
    match += ["--subjects", str(generated / "subjects.csv"), "--out", str(out), "--no-progress"]
    waiting = _xiezhi(*match, token=requester)
    assert waiting.returncode == 3, waiting.stderr
    request_id = waiting.stderr.split("request ", 1)[1].split()[0]
    assert "330803" in waiting.stderr and "tier3_capability" in waiting.stderr
    listed = _xiezhi("approvals", "list", "--gateway", stack.gateway_url, token=_head(stack))
    assert listed.returncode == 0 and request_id in listed.stdout
    approve = ["approvals", "approve", request_id, "--gateway", stack.gateway_url, "--reason", "同意核查"]
    own = _xiezhi(*approve, token=requester)
    assert own.returncode == 2 and "self_approval" in own.stderr
    approved = _xiezhi(*approve, token=_head(stack))
    assert approved.returncode == 0 and "approved" in approved.stdout
    resumed = _xiezhi(*match, "--request-id", request_id, token=requester)
    assert resumed.returncode == 0, resumed.stderr
    assert_report_agrees(generated, CATALOG.get("spouse_property"), out)


def test_two_heads_deciding_at_once_one_wins(clocked: tuple[Stack, Clock], generated: Path) -> None:
    stack, _ = clocked
    request_id = _pending(stack, generated)
    heads = [_head(stack), _head(stack, "330800"), _head(stack, "330000")]
    with ThreadPoolExecutor(len(heads)) as pool:
        verbs = ("approve", "reject", "approve")
        answers = list(pool.map(lambda pair: _code(_decide(stack, request_id, *pair)), zip(heads, verbs, strict=True)))
    assert sorted(status for status, _ in answers) == [200, 409, 409], answers
    assert all(code == "approval_not_pending" for status, code in answers if status == 409)
    # The audit log holds one decision for the request, not two.
    auditor = stack.user_token(["security_auditor"], subject="auditor-330000-01", org="330000")
    entries = _call(stack, "GET", f"/v1/audit/entries?kind=approval&request_id={request_id}", auditor).json()["entries"]
    assert len(entries) == 1 and "reason" not in entries[0]["detail"]
