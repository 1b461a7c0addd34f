"""Tests for gateway.authz.engine: the indexed fast path decides exactly as pycasbin's plain enforcer.

`IndexedEngine` (behind `Memo`) must return the same `Verdict` as `CasbinEngine` — allowed or
not, and the rule Casbin names — on every decision table row, on random requests over the
shipped policy and over a larger synthetic one that uses every org pattern form.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from gateway.authz import Authorizer
from gateway.authz.engine import (
    EFFECTS,
    REACHES,
    CasbinEngine,
    IndexedEngine,
    Memo,
    Rule,
    Verdict,
    build_engine,
    check_rule,
    org_matcher,
    reach_matcher,
)
from gateway.authz.policy import ROLES, load_policy_dir
from gateway.authz.tables import Row, decide_row, read_tables
from gateway.orgs import OrgLevel
from xiezhi.supervision import ModelCatalog

POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"
POLICY = load_policy_dir(POLICY_DIR)
MODEL_TEXT = POLICY.rules.model_text
RULES = POLICY.rules.rules
TREE = POLICY.orgs
CATALOG = ModelCatalog.load(POLICY_DIR / "models")
ROWS = list(read_tables(POLICY_DIR / "tests"))

Request = tuple[str, str, str, str, str]  # role, org, obj, act, target

CONCRETE_OBJECTS = (
    "model:housing_fund",
    "model:litigated_claims",
    "capability:civil_affairs.married",
    "capability:court.winning_plaintiff_unpaid",
    "capability:tax.wage_income_declared",
    "approval:x",
    "approval:spouse_property",
    "audit:entries",
    "audit:policy",
    "index:court",
    "request:abc",
    "policy:rules",
    "org:tree",
    "system:status",
    "something:else",
)
ORG_CODES = tuple(org.code for org in TREE)
HOLDER_ORGS = (*ORG_CODES, "330804", "-")  # 330804: a well-formed code the tree does not know
TARGETS = (*ORG_CODES, "-")


@pytest.fixture(scope="module")
def fast() -> Authorizer:
    return Authorizer(POLICY)


@pytest.fixture(scope="module")
def plain() -> Authorizer:
    return Authorizer(POLICY, fast=False)


# --- every decision table row -------------------------------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=[f"{row.table}:{row.case}" for row in ROWS])
def test_fast_authorizer_decides_every_table_row_as_plain_casbin(row: Row, fast: Authorizer, plain: Authorizer) -> None:
    got = decide_row(fast, CATALOG, row).decision
    want = decide_row(plain, CATALOG, row).decision
    assert (got.outcome, got.reason, got.rule, got.approver_org) == (
        want.outcome,
        want.reason,
        want.rule,
        want.approver_org,
    )
    assert got == want


def test_the_two_authorizers_really_use_different_engines(fast: Authorizer, plain: Authorizer) -> None:
    # Otherwise the comparison above would compare an engine with itself.
    assert isinstance(build_engine(MODEL_TEXT, RULES, TREE), Memo)
    assert isinstance(build_engine(MODEL_TEXT, RULES, TREE, fast=False), CasbinEngine)
    assert fast.policy.version == plain.policy.version


# --- random requests ----------------------------------------------------------------------


def concrete(pattern: str, rng: random.Random) -> str:
    """An object that keyMatch-es `pattern` (the pattern itself for a literal)."""
    star = pattern.find("*")
    if star == -1:
        return pattern
    return pattern[:star] + rng.choice(("x", "court.winning_plaintiff_unpaid", "a.b", ""))


def random_requests(rng: random.Random, rules: Sequence[Rule], count: int) -> list[Request]:
    """Half drawn field by field from the vocabulary, half aimed at one rule's role, action and object."""
    roles = sorted({rule[0] for rule in rules} | {"clerk"})
    acts = sorted({rule[3] for rule in rules} | {"fly"})
    objects = sorted({rule[2] for rule in rules} | set(CONCRETE_OBJECTS))
    requests: list[Request] = []
    for n in range(count):
        org, target = rng.choice(HOLDER_ORGS), rng.choice(TARGETS)
        if n % 2:
            requests.append((rng.choice(roles), org, rng.choice(objects), rng.choice(acts), target))
        else:
            rule = rng.choice(rules)
            target = rng.choice((org, target))  # self reach needs target == org now and then
            requests.append((rule[0], org, concrete(rule[2], rng), rule[3], target))
    return requests


def mismatches(rules: Sequence[Rule], requests: Sequence[Request]) -> tuple[list[str], Counter[str]]:
    indexed, casbin = IndexedEngine(rules, TREE), CasbinEngine(MODEL_TEXT, rules, TREE)
    wrong: list[str] = []
    kinds: Counter[str] = Counter()
    for request in requests:
        got, want = indexed.check(*request), casbin.check(*request)
        if got != want:
            wrong.append(f"{request}: indexed {got}, casbin {want}")
        kinds["deny" if want.explicit_deny else "allow" if want.allowed else "default-deny"] += 1
    return wrong, kinds


def test_indexed_engine_matches_casbin_on_random_requests_over_the_shipped_policy() -> None:
    requests = random_requests(random.Random(20260601), RULES, 3000)
    wrong, kinds = mismatches(RULES, requests)
    assert wrong[:10] == []
    # Not vacuous: the sample holds allows, explicit denies and default denies.
    assert min(kinds["allow"], kinds["deny"], kinds["default-deny"]) >= 100, kinds


def synthetic_rules(rng: random.Random, count: int) -> list[Rule]:
    """The shipped rules followed by `count` random ones using every org pattern form, reach and effect."""
    patterns = [
        "*",
        *ORG_CODES,
        *(f"{code}/*" for code in ORG_CODES),
        *(level.value for level in OrgLevel),
        "999999",  # a well-formed code no organisation has
        "999900/*",
    ]
    objects = [
        "*",
        "model:*",
        "model:housing_fund",
        "capability:*",
        "capability:civil_affairs.*",
        "capability:civil_affairs.married",
        "approval:*",
        "audit:*",
        "audit:entries",
        "index:court",
        "request:*",
    ]
    acts = ["run", "lookup", "decide", "read", "publish"]
    rules: list[Rule] = list(RULES)
    for _ in range(count):
        effect = "deny" if rng.random() < 0.15 else "allow"
        rule = (rng.choice(sorted(ROLES)), rng.choice(patterns), rng.choice(objects), rng.choice(acts))
        rules.append((*rule, rng.choice(REACHES), effect))
    return rules


def test_indexed_engine_matches_casbin_on_a_larger_synthetic_policy() -> None:
    rng = random.Random(7)
    rules = synthetic_rules(rng, 400)
    assert all(check_rule(rule) is None for rule in rules)
    # The generator reaches every branch of the pattern index.
    holder_patterns = {rule[1] for rule in rules}
    assert {"*", "330803", "330800/*", "province", "city", "district", "999999"} <= holder_patterns
    assert {rule[4] for rule in rules} == set(REACHES)
    assert {rule[5] for rule in rules} == set(EFFECTS)
    wrong, kinds = mismatches(rules, random_requests(rng, rules, 2000))
    assert wrong[:10] == []
    assert min(kinds["allow"], kinds["deny"], kinds["default-deny"]) >= 100, kinds


# --- which rule Casbin names ----------------------------------------------------------------

ALLOW_ALL = ("prosecutor", "*", "model:*", "run", "any", "allow")
ALLOW_DISTRICT = ("prosecutor", "district", "model:*", "run", "subtree", "allow")
ALLOW_CITY_SUBTREE = ("prosecutor", "330800/*", "model:litigated_claims", "run", "self", "allow")
DENY_CODE = ("prosecutor", "330803", "model:litigated_claims", "run", "any", "deny")
DENY_ANY = ("prosecutor", "*", "model:*", "run", "any", "deny")
UNRELATED = ("assistant", "*", "model:*", "run", "any", "deny")


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        pytest.param([ALLOW_ALL], Verdict(True, ALLOW_ALL), id="one-allow"),
        pytest.param(
            [ALLOW_ALL, ALLOW_DISTRICT, ALLOW_CITY_SUBTREE], Verdict(True, ALLOW_CITY_SUBTREE), id="last-allow"
        ),
        pytest.param(
            [ALLOW_CITY_SUBTREE, ALLOW_DISTRICT, ALLOW_ALL], Verdict(True, ALLOW_ALL), id="last-allow-reversed"
        ),
        pytest.param(
            [ALLOW_ALL, DENY_CODE, ALLOW_DISTRICT, DENY_ANY], Verdict(False, DENY_CODE, True), id="first-deny-of-two"
        ),
        pytest.param([DENY_ANY, ALLOW_ALL, DENY_CODE], Verdict(False, DENY_ANY, True), id="first-deny-before-allows"),
        pytest.param([UNRELATED, ALLOW_ALL, UNRELATED], Verdict(True, ALLOW_ALL), id="other-role-ignored"),
        pytest.param([UNRELATED], Verdict(False, None), id="nothing-matches"),
    ],
)
def test_named_rule_is_first_matching_deny_else_last_matching_allow(rules: list[Rule], expected: Verdict) -> None:
    request = ("prosecutor", "330803", "model:litigated_claims", "run", "330803")
    assert CasbinEngine(MODEL_TEXT, rules, TREE).check(*request) == expected
    assert IndexedEngine(rules, TREE).check(*request) == expected
    assert build_engine(MODEL_TEXT, rules, TREE).check(*request) == expected


def test_verdict_describes_its_rule_as_a_policy_line() -> None:
    assert Verdict(True, ALLOW_ALL).describe() == "p, prosecutor, *, model:*, run, any, allow"
    assert Verdict(False, None).describe() == "default-deny"


# --- the matcher functions both engines share ---------------------------------------------


@pytest.mark.parametrize(
    ("org", "pattern", "expected"),
    [
        ("330803", "*", True),
        ("-", "*", True),
        ("330803", "330803", True),
        ("330802", "330803", False),
        ("330803", "330800/*", True),
        ("330800", "330800/*", True),
        ("330000", "330800/*", False),
        ("330106", "330800/*", False),
        ("330804", "330800/*", False),  # not in the tree
        ("330000", "province", True),
        ("330800", "city", True),
        ("330803", "district", True),
        ("429004", "district", True),
        ("330800", "district", False),
        ("330804", "district", False),
        ("-", "province", False),
    ],
)
def test_org_match(org: str, pattern: str, expected: bool) -> None:
    assert org_matcher(TREE)(org, pattern) is expected


@pytest.mark.parametrize(
    ("org", "target", "reach", "expected"),
    [
        ("330803", "330803", "self", True),
        ("330803", "330800", "self", False),
        ("-", "-", "self", True),
        ("330800", "330803", "subtree", True),
        ("330800", "330800", "subtree", True),
        ("330803", "330800", "subtree", False),
        ("330800", "330106", "subtree", False),
        ("-", "-", "subtree", False),
        ("330803", "420582", "any", True),
        ("330803", "330803", "everywhere", False),
    ],
)
def test_reaches(org: str, target: str, reach: str, expected: bool) -> None:
    assert reach_matcher(TREE)(org, target, reach) is expected


# --- the memo -------------------------------------------------------------------------------


class CountingEngine:
    def __init__(self, engine: IndexedEngine) -> None:
        self.engine = engine
        self.calls: list[Request] = []

    def check(self, role: str, org: str, obj: str, act: str, target: str) -> Verdict:
        self.calls.append((role, org, obj, act, target))
        return self.engine.check(role, org, obj, act, target)


def test_memo_returns_the_engines_verdict_and_asks_it_once() -> None:
    counting = CountingEngine(IndexedEngine(RULES, TREE))
    memo = Memo(counting)
    request = ("assistant", "330803", "capability:civil_affairs.married", "lookup", "330803")
    verdicts = [memo.check(*request) for _ in range(5)]
    assert verdicts == [counting.engine.check(*request)] * 5
    assert verdicts[0].explicit_deny
    assert counting.calls == [request]
    other = ("prosecutor", "330803", "capability:civil_affairs.married", "lookup", "330803")
    assert memo.check(*other).allowed
    assert counting.calls == [request, other]


def test_memo_past_its_capacity_still_answers_correctly() -> None:
    counting = CountingEngine(IndexedEngine(RULES, TREE))
    memo = Memo(counting, capacity=4)
    requests = random_requests(random.Random(3), RULES, 30)
    for _ in range(3):
        for request in requests:
            assert memo.check(*request) == counting.engine.check(*request)
    distinct = len(set(requests))
    assert distinct > 4
    # Bounded: with more distinct requests than it holds, it had to ask again.
    assert len(counting.calls) > distinct


def test_memo_forgets_the_oldest_request_once_full() -> None:
    counting = CountingEngine(IndexedEngine(RULES, TREE))
    memo = Memo(counting, capacity=2)
    a, b, c = (("prosecutor", "330803", f"model:{m}", "run", "330803") for m in "abc")
    for request in (a, b, c, a):
        memo.check(*request)
    assert counting.calls == [a, b, c, a]


# --- choosing the engine --------------------------------------------------------------------

MATCHER_LINE = next(line for line in MODEL_TEXT.splitlines() if line.startswith("m = "))


def test_shipped_model_gets_the_fast_path() -> None:
    assert isinstance(build_engine(MODEL_TEXT, RULES, TREE), Memo)
    assert isinstance(build_engine(MODEL_TEXT, RULES, TREE, fast=False), CasbinEngine)


def test_whitespace_in_the_matcher_does_not_lose_the_fast_path() -> None:
    spaced = MODEL_TEXT.replace(MATCHER_LINE, MATCHER_LINE.replace(" && ", "   &&  "))
    assert spaced != MODEL_TEXT
    assert isinstance(build_engine(spaced, RULES, TREE), Memo)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m + ' && r.sub != "prosecutor"',
        lambda m: m.replace("keyMatch(r.obj, p.obj)", "r.obj == p.obj"),
        lambda m: m.replace("reaches(r.org, r.target, p.reach)", "reaches(r.org, r.org, p.reach)"),
    ],
    ids=["extra-clause", "exact-object", "other-reach-arguments"],
)
def test_a_changed_matcher_falls_back_to_plain_casbin(change: Callable[[str], str]) -> None:
    changed = MODEL_TEXT.replace(MATCHER_LINE, change(MATCHER_LINE))
    assert changed != MODEL_TEXT
    assert isinstance(build_engine(changed, RULES, TREE), CasbinEngine)


def test_the_fallback_applies_the_changed_matcher() -> None:
    changed = MODEL_TEXT.replace(MATCHER_LINE, MATCHER_LINE + ' && r.sub != "prosecutor"')
    request = ("prosecutor", "330803", "model:litigated_claims", "run", "330803")
    assert build_engine(MODEL_TEXT, RULES, TREE).check(*request).allowed
    assert not build_engine(changed, RULES, TREE).check(*request).allowed
    assert build_engine(changed, RULES, TREE).check("dept_head", *request[1:]).allowed


@pytest.mark.parametrize(
    "effect",
    ["some(where (p.eft == allow))", "!some(where (p.eft == deny))"],
    ids=["allow-override", "deny-override"],
)
def test_a_changed_policy_effect_decides_as_plain_casbin(effect: str) -> None:
    shipped = "e = some(where (p.eft == allow)) && !some(where (p.eft == deny))"
    assert shipped in MODEL_TEXT
    changed = MODEL_TEXT.replace(shipped, f"e = {effect}")
    rules = [ALLOW_ALL, DENY_CODE]
    requests = [
        ("prosecutor", "330803", "model:litigated_claims", "run", "330803"),  # allow and deny match
        ("assistant", "330803", "model:litigated_claims", "run", "330803"),  # nothing matches
    ]
    engine, casbin = build_engine(changed, rules, TREE), CasbinEngine(changed, rules, TREE)
    assert isinstance(engine, CasbinEngine)
    assert [engine.check(*r) for r in requests] == [casbin.check(*r) for r in requests]
    # The indexed engine's allow-and-deny answer differs here, so falling back matters.
    assert [IndexedEngine(rules, TREE).check(*r) for r in requests] != [casbin.check(*r) for r in requests]


@pytest.mark.parametrize(
    ("shipped", "changed"),
    [
        ("r = sub, org, obj, act, target", "r = sub, obj, org, act, target"),
        ("p = sub, org, obj, act, reach, eft", "p = sub, org, obj, act, eft, reach"),
    ],
    ids=["request-fields", "policy-fields"],
)
def test_reordered_model_fields_fall_back_to_plain_casbin(shipped: str, changed: str) -> None:
    assert shipped in MODEL_TEXT
    assert isinstance(build_engine(MODEL_TEXT.replace(shipped, changed), RULES, TREE), CasbinEngine)


# --- check_rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [
        ("prosecutor", "*", "model:*", "run", "subtree", "allow"),
        ("prosecutor", "330803", "model:*", "run", "self", "deny"),
        ("prosecutor", "330800/*", "model:*", "run", "any", "allow"),
        ("prosecutor", "province", "model:*", "run", "any", "allow"),
        ("prosecutor", "city", "model:*", "run", "any", "allow"),
        ("prosecutor", "district", "model:*", "run", "any", "allow"),
    ],
)
def test_check_rule_accepts_every_documented_form(rule: Rule) -> None:
    assert check_rule(rule) is None


@pytest.mark.parametrize(
    ("rule", "names"),
    [
        (("prosecutor", "*", "model:*", "run", "subtree"), "6 fields"),
        (("prosecutor", "*", "model:*", "run", "subtree", "allow", "x"), "6 fields"),
        ((), "6 fields"),
        (("prosecutor", "33080", "model:*", "run", "self", "allow"), "'33080'"),
        (("prosecutor", "3308030", "model:*", "run", "self", "allow"), "'3308030'"),
        (("prosecutor", "330800/", "model:*", "run", "self", "allow"), "'330800/'"),
        (("prosecutor", "330800/**", "model:*", "run", "self", "allow"), "'330800/**'"),
        (("prosecutor", "*/330800", "model:*", "run", "self", "allow"), "'*/330800'"),
        (("prosecutor", "county", "model:*", "run", "self", "allow"), "'county'"),
        (("prosecutor", "Province", "model:*", "run", "self", "allow"), "'Province'"),
        (("prosecutor", "", "model:*", "run", "self", "allow"), "org pattern ''"),
        (("prosecutor", "*", "model:*", "run", "sub-tree", "allow"), "reach 'sub-tree'"),
        (("prosecutor", "*", "model:*", "run", "all", "allow"), "reach 'all'"),
        (("prosecutor", "*", "model:*", "run", "", "allow"), "reach ''"),
        (("prosecutor", "*", "model:*", "run", "self", "alow"), "effect 'alow'"),
        (("prosecutor", "*", "model:*", "run", "self", "Allow"), "effect 'Allow'"),
        (("prosecutor", "*", "model:*", "run", "self", ""), "effect ''"),
    ],
)
def test_check_rule_refuses(rule: Rule, names: str) -> None:
    problem = check_rule(rule)
    assert problem is not None
    assert names in problem


@pytest.mark.parametrize("pattern", ["３３０８０３", "３３０８００/*"])
def test_check_rule_refuses_non_ascii_digits_in_org_patterns(pattern: str) -> None:
    # A full-width code would pass a \d check yet never match an (ASCII) org code: a dead deny rule.
    assert check_rule(("prosecutor", pattern, "model:*", "run", "any", "deny")) is not None
