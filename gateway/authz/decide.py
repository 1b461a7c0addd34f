"""Decisions: Casbin rules, clearances, purposes, scope and batch limits, in one order.

Every decision names its outcome (allow, deny, needs approval), a reason code the caller
may see, and the rule that decided it, which only the audit log sees. Checks run in a
fixed order and the first refusal wins:

    roles known → roles not exclusive (p2) → organisation known → a rule grants the action
    → purpose → legal basis → every looked-up capability classified (p3), granted and within
    clearance → scope reachable → approval triggers (cross-region, batch size, tier 3)

A principal holding several roles gets any explicit deny among them, else any allow.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from enum import StrEnum

from gateway.auth import Principal
from gateway.authz.engine import Engine, Verdict, build_engine
from gateway.authz.policy import ROLES, Policy
from gateway.purpose import Purpose, PurposeKind, check_legal_basis, classify_purpose
from xiezhi.errors import InvalidInput
from xiezhi.supervision import SupervisionModel
from xiezhi.telemetry import annotate, span

NO_ORG = "-"


class Outcome(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    NEEDS_APPROVAL = "needs_approval"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str  # reason code a caller may see
    rule: str  # what decided it: a policy line, a limit, "default-deny"; for the audit log only
    policy_version: str
    approval_reasons: tuple[str, ...] = ()
    approver_org: str | None = None
    purpose: Purpose | None = None
    scope: str | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW


@dataclass(frozen=True)
class RunAsk:
    """What a match request asks for, as the decision sees it."""

    model: SupervisionModel
    purpose: str | None
    legal_basis: str | None
    scope: str | None
    subjects: int
    today: date


@dataclass(frozen=True)
class _State:
    policy: Policy
    engine: Engine

    def deny(self, reason: str, rule: str) -> Decision:
        return Decision(Outcome.DENY, reason, rule, self.policy.version)


class Authorizer:
    """Decides over one policy; `reload` swaps in another without a restart."""

    def __init__(self, policy: Policy, *, fast: bool = True) -> None:
        self._fast = fast
        self._state = self._build(policy)

    def _build(self, policy: Policy) -> _State:
        return _State(policy, build_engine(policy.rules.model_text, policy.rules.rules, policy.orgs, fast=self._fast))

    def reload(self, policy: Policy) -> None:
        # One assignment: a decision in flight keeps the state it started with.
        self._state = self._build(policy)

    @property
    def policy(self) -> Policy:
        return self._state.policy

    # ---- generic actions -----------------------------------------------------------------

    def decide(self, principal: Principal, obj: str, act: str, target: str | None = None) -> Decision:
        """May `principal` perform `act` on `obj`, touching `target` (default: its own org)?"""
        with span("authz.decide", {"xiezhi.action": act}):
            return _observed(self._decide(self._state, principal, obj, act, target))

    def _decide(self, state: _State, principal: Principal, obj: str, act: str, target: str | None) -> Decision:
        refusal = _check_roles(state, principal)
        if refusal:
            return refusal
        org = principal.org or NO_ORG
        # A person acts for an organisation the tree knows; a connector identity for none.
        if not principal.is_connector and org not in state.policy.orgs:
            return state.deny("unknown_org", "organisation tree")
        verdict, refusal = _check_rules(state, principal, obj, act, target or org)
        if refusal:
            return refusal
        assert verdict is not None
        return Decision(Outcome.ALLOW, "allowed", verdict.describe(), state.policy.version)

    # ---- running a model -----------------------------------------------------------------

    def decide_run(self, principal: Principal, ask: RunAsk) -> Decision:
        with span("authz.decide", {"xiezhi.action": "run", "xiezhi.model": ask.model.id}):
            return _observed(self._decide_run(principal, ask))

    def _decide_run(self, principal: Principal, ask: RunAsk) -> Decision:
        state = self._state
        org = principal.org or NO_ORG
        base = self._decide(state, principal, f"model:{ask.model.id}", "run", org)
        if not base.allowed:
            return base
        try:
            purpose = classify_purpose(ask.purpose, state.policy.actions, today=ask.today)
            check_legal_basis(ask.legal_basis)
        except InvalidInput as exc:
            return state.deny(exc.code, "purpose binding")
        if purpose.kind is PurposeKind.SPECIAL_ACTION and not state.policy.orgs.covers(purpose.region or "", org):
            return state.deny("special_action_out_of_scope", f"special action {purpose.reference} organiser")
        refusal = _check_capabilities(state, principal, ask.model)
        if refusal:
            return refusal
        scope = ask.scope or org
        if scope not in state.policy.orgs:
            return state.deny("unknown_scope", "organisation tree")
        triggers: dict[str, str] = {}
        approver = org
        if scope != org:
            reach, refusal = _check_rules(state, principal, f"model:{ask.model.id}", "run", scope)
            if refusal and refusal.rule != "default-deny":
                return refusal
            if reach is None:
                common = state.policy.orgs.common_ancestor(org, scope)
                if common is None:
                    return state.deny("scope_unreachable", f"no organisation covers {org} and {scope}")
                approver = common
                triggers["cross_region"] = f"scope {scope} outside the reach of {org}; approver {common}"
        limit = _batch_limit(state, principal, ask.model)
        if ask.subjects > limit:
            triggers["batch_over_limit"] = f"limits: batch of {ask.subjects} over {limit}"
        tier3 = [c for c in ask.model.looks_up if state.policy.rules.tiers[c] >= 3]
        if tier3:
            triggers["tier3_capability"] = f"p3, {tier3[0]}, 3"
        decision = replace(base, purpose=purpose, scope=scope)
        if not triggers:
            return decision
        return replace(
            decision,
            outcome=Outcome.NEEDS_APPROVAL,
            reason="+".join(triggers),
            rule=base.rule + "; " + "; ".join(triggers.values()),
            approval_reasons=tuple(triggers),
            approver_org=approver,
        )

    # ---- approving -----------------------------------------------------------------------

    def decide_approval(self, approver: Principal, *, requester: str, approver_org: str, model_id: str) -> Decision:
        """May `approver` approve or reject a request of `requester` that needs `approver_org`?"""
        state = self._state
        if approver.subject == requester:
            return state.deny("self_approval", "two-person rule: nobody approves their own request")
        decision = self._decide(state, approver, f"approval:{model_id}", "decide", approver_org)
        if decision.allowed or decision.rule != "default-deny":
            return decision
        own = self._decide(state, approver, f"approval:{model_id}", "decide", approver.org)
        if own.allowed:
            return state.deny("approver_out_of_scope", f"{approver.org} does not reach {approver_org}")
        return decision


def _observed(decision: Decision) -> Decision:
    """The decision, with its outcome and reason code on the current span (never its rule)."""
    annotate({"xiezhi.outcome": decision.outcome.value, "xiezhi.reason": decision.reason})
    return decision


def _check_roles(state: _State, principal: Principal) -> Decision | None:
    if not principal.roles:
        return state.deny("no_roles", "roles")
    unknown = principal.roles - ROLES
    if unknown:
        return state.deny("unknown_role", "roles: " + ", ".join(sorted(unknown)))
    for role, other in state.policy.rules.exclusive:
        if role in principal.roles and other in principal.roles:
            return state.deny("separation_of_duties", f"p2, {role}, {other}")
    return None


def _check_rules(
    state: _State, principal: Principal, obj: str, act: str, target: str
) -> tuple[Verdict | None, Decision | None]:
    """Ask the engine for every role: any explicit deny wins, then the first allow."""
    org = principal.org or NO_ORG
    allowed: Verdict | None = None
    for role in sorted(principal.roles):
        verdict = state.engine.check(role, org, obj, act, target)
        if verdict.explicit_deny:
            return None, state.deny("denied_by_policy", verdict.describe())
        if verdict.allowed and allowed is None:
            allowed = verdict
    if allowed is None:
        return None, state.deny("not_granted", "default-deny")
    return allowed, None


def _check_capabilities(state: _State, principal: Principal, model: SupervisionModel) -> Decision | None:
    """Every capability the model looks up must have a tier, a grant and the clearance."""
    org = principal.org or NO_ORG
    for capability in model.looks_up:
        tier = state.policy.rules.tiers.get(capability)
        if tier is None:
            return state.deny("capability_unclassified", f"p3: no tier for {capability}")
        _, refusal = _check_rules(state, principal, f"capability:{capability}", "lookup", org)
        if refusal:
            return replace(refusal, reason="capability_not_granted")
        if principal.clearance < tier:
            return state.deny("clearance_insufficient", f"p3, {capability}, {tier}")
    return None


def _batch_limit(state: _State, principal: Principal, model: SupervisionModel) -> int:
    """The most generous batch limit among the roles that may run the model."""
    org = principal.org or NO_ORG
    level = state.policy.orgs.get(org).level
    return max(
        (
            state.policy.limits.batch_limit(role, level)
            for role in principal.roles
            if state.engine.check(role, org, f"model:{model.id}", "run", org).allowed
        ),
        default=0,
    )
