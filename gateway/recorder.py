"""Turning what the gateway does into audit events: one place for actor, time and decisions.

`record` stages an event in the caller's transaction (it commits with the state change it
describes); `record_alone` commits at once, for refusals that change nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlmodel import Session

from audit_log import AuditEvent, AuditLog, EventKind
from gateway.auth import Principal
from gateway.authz import Decision

Detail = str | int | bool | None


class Recorder:
    def __init__(self, audit: AuditLog, clock: Callable[[], datetime]) -> None:
        self._audit = audit
        self._clock = clock

    def event(
        self, principal: Principal, kind: EventKind, action: str, outcome: str, request_id: str | None, **detail: Detail
    ) -> AuditEvent:
        return AuditEvent(
            kind=kind,
            at=self._clock(),
            actor=principal.subject,
            org=principal.org,
            request_id=request_id,
            action=action,
            outcome=outcome,
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
        self._audit.append(session, self.event(principal, kind, action, outcome, request_id, **detail))

    def record_alone(
        self,
        principal: Principal,
        kind: EventKind,
        action: str,
        outcome: str,
        request_id: str | None = None,
        **detail: Detail,
    ) -> None:
        self._audit.append_now(self.event(principal, kind, action, outcome, request_id, **detail))

    def decision(self, principal: Principal, obj: str, action: str, request_id: str | None, decision: Decision) -> None:
        """Record an authorization decision, allow or deny, with its rule and policy version."""
        self.record_alone(
            principal,
            EventKind.DECISION,
            action,
            "allow" if decision.allowed else "deny",
            request_id,
            object=obj,
            rule=decision.rule,
            reason=decision.reason,
            policy_version=decision.policy_version,
        )
