"""Authorization: Casbin rules, tiers, purposes and approvals turned into permits.

Only this package produces `AuthorizedRequest` values; relay and lookup code accept nothing
else, so the type checker shows authorization ran before any data moved. Deny by default,
deny overrides allow, and an empty policy refuses to load. Callers see a reason code; the
deciding rule and the policy version go to the audit log.

    policy.py   the rules, organisation tree, limits and special actions a decision reads
    engine.py   Casbin's plain enforcer and the indexed fast path that decides the same
    decide.py   the order of checks: roles, rules, purpose, capabilities, scope, approvals
    store.py    the policy in the database (Casbin SQLAlchemy adapter), revisions, reload
    tables.py   decision tables under policies/tests/, run by `xiezhi policy test`
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass

from gateway.auth import Principal
from gateway.authz.decide import Authorizer, Decision, Outcome, RunAsk
from gateway.authz.policy import Policy, load_policy_dir
from xiezhi.errors import Denied


@dataclass(frozen=True)
class AuthorizedRequest:
    """Proof that `principal` may perform `action` on match request `request_id`.

    Made only by `permit` below, which passes the module's private token: a value built
    anywhere else raises TypeError. The token is an init-only variable, never stored, so
    `dataclasses.replace` cannot copy a permit onto another request either.
    """

    principal: Principal
    request_id: str
    action: str
    decision: Decision
    _token: InitVar[object]

    def __post_init__(self, _token: object) -> None:
        if _token is not _MINT:
            raise TypeError("AuthorizedRequest is produced only by gateway.authz")


_MINT = object()


def permit(principal: Principal, request_id: str, action: str, decision: Decision) -> AuthorizedRequest:
    """Turn an allow decision into a permit; raise Denied with the reason code otherwise."""
    if not decision.allowed:
        raise Denied("the policy does not allow this request", code=decision.reason)
    return AuthorizedRequest(principal, request_id, action, decision, _MINT)


__all__ = [
    "AuthorizedRequest",
    "Authorizer",
    "Decision",
    "Outcome",
    "Policy",
    "RunAsk",
    "load_policy_dir",
    "permit",
]
