"""A request can always be resumed or cancelled, over real services on loopback with mutual TLS.

Faults are injected for real: a connector's server is stopped and started again; the gateway
runs as its own process and is killed (SIGKILL) between two lookups, then started again; and
a deliberately faulty connector (a middleware this module installs in one connector's app)
corrupts the proofs of chosen answers. Each time `xiezhi match --request-id` completes the
same request, and its flags equal those of an undisturbed run of the same list.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import Session, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audit_log import AuditRecord
from devkit.demo.services import Services
from devkit.environment import REPO_ROOT
from devkit.reference import expected_flags
from gateway.db import QuotaUsage, make_engine
from gateway.quotas import Window
from requester.gateway_client import NO_RETRIES, GatewayClient
from requester.job import match_file
from requester.protocol import MatchSpec, run_match
from requester.subjects import read_subjects
from tests.agreement import assert_report_agrees
from tests.stack import HTTP, LEGAL_BASIS, PURPOSE, Stack, run_cli, session_pki, start_stack
from xiezhi import errors, oprf
from xiezhi.crypto import derive_token
from xiezhi.supervision import ModelCatalog
from xiezhi.wire import (
    EvaluationBatch,
    EvaluationResult,
    LookupBatch,
    LookupResult,
    MatchRequestView,
    RowFlags,
    SlotState,
    b64encode,
)

pytestmark = pytest.mark.integration  # every test runs a stack

CATALOG = ModelCatalog.load(REPO_ROOT / "policies" / "models")
SWEEP = "asset_sweep"  # four connectors; marriage records, so it waits for a department head's approval


# ---- helpers ----------------------------------------------------------------------------------


def _call(stack: Stack, method: str, path: str, token: str, json: Any = None) -> httpx.Response:
    return HTTP.request(method, stack.gateway_url + path, json=json, headers={"authorization": f"Bearer {token}"})


def _code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json().get("code", "") if response.status_code >= 300 else ""


def _entries(stack: Stack, request_id: str) -> list[dict[str, Any]]:
    """The request's audit entries, in log order, read from the gateway's database."""
    engine = make_engine(f"sqlite:///{stack.root / 'gateway' / 'gateway.sqlite'}")
    try:
        with Session(engine) as session:
            rows = session.exec(select(AuditRecord).where(AuditRecord.request_id == request_id)).all()
            entries = [json.loads(r.entry) for r in rows]
    finally:
        engine.dispose()
    return sorted(entries, key=lambda e: e["seq"])


def _relays(entries: list[dict[str, Any]], connector: str, outcome: str = "ok") -> list[tuple[int, int, int]]:
    """(first row, count, attempt) of the connector's relay entries with `outcome`, in log order."""
    return [
        (e["detail"]["first_row"], e["detail"]["count"], e["detail"]["attempt"])
        for e in entries
        if e["kind"] == "relay" and e["connector"] == connector and e["outcome"] == outcome
    ]


def _quota_used(stack: Stack, user: str) -> int:
    engine = make_engine(f"sqlite:///{stack.root / 'gateway' / 'gateway.sqlite'}")
    try:
        with Session(engine) as session:
            row = session.get(QuotaUsage, (user, Window.day(datetime.now(UTC)).key))
            return row.used if row is not None else 0
    finally:
        engine.dispose()


def _inputs(generated: Path) -> list[bytes]:
    return [row.subject.oprf_input() for row in read_subjects(generated / "subjects.csv")[0]]


def _undisturbed(stack: Stack, generated: Path, model: str, out: Path) -> list[RowFlags]:
    """The flags of an undisturbed run of `model` over the generated list."""
    summary = match_file(
        stack.gateway_url,
        stack.user_token(["prosecutor"]),
        MatchSpec(model, PURPOSE, LEGAL_BASIS, batch_size=97),
        generated / "subjects.csv",
        out,
        show_progress=False,
        workers=1,
        on_pending=stack.approver(),
    )
    assert summary.request_id is not None
    assert_report_agrees(generated, CATALOG.get(model), out)
    return _client(stack).result(summary.request_id).rows


def _client(stack: Stack, token: str | None = None) -> GatewayClient:
    return GatewayClient(stack.gateway_url, token or stack.user_token(["prosecutor"]))


def _xiezhi(stack: Stack, *args: str, token: str | None = None) -> Any:
    env = {
        "XIEZHI_TOKEN": token or stack.user_token(["prosecutor"]),
        "PATH": "/usr/bin:/bin",
        "COLUMNS": "200",
        **{name: value for name, value in os.environ.items() if name.startswith("XIEZHI_TLS_")},
    }
    return run_cli(*args, env=env)


def _resume(stack: Stack, generated: Path, model: str, out: Path, request_id: str, batch_size: int) -> None:
    """`xiezhi match --request-id` over the same list; it must complete the request."""
    match = ["match", "--gateway", stack.gateway_url, "--model", model, "--purpose", PURPOSE, "--no-progress"]
    match += ["--subjects", str(generated / "subjects.csv"), "--out", str(out), "--batch-size", str(batch_size)]
    resumed = _xiezhi(stack, *match, "--request-id", request_id)
    assert resumed.returncode == 0, resumed.stderr
    assert_report_agrees(generated, CATALOG.get(model), out)


class _FaultAfter(GatewayClient):
    """A requester client without retries that calls `fault()` once it has made `calls` calls of
    `kind` ("evaluate" at `connector`, or "lookup"): the fault lands between two calls of one run."""

    def __init__(self, stack: Stack, kind: str, calls: int, fault: Callable[[], None], connector: str = "") -> None:
        super().__init__(stack.gateway_url, stack.user_token(["prosecutor"]), retry=NO_RETRIES)
        self._kind, self._left, self._fault, self._connector = kind, calls, fault, connector

    def evaluate(self, request_id: str, connector: str, batch: EvaluationBatch) -> EvaluationResult:
        answer = super().evaluate(request_id, connector, batch)
        self._count("evaluate", connector)
        return answer

    def lookup(self, request_id: str, batch: LookupBatch) -> LookupResult:
        answer = super().lookup(request_id, batch)
        self._count("lookup", "")
        return answer

    def _count(self, kind: str, connector: str) -> None:
        if kind == self._kind and connector == self._connector:
            self._left -= 1
            if self._left == 0:
                self._fault()


def _slots(view: MatchRequestView, connector: str) -> list[tuple[int, int, int, SlotState]]:
    (progress,) = [p for p in view.evaluations if p.connector == connector]
    return [(s.first_row, s.count, s.attempts, s.state) for s in progress.slots]


# ---- (1) a connector stopped mid-run ----------------------------------------------------------


@pytest.fixture
def live(tmp_path: Path, generated: Path) -> Iterator[Stack]:
    running = start_stack(tmp_path / "stack")
    try:
        running.publish(generated)
        yield running
    finally:
        running.stop()


def test_a_connector_stopped_mid_run_is_resumed_to_the_undisturbed_flags(
    live: Stack, generated: Path, tmp_path: Path
) -> None:
    reference = _undisturbed(live, generated, SWEEP, tmp_path / "undisturbed.csv")
    client = _FaultAfter(live, "evaluate", 3, lambda: live.stop_connector("court"), connector="court")
    spec = MatchSpec(SWEEP, PURPOSE, LEGAL_BASIS, batch_size=20)
    with pytest.raises(errors.ConnectorError) as stopped:
        run_match(client, spec, _inputs(generated), workers=1, on_pending=live.approver())
    request_id = str(stopped.value.extensions["request_id"])

    # Where it stands: the connectors before the court evaluated every batch, the court three,
    # the ones after it none; nothing was looked up.
    view = client.view(request_id)
    assert view.status.value == "evaluating" and view.rows_looked_up == 0
    order = [plan.connector for plan in view.connectors]
    before, after = order[: order.index("court")], order[order.index("court") + 1 :]
    assert before and after, order  # the court is evaluated in the middle of the run
    n = view.subject_count
    twenties = [(f, min(20, n - f)) for f in range(0, n, 20)]
    assert all([(f, c) for f, c, _, _ in _slots(view, name)] == twenties for name in before)
    assert _slots(view, "court") == [(f, 20, 1, SlotState.EVALUATED) for f in (0, 20, 40)]
    assert all(_slots(view, name) == [] for name in after)
    assert _relays(_entries(live, request_id), "court", "failed") == [(60, 20, 1)]  # audited with its batch

    live.start_connector("court")
    _resume(live, generated, SWEEP, tmp_path / "resumed.csv", request_id, batch_size=37)
    assert _client(live).result(request_id).rows == reference

    entries = _entries(live, request_id)
    # The gateway's slots kept their boundaries, evaluated again (the run's tokens were lost with
    # it) as second attempts; the rows after them were cut at the new batch size.
    for name in before:
        assert _relays(entries, name) == [(f, c, 1) for f, c in twenties] + [(f, c, 2) for f, c in twenties]
    new = [(f, min(37, n - f), 1) for f in range(60, n, 37)]
    first_three = [(0, 20, 1), (20, 20, 1), (40, 20, 1)]
    assert _relays(entries, "court") == first_three + [(f, c, 2) for f, c, _ in first_three] + new
    for name in after:
        assert _relays(entries, name) == [(f, min(37, n - f), 1) for f in range(0, n, 37)]
    # The same approval still holds: no new request, no second approval.
    assert [e["action"] for e in entries if e["kind"] == "approval"] == ["approve"]
    assert [e["kind"] for e in entries].count("request.created") == 1


# ---- (2) the gateway killed during lookups ----------------------------------------------------


class _GatewayProcess:
    """The stack's gateway as a process of its own (`xiezhi gateway serve`), on the stack's port."""

    def __init__(self, stack: Stack, log: Path) -> None:
        self._stack, self._log = stack, log
        self._services = Services()
        self.port = stack.gateway_url.rsplit(":", 1)[1]

    def start(self) -> None:
        args = ["gateway", "serve", "--config", str(self._stack.dev.gateway_config), "--port", self.port]
        health = f"{self._stack.gateway_url}/healthz"
        self._services.start("gateway", args, self._log, health, session_pki().client("requester"))

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last checkpoint, nothing flushed but what was committed."""
        (_, process, _) = self._services.processes.pop()
        process.kill()
        process.wait(timeout=60)

    def stop(self) -> None:
        self._services.stop()


def test_a_gateway_killed_during_lookups_is_resumed_to_the_undisturbed_flags(
    live: Stack, generated: Path, tmp_path: Path
) -> None:
    reference = _undisturbed(live, generated, SWEEP, tmp_path / "undisturbed.csv")
    (in_process,) = [s for s in live.servers if s.url == live.gateway_url]
    in_process.stop()
    live.servers.remove(in_process)
    gateway = _GatewayProcess(live, tmp_path / "gateway.log")
    gateway.start()
    try:
        client = _FaultAfter(live, "lookup", 2, gateway.kill)
        spec = MatchSpec(SWEEP, PURPOSE, LEGAL_BASIS, batch_size=20)
        with pytest.raises(errors.Unavailable) as killed:
            run_match(client, spec, _inputs(generated), workers=1, on_pending=live.approver())
        request_id = str(killed.value.extensions["request_id"])
        before = max(e["seq"] for e in _entries(live, request_id))
        gateway.start()

        view = client.view(request_id)
        assert view.status.value == "evaluating" and view.rows_looked_up == 40
        _resume(live, generated, SWEEP, tmp_path / "resumed.csv", request_id, batch_size=50)
        assert _client(live).result(request_id).rows == reference

        after = [e for e in _entries(live, request_id) if e["seq"] > before]
        n = view.subject_count
        for connector in ("court", "tax", "housing_fund", "civil_affairs"):
            # Only the batches holding rows not yet looked up were evaluated again, as second attempts.
            assert _relays(after, connector) == [(f, min(20, n - f), 2) for f in range(40, n, 20)], connector
        lookups = [(e["detail"]["first_row"], e["outcome"]) for e in after if e["kind"] == "lookup"]
        assert lookups == [(f, "ok") for f in range(40, n, 50)]
    finally:
        gateway.stop()


# ---- (3) a connector whose proofs do not verify -----------------------------------------------


class _Faults:
    """What the faulty connector does to its evaluation answers, by their number (1-based): in
    `bad` ones (all, if None) it corrupts the proof; `unavailable` ones it evaluates (its ticket
    is spent) and then answers 503 instead."""

    def __init__(self) -> None:
        self.bad: set[int] | None = set()
        self.unavailable: set[int] = set()
        self.answers = 0
        self._lock = threading.Lock()

    def take(self) -> str:
        with self._lock:
            self.answers += 1
            if self.answers in self.unavailable:
                return "unavailable"
            return "bad" if self.bad is None or self.answers in self.bad else ""


class _FaultyConnector:
    """A deliberately faulty connector, for tests only. In the answers `faults` picks it changes
    the proof's first character (low bits of its first scalar), so the batch DLEQ proof no
    longer verifies, or replaces the whole answer with a 503."""

    def __init__(self, app: ASGIApp, faults: _Faults) -> None:
        self.app, self.faults = app, faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fault = self.faults.take() if scope["type"] == "http" and scope["path"] == "/v1/evaluate" else ""
        if not fault:
            await self.app(scope, receive, send)
            return

        async def corrupting(message: Message) -> None:
            body = message.get("body", b"")
            at = body.find(b'"proof":"') + len(b'"proof":"')
            if message["type"] == "http.response.body" and at >= len(b'"proof":"'):
                flipped = b"B" if body[at : at + 1] != b"B" else b"C"
                message = {**message, "body": body[:at] + flipped + body[at + 1 :]}
            await send(message)

        async def unavailable(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(b"content-type", b"text/plain"), (b"content-length", b"11")]
                await send({"type": "http.response.start", "status": 503, "headers": headers})
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                await send({"type": "http.response.body", "body": b"unavailable"})

        await self.app(scope, receive, corrupting if fault == "bad" else unavailable)


@pytest.fixture
def faulty(tmp_path: Path, generated: Path) -> Iterator[tuple[Stack, _Faults]]:
    faults = _Faults()

    def prepare(name: str, app: FastAPI) -> None:
        if name == "housing_fund":
            app.add_middleware(_FaultyConnector, faults=faults)

    running = start_stack(tmp_path / "stack", prepare_connector=prepare)
    try:
        running.publish(generated, ("housing_fund",))
        yield running, faults
    finally:
        running.stop()


def _system_status(stack: Stack) -> dict[str, Any]:
    admin = stack.user_token(["system_admin"], subject="sysadmin-330000-01", org="330000")
    response = _call(stack, "GET", "/v1/system/status", admin)
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    return status


def test_a_bad_proof_is_reported_audited_shown_and_its_batch_evaluated_again(
    faulty: tuple[Stack, _Faults], generated: Path, tmp_path: Path
) -> None:
    stack, faults = faulty
    assert _system_status(stack)["proof_failures"] == {}
    faults.bad = {2}  # the answer to the second batch
    summary = match_file(
        stack.gateway_url,
        stack.user_token(["prosecutor"]),
        MatchSpec("housing_fund", PURPOSE, LEGAL_BASIS, batch_size=40),
        generated / "subjects.csv",
        tmp_path / "clues.csv",
        show_progress=False,
        workers=1,
    )
    assert_report_agrees(generated, CATALOG.get("housing_fund"), tmp_path / "clues.csv")
    assert summary.request_id is not None
    entries = _entries(stack, summary.request_id)
    (reported,) = [e for e in entries if e["action"] == "proof_failed"]
    assert reported["kind"] == "relay" and reported["connector"] == "housing_fund"
    assert reported["outcome"] == "reported" and reported["actor"] == "prosecutor-330803-01"
    assert {k: reported["detail"][k] for k in ("first_row", "count", "attempt", "reason")} == {
        "first_row": 40,
        "count": 40,
        "attempt": 1,
        "reason": "proof_failed",
    }
    relays = _relays(entries, "housing_fund")
    assert (40, 40, 1) in relays and relays[-1] == (40, 40, 2)  # evaluated again, after the report
    assert relays.index((40, 40, 2)) > relays.index((40, 40, 1))
    shown = _system_status(stack)["proof_failures"]
    assert list(shown) == ["housing_fund"] and shown["housing_fund"]["count"] == 1
    assert datetime.fromisoformat(shown["housing_fund"]["last_at"]) <= datetime.now(UTC)


def test_proofs_that_never_verify_end_the_run_with_how_to_resume_or_cancel(
    faulty: tuple[Stack, _Faults], generated: Path, tmp_path: Path
) -> None:
    stack, faults = faulty
    faults.bad = None  # every answer
    match = ["match", "--gateway", stack.gateway_url, "--model", "housing_fund", "--purpose", PURPOSE]
    match += ["--subjects", str(generated / "subjects.csv"), "--out", str(tmp_path / "c.csv"), "--no-progress"]
    failed = _xiezhi(stack, *match, "--batch-size", "50")
    assert failed.returncode == 2
    assert "error (proof_failed)" in failed.stderr and "did not verify 3 times" in failed.stderr
    request_id = failed.stderr.split("--request-id ", 1)[1].split()[0].rstrip(",")
    assert "xiezhi requests cancel --request-id" in failed.stderr

    entries = _entries(stack, request_id)
    reports = [e["detail"]["attempt"] for e in entries if e["action"] == "proof_failed"]
    assert reports == [1, 2, 3]
    assert _system_status(stack)["proof_failures"]["housing_fund"]["count"] == 3
    view = _client(stack).view(request_id)
    assert _slots(view, "housing_fund")[0] == (0, 50, 3, SlotState.PROOF_FAILED)
    # A fourth evaluation of that batch is refused, by the gateway itself.
    elements = [b64encode(b.blinded_element) for b in oprf.blind([b"x"] * 50, oprf.Mode.VOPRF)]
    again = _call(
        stack,
        "POST",
        f"/v1/requests/{request_id}/evaluations/housing_fund",
        stack.user_token(["prosecutor"]),
        {"first_row": 0, "blinded_elements": elements},
    )
    assert _code(again) == (409, "attempts_exhausted")
    # Cancelling is the way out.
    cancelled = _xiezhi(stack, "requests", "cancel", "--gateway", stack.gateway_url, "--request-id", request_id)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout, cancelled.stderr


def test_the_gateway_tries_a_failing_connector_again_under_a_fresh_ticket(
    faulty: tuple[Stack, _Faults], generated: Path, tmp_path: Path
) -> None:
    stack, faults = faulty
    faults.unavailable = {2, 3}  # the second batch's answer, and that of its first retry
    client = GatewayClient(stack.gateway_url, stack.user_token(["prosecutor"]), retry=NO_RETRIES)
    result = run_match(client, MatchSpec("housing_fund", PURPOSE, LEGAL_BASIS, batch_size=50), _inputs(generated))
    n = len(result.rows)
    assert faults.answers == len(range(0, n, 50)) + 2  # the connector evaluated that batch three times
    entries = _entries(stack, result.request_id)
    assert _relays(entries, "housing_fund") == [(f, min(50, n - f), 1) for f in range(0, n, 50)]
    assert _relays(entries, "housing_fund", "failed") == []  # one attempt, answered: no failure to audit


# ---- (4) cancelling --------------------------------------------------------------------------


def _create(stack: Stack, token: str, model: str, n: int) -> httpx.Response:
    body = {"model": model, "subject_count": n, "purpose": PURPOSE, "legal_basis": LEGAL_BASIS}
    return _call(stack, "POST", "/v1/requests", token, body)


def _elements(n: int) -> list[str]:
    return [b64encode(b.blinded_element) for b in oprf.blind([b"x%d" % i for i in range(n)], oprf.Mode.VOPRF)]


HF = ("housing_fund.balance_positive", "housing_fund.sealed_with_balance")


def _lookup(first_row: int, tokens: list[bytes]) -> dict[str, Any]:
    return {"first_row": first_row, "tokens": {c: [b64encode(t) for t in tokens] for c in HF}}


def test_a_cancelled_request_gives_back_its_quota_and_refuses_further_work(stack: Stack) -> None:
    user = "prosecutor-330803-31"
    token = stack.user_token(["prosecutor"], subject=user)
    before = _quota_used(stack, user)
    created = _create(stack, token, "housing_fund", 5)
    assert created.status_code == 201, created.text
    request_id = created.json()["request_id"]
    base = f"/v1/requests/{request_id}"
    assert _quota_used(stack, user) == before + 5
    evaluated = _call(
        stack, "POST", f"{base}/evaluations/housing_fund", token, {"first_row": 0, "blinded_elements": _elements(5)}
    )
    assert evaluated.status_code == 200, evaluated.text
    looked = _call(stack, "POST", f"{base}/lookups", token, _lookup(0, [bytes(16)] * 2))
    assert looked.status_code == 200, looked.text

    # Someone else cannot cancel it (nor tell it exists).
    other = stack.user_token(["prosecutor"], subject="prosecutor-330803-32")
    assert _code(_call(stack, "POST", f"{base}/cancel", other)) == (404, "unknown_request")

    shown = _xiezhi(stack, "requests", "show", "--gateway", stack.gateway_url, "--request-id", request_id, token=token)
    assert shown.returncode == 0 and "5 of 5 rows evaluated" in shown.stdout and "2 of 5" in shown.stdout
    cancelled = _xiezhi(
        stack, "requests", "cancel", "--gateway", stack.gateway_url, "--request-id", request_id, token=token
    )
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled; 3 subjects back" in cancelled.stdout
    # The three rows never looked up go back; the two whose flags were returned stay spent.
    assert _quota_used(stack, user) == before + 2

    refused = [
        _call(
            stack, "POST", f"{base}/evaluations/housing_fund", token, {"first_row": 0, "blinded_elements": _elements(5)}
        ),
        _call(stack, "POST", f"{base}/lookups", token, _lookup(2, [bytes(16)] * 3)),
        _call(stack, "POST", f"{base}/lookups", token, _lookup(0, [bytes(16)] * 2)),  # even a repeated one
    ]
    assert [_code(r) for r in refused] == [(409, "request_cancelled")] * 3
    again = _call(stack, "POST", f"{base}/cancel", token)  # a repeated cancel answers the same, refunds nothing
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert _quota_used(stack, user) == before + 2
    (entry,) = [e for e in _entries(stack, request_id) if e["kind"] == "request.cancelled"]
    assert entry["actor"] == user and entry["outcome"] == "cancelled"
    assert {k: entry["detail"][k] for k in ("subjects", "rows_looked_up", "refunded")} == {
        "subjects": 5,
        "rows_looked_up": 2,
        "refunded": 3,
    }


def test_a_request_waiting_for_approval_can_be_cancelled_and_then_not_approved(stack: Stack) -> None:
    user = "prosecutor-330803-33"
    token = stack.user_token(["prosecutor"], subject=user)
    before = _quota_used(stack, user)
    waiting = _create(stack, token, "spouse_property", 4)
    assert _code(waiting) == (409, "approval_required")
    request_id = waiting.json()["request_id"]
    assert _quota_used(stack, user) == before + 4
    cancelled = _call(stack, "POST", f"/v1/requests/{request_id}/cancel", token)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert _quota_used(stack, user) == before
    head = stack.user_token(["dept_head"], subject="dept-head-330803-01")
    assert request_id not in [a["request_id"] for a in _call(stack, "GET", "/v1/approvals", head).json()]
    approve = _call(stack, "POST", f"/v1/approvals/{request_id}/approve", head, {"reason": "同意核查"})
    assert _code(approve) == (409, "approval_not_pending")
    (entry,) = [e for e in _entries(stack, request_id) if e["kind"] == "request.cancelled"]
    assert entry["detail"]["refunded"] == 4 and entry["detail"]["approval_withdrawn"] is True


def test_a_completed_request_cannot_be_cancelled(stack: Stack) -> None:
    token = stack.user_token(["prosecutor"], subject="prosecutor-330803-34")
    request_id = _create(stack, token, "housing_fund", 1).json()["request_id"]
    base = f"/v1/requests/{request_id}"
    assert (
        _call(stack, "POST", f"{base}/evaluations/housing_fund", token, {"blinded_elements": _elements(1)}).status_code
        == 200
    )
    assert _call(stack, "POST", f"{base}/lookups", token, _lookup(0, [bytes(16)])).status_code == 200
    assert _code(_call(stack, "POST", f"{base}/cancel", token)) == (409, "not_cancellable")


# ---- (5) batch slots and their attempts, over HTTP -------------------------------------------


def test_batch_slots_bound_attempts_and_refuse_overlaps(stack: Stack) -> None:
    token = stack.user_token(["prosecutor"], subject="prosecutor-330803-35")
    request_id = _create(stack, token, "housing_fund", 4).json()["request_id"]
    url = f"/v1/requests/{request_id}/evaluations/housing_fund"

    def evaluate(first_row: int | None, n: int) -> tuple[int, str]:
        body: dict[str, Any] = {"blinded_elements": _elements(n)}
        if first_row is not None:
            body["first_row"] = first_row
        return _code(_call(stack, "POST", url, token, body))

    assert [evaluate(0, 2) for _ in range(3)] == [(200, "")] * 3  # the same slot, three attempts
    assert evaluate(0, 2) == (409, "attempts_exhausted")
    assert evaluate(1, 2) == (409, "slot_overlaps")
    assert evaluate(0, 3) == (409, "slot_mismatch")
    assert evaluate(3, 2) == (409, "subject_count_exceeded")
    assert evaluate(4, 1) == (409, "subject_count_exceeded")
    assert evaluate(None, 2) == (200, "")  # a body without first_row takes the slot after the last: rows 2–3
    assert evaluate(None, 1) == (409, "subject_count_exceeded")
    view = _call(stack, "GET", f"/v1/requests/{request_id}", token).json()
    assert view["max_batch_attempts"] == 3 and view["rows_looked_up"] == 0
    assert view["evaluations"] == [
        {
            "connector": "housing_fund",
            "slots": [
                {"first_row": 0, "count": 2, "attempts": 3, "state": "evaluated"},
                {"first_row": 2, "count": 2, "attempts": 1, "state": "evaluated"},
            ],
        }
    ]
    assert _relays(_entries(stack, request_id), "housing_fund") == [(0, 2, 1), (0, 2, 2), (0, 2, 3), (2, 2, 1)]
    lookup = _call(stack, "POST", f"/v1/requests/{request_id}/lookups", token, _lookup(0, [bytes(16)] * 2))
    assert lookup.status_code == 200
    assert evaluate(2, 2) == (200, "")  # rows 2–3 still wait for their lookup
    refused = _call(stack, "POST", f"/v1/requests/{request_id}/evaluations/housing_fund/failures", token,
                    {"first_row": 0, "count": 3, "reason": "proof_failed"})  # fmt: skip
    assert _code(refused) == (409, "unknown_slot")
    assert _code(
        _call(stack, "POST", url.replace("housing_fund", "court"), token, {"blinded_elements": _elements(1)})
    ) == (
        404,
        "unknown_connector",
    )


def test_a_slot_whose_rows_were_looked_up_is_never_evaluated_again(stack: Stack) -> None:
    token = stack.user_token(["prosecutor"], subject="prosecutor-330803-35")
    request_id = _create(stack, token, "housing_fund", 2).json()["request_id"]
    url = f"/v1/requests/{request_id}/evaluations/housing_fund"
    assert _call(stack, "POST", url, token, {"first_row": 0, "blinded_elements": _elements(2)}).status_code == 200
    assert (
        _call(stack, "POST", f"/v1/requests/{request_id}/lookups", token, _lookup(0, [bytes(16)] * 2)).status_code
        == 200
    )
    again = _call(stack, "POST", url, token, {"first_row": 0, "blinded_elements": _elements(2)})
    assert _code(again) == (409, "rows_already_looked_up")


# ---- (6) a repeated lookup -------------------------------------------------------------------


def test_a_repeated_lookup_answers_the_same_flags_and_a_different_one_conflicts(stack: Stack, generated: Path) -> None:
    token = stack.user_token(["prosecutor"], subject="prosecutor-330803-36")
    # Three real subjects, two with a housing-fund balance (sealed or not): tokens as the requester derives them.
    reference = expected_flags(generated)
    flags = reference["housing_fund.balance_positive"] | reference["housing_fund.sealed_with_balance"]
    valid = [row.subject for row in read_subjects(generated / "subjects.csv")[0]]
    holders = [s for s in valid if f"{s.id_type}:{s.value}" in flags][:2]
    others = [s for s in valid if f"{s.id_type}:{s.value}" not in flags][:1]
    subjects = [holders[0], others[0], holders[1]]
    outputs = oprf.evaluate_batch(
        stack.oprf_keys()["housing_fund"], [s.oprf_input() for s in subjects], oprf.Mode.VOPRF
    )
    tokens = {c: [derive_token(o, c) for o in outputs] for c in HF}

    request_id = _create(stack, token, "housing_fund", 3).json()["request_id"]
    base = f"/v1/requests/{request_id}"
    evaluated = _call(
        stack, "POST", f"{base}/evaluations/housing_fund", token, {"first_row": 0, "blinded_elements": _elements(3)}
    )
    assert evaluated.status_code == 200

    def lookup(first_row: int, rows: slice) -> httpx.Response:
        body = {"first_row": first_row, "tokens": {c: [b64encode(t) for t in tokens[c][rows]] for c in HF}}
        return _call(stack, "POST", f"{base}/lookups", token, body)

    first = lookup(0, slice(0, 2))
    assert first.status_code == 200 and [r["clue"] for r in first.json()["rows"]] == [True, False]
    repeated = lookup(0, slice(0, 2))
    assert repeated.status_code == 200 and repeated.json() == first.json()
    assert _code(lookup(0, slice(1, 3))) == (409, "lookup_mismatch")  # other tokens for the same rows
    assert _code(lookup(0, slice(0, 1))) == (409, "lookup_mismatch")  # fewer rows
    assert _code(lookup(1, slice(1, 2))) == (409, "row_out_of_order")  # not where a batch starts
    last = lookup(2, slice(2, 3))
    assert last.status_code == 200 and [r["clue"] for r in last.json()["rows"]] == [True]
    assert lookup(2, slice(2, 3)).json() == last.json()  # the request completed; a repeat still answers
    entries = [e for e in _entries(stack, request_id) if e["kind"] == "lookup"]
    assert [(e["detail"]["first_row"], e["outcome"]) for e in entries] == [
        (0, "ok"),
        (0, "replayed"),
        (2, "ok"),
        (2, "replayed"),
    ]
    result = _call(stack, "GET", f"{base}/result", token).json()
    assert [r["clue"] for r in result["rows"]] == [True, False, True]
