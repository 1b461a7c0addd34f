"""Managing the policy while the gateway runs: rules, organisations, reloads.

The policy lives in the database (`authz/store.py`); at first start it is seeded from the
policy folder. A rule change must pass the decision tables under `policies/tests/` before
it is stored; every change is one transaction holding the new rows, a revision and its
audit entry, after which this instance reloads at once and others within
`reload_seconds` (each checks the latest revision before deciding).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session

from audit_log import EventKind
from gateway.auth import Principal
from gateway.authz import Authorizer, Policy, load_policy_dir
from gateway.authz.policy import parse_policy_csv
from gateway.authz.store import PolicyRevision, PolicyStore
from gateway.authz.tables import run_tables
from gateway.db import serialise_changes
from gateway.orgs import Organisation
from gateway.recorder import Recorder
from xiezhi.errors import Conflict
from xiezhi.supervision import ModelCatalog
from xiezhi.wire import OrgView, PolicyView

_REVISIONS = PolicyRevision.__table__  # type: ignore[attr-defined]


class PolicyAdmin:
    def __init__(
        self,
        engine: Engine,
        recorder: Recorder,
        policy_dir: Path,
        catalog: ModelCatalog,
        *,
        reload_seconds: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._recorder = recorder
        self._policy_dir = policy_dir
        self._catalog = catalog
        self._reload_seconds = reload_seconds
        self._clock = clock
        self._store = PolicyStore(engine, policy_dir)
        self._lock = threading.Lock()
        policy = self._store.load() or self._seed()
        self.authorizer = Authorizer(policy)
        self._revision = self._store.revision()
        self._checked = clock()

    def _seed(self) -> Policy:
        """First start: copy the policy folder into the database."""
        policy = load_policy_dir(self._policy_dir)
        with Session(self._engine) as session:
            serialise_changes(session.connection(), _REVISIONS)
            stored = self._store.load()  # another instance, starting at the same time, seeded first
            if stored is not None:
                return stored
            self._store.write_rules(session, policy.rules)
            self._store.write_orgs(session, policy.orgs)
            self._store.add_revision(session, policy, change="seed", actor="gateway", at=self._clock())
            self._recorder.record_system(session, EventKind.POLICY_CHANGE, "seed", "ok", None, version=policy.version)
            session.commit()
        return policy

    # ---- reloading -----------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload if another instance changed the policy; checks at most every reload_seconds."""
        now = self._clock()
        if (now - self._checked).total_seconds() < self._reload_seconds:
            return
        self._checked = now
        if self._store.revision() != self._revision:
            self._reload()

    def _reload(self) -> None:
        with self._lock:
            revision = self._store.revision()
            policy = self._store.load()
            if policy is not None:
                self.authorizer.reload(policy)
                self._revision = revision

    def reload(self, principal: Principal) -> PolicyView:
        self._authorize(principal, "policy:rules", "reload")
        self._reload()
        self._recorder.record_alone(
            principal, EventKind.POLICY_CHANGE, "reload", "ok", None, version=self.authorizer.policy.version
        )
        return self._view()

    # ---- rules ---------------------------------------------------------------------------

    def view(self, principal: Principal) -> PolicyView:
        self._authorize(principal, "policy:rules", "read")
        return self._view()

    def replace_rules(self, principal: Principal, text: str) -> PolicyView:
        """Store new rules after they pass every decision table; refuse them otherwise."""
        self._authorize(principal, "policy:rules", "manage")
        current = self.authorizer.policy
        candidate = current.replace(rules=parse_policy_csv(current.rules.model_text, text))
        failures = [
            r for r in run_tables(Authorizer(candidate), self._catalog, self._policy_dir / "tests") if not r.passed
        ]
        if failures:
            cases = ", ".join(f"{r.table}:{r.case}" for r in failures[:5])
            raise Conflict(
                f"the new rules fail {len(failures)} decision table rows ({cases})", code="policy_tests_failed"
            )
        return self._commit(principal, candidate, "rules", lambda s: self._store.write_rules(s, candidate.rules))

    # ---- organisations -------------------------------------------------------------------

    def orgs(self) -> list[OrgView]:
        return [
            OrgView(code=o.code, name=o.name, parent=o.parent, level=o.level.value) for o in self.authorizer.policy.orgs
        ]

    def add_org(self, principal: Principal, org: Organisation) -> list[OrgView]:
        self._authorize(principal, "org:tree", "manage", target=org.parent or org.code)
        tree = self.authorizer.policy.orgs.with_org(org)
        return self._change_orgs(principal, self.authorizer.policy.replace(orgs=tree), f"add {org.code}")

    def rename_org(self, principal: Principal, code: str, name: str) -> list[OrgView]:
        self._authorize(principal, "org:tree", "manage", target=code)
        tree = self.authorizer.policy.orgs.renamed(code, name)
        return self._change_orgs(principal, self.authorizer.policy.replace(orgs=tree), f"rename {code}")

    def remove_org(self, principal: Principal, code: str) -> list[OrgView]:
        self._authorize(principal, "org:tree", "manage", target=code)
        tree = self.authorizer.policy.orgs.without(code)
        return self._change_orgs(principal, self.authorizer.policy.replace(orgs=tree), f"remove {code}")

    def _change_orgs(self, principal: Principal, candidate: Policy, change: str) -> list[OrgView]:
        self._commit(principal, candidate, change, lambda s: self._store.write_orgs(s, candidate.orgs))
        return self.orgs()

    # ---- helpers -------------------------------------------------------------------------

    def _commit(
        self, principal: Principal, candidate: Policy, change: str, write: Callable[[Session], None]
    ) -> PolicyView:
        """Store `candidate`, made from this instance's policy; refuses (Conflict
        `policy_changed`, after reloading) if another instance changed the stored policy since."""
        with self._lock:
            before = self.authorizer.policy.version
            with Session(self._engine) as session:
                serialise_changes(session.connection(), _REVISIONS)
                stale = self._store.revision() != self._revision
                if not stale:
                    write(session)
                    self._store.add_revision(
                        session, candidate, change=change, actor=principal.subject, at=self._clock()
                    )
                    self._recorder.record(
                        session, principal, EventKind.POLICY_CHANGE, change, "ok", None,
                        before=before, version=candidate.version,
                    )  # fmt: skip
                    session.commit()
            if not stale:
                self.authorizer.reload(candidate)
                self._revision = self._store.revision()
        if stale:
            self._reload()
            raise Conflict(
                "the policy was changed meanwhile (by another gateway instance); review it and try again",
                code="policy_changed",
            )
        return self._view()

    def _authorize(self, principal: Principal, obj: str, action: str, target: str | None = None) -> None:
        self._recorder.enforce(principal, obj, action, None, self.authorizer.decide(principal, obj, action, target))

    def _view(self) -> PolicyView:
        policy = self.authorizer.policy
        return PolicyView(version=policy.version, revision=self._revision, policy=policy.rules.to_csv())
