"""Authorization: Casbin decides, this module turns a decision into a permit.

Only this module produces `AuthorizedRequest` values; relay and lookup code accept nothing
else, so the type checker shows authorization ran before any data moved. Deny by default,
deny overrides allow, and an empty policy refuses to load. Callers see a reason code; the
deciding rule and the policy version go to the audit log.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import casbin

from gateway.auth import Principal
from xiezhi.errors import Denied, InvalidInput


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str  # the policy line that decided, or "default-deny"
    reason: str  # reason code a caller may see
    policy_version: str


@dataclass(frozen=True)
class AuthorizedRequest:
    """Proof that `principal` may perform `action` on match request `request_id`."""

    principal: Principal
    request_id: str
    action: str
    decision: Decision
    _token: object

    def __post_init__(self) -> None:
        if self._token is not _MINT:
            raise TypeError("AuthorizedRequest is produced only by gateway.authz")


_MINT = object()


class Authorizer:
    """Loads `model.conf` and `policy.csv` from a policy folder and decides over them."""

    def __init__(self, policy_dir: Path) -> None:
        model_path, policy_path = policy_dir / "model.conf", policy_dir / "policy.csv"
        self._enforcer = casbin.Enforcer(str(model_path), str(policy_path))
        if not self._enforcer.get_policy():
            raise InvalidInput(f"policy at {policy_path} is empty: refusing to start")
        digest = hashlib.sha256(model_path.read_bytes() + b"\0" + policy_path.read_bytes())
        self.policy_version = digest.hexdigest()[:16]

    def decide(self, principal: Principal, obj: str, action: str) -> Decision:
        """Decide over every role the principal holds: any deny wins, then any allow."""
        allowed_by: list[str] | None = None
        for role in sorted(principal.roles):
            ok, rule = self._enforcer.enforce_ex(f"role:{role}", obj, action)
            if rule and rule[-1] == "deny":
                return Decision(False, ", ".join(rule), f"{action}_denied", self.policy_version)
            if ok and allowed_by is None:
                allowed_by = rule
        if allowed_by is None:
            return Decision(False, "default-deny", f"{action}_not_granted", self.policy_version)
        return Decision(True, ", ".join(allowed_by), "allowed", self.policy_version)

    def permit(self, principal: Principal, request_id: str, action: str, decision: Decision) -> AuthorizedRequest:
        """Turn an allow decision into a permit; raise Denied for anything else."""
        if not decision.allowed:
            raise Denied("the policy does not allow this request", code=decision.reason)
        return AuthorizedRequest(principal, request_id, action, decision, _MINT)
