"""Request admission, the first step of a match request: decide, spend quota, pin, record.

A request is let in only through `Admission.create`: the policy decides the model run; a
denial is refused, a run that needs a department head's approval is recorded as waiting
for one (`ApprovalRequired`), any other is started at once. Starting spends the
requester's quota and pins each connector's active epoch and indexes (the request plan),
all in one transaction with the `request.created` entry. The steps that follow, while the
request runs, are sequenced by `gateway.pipeline`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from sqlmodel import Session

from audit_log import EventKind
from gateway import indexes, quotas
from gateway.approvals import new_approval
from gateway.auth import Principal
from gateway.authz import Authorizer, Decision, Outcome, RunAsk
from gateway.db import MatchRequest
from gateway.quotas import china_day
from gateway.recorder import Recorder
from gateway.request_plan import EMPTY_PLAN, RequestPlan
from gateway.request_store import RequestStore
from gateway.settings import Limits
from xiezhi.errors import ApprovalRequired, Denied, InvalidInput, XiezhiError
from xiezhi.supervision import ModelCatalog, SupervisionModel
from xiezhi.telemetry import traced
from xiezhi.wire import ConnectorProgress, CreateMatchRequest, MatchRequestView, RequestStatus


class Admission:
    def __init__(
        self,
        limits: Limits,
        store: RequestStore,
        recorder: Recorder,
        authorizer: Authorizer,
        catalog: ModelCatalog,
        clock: Callable[[], datetime],
    ) -> None:
        self._limits = limits
        self._store = store
        self._recorder = recorder
        self._authorizer = authorizer
        self._catalog = catalog
        self._clock = clock

    @traced("gateway.create", counted=True)
    def create(self, principal: Principal, body: CreateMatchRequest) -> MatchRequestView:
        """Decide a model run; start it, or record it as waiting for approval (ApprovalRequired).

        A refusal after the decision (quota, no index) is audited as `request.refused`.
        """
        model = self._catalog.get(body.model)
        if body.subject_count > self._limits.max_subjects_per_request:
            limit = self._limits.max_subjects_per_request
            raise InvalidInput(f"subject_count exceeds the limit of {limit}", code="too_many_subjects")
        request_id, now = str(uuid.uuid4()), self._clock()
        decision = self._decide(principal, model, body, request_id, now)
        try:
            request = self._admit(principal, model, body, decision, request_id, now)
        except XiezhiError as exc:
            self._recorder.record_alone(
                principal, EventKind.REQUEST_REFUSED, "create", "refused", request_id, reason=exc.code
            )
            raise
        if decision.outcome is Outcome.NEEDS_APPROVAL:
            raise ApprovalRequired(
                f"the request waits for approval by a department head of {decision.approver_org}",
                extensions={
                    "request_id": request_id,
                    "approver_org": decision.approver_org,
                    "reasons": decision.approval_reasons,
                },
            )
        with self._store.session() as session:
            return self._view(session, request, model)

    def view(self, principal: Principal, request_id: str) -> MatchRequestView:
        """The caller's own request: its status and, once it runs, what it pinned."""
        with self._store.session() as session:
            request = self._store.owned(session, principal, request_id)
            obj = "request:" + request_id
            self._recorder.enforce(principal, obj, "read", request_id, self._authorizer.decide(principal, obj, "read"))
            return self._view(session, request, self._catalog.get(request.model))

    def _view(self, session: Session, request: MatchRequest, model: SupervisionModel) -> MatchRequestView:
        return request_view(request, model, self._store.progress(session, request), self._limits.max_batch_attempts)

    def _decide(
        self, principal: Principal, model: SupervisionModel, body: CreateMatchRequest, request_id: str, now: datetime
    ) -> Decision:
        """Decide and record the run; raise Denied (with the reason code) unless it may go ahead."""
        ask = RunAsk(model, body.purpose, body.legal_basis, body.scope, body.subject_count, china_day(now))
        decision = self._authorizer.decide_run(principal, ask)
        self._recorder.decision(
            principal, f"model:{model.id}", "run", request_id, decision, model=model.id, subjects=body.subject_count
        )
        if decision.outcome is Outcome.DENY:
            raise Denied("the policy does not allow this request", code=decision.reason)
        return decision

    def _admit(
        self,
        principal: Principal,
        model: SupervisionModel,
        body: CreateMatchRequest,
        decision: Decision,
        request_id: str,
        now: datetime,
    ) -> MatchRequest:
        """Spend quota, pin indexes (unless waiting for approval) and record, in one transaction."""
        pending = decision.outcome is Outcome.NEEDS_APPROVAL
        with self._store.session() as session:
            quota = quotas.quota_for(self._authorizer.policy.limits, principal.roles)
            quotas.spend(session, principal.subject, quota, body.subject_count, now)
            plan = EMPTY_PLAN if pending else indexes.plan(session, model.looks_up)
            request = _new_request(principal, body, decision, plan, request_id, now)
            self._store.insert(session, request)
            if pending:
                assert decision.approver_org is not None
                hours = self._authorizer.policy.limits.approval.pending_hours
                session.add(new_approval(request, decision.approval_reasons, decision.approver_org, hours))
            self._record_created(session, principal, request, decision)
            session.commit()
            session.refresh(request)
            return request

    def _record_created(
        self, session: Session, principal: Principal, request: MatchRequest, decision: Decision
    ) -> None:
        self._recorder.record(
            session,
            principal,
            EventKind.REQUEST_CREATED,
            "create",
            request.status,
            request.id,
            model=request.model,
            purpose=request.purpose,
            legal_basis=request.legal_basis,
            scope=request.scope,
            subjects=request.subject_count,
            subjects_digest=request.subjects_digest,
            connectors=",".join(sorted(request.plan.connectors())),
            approver_org=decision.approver_org,
            approval_reasons=",".join(decision.approval_reasons) or None,
        )


def _new_request(
    principal: Principal,
    body: CreateMatchRequest,
    decision: Decision,
    plan: RequestPlan,
    request_id: str,
    now: datetime,
) -> MatchRequest:
    """The row of a request just admitted: running, or waiting for approval with the empty plan."""
    assert decision.purpose is not None and decision.scope is not None
    pending = decision.outcome is Outcome.NEEDS_APPROVAL
    return MatchRequest(
        id=request_id,
        model=body.model,
        requester=principal.subject,
        org=principal.org or "",
        purpose=decision.purpose.reference,
        legal_basis=(body.legal_basis or "").strip(),
        scope=decision.scope,
        subject_count=body.subject_count,
        subjects_digest=body.subjects_digest,
        status=(RequestStatus.PENDING_APPROVAL if pending else RequestStatus.EVALUATING).value,
        plan=plan,
        created_at=now,
    )


def request_view(
    request: MatchRequest, model: SupervisionModel, progress: tuple[ConnectorProgress, ...], max_batch_attempts: int
) -> MatchRequestView:
    """The request as its requester sees it: `connectors` is empty until it may run; `progress`
    holds each pinned connector's batch slots."""
    return MatchRequestView(
        request_id=request.id,
        model=request.model,
        status=RequestStatus(request.status),
        subject_count=request.subject_count,
        scope=request.scope,
        reveals=model.reveals,
        created_at=request.created_at,
        connectors=request.plan.views(),
        evaluations=progress,
        rows_looked_up=request.rows_looked_up,
        max_batch_attempts=max_batch_attempts,
    )


__all__ = ["Admission", "request_view"]
