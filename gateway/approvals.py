"""Approvals (two-person rule): a request that needs one waits until a department head of
the right organisation approves or rejects it, with a reason.

Nobody approves their own request; a department head approves only for organisations the
policy lets them reach; a pending request expires after the policy's `pending_hours`, and
an approved one must start within `valid_hours`. Approving pins the indexes the request
will use, exactly as an immediate start would; rejecting or expiring gives the subjects
back to the requester's daily quota. Every decision and state change is audited.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from audit_log import EventKind
from gateway import indexes, quotas
from gateway.auth import Principal
from gateway.authz import Authorizer
from gateway.db import Approval, EvaluationCount, MatchRequest, aware
from gateway.purpose import holds_identifier
from gateway.recorder import Recorder
from gateway.request_store import pin
from xiezhi.errors import Conflict, InvalidInput, NotFound
from xiezhi.supervision import ModelCatalog
from xiezhi.wire import ApprovalView, RequestStatus

PENDING, APPROVED, REJECTED, EXPIRED, CANCELLED = "pending", "approved", "rejected", "expired", "cancelled"


class Approvals:
    def __init__(
        self,
        engine: Engine,
        recorder: Recorder,
        authorizer: Authorizer,
        catalog: ModelCatalog,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._recorder = recorder
        self._authorizer = authorizer
        self._catalog = catalog
        self._clock = clock

    def list(self, principal: Principal, status: str = PENDING) -> list[ApprovalView]:
        """The approvals `principal` may decide, in the given status, oldest first."""
        self._recorder.enforce(
            principal, "approval:*", "list", None, self._authorizer.decide(principal, "approval:*", "decide")
        )
        self._expire_overdue()
        with Session(self._engine) as session:
            rows = session.exec(
                select(Approval, MatchRequest)
                .where(Approval.request_id == MatchRequest.id, Approval.status == status)
                .order_by(col(Approval.requested_at))
            ).all()
            return [
                _view(session, self._catalog, approval, request)
                for approval, request in rows
                if self._authorizer.decide_approval(
                    principal, requester=request.requester, approver_org=approval.approver_org, model_id=request.model
                ).allowed
            ]

    def get(self, principal: Principal, request_id: str) -> ApprovalView:
        with Session(self._engine) as session:
            approval, request = self._load(session, request_id)
            self._authorize(principal, approval, request, "view")
            return _view(session, self._catalog, approval, request)

    def approve(self, principal: Principal, request_id: str, reason: str) -> ApprovalView:
        return self._decide(principal, request_id, reason, approve=True)

    def reject(self, principal: Principal, request_id: str, reason: str) -> ApprovalView:
        return self._decide(principal, request_id, reason, approve=False)

    def _decide(self, principal: Principal, request_id: str, reason: str, *, approve: bool) -> ApprovalView:
        if holds_identifier(reason):
            raise InvalidInput("the reason must not contain an identifier", code="identifier_in_reason")
        action = "approve" if approve else "reject"
        now = self._clock()
        with Session(self._engine) as session:
            approval, request = self._load(session, request_id)
            self._authorize(principal, approval, request, action)
            if approval.status == PENDING and now >= aware(approval.expires_at):
                self._expire(session, approval, request)
                session.commit()
                raise Conflict("the approval period has passed; the request expired", code="approval_expired")
            self._claim(session, approval, APPROVED if approve else REJECTED)
            if approve:
                self._start(session, approval, request, now)
            else:
                _end(session, approval, request, REJECTED)
            approval.decided_by, approval.decided_at, approval.decision_reason = principal.subject, now, reason
            session.add_all([approval, request])
            # The reason is free text and could name someone: the log keeps its digest, the table the text.
            self._recorder.record(
                session, principal, EventKind.APPROVAL, action, approval.status, request_id,
                approver_org=approval.approver_org, reasons=approval.reasons, reason_digest=_digest(reason),
            )  # fmt: skip
            session.commit()
            return _view(session, self._catalog, approval, request)

    def _claim(self, session: Session, approval: Approval, status: str) -> None:
        """Move a pending approval to `status` in one conditional UPDATE: of two heads deciding at
        once, exactly one succeeds and the other gets approval_not_pending."""
        row = Approval.__table__.c  # type: ignore[attr-defined]
        claim = (
            update(Approval)
            .where(row.request_id == approval.request_id, row.status == PENDING)
            .values(status=status)
            .execution_options(synchronize_session=False)
        )
        if session.execute(claim).rowcount != 1:  # type: ignore[attr-defined]
            session.refresh(approval)
            raise Conflict(f"the request is no longer pending ({approval.status})", code="approval_not_pending")

    def _start(self, session: Session, approval: Approval, request: MatchRequest, now: datetime) -> None:
        """Pin the indexes and let the request run, as an immediate start would have."""
        model = self._catalog.get(request.model)
        pin(session, request, indexes.plan(session, model.looks_up))
        approval.status = APPROVED
        approval.valid_until = now + timedelta(hours=self._authorizer.policy.limits.approval.valid_hours)

    def _authorize(self, principal: Principal, approval: Approval, request: MatchRequest, action: str) -> None:
        decision = self._authorizer.decide_approval(
            principal, requester=request.requester, approver_org=approval.approver_org, model_id=request.model
        )
        self._recorder.enforce(principal, f"approval:{request.model}", action, request.id, decision)

    def _load(self, session: Session, request_id: str) -> tuple[Approval, MatchRequest]:
        approval = session.get(Approval, request_id)
        request = session.get(MatchRequest, request_id)
        if approval is None or request is None:
            raise NotFound("no approval for this request", code="unknown_approval")
        return approval, request

    def _expire_overdue(self) -> None:
        now = self._clock()
        with Session(self._engine) as session:
            for approval in session.exec(select(Approval).where(Approval.status == PENDING)).all():
                request = session.get(MatchRequest, approval.request_id)
                if request is not None and now >= aware(approval.expires_at):
                    self._expire(session, approval, request)
            session.commit()

    def _expire(self, session: Session, approval: Approval, request: MatchRequest) -> None:
        _end(session, approval, request, EXPIRED)
        session.add_all([approval, request])
        self._recorder.record_system(
            session, EventKind.APPROVAL, "expire", EXPIRED, request.id, approver_org=approval.approver_org
        )


def check_runnable(session: Session, request: MatchRequest, now: datetime) -> None:
    """Refuse to relay or look up for a request that is not (or no longer) allowed to run."""
    status = RequestStatus(request.status)
    if status is RequestStatus.PENDING_APPROVAL:
        raise Conflict("the request waits for approval", code="pending_approval")
    if status is RequestStatus.REJECTED:
        raise Conflict("the request was rejected", code="request_rejected")
    if status is RequestStatus.EXPIRED:
        raise Conflict("the request's approval expired", code="approval_expired")
    if status is RequestStatus.CANCELLED:
        raise Conflict("the request was cancelled", code="request_cancelled")
    approval = session.get(Approval, request.id)
    if approval is None or approval.valid_until is None or now < aware(approval.valid_until):
        return
    started = session.exec(select(EvaluationCount.reserved).where(EvaluationCount.request_id == request.id)).all()
    if not any(started):
        raise Conflict("the approved request was not started in time", code="approval_expired")


def withdraw(session: Session, request_id: str) -> bool:
    """Stage the end of a pending approval whose request its requester cancelled; True if one was
    pending. One conditional UPDATE, like a decision: of a cancel and an approval at once, one wins."""
    row = Approval.__table__.c  # type: ignore[attr-defined]
    withdrawn = session.execute(
        update(Approval)
        .where(row.request_id == request_id, row.status == PENDING)
        .values(status=CANCELLED)
        .execution_options(synchronize_session=False)
    )
    return bool(withdrawn.rowcount)  # type: ignore[attr-defined]


def new_approval(request: MatchRequest, reasons: tuple[str, ...], approver_org: str, pending_hours: float) -> Approval:
    return Approval(
        request_id=request.id,
        approver_org=approver_org,
        reasons=",".join(reasons),
        status=PENDING,
        requested_at=request.created_at,
        expires_at=request.created_at + timedelta(hours=pending_hours),
    )


def _end(session: Session, approval: Approval, request: MatchRequest, status: str) -> None:
    """Close a request that will never run (rejected or expired) and give its subjects back."""
    approval.status, request.status = status, RequestStatus(status).value
    quotas.refund(session, request.requester, request.subject_count, aware(request.created_at))


def _digest(text: str) -> str:
    # base64url, not hex: a hex digest can hold the long digit runs the audit log refuses.
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()[:12]).decode()


def _view(session: Session, catalog: ModelCatalog, approval: Approval, request: MatchRequest) -> ApprovalView:
    model = catalog.get(request.model)
    return ApprovalView(
        request_id=request.id,
        model=request.model,
        model_title=model.title,
        capabilities=indexes.describe(session, model.looks_up),
        subjects_digest=request.subjects_digest,
        requester=request.requester,
        org=request.org,
        scope=request.scope,
        subject_count=request.subject_count,
        purpose=request.purpose,
        legal_basis=request.legal_basis,
        reasons=tuple(approval.reasons.split(",")),
        approver_org=approval.approver_org,
        status=approval.status,
        requested_at=aware(approval.requested_at),
        expires_at=aware(approval.expires_at),
        decided_by=approval.decided_by,
        decided_at=aware(approval.decided_at) if approval.decided_at else None,
        decision_reason=approval.decision_reason,
    )
