"""Turning what the gateway does into audit events: one place for actor, time and decisions.

`record` stages an event in the caller's transaction (it commits with the state change it
describes); `record_alone` commits at once, for refusals that change nothing else.
A decision entry says who (subject, organisation, roles, clearance), what (action and
object), why (purpose, legal basis, scope, subjects), the outcome, the reason code, the
rule that decided it and the policy version.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlmodel import Session

from audit_log import AuditEvent, AuditLog, EventKind
from gateway.auth import Principal
from gateway.authz import AuthorizedRequest, Decision, permit
from xiezhi.telemetry import count_decision, span

Detail = str | int | bool | None
SYSTEM = Principal(subject="gateway", org=None, roles=frozenset())


class Recorder:
    def __init__(self, audit: AuditLog, clock: Callable[[], datetime]) -> None:
        self._audit = audit
        self._clock = clock

    def event(
        self, principal: Principal, kind: EventKind, action: str, outcome: str, request_id: str | None, **detail: Detail
    ) -> AuditEvent:
        """An event; the searchable details (model, connector, purpose) become fields of their own."""
        lifted = {name: detail.pop(name, None) for name in ("model", "connector", "purpose")}
        return AuditEvent(
            kind=kind,
            at=self._clock(),
            actor=principal.subject,
            org=principal.org,
            request_id=request_id,
            action=action,
            outcome=outcome,
            **{name: None if value is None else str(value) for name, value in lifted.items()},
            detail=detail,
        )

    def record(
        self,
        session: Session,
        principal: Principal,
        kind: EventKind,
        action: str,
        outcome: str,
        request_id: str | None = None,
        **detail: Detail,
    ) -> None:
        with span("audit.append", {"xiezhi.event_kind": kind.value}):
            self._audit.append(session, self.event(principal, kind, action, outcome, request_id, **detail))

    def record_system(
        self, session: Session, kind: EventKind, action: str, outcome: str, request_id: str | None, **detail: Detail
    ) -> None:
        """An event the gateway causes itself (an expiry, a policy seeded at first start)."""
        self.record(session, SYSTEM, kind, action, outcome, request_id, **detail)

    def record_alone(
        self,
        principal: Principal,
        kind: EventKind,
        action: str,
        outcome: str,
        request_id: str | None = None,
        **detail: Detail,
    ) -> None:
        with span("audit.append", {"xiezhi.event_kind": kind.value}):
            self._audit.append_now(self.event(principal, kind, action, outcome, request_id, **detail))

    def decision(
        self, principal: Principal, obj: str, action: str, request_id: str | None, decision: Decision, **ask: Detail
    ) -> None:
        """Record an authorization decision, whatever its outcome."""
        purpose = decision.purpose
        if obj.startswith("model:") and "model" not in ask:
            ask["model"] = obj.removeprefix("model:")
        count_decision(action, obj.split(":", 1)[0], decision.outcome.value, decision.reason)
        self.record_alone(
            principal,
            EventKind.DECISION,
            action,
            decision.outcome.value,
            request_id,
            object=obj,
            roles=",".join(sorted(principal.roles)),
            clearance=principal.clearance,
            reason=decision.reason,
            rule=decision.rule,
            policy_version=decision.policy_version,
            purpose=purpose.reference if purpose else None,
            purpose_kind=purpose.kind.value if purpose else None,
            scope=decision.scope,
            approver_org=decision.approver_org,
            **ask,
        )

    def enforce(
        self, principal: Principal, obj: str, action: str, request_id: str | None, decision: Decision
    ) -> AuthorizedRequest:
        """Record `decision`, then turn it into a permit, or raise Denied with its reason code."""
        self.decision(principal, obj, action, request_id, decision)
        return permit(principal, request_id or obj, action, decision)


ANONYMOUS = Principal(subject="anonymous", org=None, roles=frozenset())


class SignIns:
    """Authentication in the log: every refused bearer token, and the first use of each
    accepted one (a sign-in), not every call it authorises — those are decisions already.

    Tokens are remembered by a digest held in memory only, for `capacity` tokens.
    """

    def __init__(self, recorder: Recorder, capacity: int = 50_000) -> None:
        self._recorder = recorder
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def accepted(self, principal: Principal, token: str) -> None:
        digest = hashlib.sha256(token.encode()).digest()[:16]
        with self._lock:
            if digest in self._seen:
                self._seen.move_to_end(digest)
                return
            self._seen[digest] = None
            if len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
        self._recorder.record_alone(
            principal,
            EventKind.AUTHENTICATION,
            "sign_in",
            "ok",
            roles=",".join(sorted(principal.roles)),
            clearance=principal.clearance,
            connector=principal.connector,
        )

    def refused(self, reason: str, principal: Principal | None = None, certificate: Sequence[str] = ()) -> None:
        """A refused sign-in: by an anonymous caller when the token itself failed; by the token's
        principal, with its roles and the client certificate's names, when the token was valid
        but the certificate it came over may not carry it."""
        if principal is None:
            self._recorder.record_alone(ANONYMOUS, EventKind.AUTHENTICATION, "sign_in", "deny", reason=reason)
            return
        self._recorder.record_alone(
            principal,
            EventKind.AUTHENTICATION,
            "sign_in",
            "deny",
            reason=reason,
            roles=",".join(sorted(principal.roles)),
            certificate=",".join(certificate) or None,
            connector=principal.connector,
        )
