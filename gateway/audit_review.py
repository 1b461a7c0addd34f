"""Reading the audit log: the security auditor's view, and the security admin's narrow one.

Auditors (`audit:entries`) read every entry of their organisation's subtree, plus entries
that belong to no organisation (the gateway's own and connectors'). Security admins
(`audit:policy`) read only policy and organisation changes. Every read is itself a decision
in the log. Issue 4's console and proofs build on this.
"""

from __future__ import annotations

import json

from audit_log import AuditLog, EventKind
from gateway.auth import Principal
from gateway.authz import Authorizer
from gateway.recorder import Recorder
from xiezhi.wire import AuditEntryView


class AuditReview:
    def __init__(self, audit: AuditLog, authorizer: Authorizer, recorder: Recorder) -> None:
        self._audit = audit
        self._authorizer = authorizer
        self._recorder = recorder

    def entries(
        self, principal: Principal, *, request_id: str | None = None, kind: str | None = None, limit: int = 1000
    ) -> list[AuditEntryView]:
        self._authorize(principal, "audit:entries")
        return self._read(principal, request_id, kind, limit)

    def policy_changes(self, principal: Principal, limit: int = 1000) -> list[AuditEntryView]:
        self._authorize(principal, "audit:policy")
        return self._read(principal, None, EventKind.POLICY_CHANGE.value, limit)

    def _authorize(self, principal: Principal, obj: str) -> None:
        self._recorder.enforce(principal, obj, "read", None, self._authorizer.decide(principal, obj, "read"))

    def _read(self, principal: Principal, request_id: str | None, kind: str | None, limit: int) -> list[AuditEntryView]:
        orgs = self._authorizer.policy.orgs
        views = []
        for record in self._audit.entries(request_id):
            entry = json.loads(record.entry)
            if kind is not None and record.kind != kind:
                continue
            org = entry.get("org")
            if org is not None and not orgs.covers(principal.org or "", org):
                continue
            views.append(AuditEntryView(seq=record.seq or 0, kind=record.kind, entry=entry))
        return views[-limit:]
