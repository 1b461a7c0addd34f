"""The policy a decision reads: Casbin rules, the organisation tree, limits, special actions.

Rules come from `policy.csv` (or the database, see `store.py`) and are checked when they
load: an empty rule set, an unknown role, effect, reach or org pattern, or a capability
without a tier refuses to load rather than decide on a policy nobody meant. `Policy`
bundles everything one decision reads, with one version string naming all of it.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated

import casbin
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.authz.engine import Rule, check_rule
from gateway.orgs import OrgLevel, OrgTree, load_orgs
from gateway.purpose import SpecialActionRegistry, load_special_actions
from xiezhi.errors import InvalidInput

ROLES = frozenset(
    {"prosecutor", "assistant", "dept_head", "security_auditor", "security_admin", "system_admin", "connector"}
)


@dataclass(frozen=True)
class PolicyRules:
    """The Casbin part of a policy: the model text, `p` rules, exclusive pairs (`p2`), tiers (`p3`)."""

    model_text: str
    rules: tuple[Rule, ...]
    exclusive: tuple[tuple[str, str], ...] = ()
    tiers: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.rules:
            raise InvalidInput(
                "the policy holds no p rules: refusing a policy that would deny everything", code="policy_invalid"
            )
        for number, rule in enumerate(self.rules, 1):
            problem = check_rule(rule)
            if problem is None and rule[0] not in ROLES:
                problem = f"unknown role {rule[0]!r}"
            if problem:
                raise InvalidInput(f"policy rule {number} ({', '.join(rule)}): {problem}", code="policy_invalid")
        for pair in self.exclusive:
            unknown = set(pair) - ROLES
            if len(pair) != 2 or unknown or pair[0] == pair[1]:
                raise InvalidInput(f"p2 line {', '.join(pair)}: needs two different known roles", code="policy_invalid")
        for capability, tier in self.tiers.items():
            if tier not in (1, 2, 3):
                raise InvalidInput(f"p3 line {capability}: tier must be 1, 2 or 3", code="policy_invalid")

    def lines(self) -> list[list[str]]:
        """Every rule as a Casbin policy line (ptype first), in order."""
        return (
            [["p", *rule] for rule in self.rules]
            + [["p2", *pair] for pair in self.exclusive]
            + [["p3", capability, str(tier)] for capability, tier in self.tiers.items()]
        )

    def to_csv(self) -> str:
        return "".join(", ".join(line) + "\n" for line in self.lines())

    def digest(self) -> str:
        return hashlib.sha256((self.model_text + "\0" + self.to_csv()).encode()).hexdigest()


def rules_from_lines(model_text: str, lines: Sequence[Sequence[str]]) -> PolicyRules:
    """Build rules from Casbin policy lines (`[ptype, v0, …]`), refusing unknown ptypes and repeats."""
    p: list[Rule] = []
    exclusive: list[tuple[str, str]] = []
    tiers: dict[str, int] = {}
    for line in lines:
        ptype, values = line[0], tuple(v.strip() for v in line[1:])
        if any("," in v or '"' in v for v in values):
            # Casbin's storage joins fields with commas: such a field would not read back the same.
            raise InvalidInput(f"{ptype} line {values}: fields may not contain commas or quotes", code="policy_invalid")
        if ptype == "p":
            p.append(values)
        elif ptype == "p2":
            exclusive.append((values[0], values[1]) if len(values) == 2 else ("", ""))
        elif ptype == "p3":
            if len(values) != 2 or values[1] not in ("1", "2", "3"):
                raise InvalidInput(f"p3 line {', '.join(values)}: needs a capability and a tier", code="policy_invalid")
            if values[0] in tiers:
                raise InvalidInput(f"p3 line for {values[0]} is repeated", code="policy_invalid")
            tiers[values[0]] = int(values[1])
        else:
            raise InvalidInput(f"unknown policy line type {ptype!r}", code="policy_invalid")
    return PolicyRules(model_text, tuple(p), tuple(exclusive), tiers)


def parse_policy_csv(model_text: str, text: str) -> PolicyRules:
    """Parse policy text in Casbin's CSV form (comments and blank lines allowed)."""
    model = casbin.model.Model()
    model.load_model_from_text(model_text)
    lines = []
    for number, row in enumerate(csv.reader(io.StringIO(text), skipinitialspace=True), 1):
        if not row or row[0].strip().startswith("#"):
            continue
        ptype = row[0].strip()
        if ptype not in model["p"]:
            raise InvalidInput(f"policy line {number}: unknown line type {ptype!r}", code="policy_invalid")
        expected = len(model["p"][ptype].tokens)
        if len(row) - 1 != expected:
            raise InvalidInput(f"policy line {number}: {ptype} takes {expected} fields", code="policy_invalid")
        lines.append([field.strip() for field in row])
    return rules_from_lines(model_text, lines)


def load_policy_files(policy_dir: Path) -> PolicyRules:
    model_text = (policy_dir / "model.conf").read_text(encoding="utf-8")
    return parse_policy_csv(model_text, (policy_dir / "policy.csv").read_text(encoding="utf-8"))


# ---- limits ----------------------------------------------------------------------------

Count = Annotated[int, Field(ge=0)]


class Quota(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    subjects_per_day: Count
    requests_per_minute: Count


class ApprovalLimits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pending_hours: Annotated[float, Field(gt=0)] = 72
    valid_hours: Annotated[float, Field(gt=0)] = 24
    batch_limits: dict[str, dict[OrgLevel, Count]] = Field(default_factory=dict)


class Limits(BaseModel):
    """Thresholds of `limits.yaml`: batch sizes that need approval, approval lifetimes, quotas."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    approval: ApprovalLimits = ApprovalLimits()
    quotas: dict[str, Quota] = Field(default_factory=dict)

    def batch_limit(self, role: str, level: OrgLevel) -> int:
        """Subjects a holder of `role` at an org of `level` may ask about without approval (0 if none)."""
        return self.approval.batch_limits.get(role, {}).get(level, 0)

    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


def load_limits(path: Path) -> Limits:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        limits = Limits.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise InvalidInput(f"{path.name}: {exc}", code="policy_invalid") from None
    unknown = (set(limits.quotas) | set(limits.approval.batch_limits)) - ROLES
    if unknown:
        raise InvalidInput(f"{path.name}: unknown roles {sorted(unknown)}", code="policy_invalid")
    return limits


# ---- the whole policy ------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """Everything one decision reads. Immutable: a change builds a new Policy."""

    rules: PolicyRules
    orgs: OrgTree
    limits: Limits
    actions: SpecialActionRegistry

    @cached_property
    def version(self) -> str:
        # Every decision names the version; hashing thousands of rules each time would cost more
        # than the decision itself, and a Policy never changes.
        parts = (self.rules.digest(), self.orgs.digest(), self.limits.digest(), self.actions.digest())
        return version_label(hashlib.sha256("\0".join(parts).encode()).hexdigest())

    def replace(self, *, rules: PolicyRules | None = None, orgs: OrgTree | None = None) -> Policy:
        return Policy(rules or self.rules, orgs or self.orgs, self.limits, self.actions)


def version_label(hex_digest: str) -> str:
    """The first 64 bits of a digest as two groups of 8 hex digits, `0f3a9c1e-77b2d408`.

    NOTE: the audit log refuses any value with a run of 15 digits (it could be an ID number),
    and every decision entry names the policy version: 16 hex digits in a row would be all
    decimal digits about once in 650 policies, and then no decision could be recorded."""
    return f"{hex_digest[:8]}-{hex_digest[8:16]}"


def load_policy_dir(policy_dir: Path) -> Policy:
    """Load a policy folder: model.conf, policy.csv, orgs.yaml, limits.yaml, special_actions.yaml."""
    return Policy(
        rules=load_policy_files(policy_dir),
        orgs=load_orgs(policy_dir / "orgs.yaml"),
        limits=load_limits(policy_dir / "limits.yaml"),
        actions=load_special_actions(policy_dir / "special_actions.yaml"),
    )
