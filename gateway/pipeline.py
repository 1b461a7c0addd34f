"""The steps of a match request, in order: admit → evaluate (relay) → look up → result.

This is the one module that sequences the steps of a running request; each step lives in
its own module and never calls back up: `admission` lets a request in (decision, quota,
approval, pinned indexes), `evaluation` tickets and relays a batch of blinded elements,
`lookups` finds tokens in the pinned indexes and turns them into flags, and
`request_store` holds the request's state. For each call here the pipeline loads the
caller's own request, authorizes afresh (only `gateway.authz` mints the
`AuthorizedRequest` the relay and the index lookup demand), checks the request may run,
performs the step, and commits the step's audit entry in the same transaction as its
state change: if the audit append fails, the step fails and answers nothing.

A request can always be resumed: each evaluation is an attempt at a batch slot, repeated
within a bound (`gateway.slots`); a lookup repeated exactly is answered from what was
stored; a proof failure the requester reports marks its slot for another attempt. One that
cannot finish is cancelled, and the quota of the rows never looked up goes back.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlmodel import Session

from audit_log import EventKind
from gateway import approvals, lookups, quotas, result_about
from gateway.admission import request_view
from gateway.approvals import check_runnable
from gateway.auth import Principal
from gateway.authz import AuthorizedRequest, Authorizer
from gateway.db import MatchRequest, aware
from gateway.evaluation import BlindEvaluation
from gateway.recorder import Recorder
from gateway.request_store import RequestStore
from gateway.settings import Limits
from gateway.sightings import TokenSightings
from gateway.vault import Vault
from xiezhi.errors import Conflict, Gone, NotFound
from xiezhi.supervision import ModelCatalog, SupervisionModel
from xiezhi.telemetry import observe_lookup, traced
from xiezhi.wire import (
    Capability,
    EvaluationBatch,
    EvaluationFailure,
    EvaluationResult,
    EvaluationSlot,
    LookupBatch,
    LookupResult,
    MatchRequestView,
    MatchResult,
    RequestStatus,
    RowFlags,
)


class Pipeline:
    def __init__(
        self,
        limits: Limits,
        store: RequestStore,
        evaluation: BlindEvaluation,
        recorder: Recorder,
        authorizer: Authorizer,
        catalog: ModelCatalog,
        vault: Vault,
        sightings: TokenSightings,
        clock: Callable[[], datetime],
    ) -> None:
        self._limits = limits
        self._store = store
        self._evaluation = evaluation
        self._recorder = recorder
        self._authorizer = authorizer
        self._catalog = catalog
        self._vault = vault
        self._sightings = sightings
        self._clock = clock

    @traced("gateway.evaluate", counted=True)
    def evaluate(
        self, principal: Principal, request_id: str, connector: str, batch: EvaluationBatch
    ) -> EvaluationResult:
        """Relay one batch of blinded elements to `connector` under a fresh signed ticket, as an
        attempt at its batch slot (`gateway.slots`)."""
        count = self._evaluation.check(batch)
        with self._store.session() as session:
            request, permit, _ = self._runnable(session, principal, request_id)
            pinned = request.plan.pinned(connector)
            if pinned is None:
                raise NotFound(f"connector {connector} is not part of this request", code="unknown_connector")
        claim = self._store.claim_slot(request, connector, batch.first_row, count, self._limits.max_batch_attempts)
        try:
            result = self._evaluation.relay(permit, request.org, connector, pinned.epoch, batch, claim)
        except BaseException:
            self._store.release_slot(request_id, connector, claim)
            raise
        with self._store.session() as session:
            self._store.slot_evaluated(session, request_id, connector, claim)
            self._recorder.record(
                session, principal, EventKind.RELAY, "evaluate", "ok", request_id,
                model=request.model, connector=connector, epoch=result.epoch, count=count,
                first_row=claim.first_row, attempt=claim.attempt,
            )  # fmt: skip
            session.commit()
        return result

    def report_failure(
        self, principal: Principal, request_id: str, connector: str, failure: EvaluationFailure
    ) -> EvaluationSlot:
        """Record the requester's report that an evaluation's proof did not verify: in the audit
        log against the connector, with the batch; on the slot, which then needs another attempt;
        and in the connector's count of proof failures (`gateway.system`)."""
        with self._store.session() as session:
            request, _, _ = self._runnable(session, principal, request_id)
            slot = self._store.proof_failed(session, request_id, connector, failure.first_row, failure.count)
            if slot is not None:
                self._recorder.record(
                    session, principal, EventKind.RELAY, "proof_failed", "reported", request_id,
                    model=request.model, connector=connector, first_row=slot.first_row, count=slot.count,
                    attempt=slot.attempts, reason=failure.reason.value,
                )  # fmt: skip
                session.commit()
            progress = self._store.progress(session, request)
        return next(
            s for c in progress if c.connector == connector for s in c.slots if s.first_row == failure.first_row
        )

    @traced("gateway.lookup", counted=True)
    def lookup(self, principal: Principal, request_id: str, batch: LookupBatch) -> LookupResult:
        """Look tokens up in the pinned indexes, apply the model's rule, store the flags.

        A batch that repeats a stored one (same first row, same tokens) gets the stored flags
        again, audited as a replay; another batch at a stored first row is refused."""
        with self._store.session() as session:
            request, permit, now = self._runnable(session, principal, request_id)
            model = self._catalog.get(request.model)
            rows = lookups.check_shape(model, batch, self._limits.max_batch)
            digest = lookups.tokens_digest(batch)
            if self._store.stored_batch(session, request_id, batch.first_row) is None:
                lookups.check_order(request, batch, rows, self._store.evaluated_counts(request.id))
                hits = lookups.find(session, self._vault, permit, request.plan, model, batch)
                flagged = lookups.flag_rows(model, batch, hits)
                if self._store.store_results(session, request, flagged, digest):
                    # Which requests saw which tokens, by keyed digest only: never a token in the log.
                    self._sightings.record(
                        session, request_id=request_id, actor=principal.subject, org=principal.org,
                        tokens=batch.tokens, now=now,
                    )  # fmt: skip
                    self._record_lookup(session, principal, request, model, batch, flagged, hits)
                    session.commit()
                    observe_lookup(
                        model.id, rows, sum(r.clue for r in flagged), {c: len(hits[c]) for c in model.looks_up}
                    )
                    return LookupResult(rows=flagged)
            # Stored already, perhaps a moment ago by a concurrent try of the same batch.
            return LookupResult(rows=self._replay(session, principal, request, batch))

    def _replay(
        self, session: Session, principal: Principal, request: MatchRequest, batch: LookupBatch
    ) -> list[RowFlags]:
        stored = self._store.stored_batch(session, request.id, batch.first_row)
        assert stored is not None  # never deleted while the request runs
        rows = lookups.check_replay(stored, batch)
        self._recorder.record(
            session, principal, EventKind.LOOKUP, "lookup", "replayed", request.id,
            model=request.model, rows=len(rows), first_row=batch.first_row,
        )  # fmt: skip
        session.commit()
        return rows

    def cancel(self, principal: Principal, request_id: str) -> MatchRequestView:
        """End the caller's own request while it waits for approval or runs: `cancelled`.

        The subjects whose flags were never returned go back to the requester's daily quota
        (of the day the request was created). The rows looked up do not: their flags were
        delivered, so they were spent — giving them back would let a requester obtain flags
        beyond its quota by cancelling its requests. A repeated cancel answers the same and
        records nothing again."""
        with self._store.session() as session:
            request = self._store.owned(session, principal, request_id)
            self._authorize(principal, f"request:{request_id}", "cancel", request_id)
            withdrawn = approvals.withdraw(session, request_id)  # the approval first, as a decision takes it
            refunded = self._store.cancel(session, request)
            if refunded is not None:
                quotas.refund(session, request.requester, refunded, aware(request.created_at))
                self._recorder.record(
                    session, principal, EventKind.REQUEST_CANCELLED, "cancel", "cancelled", request_id,
                    model=request.model, subjects=request.subject_count, rows_looked_up=request.rows_looked_up,
                    refunded=refunded, approval_withdrawn=withdrawn,
                )  # fmt: skip
                session.commit()
            model = self._catalog.get(request.model)
            return request_view(request, model, self._store.progress(session, request), self._limits.max_batch_attempts)

    def result(self, principal: Principal, request_id: str) -> MatchResult:
        """The whole result of the caller's completed request, while its retention lasts."""
        with self._store.session() as session:
            request = self._store.owned(session, principal, request_id)
            self._authorize(principal, f"request:{request_id}", "read", request_id)
            _check_readable(request)
            model = self._catalog.get(request.model)
            rows = self._store.results(session, request_id)
            self._recorder.record(
                session, principal, EventKind.RESULT_READ, "read", "ok", request_id,
                model=request.model, rows=len(rows), clues=sum(r.clue for r in rows),
            )  # fmt: skip
            about = result_about.describe(session, request, model)
            session.commit()
            return MatchResult(request_id=request_id, model=model.id, reveals=model.reveals, rows=rows, about=about)

    def _runnable(
        self, session: Session, principal: Principal, request_id: str
    ) -> tuple[MatchRequest, AuthorizedRequest, datetime]:
        """The caller's own request, the permit to run its model, and the time it was found runnable."""
        request = self._store.owned(session, principal, request_id)
        permit = self._authorize(principal, f"model:{request.model}", "run", request_id)
        now = self._clock()
        check_runnable(session, request, now)
        return request, permit, now

    def _authorize(self, principal: Principal, obj: str, action: str, request_id: str) -> AuthorizedRequest:
        return self._recorder.enforce(
            principal, obj, action, request_id, self._authorizer.decide(principal, obj, action)
        )

    def _record_lookup(
        self,
        session: Session,
        principal: Principal,
        request: MatchRequest,
        model: SupervisionModel,
        batch: LookupBatch,
        flagged: list[RowFlags],
        hits: dict[Capability, set[bytes]],
    ) -> None:
        self._recorder.record(
            session,
            principal,
            EventKind.LOOKUP,
            "lookup",
            "ok",
            request.id,
            model=request.model,
            rows=len(flagged),
            first_row=batch.first_row,
            clues=sum(r.clue for r in flagged),
            **{f"matches.{c}": len(hits[c]) for c in model.looks_up},
        )


def _check_readable(request: MatchRequest) -> None:
    """Refuse a result that does not exist yet, or no longer."""
    if request.status != RequestStatus.COMPLETED.value:
        raise Conflict("the request has not completed", code="not_completed")
    if request.results_deleted_at is not None:
        raise Gone(
            "the result was deleted at the end of its retention period",
            code="result_deleted",
            extensions={"deleted_at": request.results_deleted_at},
        )


__all__ = ["Pipeline"]
