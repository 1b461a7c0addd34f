"""Authorization latency at 100, 1,000 and 10,000 `p` rules: plain pycasbin vs the fast path.

pycasbin's plain enforcer evaluates the matcher against every rule, so a check slows
linearly with the rule count; `IndexedEngine` looks only at the rules filed under the
request's (role, action) and holder organisation, and `Memo` caches its verdicts. The
target is one `Authorizer.decide_run` under 1 ms at 10,000 rules.

The policies are synthetic but shaped like a real one: the shipped `policies/` rules
stay in (so admin denies, assistants' civil-affairs deny and the wildcard grants still
decide), an organisation tree is grown over real province codes with cities and
districts under them, and per-organisation grants and denies for prosecutors,
assistants and department heads over the shipped models and capabilities are added
until the rule count reaches the target. Requests are drawn across that whole tree, so
the index is exercised rather than one hot key.

Measured per size, each figure the median over --rounds rounds of the mean per call
(`time.perf_counter_ns`):

    plain          CasbinEngine.check (few calls at 10,000 rules: it is slow)
    indexed        IndexedEngine.check, no cache, distinct requests
    memo cold      a fresh Memo(IndexedEngine) each round over distinct requests (all misses)
    memo warm      the same requests again through a filled memo (all hits)
    decide_run     asset_sweep (8 capabilities) for a district prosecutor, 300 subjects, a
                   case number and a legal basis: Authorizer(fast=False) vs Authorizer();
                   cold = a fresh Authorizer each round and a distinct org per call,
                   warm = the same calls again

Each size also checks ~200 random requests: IndexedEngine must return the same Verdict
(allowed, deciding rule, explicit deny) as CasbinEngine.

    .venv/bin/python bench/bench_authz.py [--quick] [--rounds 5] [--sizes 100 1000 10000]

The table is printed and written to bench/out/authz.txt.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from casbin.util import key_match

from bench.common import OUT
from gateway.auth import Principal
from gateway.authz import Authorizer, Policy, RunAsk, load_policy_dir
from gateway.authz.engine import CasbinEngine, IndexedEngine, Memo, Rule
from gateway.authz.policy import PolicyRules
from gateway.orgs import Organisation, OrgLevel, OrgTree
from xiezhi.supervision import ModelCatalog

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
# The 31 provincial-level regions with a people's procuratorate (GB/T 2260).
PROVINCES = "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 61 62 63 64 65".split()
BUSINESS_ROLES = ("prosecutor", "assistant", "dept_head")
ADMIN_ROLES = ("security_admin", "security_auditor", "system_admin", "connector")
RUN_MODEL = "asset_sweep"
PURPOSE = "（2025）浙0803执1234号"
LEGAL_BASIS = "《人民检察院民事诉讼监督规则》第一百零六条"
TODAY = date(2025, 6, 1)
SANITY_REQUESTS = 200
TARGET_MS = 1.0

Request = tuple[str, str, str, str, str]  # role, org, obj, act, target


# ---- the synthetic policy --------------------------------------------------------------


def grow_orgs(base: OrgTree, wanted: int) -> OrgTree:
    """The shipped tree plus provinces, cities `PPCC00` and districts `PPCCDD`: about `wanted` orgs."""
    k = 1
    while min(31, 3 * k) * (1 + k + k * k) < wanted:
        k += 1
    codes: list[str] = []
    for province in PROVINCES[: min(31, 3 * k)]:
        codes.append(province + "0000")
        for c in range(1, k + 1):
            city = f"{province}{c:02d}00"
            codes.append(city)
            codes.extend(f"{city[:4]}{d:02d}" for d in range(1, k + 1))
    added = [Organisation(code, f"第{code}号人民检察院", _parent(code)) for code in codes if code not in base]
    return OrgTree([*base, *added])


def _parent(code: str) -> str | None:
    if code.endswith("0000"):
        return None
    return code[:2] + "0000" if code.endswith("00") else code[:4] + "00"


def org_rules(org: Organisation, models: Sequence[str], caps: Sequence[str], rng: random.Random) -> list[Rule]:
    """A handful of grants and denies for one organisation, as a real policy file would hold."""
    code, model, cap = org.code, rng.choice(models), rng.choice(caps)
    other_model = rng.choice([m for m in models if m != RUN_MODEL])
    reach = "self" if org.level is OrgLevel.DISTRICT else "subtree"
    candidates: list[Rule] = [
        ("prosecutor", code, f"model:{model}", "run", reach, "allow"),
        ("prosecutor", code, f"capability:{cap}", "lookup", reach, "allow"),
        ("prosecutor", code, f"model:{other_model}", "run", "any", "deny"),
        ("assistant", code, f"model:{model}", "run", "self", "allow"),
        ("assistant", code, f"capability:{cap.split('.')[0]}.*", "lookup", "self", "allow"),
        ("assistant", code, f"capability:{cap}", "lookup", "any", "deny"),
        ("dept_head", f"{code}/*", f"model:{model}", "run", "subtree", "allow"),
        ("dept_head", code, f"approval:{model}", "decide", reach, "allow"),
        ("dept_head", code, f"capability:{cap}", "lookup", "subtree", "allow"),
        ("prosecutor", code, "request:*", "read", "self", "allow"),
    ]
    return rng.sample(candidates, rng.randint(3, 6))


def synthetic_policy(base: Policy, models: Sequence[str], target: int, seed: int) -> Policy:
    """`base` grown to `target` p rules over a tree of about target/4 organisations."""
    rng = random.Random(seed)
    tree = grow_orgs(base.orgs, target // 4)
    orgs = list(tree)
    caps = sorted(base.rules.tiers)
    rules = list(base.rules.rules)
    seen = set(rules)
    while len(rules) < target:
        for rule in org_rules(rng.choice(orgs), models, caps, rng):
            if rule not in seen and len(rules) < target:
                seen.add(rule)
                rules.append(rule)
    shipped = base.rules
    return Policy(
        PolicyRules(shipped.model_text, tuple(rules), shipped.exclusive, shipped.tiers),
        tree,
        base.limits,
        base.actions,
    )


# ---- requests --------------------------------------------------------------------------


ACTS = ("run", "lookup", "decide", "read")
ACT_WEIGHTS = (35, 45, 10, 10)


def concrete_object(act: str, models: Sequence[str], caps: Sequence[str], rng: random.Random) -> str:
    """An object the gateway would ask about for `act`."""
    if act == "run":
        return f"model:{rng.choice(models)}"
    if act == "lookup":
        return f"capability:{rng.choice(caps)}"
    if act == "decide":
        return f"approval:{rng.choice(models)}"
    return f"request:r-{rng.randrange(10**6)}"


def random_request(policy: Policy, models: Sequence[str], orgs: Sequence[str], rng: random.Random) -> Request:
    """A check as the gateway asks it: mostly business roles, targets near the holder's org."""
    role = rng.choice(BUSINESS_ROLES) if rng.random() < 0.9 else rng.choice(ADMIN_ROLES)
    org = rng.choice(orgs) if rng.random() < 0.98 else "-"
    act = rng.choices(ACTS, ACT_WEIGHTS)[0]
    obj = concrete_object(act, models, sorted(policy.rules.tiers), rng)
    return role, org, obj, act, _target(policy.orgs, org, rng)


def rule_request(policy: Policy, models: Sequence[str], rng: random.Random) -> Request:
    """A check aimed at one rule: its role and action, a holder its org pattern admits, a fitting object."""
    role, pattern, obj_pattern, act, _, _ = rng.choice(policy.rules.rules)
    code = pattern.removesuffix("/*")
    if code in policy.orgs:
        org = rng.choice([code, *policy.orgs.children(code)]) if pattern.endswith("/*") else code
    else:  # "*" or a level
        org = rng.choice([o.code for o in policy.orgs if pattern in ("*", o.level.value)])
    fitting = [concrete_object(act, models, sorted(policy.rules.tiers), rng) for _ in range(20)]
    obj = next((o for o in fitting if key_match(o, obj_pattern)), obj_pattern)
    return role, org, obj, act, _target(policy.orgs, org, rng)


def _target(tree: OrgTree, org: str, rng: random.Random) -> str:
    roll = rng.random()
    if org not in tree or roll < 0.6:
        return org
    if roll < 0.85:
        below = tree.children(org)
        return rng.choice(below) if below else org
    return rng.choice([o.code for o in tree])


def distinct_requests(policy: Policy, models: Sequence[str], count: int, seed: int) -> list[Request]:
    """Half aimed at a rule, half anywhere in the tree; no two alike."""
    rng = random.Random(seed)
    orgs = [o.code for o in policy.orgs]
    requests: dict[Request, None] = {}
    while len(requests) < count:
        aimed = rng.random() < 0.5
        request = rule_request(policy, models, rng) if aimed else random_request(policy, models, orgs, rng)
        requests[request] = None
    return list(requests)


def run_asks(policy: Policy, catalog: ModelCatalog, count: int, seed: int) -> list[tuple[Principal, RunAsk]]:
    """asset_sweep for prosecutors at `count` distinct district orgs (fewer if the tree is small)."""
    districts = [o.code for o in policy.orgs if o.level is OrgLevel.DISTRICT]
    random.Random(seed).shuffle(districts)
    ask = RunAsk(catalog.get(RUN_MODEL), PURPOSE, LEGAL_BASIS, None, 300, TODAY)
    return [
        (Principal(f"prosecutor-{code}", code, frozenset({"prosecutor"}), clearance=3), ask)
        for code in districts[:count]
    ]


# ---- timing ----------------------------------------------------------------------------


def per_call_us(prepare: Callable[[], Callable[..., Any]], items: Sequence[tuple[Any, ...]], rounds: int) -> float:
    """Median over `rounds` of the mean µs per call; `prepare()` (untimed) gives each round's callable."""
    samples = []
    for _ in range(rounds):
        call = prepare()
        started = time.perf_counter_ns()
        for item in items:
            call(*item)
        samples.append((time.perf_counter_ns() - started) / len(items) / 1000)
    return statistics.median(samples)


def once_ms(fn: Callable[[], object]) -> float:
    started = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - started) / 1e6


@dataclass(frozen=True)
class Counts:
    """How many calls each figure makes per round."""

    rounds: int
    plain_budget: int  # plain checks per round × rules: ~constant time per size
    checks: int
    runs: int
    plain_run_budget: int

    def plain_checks(self, rules: int) -> int:
        return max(5, self.plain_budget // rules)

    def plain_runs(self, rules: int) -> int:
        return max(2, self.plain_run_budget // rules)


FULL = Counts(rounds=5, plain_budget=200_000, checks=2_000, runs=50, plain_run_budget=30_000)
QUICK = Counts(rounds=3, plain_budget=30_000, checks=300, runs=10, plain_run_budget=10_000)


# ---- one size --------------------------------------------------------------------------


@dataclass
class Sanity:
    wrong: list[str] = field(default_factory=list)
    decided: dict[str, int] = field(default_factory=dict)  # verdict kind → requests

    def summary(self) -> str:
        return ", ".join(f"{kind} {n}" for kind, n in sorted(self.decided.items()))


@dataclass
class Result:
    rules: int
    orgs: int
    plain_us: float
    indexed_us: float
    memo_cold_us: float
    memo_warm_us: float
    run_plain_ms: float
    run_cold_ms: float
    run_warm_ms: float
    sanity: Sanity
    build_ms: float
    outcomes: str


def compare_engines(
    policy: Policy, plain: CasbinEngine, indexed: IndexedEngine, models: Sequence[str], shipped: set[Rule]
) -> Sanity:
    """Ask both engines the same random requests; count disagreements and which kind of rule decided."""
    sanity = Sanity()
    for request in distinct_requests(policy, models, SANITY_REQUESTS, seed=7):
        want, got = plain.check(*request), indexed.check(*request)
        if want != got:
            sanity.wrong.append(f"{request}: casbin {want}, indexed {got}")
        kind = "deny" if want.explicit_deny else "allow" if want.allowed else "default-deny"
        origin = "" if want.rule is None else " (synthetic)" if want.rule not in shipped else " (shipped)"
        sanity.decided[kind + origin] = sanity.decided.get(kind + origin, 0) + 1
    return sanity


def check_latencies(policy: Policy, models: Sequence[str], counts: Counts, shipped: set[Rule]) -> dict[str, Any]:
    """One check: plain, indexed, memo cold (fresh memo each round), memo warm; and the engines compared."""
    rules, tree = policy.rules.rules, policy.orgs
    plain = CasbinEngine(policy.rules.model_text, rules, tree)
    build_ms = once_ms(lambda: IndexedEngine(rules, tree))
    indexed = IndexedEngine(rules, tree)
    requests = distinct_requests(policy, models, counts.checks, seed=len(rules))
    warm = Memo(indexed)
    for request in requests:
        warm.check(*request)
    sanity = compare_engines(policy, plain, indexed, models, shipped)
    return {
        "plain_us": per_call_us(lambda: plain.check, requests[: counts.plain_checks(len(rules))], counts.rounds),
        "indexed_us": per_call_us(lambda: indexed.check, requests, counts.rounds),
        "memo_cold_us": per_call_us(lambda: Memo(indexed).check, requests, counts.rounds),
        "memo_warm_us": per_call_us(lambda: warm.check, requests, counts.rounds),
        "sanity": sanity,
        "build_ms": build_ms,
    }


def warmed(policy: Policy, asks: Sequence[tuple[Principal, RunAsk]]) -> Authorizer:
    """A fast Authorizer that has decided every ask once, so its memo holds their checks."""
    authorizer = Authorizer(policy)
    for ask in asks:
        authorizer.decide_run(*ask)
    return authorizer


def run_latencies(policy: Policy, catalog: ModelCatalog, counts: Counts) -> dict[str, Any]:
    """decide_run: plain, fast cold (fresh Authorizer, distinct orgs), fast warm (same asks again)."""
    asks = run_asks(policy, catalog, counts.runs, seed=len(policy.rules.rules))
    plain = Authorizer(policy, fast=False)
    plain_asks = asks[: counts.plain_runs(len(policy.rules.rules))]
    warm = warmed(policy, asks)
    outcomes = sorted({f"{d.outcome.value}/{d.reason}" for d in (warm.decide_run(*a) for a in asks)})
    return {
        "run_plain_ms": per_call_us(lambda: plain.decide_run, plain_asks, counts.rounds) / 1000,
        "run_cold_ms": per_call_us(lambda: Authorizer(policy).decide_run, asks, counts.rounds) / 1000,
        "run_warm_ms": per_call_us(lambda: warm.decide_run, asks, counts.rounds) / 1000,
        "outcomes": ", ".join(outcomes),
    }


def measure(base: Policy, catalog: ModelCatalog, target: int, counts: Counts) -> Result:
    models = sorted(model.id for model in catalog)
    policy = synthetic_policy(base, models, target, seed=target)
    return Result(
        rules=len(policy.rules.rules),
        orgs=len(policy.orgs),
        **check_latencies(policy, models, counts, shipped=set(base.rules.rules)),
        **run_latencies(policy, catalog, counts),
    )


# ---- output ----------------------------------------------------------------------------

COLUMNS = (
    "rules",
    "orgs",
    "plain checks/s",
    "plain µs/check",
    "indexed µs/check",
    "memo cold µs",
    "memo warm µs",
    "decide_run plain ms",
    "decide_run fast cold ms",
    "decide_run fast warm ms",
)


def table(results: Sequence[Result], counts: Counts) -> Table:
    out = Table(
        title=f"Authorization at growing rule counts (median of {counts.rounds} rounds)",
        caption="plain = pycasbin Enforcer; fast = IndexedEngine behind Memo; decide_run = asset_sweep, 8 capabilities",
    )
    for column in COLUMNS:
        out.add_column(column, justify="right")
    for r in results:
        out.add_row(
            f"{r.rules:,}",
            f"{r.orgs:,}",
            f"{1e6 / r.plain_us:,.0f}",
            f"{r.plain_us:,.0f}",
            f"{r.indexed_us:.1f}",
            f"{r.memo_cold_us:.1f}",
            f"{r.memo_warm_us:.2f}",
            f"{r.run_plain_ms:,.1f}",
            f"{r.run_cold_ms:.3f}",
            f"{r.run_warm_ms:.3f}",
        )
    return out


def notes(results: Sequence[Result]) -> list[str]:
    lines = []
    for r in results:
        lines.append(
            f"{r.rules:>6,} rules: IndexedEngine vs CasbinEngine mismatches {len(r.sanity.wrong)}/{SANITY_REQUESTS}"
            f" ({r.sanity.summary()})"
        )
        lines.append(f"              index build {r.build_ms:.1f} ms; decide_run outcomes: {r.outcomes}")
        if r.sanity.wrong:
            lines.append(f"        first mismatch: {r.sanity.wrong[0]}")
    largest = max(results, key=lambda r: r.rules)
    verdict = "PASS" if largest.run_cold_ms < TARGET_MS and largest.run_warm_ms < TARGET_MS else "FAIL"
    lines.append(
        f"fast decide_run at {largest.rules:,} rules under {TARGET_MS:g} ms (median, cold and warm): {verdict}"
        f" (cold {largest.run_cold_ms:.3f} ms, warm {largest.run_warm_ms:.3f} ms)"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000], help="p rule counts")
    parser.add_argument("--rounds", type=int, help="rounds per figure (median); default 5, 3 with --quick")
    parser.add_argument("--quick", action="store_true", help="few iterations: a smoke run")
    args = parser.parse_args()
    counts = QUICK if args.quick else FULL
    if args.rounds:
        counts = Counts(args.rounds, counts.plain_budget, counts.checks, counts.runs, counts.plain_run_budget)
    base = load_policy_dir(POLICIES)
    catalog = ModelCatalog.load(POLICIES / "models")
    console = Console(record=True, width=200)
    console.print(
        f"Python {platform.python_version()}, {platform.machine()}; shipped policy {len(base.rules.rules)} rules"
    )
    results = []
    for size in args.sizes:
        with console.status(f"{size:,} rules…"):
            results.append(measure(base, catalog, size, counts))
    console.print(table(results, counts))
    for line in notes(results):
        console.print(line, highlight=False)
    OUT.mkdir(exist_ok=True)
    console.save_text(str(OUT / "authz.txt"))


if __name__ == "__main__":
    main()
