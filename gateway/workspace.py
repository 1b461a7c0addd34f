"""What a requester sees of their own work: their requests (newest first, with progress and
clues), the models they may run with what each looks up, and their quota today.

Owner-scoped metadata only: a request list holds only the caller's own requests, and never
a subject or a flag. Whether a model may be run is the policy's answer for the caller now,
shown to help them choose; the request itself is authorized, and recorded, when it is made.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from gateway import indexes, quotas
from gateway.auth import Principal
from gateway.authz import Authorizer
from gateway.db import MatchRequest, QuotaUsage, aware
from xiezhi.errors import Denied, NotFound
from xiezhi.supervision import ModelCatalog
from xiezhi.wire import ModelInfo, QuotaView, RequestStatus, RequestSummary, WorkspaceView

MAX_LISTED = 200


class Workspace:
    def __init__(
        self, engine: Engine, authorizer: Authorizer, catalog: ModelCatalog, clock: Callable[[], datetime]
    ) -> None:
        self._engine = engine
        self._authorizer = authorizer
        self._catalog = catalog
        self._clock = clock

    def requests(self, principal: Principal, limit: int = 50) -> list[RequestSummary]:
        """The caller's own requests, newest first, at most `limit` (up to MAX_LISTED)."""
        with Session(self._engine) as session:
            found = session.exec(
                select(MatchRequest)
                .where(MatchRequest.requester == principal.subject)
                .order_by(col(MatchRequest.created_at).desc())
                .limit(max(1, min(limit, MAX_LISTED)))
            ).all()
            return [self._summary(request) for request in found]

    def view(self, principal: Principal) -> WorkspaceView:
        with Session(self._engine) as session:
            models = tuple(
                ModelInfo(
                    id=model.id,
                    title=model.title,
                    description=model.description.strip(),
                    subjects=model.subjects.value,
                    looks_up=indexes.describe(session, model.looks_up),
                    reveals=model.reveals,
                    may_run=self._authorizer.decide(principal, f"model:{model.id}", "run").allowed,
                )
                for model in self._catalog
            )
            return WorkspaceView(
                subject=principal.subject,
                org=principal.org,
                roles=tuple(sorted(principal.roles)),
                quota=self._quota(session, principal),
                models=models,
            )

    def _quota(self, session: Session, principal: Principal) -> QuotaView | None:
        try:
            quota = quotas.quota_for(self._authorizer.policy.limits, principal.roles)
        except Denied:
            return None  # no quota for these roles: they run nothing
        day = quotas.Window.day(self._clock())
        usage = session.get(QuotaUsage, (principal.subject, day.key))
        used = usage.used if usage else 0
        return QuotaView(
            subjects_per_day=quota.subjects_per_day,
            used_today=used,
            remaining_today=max(0, quota.subjects_per_day - used),
            resets_at=day.resets_at,
        )

    def _summary(self, request: MatchRequest) -> RequestSummary:
        try:
            title = self._catalog.get(request.model).title
        except NotFound:
            title = request.model
        completed = request.status == RequestStatus.COMPLETED.value
        return RequestSummary(
            request_id=request.id,
            model=request.model,
            model_title=title,
            status=RequestStatus(request.status),
            purpose=request.purpose,
            subject_count=request.subject_count,
            rows_looked_up=request.rows_looked_up,
            clues=request.clues,
            created_at=aware(request.created_at),
            completed_at=aware(request.completed_at) if request.completed_at else None,
            result_available=completed and request.results_deleted_at is None,
        )
