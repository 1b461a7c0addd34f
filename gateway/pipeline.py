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
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlmodel import Session

from audit_log import EventKind
from gateway import lookups
from gateway.approvals import check_runnable
from gateway.auth import Principal
from gateway.authz import AuthorizedRequest, Authorizer
from gateway.db import MatchRequest
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
    EvaluationResult,
    LookupBatch,
    LookupResult,
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
        """Relay one batch of blinded elements to `connector` under a fresh signed ticket."""
        count = self._evaluation.check(batch)
        with self._store.session() as session:
            request, permit, _ = self._runnable(session, principal, request_id)
            pinned = request.plan.pinned(connector)
            if pinned is None:
                raise NotFound(f"connector {connector} is not part of this request", code="unknown_connector")
        self._store.reserve(request_id, connector, count, cap=request.subject_count)
        try:
            result = self._evaluation.relay(permit, request.org, connector, pinned.epoch, batch)
        except BaseException:
            self._store.release(request_id, connector, count)
            raise
        with self._store.session() as session:
            self._store.evaluated(session, request_id, connector, count)
            self._recorder.record(
                session, principal, EventKind.RELAY, "evaluate", "ok", request_id,
                model=request.model, connector=connector, epoch=result.epoch, count=count,
            )  # fmt: skip
            session.commit()
        return result

    @traced("gateway.lookup", counted=True)
    def lookup(self, principal: Principal, request_id: str, batch: LookupBatch) -> LookupResult:
        """Look tokens up in the pinned indexes, apply the model's rule, store the flags."""
        with self._store.session() as session:
            request, permit, now = self._runnable(session, principal, request_id)
            model = self._catalog.get(request.model)
            evaluated = self._store.evaluated_counts(request.id)
            rows = lookups.check_batch(request, model, batch, evaluated, self._limits.max_batch)
            hits = lookups.find(session, self._vault, permit, request.plan, model, batch)
            flagged = lookups.flag_rows(model, batch, hits)
            self._store.store_results(session, request, flagged)
            # Which requests saw which tokens, by keyed digest only: never a token in the log.
            self._sightings.record(
                session, request_id=request_id, actor=principal.subject, org=principal.org, tokens=batch.tokens, now=now
            )
            self._record_lookup(session, principal, request, model, batch, flagged, hits)
            session.commit()
        observe_lookup(model.id, rows, sum(r.clue for r in flagged), {c: len(hits[c]) for c in model.looks_up})
        return LookupResult(rows=flagged)

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
            session.commit()
            return MatchResult(request_id=request_id, model=model.id, reveals=model.reveals, rows=rows)

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
