"""Result retention: sealed results are deleted once their retention period is over, and audited.

A request's results are kept for `result_days` after it completed (after it was created,
if it never completed). The sweep deletes each expired request's sealed batches, marks
the request (`results_deleted_at`; an unfinished one also becomes `expired`) and, when
there was anything to delete, records a `result.deleted` entry — in one transaction per
request, so no deletion goes unaudited and no audited deletion is left half done.
Reading a deleted result answers 410 `result_deleted`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, func
from sqlmodel import Session, col, select

from audit_log import EventKind
from gateway.background import Periodic
from gateway.db import MatchRequest, ResultBatch
from gateway.recorder import Recorder
from xiezhi.wire import RequestStatus

_SWEEP_BATCH = 200


class ResultRetention:
    def __init__(self, engine: Engine, recorder: Recorder, keep: timedelta, clock: Callable[[], datetime]) -> None:
        self._engine, self._recorder, self._keep, self._clock = engine, recorder, keep, clock
        self._periodic: Periodic | None = None

    def start(self, every_seconds: float) -> None:
        """Sweep now and then every `every_seconds`, in the background."""
        self._periodic = Periodic("retention", every_seconds, self.sweep)
        self._periodic.wake()

    def close(self) -> None:
        if self._periodic is not None:
            self._periodic.close()

    def sweep(self) -> int:
        """Delete every expired request's results; return how many requests lost theirs."""
        deleted = 0
        while ids := self._expired():
            for request_id in ids:
                deleted += self._delete(request_id)
        return deleted

    def _expired(self) -> list[str]:
        cutoff = self._clock() - self._keep
        since = func.coalesce(col(MatchRequest.completed_at), col(MatchRequest.created_at))
        with Session(self._engine) as session:
            return list(
                session.exec(
                    select(MatchRequest.id)
                    .where(col(MatchRequest.results_deleted_at).is_(None), since < cutoff)
                    .order_by(since)
                    .limit(_SWEEP_BATCH)
                )
            )

    def _delete(self, request_id: str) -> int:
        now = self._clock()
        with Session(self._engine) as session:
            request = session.get(MatchRequest, request_id, with_for_update=True)
            if request is None or request.results_deleted_at is not None:
                return 0  # another instance swept it first
            batches = session.execute(delete(ResultBatch).where(col(ResultBatch.request_id) == request_id))
            request.results_deleted_at = now
            unfinished = request.status != RequestStatus.COMPLETED.value
            if request.status in (RequestStatus.EVALUATING.value, RequestStatus.PENDING_APPROVAL.value):
                request.status = RequestStatus.EXPIRED.value
            session.add(request)
            if batches.rowcount:  # type: ignore[attr-defined]
                self._record(session, request, batches.rowcount, unfinished)  # type: ignore[attr-defined]
            session.commit()
        return 1

    def _record(self, session: Session, request: MatchRequest, batches: int, unfinished: bool) -> None:
        self._recorder.record_system(
            session,
            EventKind.RESULT_DELETED,
            "delete",
            "ok",
            request.id,
            model=request.model,
            batches=batches,
            rows=request.rows_looked_up,
            completed=not unfinished,
            retention_days=f"{self._keep / timedelta(days=1):g}",
        )
