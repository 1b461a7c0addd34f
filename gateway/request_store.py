"""Match-request state in the database: the one module that holds its SQL.

Loading a request for its owner, its batch slots (`gateway.slots`) with the per-connector
counters that sum them, the sealed result batches, and the status changes that go with
them (completion, cancellation). Methods that take a session stage their change in the
caller's transaction, so it commits with the audit entry that describes it; a slot claim
or release commits on its own, at once, so concurrent batches see it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Update, delete, func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from audit_log import EventKind
from gateway import slots
from gateway.auth import Principal
from gateway.db import BatchSlot, EvaluationCount, MatchRequest, ResultBatch, aware
from gateway.recorder import Recorder
from gateway.request_plan import RequestPlan
from gateway.vault import StoredBatch, Vault
from xiezhi.errors import Conflict, NotFound
from xiezhi.telemetry import annotate
from xiezhi.wire import ConnectorProgress, EvaluationSlot, ProofFailures, RequestStatus, RowFlags, SlotState


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

    # ---- batch slots --------------------------------------------------------------------

    def claim_slot(
        self, request: MatchRequest, connector: str, first_row: int | None, count: int, max_attempts: int
    ) -> slots.Claim:
        """Claim an attempt at a batch slot (`gateway.slots.claim`), committed at once so that
        concurrent batches see it. Raises Conflict with the slot's reason code, or
        `request_cancelled`."""
        with Session(self._engine) as session:
            self._lock(session, request.id, connector)  # one claim per connector at a time
            current = session.exec(select(MatchRequest).where(MatchRequest.id == request.id)).one()
            _check_open(current)
            claim = slots.claim(
                self._slots(session, request.id, connector),
                first_row,
                count,
                subject_count=current.subject_count,
                rows_looked_up=current.rows_looked_up,
                max_attempts=max_attempts,
            )
            if claim.new:
                session.add(
                    BatchSlot(
                        request_id=request.id,
                        connector=connector,
                        first_row=claim.first_row,
                        count=count,
                        attempts=1,
                        status=SlotState.RESERVED.value,
                    )
                )
                self._count(session, request.id, connector, reserved=count)
            else:
                session.execute(
                    _slot_update(request.id, connector, claim.first_row).values(attempts=_SLOT.attempts + 1)
                )
            session.commit()
        return claim

    def release_slot(self, request_id: str, connector: str, claim: slots.Claim) -> None:
        """Give back an attempt whose evaluation never reached the requester; a slot left
        without any is deleted with its reservation. Committed at once."""
        with Session(self._engine) as session:
            session.execute(_slot_update(request_id, connector, claim.first_row).values(attempts=_SLOT.attempts - 1))
            unused = delete(BatchSlot).where(
                *_slot_key(request_id, connector, claim.first_row),
                _SLOT.attempts == 0,
                _SLOT.status == SlotState.RESERVED.value,
            )
            if session.execute(unused).rowcount == 1:  # type: ignore[attr-defined]
                self._count(session, request_id, connector, reserved=-claim.count)
            session.commit()

    def slot_evaluated(self, session: Session, request_id: str, connector: str, claim: slots.Claim) -> None:
        """Stage an evaluation returned for `claim`: its slot's rows count as evaluated."""
        changed = session.execute(
            _slot_update(request_id, connector, claim.first_row)
            .where(_SLOT.status != SlotState.EVALUATED.value)
            .values(status=SlotState.EVALUATED.value)
        )
        if changed.rowcount == 1:  # type: ignore[attr-defined]
            self._count(session, request_id, connector, evaluated=claim.count)

    def proof_failed(
        self, session: Session, request_id: str, connector: str, first_row: int, count: int
    ) -> BatchSlot | None:
        """Stage the requester's report that the last evaluation of a slot failed its proof; the
        slot then needs another attempt before its rows count as evaluated. Returns the slot,
        or None if its last evaluation was reported already. Raises Conflict `unknown_slot`
        unless an evaluated slot has exactly these rows."""
        slot = session.get(BatchSlot, (request_id, connector, first_row))
        if slot is None or slot.count != count:
            raise Conflict("no batch slot of this connector has exactly these rows", code="unknown_slot")
        if slot.status == SlotState.PROOF_FAILED.value:
            return None  # the same report again (a retry): counted once
        changed = session.execute(
            _slot_update(request_id, connector, first_row)
            .where(_SLOT.status == SlotState.EVALUATED.value)
            .values(
                status=SlotState.PROOF_FAILED.value,
                proof_failures=_SLOT.proof_failures + 1,
                reported_attempt=_SLOT.attempts,
                last_proof_failure_at=self._clock(),
            )
        )
        if changed.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict("this batch slot holds no evaluation to report on", code="unknown_slot")
        self._count(session, request_id, connector, evaluated=-count)
        session.refresh(slot)
        return slot

    def evaluated_counts(self, request_id: str) -> list[int]:
        """Rows evaluated so far, one count per connector the request pinned."""
        with Session(self._engine) as session:
            return list(session.exec(select(EvaluationCount.evaluated).where(EvaluationCount.request_id == request_id)))

    def progress(self, session: Session, request: MatchRequest) -> tuple[ConnectorProgress, ...]:
        """Each pinned connector's batch slots, in row order."""
        rows = session.exec(
            select(BatchSlot).where(BatchSlot.request_id == request.id).order_by(col(BatchSlot.first_row))
        ).all()
        return tuple(
            ConnectorProgress(
                connector=connector,
                slots=tuple(
                    EvaluationSlot(first_row=r.first_row, count=r.count, attempts=r.attempts, state=SlotState(r.status))
                    for r in rows
                    if r.connector == connector
                ),
            )
            for connector in request.plan.connectors()
        )

    def _slots(self, session: Session, request_id: str, connector: str) -> list[slots.Slot]:
        rows = session.exec(
            select(BatchSlot).where(BatchSlot.request_id == request_id, BatchSlot.connector == connector)
        ).all()
        return [slots.Slot(r.first_row, r.count, r.attempts, SlotState(r.status)) for r in rows]

    def _lock(self, session: Session, request_id: str, connector: str) -> None:
        """Take the connector's counter row for the rest of the transaction (a write that
        changes nothing: a row lock on PostgreSQL, the write lock on SQLite)."""
        row = EvaluationCount.__table__.c  # type: ignore[attr-defined]
        statement = (
            update(EvaluationCount)
            .where(row.request_id == request_id, row.connector == connector)
            .values(reserved=row.reserved)
        )
        if session.execute(statement).rowcount != 1:  # type: ignore[attr-defined]
            raise NotFound(f"connector {connector} is not part of this request", code="unknown_connector")

    def _count(
        self, session: Session, request_id: str, connector: str, *, reserved: int = 0, evaluated: int = 0
    ) -> None:
        """Add to a connector's counters: rows in slots, rows in evaluated slots."""
        row = EvaluationCount.__table__.c  # type: ignore[attr-defined]
        session.execute(
            update(EvaluationCount)
            .where(row.request_id == request_id, row.connector == connector)
            .values(reserved=row.reserved + reserved, evaluated=row.evaluated + evaluated)
        )

    # ---- results ----------------------------------------------------------------------

    def store_results(
        self, session: Session, request: MatchRequest, rows: list[RowFlags], tokens_digest: bytes
    ) -> bool:
        """Stage a lookup batch's flags, sealed with its tokens' digest, and advance the request,
        completing it after its last row. False, staging nothing, if a batch is stored at
        this first row already (a concurrent lookup of the same rows); Conflict if the request
        moved on meanwhile (`row_out_of_order`, `request_cancelled`)."""
        first = rows[0].row  # never empty: LookupBatch needs a token per row and at least one row
        values = {
            "request_id": request.id,
            "first_row": first,
            "rows": len(rows),
            "sealed": self._vault.seal_results(request.id, first, rows, tokens_digest),
        }
        table = ResultBatch.__table__  # type: ignore[attr-defined]
        insert = (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(table)
        # NOTE: RETURNING, not rowcount: an ORM-enabled insert reports rowcount -1 on psycopg,
        # which read as "stored already" and left the request where it was.
        staged = insert.values(values).on_conflict_do_nothing().returning(table.c.first_row)
        if session.execute(staged).first() is None:
            return False
        done = first + len(rows) == request.subject_count
        advance = (
            update(MatchRequest)
            .where(
                col(MatchRequest.id) == request.id,
                col(MatchRequest.rows_looked_up) == first,
                col(MatchRequest.status) == RequestStatus.EVALUATING.value,
            )
            .values(
                rows_looked_up=first + len(rows),
                clues=col(MatchRequest.clues) + sum(row.clue for row in rows),
                **({"status": RequestStatus.COMPLETED.value, "completed_at": self._clock()} if done else {}),
            )
        )
        if session.execute(advance).rowcount != 1:  # type: ignore[attr-defined]
            session.refresh(request)
            _check_open(request)
            raise Conflict(f"expected first_row {request.rows_looked_up}", code="row_out_of_order")
        return True

    def stored_batch(self, session: Session, request_id: str, first_row: int) -> StoredBatch | None:
        """The lookup batch stored at `first_row`, opened, or None."""
        batch = session.get(ResultBatch, (request_id, first_row))
        if batch is None:
            return None
        return self._vault.open_batch(request_id, first_row, batch.sealed)

    def results(self, session: Session, request_id: str) -> list[RowFlags]:
        """Every stored row of the request's result, opened, in row order."""
        batches = session.exec(
            select(ResultBatch).where(ResultBatch.request_id == request_id).order_by(col(ResultBatch.first_row))
        ).all()
        return [row for b in batches for row in self._vault.open_batch(request_id, b.first_row, b.sealed).rows]

    # ---- cancelling -------------------------------------------------------------------

    def cancel(self, session: Session, request: MatchRequest) -> int | None:
        """Stage the end of a request that waits for approval or runs: `cancelled`. Returns the
        rows whose flags were never returned (what the quota gets back), or None if it was
        cancelled already. Raises Conflict `not_cancellable` for a request that ended otherwise."""
        open_states = (RequestStatus.PENDING_APPROVAL.value, RequestStatus.EVALUATING.value)
        ended = session.execute(
            update(MatchRequest)
            .where(col(MatchRequest.id) == request.id, col(MatchRequest.status).in_(open_states))
            .values(status=RequestStatus.CANCELLED.value)
        )
        session.refresh(request)  # under the write just taken: rows_looked_up can no longer move
        if ended.rowcount == 1:  # type: ignore[attr-defined]
            return request.subject_count - request.rows_looked_up
        if request.status == RequestStatus.CANCELLED.value:
            return None
        raise Conflict(f"the request is {request.status}; it can no longer be cancelled", code="not_cancellable")


def proof_failures(session: Session) -> dict[str, ProofFailures]:
    """Per connector, the evaluations requesters reported as failing their proofs, and the last time."""
    rows = session.exec(
        select(BatchSlot.connector, func.sum(BatchSlot.proof_failures), func.max(BatchSlot.last_proof_failure_at))
        .where(col(BatchSlot.proof_failures) > 0)
        .group_by(BatchSlot.connector)
    ).all()
    return {c: ProofFailures(count=int(n), last_at=aware(last)) for c, n, last in rows if last is not None}


def _check_open(request: MatchRequest) -> None:
    if request.status == RequestStatus.CANCELLED.value:
        raise Conflict("the request was cancelled", code="request_cancelled")


_SLOT = BatchSlot.__table__.c  # type: ignore[attr-defined]


def _slot_key(request_id: str, connector: str, first_row: int) -> tuple[Any, ...]:
    return (_SLOT.request_id == request_id, _SLOT.connector == connector, _SLOT.first_row == first_row)


def _slot_update(request_id: str, connector: str, first_row: int) -> Update:
    return update(BatchSlot).where(*_slot_key(request_id, connector, first_row))


def pin(session: Session, request: MatchRequest, plan: RequestPlan) -> None:
    """Stage the start of a request that waited for approval: its plan, its counters, running."""
    request.plan = plan
    request.status = RequestStatus.EVALUATING.value
    _open_counters(session, request.id, plan)


def _open_counters(session: Session, request_id: str, plan: RequestPlan) -> None:
    session.add_all(EvaluationCount(request_id=request_id, connector=c) for c in plan.connectors())


__all__ = ["RequestStore", "pin", "proof_failures"]
