"""The match-request lifecycle, in order: create → relay evaluations → look up → result.

This is the one module that sequences the steps; each step lives in its own module
(`authz`, `relay`, `indexes`) and never calls back up. Every step authorizes the caller
afresh, and every step's audit entry commits in the same transaction as its state
change: if the audit append fails, the step fails and answers nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from audit_log import AuditLog, EventKind
from gateway import indexes, quotas
from gateway.approvals import check_runnable, new_approval
from gateway.auth import Principal
from gateway.authz import AuthorizedRequest, Authorizer, Decision, Outcome, RunAsk
from gateway.db import EvaluationCount, MatchRequest, ResultBatch
from gateway.quotas import china_day
from gateway.recorder import Recorder
from gateway.relay import ConnectorRelay
from gateway.request_plan import EMPTY_PLAN
from gateway.settings import GatewaySettings
from gateway.sightings import TokenSightings
from gateway.vault import Vault
from xiezhi import group
from xiezhi.crypto import batch_digest
from xiezhi.errors import ApprovalRequired, Conflict, Denied, Gone, InvalidInput, NotFound, XiezhiError
from xiezhi.jwks import TicketKeys
from xiezhi.supervision import ModelCatalog, SupervisionModel
from xiezhi.telemetry import annotate, observe_lookup, traced
from xiezhi.tickets import issue_ticket
from xiezhi.wire import (
    CreateMatchRequest,
    EvaluationBatch,
    EvaluationResult,
    LookupBatch,
    LookupResult,
    MatchRequestView,
    MatchResult,
    RequestStatus,
    RowFlags,
    TicketedBatch,
)


class Pipeline:
    def __init__(
        self,
        settings: GatewaySettings,
        engine: Engine,
        audit: AuditLog,
        authorizer: Authorizer,
        catalog: ModelCatalog,
        relay: ConnectorRelay,
        ticket_keys: TicketKeys,
        vault: Vault,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._vault = vault
        self._recorder = Recorder(audit, clock)
        self._authorizer = authorizer
        self._catalog = catalog
        self._relay = relay
        self._ticket_keys = ticket_keys
        self._clock = clock
        self._sightings = TokenSightings(engine, settings.audit.anomalies.token_repeat_days)

    # ---- create -----------------------------------------------------------------------

    @traced("gateway.create", counted=True)
    def create(self, principal: Principal, body: CreateMatchRequest) -> MatchRequestView:
        """Decide a model run; start it, or record it as waiting for approval (ApprovalRequired).

        A refusal after the decision (quota, no index) is audited as `request.refused`.
        """
        model = self._catalog.get(body.model)
        limit = self._settings.limits.max_subjects_per_request
        if body.subject_count > limit:
            raise InvalidInput(f"subject_count exceeds the limit of {limit}", code="too_many_subjects")
        request_id, now = str(uuid.uuid4()), self._clock()
        ask = RunAsk(model, body.purpose, body.legal_basis, body.scope, body.subject_count, china_day(now))
        decision = self._authorizer.decide_run(principal, ask)
        self._recorder.decision(
            principal, f"model:{model.id}", "run", request_id, decision, model=model.id, subjects=body.subject_count
        )
        if decision.outcome is Outcome.DENY:
            raise Denied("the policy does not allow this request", code=decision.reason)
        try:
            request = self._start(principal, model, body, decision, request_id, now)
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
        return self._view(request, model)

    def _start(
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
        assert decision.purpose is not None and decision.scope is not None
        with Session(self._engine) as session:
            quota = quotas.quota_for(self._authorizer.policy.limits, principal.roles)
            quotas.spend(session, principal.subject, quota, body.subject_count, now)
            plan = EMPTY_PLAN if pending else indexes.plan(session, model.looks_up)
            request = MatchRequest(
                id=request_id,
                model=model.id,
                requester=principal.subject,
                org=principal.org or "",
                purpose=decision.purpose.reference,
                legal_basis=(body.legal_basis or "").strip(),
                scope=decision.scope,
                subject_count=body.subject_count,
                status=(RequestStatus.PENDING_APPROVAL if pending else RequestStatus.EVALUATING).value,
                plan=plan,
                created_at=now,
            )
            session.add(request)
            session.flush()
            session.add_all(EvaluationCount(request_id=request_id, connector=c) for c in plan.connectors())
            if pending:
                assert decision.approver_org is not None
                hours = self._authorizer.policy.limits.approval.pending_hours
                session.add(new_approval(request, decision.approval_reasons, decision.approver_org, hours))
            self._recorder.record(
                session,
                principal,
                EventKind.REQUEST_CREATED,
                "create",
                request.status,
                request_id,
                model=model.id,
                purpose=request.purpose,
                legal_basis=request.legal_basis,
                scope=request.scope,
                subjects=body.subject_count,
                connectors=",".join(sorted(plan.connectors())),
                approver_org=decision.approver_org,
                approval_reasons=",".join(decision.approval_reasons) or None,
            )
            session.commit()
            session.refresh(request)
            return request

    def view(self, principal: Principal, request_id: str) -> MatchRequestView:
        with Session(self._engine) as session:
            request = self._owned(session, principal, request_id)
            self._authorize(principal, "request:" + request_id, "read", request_id)
            return self._view(request, self._catalog.get(request.model))

    # ---- blind evaluation -------------------------------------------------------------

    @traced("gateway.evaluate", counted=True)
    def evaluate(
        self, principal: Principal, request_id: str, connector: str, batch: EvaluationBatch
    ) -> EvaluationResult:
        """Relay one batch of blinded elements to `connector` under a fresh signed ticket."""
        limit = self._settings.limits.max_batch
        count = len(batch.blinded_elements)
        if count > limit:
            raise InvalidInput(f"a batch holds at most {limit} elements", code="batch_too_large")
        for element in batch.blinded_elements:
            # Refuse non-canonical encodings and the identity here, not at the connector.
            group.deserialize_element(element)
        with Session(self._engine) as session:
            request = self._owned(session, principal, request_id)
            allowed = self._authorize(principal, f"model:{request.model}", "run", request_id)
            check_runnable(session, request, self._clock())
            pinned = request.plan.pinned(connector)
            if pinned is None:
                raise NotFound(f"connector {connector} is not part of this request", code="unknown_connector")
        self._adjust(request_id, connector, reserved=count, cap=request.subject_count)
        try:
            result = self._relay_batch(allowed, request.org, connector, pinned.epoch, batch)
        except BaseException:
            self._adjust(request_id, connector, reserved=-count)
            raise
        with Session(self._engine) as session:
            self._adjust(request_id, connector, evaluated=count, session=session)
            self._recorder.record(
                session,
                principal,
                EventKind.RELAY,
                "evaluate",
                "ok",
                request_id,
                model=request.model,
                connector=connector,
                epoch=result.epoch,
                count=count,
            )
            session.commit()
        return result

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

    def _relay_batch(
        self, permit: AuthorizedRequest, org: str, connector: str, epoch: int, batch: EvaluationBatch
    ) -> EvaluationResult:
        kid, key = self._ticket_keys.current()  # re-reads the folder if a rotation changed it
        ticket = issue_ticket(
            key,
            kid=kid,
            issuer=self._settings.ticket_issuer,
            connector=connector,
            request_id=permit.request_id,
            requester_org=org or "-",
            epoch=epoch,
            count=len(batch.blinded_elements),
            digest=batch_digest(list(batch.blinded_elements)),
            now=self._clock(),
            ttl_seconds=self._settings.limits.ticket_ttl_seconds,
        )
        try:
            result = self._relay.evaluate(
                connector, TicketedBatch(ticket=ticket, blinded_elements=batch.blinded_elements)
            )
        except Exception as exc:
            self._recorder.record_alone(
                permit.principal,
                EventKind.RELAY,
                "evaluate",
                "failed",
                permit.request_id,
                connector=connector,
                count=len(batch.blinded_elements),
                error=getattr(exc, "code", "internal_error"),
            )
            raise
        if result.epoch != epoch:
            raise Conflict(f"connector {connector} evaluated under another epoch", code="epoch_mismatch")
        return result

    # ---- lookup -----------------------------------------------------------------------

    @traced("gateway.lookup", counted=True)
    def lookup(self, principal: Principal, request_id: str, batch: LookupBatch) -> LookupResult:
        """Look tokens up in the pinned indexes, apply the model's rule, store the flags."""
        with Session(self._engine) as session:
            request = self._owned(session, principal, request_id)
            self._authorize(principal, f"model:{request.model}", "run", request_id)
            now = self._clock()
            check_runnable(session, request, now)
            model = self._catalog.get(request.model)
            rows = self._check_lookup(request, model, batch)
            hits = {
                capability: indexes.present(
                    session, self._vault, request.plan.publication(capability), batch.tokens[capability]
                )
                for capability in model.looks_up
            }
            flags: list[dict[str, bool]] = [
                {capability: batch.tokens[capability][i] in hits[capability] for capability in model.looks_up}
                for i in range(rows)
            ]
            result_rows = [
                RowFlags(
                    row=batch.first_row + i,
                    clue=model.clue.evaluate(f),
                    flags={capability: f[capability] for capability in model.reveals},
                )
                for i, f in enumerate(flags)
            ]
            self._store(session, request, result_rows)
            # Which requests saw which tokens, by keyed digest only: never a token in the log.
            self._sightings.record(
                session, request_id=request_id, actor=principal.subject, org=principal.org, tokens=batch.tokens, now=now
            )
            self._recorder.record(
                session,
                principal,
                EventKind.LOOKUP,
                "lookup",
                "ok",
                request_id,
                model=request.model,
                rows=rows,
                first_row=batch.first_row,
                clues=sum(r.clue for r in result_rows),
                **{f"matches.{c}": len(hits[c]) for c in model.looks_up},
            )
            session.commit()
        observe_lookup(model.id, rows, sum(r.clue for r in result_rows), {c: len(hits[c]) for c in model.looks_up})
        return LookupResult(rows=result_rows)

    def _check_lookup(self, request: MatchRequest, model: SupervisionModel, batch: LookupBatch) -> int:
        if set(batch.tokens) != set(model.looks_up):
            raise InvalidInput(
                "tokens must be given for exactly the model's capabilities", code="capabilities_mismatch"
            )
        lengths = {len(tokens) for tokens in batch.tokens.values()}
        if len(lengths) != 1:
            raise InvalidInput("every capability needs one token per row", code="ragged_tokens")
        rows = lengths.pop()
        if rows > self._settings.limits.max_batch:
            raise InvalidInput(f"a batch holds at most {self._settings.limits.max_batch} rows", code="batch_too_large")
        if any(count < request.subject_count for count in self._counts(request.id)):
            raise Conflict("blind evaluation is not complete for every connector", code="evaluation_incomplete")
        if batch.first_row != request.rows_looked_up:
            raise Conflict(f"expected first_row {request.rows_looked_up}", code="row_out_of_order")
        if batch.first_row + rows > request.subject_count:
            raise Conflict("rows beyond the request's subject count", code="subject_count_exceeded")
        return rows

    def _counts(self, request_id: str) -> list[int]:
        with Session(self._engine) as session:
            return list(session.exec(select(EvaluationCount.evaluated).where(EvaluationCount.request_id == request_id)))

    def _store(self, session: Session, request: MatchRequest, rows: list[RowFlags]) -> None:
        """Seal the batch's flags as one row; a second batch at the same first row conflicts."""
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

    # ---- result -----------------------------------------------------------------------

    def result(self, principal: Principal, request_id: str) -> MatchResult:
        with Session(self._engine) as session:
            request = self._owned(session, principal, request_id)
            self._authorize(principal, f"request:{request_id}", "read", request_id)
            if request.status != RequestStatus.COMPLETED.value:
                raise Conflict("the request has not completed", code="not_completed")
            if request.results_deleted_at is not None:
                raise Gone(
                    "the result was deleted at the end of its retention period",
                    code="result_deleted",
                    extensions={"deleted_at": request.results_deleted_at},
                )
            model = self._catalog.get(request.model)
            batches = session.exec(
                select(ResultBatch).where(ResultBatch.request_id == request_id).order_by(col(ResultBatch.first_row))
            ).all()
            rows = [r for b in batches for r in self._vault.open_results(request_id, b.first_row, b.sealed)]
            self._recorder.record(
                session,
                principal,
                EventKind.RESULT_READ,
                "read",
                "ok",
                request_id,
                model=request.model,
                rows=len(rows),
                clues=sum(r.clue for r in rows),
            )
            session.commit()
            return MatchResult(
                request_id=request_id,
                model=model.id,
                reveals=model.reveals,
                rows=rows,
            )

    # ---- helpers ----------------------------------------------------------------------

    def _authorize(self, principal: Principal, obj: str, action: str, request_id: str) -> AuthorizedRequest:
        return self._recorder.enforce(
            principal, obj, action, request_id, self._authorizer.decide(principal, obj, action)
        )

    def _owned(self, session: Session, principal: Principal, request_id: str) -> MatchRequest:
        request = session.get(MatchRequest, request_id)
        if request is None:
            raise NotFound("unknown match request", code="unknown_request")
        if request.requester != principal.subject:
            # Someone else's request: indistinguishable from a missing one to the caller.
            self._recorder.record_alone(
                principal, EventKind.DECISION, "access", "deny", request_id, rule="owner-only", reason="not_owner"
            )
            raise NotFound("unknown match request", code="unknown_request")
        annotate({"xiezhi.request_id": request.id})
        return request

    def _view(self, request: MatchRequest, model: SupervisionModel) -> MatchRequestView:
        return MatchRequestView(
            request_id=request.id,
            model=request.model,
            status=RequestStatus(request.status),
            subject_count=request.subject_count,
            scope=request.scope,
            reveals=model.reveals,
            created_at=request.created_at,
            connectors=request.plan.views(),
        )


__all__ = ["Pipeline"]
