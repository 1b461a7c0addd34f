"""Match-request state in the database: the one module that holds its SQL.

Loading a request for its owner, the per-connector evaluation counters, the sealed result
batches, and the status changes that go with them. Methods that take a session stage their
change in the caller's transaction, so it commits with the audit entry that describes it;
a reservation of the counters commits on its own, at once, so concurrent batches see it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from audit_log import EventKind
from gateway.auth import Principal
from gateway.db import EvaluationCount, MatchRequest, ResultBatch
from gateway.recorder import Recorder
from gateway.request_plan import RequestPlan
from gateway.vault import Vault
from xiezhi.errors import Conflict, NotFound
from xiezhi.telemetry import annotate
from xiezhi.wire import RequestStatus, RowFlags


class RequestStore:
    def __init__(self, engine: Engine, vault: Vault, recorder: Recorder, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._vault = vault
        self._recorder = recorder
        self._clock = clock

    def session(self) -> Session:
        return Session(self._engine)

    def owned(self, session: Session, principal: Principal, request_id: str) -> MatchRequest:
        """The request `principal` made; NotFound for one that is missing or someone else's.

        The owner is the user of one organisation: the same user id in another organisation
        (an identity provider's ids are unique per organisation, not across them) is someone else."""
        request = session.get(MatchRequest, request_id)
        if request is None:
            raise NotFound("unknown match request", code="unknown_request")
        if (request.requester, request.org) != (principal.subject, principal.org or ""):
            # Someone else's request: indistinguishable from a missing one to the caller.
            self._recorder.record_alone(
                principal, EventKind.DECISION, "access", "deny", request_id, rule="owner-only", reason="not_owner"
            )
            raise NotFound("unknown match request", code="unknown_request")
        annotate({"xiezhi.request_id": request.id})
        return request

    def insert(self, session: Session, request: MatchRequest) -> None:
        """Stage a new request, with a zeroed counter for each connector its plan pins."""
        session.add(request)
        session.flush()
        _open_counters(session, request.id, request.plan)

    # ---- evaluation counters ----------------------------------------------------------

    def reserve(self, request_id: str, connector: str, count: int, cap: int) -> None:
        """Reserve `count` elements at `connector`, committed at once; Conflict beyond `cap` in all."""
        self._adjust(request_id, connector, reserved=count, cap=cap)

    def release(self, request_id: str, connector: str, count: int) -> None:
        """Give back a reservation whose batch was never evaluated."""
        self._adjust(request_id, connector, reserved=-count)

    def evaluated(self, session: Session, request_id: str, connector: str, count: int) -> None:
        """Stage `count` more elements evaluated at `connector`."""
        self._adjust(request_id, connector, evaluated=count, session=session)

    def evaluated_counts(self, request_id: str) -> list[int]:
        """Elements evaluated so far, one count per connector the request pinned."""
        with Session(self._engine) as session:
            return list(session.exec(select(EvaluationCount.evaluated).where(EvaluationCount.request_id == request_id)))

    def _adjust(
        self,
        request_id: str,
        connector: str,
        *,
        reserved: int = 0,
        evaluated: int = 0,
        cap: int | None = None,
        session: Session | None = None,
    ) -> None:
        """Atomically add to a connector's counters; with `cap`, refuse to reserve beyond it."""
        row = EvaluationCount.__table__.c  # type: ignore[attr-defined]
        statement = (
            update(EvaluationCount)
            .where(row.request_id == request_id, row.connector == connector)
            .values(reserved=row.reserved + reserved, evaluated=row.evaluated + evaluated)
        )
        if cap is not None:
            statement = statement.where(row.reserved + reserved <= cap)
        own = session is None
        active = session or Session(self._engine)
        try:
            if active.execute(statement).rowcount != 1:  # type: ignore[attr-defined]
                raise Conflict("batch would exceed the request's subject count", code="subject_count_exceeded")
            if own:
                active.commit()
        finally:
            if own:
                active.close()

    # ---- results ----------------------------------------------------------------------

    def store_results(self, session: Session, request: MatchRequest, rows: list[RowFlags]) -> None:
        """Seal a lookup batch's flags as one row and advance the request, completing it after
        its last row; a second batch at the same first row conflicts."""
        first = rows[0].row  # never empty: LookupBatch needs a token per row and at least one row
        try:
            session.execute(
                insert(ResultBatch),
                [
                    {
                        "request_id": request.id,
                        "first_row": first,
                        "rows": len(rows),
                        "sealed": self._vault.seal_results(request.id, first, rows),
                    }
                ],
            )
        except IntegrityError:
            # A concurrent lookup stored these rows first.
            raise Conflict("these rows were already looked up", code="row_out_of_order") from None
        request.rows_looked_up += len(rows)
        if request.rows_looked_up == request.subject_count:
            request.status = RequestStatus.COMPLETED.value
            request.completed_at = self._clock()
        session.add(request)

    def results(self, session: Session, request_id: str) -> list[RowFlags]:
        """Every stored row of the request's result, opened, in row order."""
        batches = session.exec(
            select(ResultBatch).where(ResultBatch.request_id == request_id).order_by(col(ResultBatch.first_row))
        ).all()
        return [row for batch in batches for row in self._vault.open_results(request_id, batch.first_row, batch.sealed)]


def pin(session: Session, request: MatchRequest, plan: RequestPlan) -> None:
    """Stage the start of a request that waited for approval: its plan, its counters, running."""
    request.plan = plan
    request.status = RequestStatus.EVALUATING.value
    _open_counters(session, request.id, plan)


def _open_counters(session: Session, request_id: str, plan: RequestPlan) -> None:
    session.add_all(EvaluationCount(request_id=request_id, connector=c) for c in plan.connectors())


__all__ = ["RequestStore", "pin"]
