"""Two engines that decide one Casbin request, and a memo in front of either.

A check asks: may a holder of `role` at organisation `org` perform `act` on `obj`,
touching organisation `target`? (`policies/model.conf` explains the fields.)

- `CasbinEngine` is pycasbin's plain enforcer over the model and rules: the reference.
  It evaluates the matcher against every rule, so it slows linearly with the rule count.
- `IndexedEngine` decides the same matcher over rules indexed by (role, action) and then
  by the holder-org field, so a check touches only the rules that could match. It
  implements exactly the matcher in `MATCHER` and Casbin's allow-and-deny effect,
  including which rule Casbin names; `tests/test_authz_engine.py` checks it against
  `CasbinEngine` on every decision table row and on random requests. A model whose
  matcher is anything else gets the plain engine.
- `Memo` caches verdicts; a policy or organisation change builds a new engine, so a memo
  never outlives the rules it cached.
"""

from __future__ import annotations

import heapq
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import casbin
from casbin.util import key_match

from gateway.orgs import OrgLevel, OrgTree

MATCHER = (
    "r.sub == p.sub && r.act == p.act && orgMatch(r.org, p.org) && keyMatch(r.obj, p.obj)"
    " && reaches(r.org, r.target, p.reach)"
)
REACHES = ("self", "subtree", "any")
EFFECTS = ("allow", "deny")
_CODE = re.compile(r"^[0-9]{6}$")
_SUBTREE = re.compile(r"^([0-9]{6})/\*$")
# The model the indexed engine implements: its request and policy fields, effect and matcher.
_IMPLEMENTED = (
    ("r_sub", "r_org", "r_obj", "r_act", "r_target"),
    ("p_sub", "p_org", "p_obj", "p_act", "p_reach", "p_eft"),
    "some(where (p_eft == allow)) && !some(where (p_eft == deny))",
    MATCHER,
)

Rule = tuple[str, ...]  # sub, org, obj, act, reach, eft


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    rule: Rule | None  # the rule Casbin names: the first matching deny, else the last matching allow
    explicit_deny: bool = False

    def describe(self) -> str:
        return "p, " + ", ".join(self.rule) if self.rule else "default-deny"


class Engine(Protocol):
    def check(self, role: str, org: str, obj: str, act: str, target: str) -> Verdict: ...


def org_matcher(tree: OrgTree) -> Callable[[str, str], bool]:
    """The `orgMatch(r.org, p.org)` function: does holder org `org` fit rule pattern `pattern`?"""

    def org_match(org: str, pattern: str) -> bool:
        if pattern == "*":
            return True
        if _CODE.match(pattern):
            return org == pattern
        subtree = _SUBTREE.match(pattern)
        if subtree:
            return tree.covers(subtree.group(1), org)
        return org in tree and tree.get(org).level.value == pattern

    return org_match


def reach_matcher(tree: OrgTree) -> Callable[[str, str, str], bool]:
    """The `reaches(r.org, r.target, p.reach)` function."""

    def reaches(org: str, target: str, reach: str) -> bool:
        if reach == "any":
            return True
        if reach == "self":
            return target == org
        return reach == "subtree" and tree.covers(org, target)

    return reaches


def check_rule(rule: Sequence[str]) -> str | None:
    """Return what is wrong with one `p` rule's fields, or None. Unknown values fail closed."""
    if len(rule) != 6:
        return "a p rule has 6 fields: role, org, object, action, reach, effect"
    _, org, _, _, reach, eft = rule
    levels = {level.value for level in OrgLevel}
    if not (org == "*" or _CODE.match(org) or _SUBTREE.match(org) or org in levels):
        return f"org pattern {org!r} is not '*', a code, 'code/*' or a level"
    if reach not in REACHES:
        return f"reach {reach!r} is not one of {', '.join(REACHES)}"
    if eft not in EFFECTS:
        return f"effect {eft!r} is not allow or deny"
    return None


class CasbinEngine:
    """pycasbin's plain enforcer: every check evaluates the matcher over every rule."""

    def __init__(self, model_text: str, rules: Sequence[Rule], tree: OrgTree) -> None:
        model = casbin.model.Model()
        model.load_model_from_text(model_text)
        self._enforcer = casbin.Enforcer(model, enable_log=False)
        self._enforcer.add_function("orgMatch", org_matcher(tree))
        self._enforcer.add_function("reaches", reach_matcher(tree))
        if rules:
            self._enforcer.add_named_policies("p", [list(rule) for rule in rules])

    def check(self, role: str, org: str, obj: str, act: str, target: str) -> Verdict:
        allowed, rule = self._enforcer.enforce_ex(role, org, obj, act, target)
        explained = tuple(rule) if rule else None
        return Verdict(bool(allowed), explained, explained is not None and explained[-1] == "deny")


class IndexedEngine:
    """The same decisions as `CasbinEngine`, touching only rules that could match."""

    def __init__(self, rules: Sequence[Rule], tree: OrgTree) -> None:
        self._tree = tree
        self._org_match = org_matcher(tree)
        self._reaches = reach_matcher(tree)
        # (role, act) → holder-org pattern → [(position, rule)], positions ascending
        self._index: dict[tuple[str, str], dict[str, list[tuple[int, Rule]]]] = defaultdict(lambda: defaultdict(list))
        for position, rule in enumerate(rules):
            self._index[(rule[0], rule[3])][rule[1]].append((position, rule))

    def check(self, role: str, org: str, obj: str, act: str, target: str) -> Verdict:
        last_allow: Rule | None = None
        for _, rule in self._candidates(role, org, act):
            if not (self._org_match(org, rule[1]) and key_match(obj, rule[2]) and self._reaches(org, target, rule[4])):
                continue
            if rule[5] == "deny":
                # Casbin's allow-and-deny effect stops at the first matching deny and names it.
                return Verdict(False, rule, explicit_deny=True)
            last_allow = rule
        return Verdict(last_allow is not None, last_allow)

    def _candidates(self, role: str, org: str, act: str) -> Iterator[tuple[int, Rule]]:
        """Rules for (role, act) whose holder pattern could fit `org`, in policy order."""
        by_pattern = self._index.get((role, act))
        if not by_pattern:
            return iter(())
        patterns = ["*", org]
        if org in self._tree:
            patterns.append(self._tree.get(org).level.value)
            patterns.extend(f"{code}/*" for code in self._tree.ancestors(org))
        lists = [by_pattern[p] for p in patterns if p in by_pattern]
        return heapq.merge(*lists)


class Memo:
    """Caches verdicts of one engine; bounded, cleared whole when full."""

    def __init__(self, engine: Engine, capacity: int = 100_000) -> None:
        self._engine = engine
        self._capacity = capacity
        self._verdicts: dict[tuple[str, str, str, str, str], Verdict] = {}

    def check(self, role: str, org: str, obj: str, act: str, target: str) -> Verdict:
        key = (role, org, obj, act, target)
        verdict = self._verdicts.get(key)
        if verdict is None:
            if len(self._verdicts) >= self._capacity:
                self._verdicts.clear()
            verdict = self._verdicts[key] = self._engine.check(role, org, obj, act, target)
        return verdict


def implements(model_text: str) -> bool:
    """Whether a model is exactly the one `IndexedEngine` implements (fields, effect, matcher)."""
    model = casbin.model.Model()
    model.load_model_from_text(model_text)
    found = (
        tuple(model["r"]["r"].tokens),
        tuple(model["p"]["p"].tokens),
        _normalised(model["e"]["e"].value),
        _normalised(model["m"]["m"].value),
    )
    return found == (*_IMPLEMENTED[:2], _normalised(_IMPLEMENTED[2]), _normalised(_IMPLEMENTED[3]))


def build_engine(model_text: str, rules: Sequence[Rule], tree: OrgTree, *, fast: bool = True) -> Engine:
    """The indexed engine behind a memo for the model it implements; pycasbin's for any other."""
    if fast and implements(model_text):
        return Memo(IndexedEngine(rules, tree))
    return CasbinEngine(model_text, rules, tree)


def _normalised(text: str) -> str:
    # Casbin rewrites `r.sub` to `r_sub` when it loads a model.
    return " ".join(str(text).replace(".", "_").split())
