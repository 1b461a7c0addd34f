"""HTTP calls from the requester to the gateway, with one place that translates errors.

A problem-detail answer becomes the matching XiezhiError subclass with the gateway's
reason code, so the CLI can print "denied (run_not_granted)" rather than a traceback.

Transient failures are tried again (tenacity), with exponential backoff, within a number
of attempts and a time budget (`RetryPolicy`): a call that could not connect, always (it
never reached the gateway); a lost connection, a timeout, or a 502 or 503 answer, only for
calls that are safe to repeat — reads, evaluations and lookups (the gateway answers a
repeated lookup from what it stored and counts a repeated evaluation as another bounded
attempt at the same batch slot), failure reports and cancels. A 4xx is never tried again.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, BinaryIO, NoReturn

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, retry_if_result, stop_after_attempt
from tenacity import stop_before_delay as within
from tenacity import wait_exponential_jitter as backoff

from xiezhi import errors
from xiezhi.telemetry import annotate, span, trace_headers
from xiezhi.tls import TLSFiles, check_scheme, client_tls_from_env, insecure_http_from_env, verification
from xiezhi.wire import (
    AlarmResolution,
    AlarmView,
    ApprovalDecision,
    ApprovalView,
    CheckpointView,
    ConsistencyProofView,
    CreateMatchRequest,
    EvaluationBatch,
    EvaluationFailure,
    EvaluationResult,
    EvaluationSlot,
    InclusionProofView,
    KeyRotation,
    KeyStatus,
    LogKeyView,
    LookupBatch,
    LookupResult,
    MatchRequestView,
    MatchResult,
    PolicyUpdate,
    PolicyView,
    RequestSummary,
    WorkspaceView,
)

_BY_STATUS: dict[int, type[errors.XiezhiError]] = {
    400: errors.InvalidInput,
    401: errors.Unauthenticated,
    403: errors.Denied,
    404: errors.NotFound,
    409: errors.Conflict,
    410: errors.Gone,
    422: errors.ProofError,
    429: errors.TooManyRequests,
    502: errors.ConnectorError,
    503: errors.Unavailable,
}

_UUID_SEGMENT = re.compile(r"/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?=/|$)")
_NUMBER_SEGMENT = re.compile(r"/[0-9]+(?=/|$)")


def _route_template(path: str) -> str:
    """`/v1/requests/<uuid>/lookups?x=1` → `/v1/requests/{request_id}/lookups`: what a span may name."""
    path = path.split("?", 1)[0]
    return _NUMBER_SEGMENT.sub("/{n}", _UUID_SEGMENT.sub("/{request_id}", path))


_EXTENSIONS = ("request_id", "approver_org", "reasons", "limit", "resets_at", "deleted_at")
_TRANSIENT_STATUS = frozenset({502, 503})

log = logging.getLogger("xiezhi.requester")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a call is tried again after a transient failure: at most
    `attempts` tries in all, none started after `budget_seconds`, waiting from
    `first_wait_seconds` doubling up to `max_wait_seconds` (with as much jitter) between."""

    attempts: int = 5
    budget_seconds: float = 60.0
    first_wait_seconds: float = 0.5
    max_wait_seconds: float = 8.0


NO_RETRIES = RetryPolicy(attempts=1)


class GatewayClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 300.0,
        tls: TLSFiles | None = None,
        insecure_http: bool | None = None,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Call the gateway at `base_url`, presenting the requester system's certificate `tls`
        (default: $XIEZHI_TLS_CERT/KEY/CA). Plain HTTP is refused unless `insecure_http`
        (default: $XIEZHI_INSECURE_HTTP) allows it. `retry` says how transient failures are
        tried again; `transport` replaces the network (tests)."""
        check_scheme(base_url, insecure_http_from_env() if insecure_http is None else insecure_http, "gateway")
        tls = tls if tls is not None else client_tls_from_env()
        self._base = base_url.rstrip("/")
        verify = verification(tls)
        self._client = httpx.Client(timeout=timeout, verify=verify, transport=transport)
        self._headers = {"authorization": f"Bearer {token}"}
        self._retry = retry

    def close(self) -> None:
        self._client.close()

    def create(self, body: CreateMatchRequest) -> MatchRequestView:
        raw = self._call("POST", "/v1/requests", body.model_dump(mode="json"), repeatable=False)
        return MatchRequestView.model_validate(raw)

    def view(self, request_id: str) -> MatchRequestView:
        return MatchRequestView.model_validate(self._call("GET", f"/v1/requests/{request_id}"))

    def requests(self, limit: int = 50) -> list[RequestSummary]:
        """The caller's own requests, newest first."""
        return [RequestSummary.model_validate(item) for item in self._call("GET", f"/v1/requests?limit={limit}")]

    def workspace(self) -> WorkspaceView:
        """Who the caller is, their quota today, the models they may run and what each looks up."""
        return WorkspaceView.model_validate(self._call("GET", "/v1/me"))

    def approvals(self, status: str = "pending") -> list[ApprovalView]:
        raw = self._call("GET", f"/v1/approvals?status={status}")
        return [ApprovalView.model_validate(item) for item in raw]

    def decide(self, request_id: str, *, approve: bool, reason: str) -> ApprovalView:
        verb = "approve" if approve else "reject"
        body = ApprovalDecision(reason=reason).model_dump(mode="json")
        raw = self._call("POST", f"/v1/approvals/{request_id}/{verb}", body, repeatable=False)
        return ApprovalView.model_validate(raw)

    def push_policy(self, text: str) -> PolicyView:
        raw = self._call("PUT", "/v1/policy", PolicyUpdate(policy=text).model_dump(), repeatable=False)
        return PolicyView.model_validate(raw)

    def evaluate(self, request_id: str, connector: str, batch: EvaluationBatch) -> EvaluationResult:
        raw = self._call("POST", f"/v1/requests/{request_id}/evaluations/{connector}", batch.model_dump(mode="json"))
        return EvaluationResult.model_validate(raw)

    def report_failure(self, request_id: str, connector: str, failure: EvaluationFailure) -> EvaluationSlot:
        """Tell the gateway an evaluation of one batch slot failed on this side (its proof did not verify)."""
        path = f"/v1/requests/{request_id}/evaluations/{connector}/failures"
        return EvaluationSlot.model_validate(self._call("POST", path, failure.model_dump(mode="json")))

    def lookup(self, request_id: str, batch: LookupBatch) -> LookupResult:
        raw = self._call("POST", f"/v1/requests/{request_id}/lookups", batch.model_dump(mode="json"))
        return LookupResult.model_validate(raw)

    def cancel(self, request_id: str) -> MatchRequestView:
        """Cancel one's own request; the quota of its rows never looked up goes back."""
        return MatchRequestView.model_validate(self._call("POST", f"/v1/requests/{request_id}/cancel"))

    def result(self, request_id: str) -> MatchResult:
        return MatchResult.model_validate(self._call("GET", f"/v1/requests/{request_id}/result"))

    # ---- alarms (operators; auditors read them) ---------------------------------------------

    def alarms(self, include_resolved: bool = False) -> list[AlarmView]:
        query = "?include_resolved=true" if include_resolved else ""
        return [AlarmView.model_validate(a) for a in self._call("GET", f"/v1/system/alarms{query}")]

    def resolve_alarm(self, alarm_id: str, reason: str) -> AlarmView:
        body = AlarmResolution(reason=reason).model_dump(mode="json")
        return AlarmView.model_validate(self._call("POST", f"/v1/system/alarms/{alarm_id}/resolve", body))

    # ---- keys (security administrators) -----------------------------------------------------

    def key_status(self) -> KeyStatus:
        return KeyStatus.model_validate(self._call("GET", "/v1/keys"))

    def rotate_keys(self, what: KeyRotation) -> KeyStatus:
        raw = self._call("POST", "/v1/keys/rotate", what.model_dump(mode="json"), repeatable=False)
        return KeyStatus.model_validate(raw)

    # ---- the audit log (security auditors) -------------------------------------------------

    def audit_log_key(self) -> LogKeyView:
        return LogKeyView.model_validate(self._call("GET", "/v1/audit/log-key"))

    def audit_checkpoints(self) -> list[CheckpointView]:
        return [CheckpointView.model_validate(c) for c in self._call("GET", "/v1/audit/checkpoints?limit=10000")]

    def audit_checkpoint(self, size: int | None = None) -> CheckpointView:
        query = "" if size is None else f"?size={size}"
        return CheckpointView.model_validate(self._call("GET", f"/v1/audit/checkpoint{query}"))

    def audit_inclusion(self, seq: int, size: int | None = None) -> InclusionProofView:
        query = f"?seq={seq}" + ("" if size is None else f"&size={size}")
        return InclusionProofView.model_validate(self._call("GET", f"/v1/audit/proofs/inclusion{query}"))

    def audit_consistency(self, first: int, second: int) -> ConsistencyProofView:
        query = f"?first={first}&second={second}"
        return ConsistencyProofView.model_validate(self._call("GET", f"/v1/audit/proofs/consistency{query}"))

    def audit_entry_text(self, seq: int) -> str:
        """The exact canonical text of entry `seq`."""
        return str(self._call("GET", f"/v1/audit/entries/{seq}")["entry"])

    def audit_export(self, out: BinaryIO, size: int | None = None) -> int:
        """Stream entries 0…size−1 into `out`; returns the tree size exported."""
        query = "" if size is None else f"?size={size}"
        with self._client.stream(
            "GET", f"{self._base}/v1/audit/export/entries.jsonl{query}", headers=self._headers
        ) as response:
            if response.status_code >= 300:
                response.read()
                self._raise(response)
            for chunk in response.iter_bytes():
                out.write(chunk)
            return int(response.headers["x-xiezhi-tree-size"])

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, *, repeatable: bool = True) -> Any:
        """One call, tried again after a transient failure (a call that is not `repeatable`
        only when it could not connect); its JSON answer, or the answer's problem raised."""
        try:
            response = self._retrying(repeatable)(self._send, method, path, body)
        except httpx.HTTPError as exc:
            raise errors.Unavailable(
                f"gateway unreachable ({type(exc).__name__})", code="gateway_unreachable"
            ) from None
        if response.status_code < 300:
            return response.json()
        self._raise(response)

    def _retrying(self, repeatable: bool) -> Retrying:
        policy = self._retry
        first_wait = policy.first_wait_seconds

        def transient(exc: BaseException) -> bool:
            unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            return unsent or (repeatable and isinstance(exc, httpx.TransportError))

        def note(state: RetryCallState) -> None:
            outcome = state.outcome
            failed = outcome.exception() if outcome is not None and outcome.failed else None
            what = type(failed).__name__ if failed else f"HTTP {outcome.result().status_code}" if outcome else "?"
            log.warning("gateway call failed (%s); trying again (attempt %d)", what, state.attempt_number + 1)

        return Retrying(
            stop=stop_after_attempt(policy.attempts) | within(policy.budget_seconds),
            wait=backoff(multiplier=first_wait, max=policy.max_wait_seconds, jitter=first_wait),
            retry=retry_if_exception(transient)
            | retry_if_result(lambda response: repeatable and response.status_code in _TRANSIENT_STATUS),
            before_sleep=note,
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )

    def _send(self, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
        """One call, as a client span named by its route (never its path) whose W3C trace
        context goes with the request."""
        template = _route_template(path)
        attributes = {"http.request.method": method, "url.template": template}
        with span(f"{method} {template}", attributes, kind="client"):
            headers = {**self._headers, **trace_headers()}
            response = self._client.request(method, self._base + path, json=body, headers=headers)
            annotate({"http.response.status_code": response.status_code})
        return response

    @staticmethod
    def _raise(response: httpx.Response) -> NoReturn:
        try:
            problem = response.json()
            detail, code = str(problem.get("detail", "")), str(problem.get("code", ""))
            extensions = {k: problem[k] for k in _EXTENSIONS if problem.get(k) is not None}
        except ValueError:
            detail, code, extensions = response.text[:200], "", {}
        error = _BY_STATUS.get(response.status_code, errors.XiezhiError)
        if code == errors.ApprovalRequired.code:
            error = errors.ApprovalRequired
        if "reasons" in extensions:
            extensions["reasons"] = tuple(extensions["reasons"])
        raise error(f"gateway answered {response.status_code}: {detail}", code=code or None, extensions=extensions)
