"""Tests for gateway.authz.policy and store: loading fails closed, the version names everything.

A policy that holds a mistake refuses to load (InvalidInput, code policy_invalid) rather than
decide on rules nobody meant; decisions over a policy missing something refuse too; the
database copy of the policy loads back equal, in order, with the same version.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from audit_log import AuditEvent, EventKind
from gateway.auth import Principal
from gateway.authz import AuthorizedRequest, Authorizer, Outcome, RunAsk, permit
from gateway.authz.policy import Limits, Policy, load_limits, load_policy_dir, parse_policy_csv, version_label
from gateway.authz.store import PolicyStore
from gateway.db import make_engine
from gateway.orgs import Organisation, OrgLevel
from gateway.purpose import SpecialActionRegistry
from xiezhi.errors import Denied, InvalidInput
from xiezhi.supervision import ModelCatalog

POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"
POLICY = load_policy_dir(POLICY_DIR)
MODEL_TEXT = POLICY.rules.model_text
CATALOG = ModelCatalog.load(POLICY_DIR / "models")

RULE = "p, prosecutor, *, model:*, run, subtree, allow\n"
PURPOSE = "（2025）浙0803执1234号"
LEGAL_BASIS = "《人民检察院民事诉讼监督规则》第一百零四条"


def invalid(text: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parse_policy_csv(MODEL_TEXT, text)
    return caught.value


# --- parse_policy_csv / PolicyRules ------------------------------------------------------


def test_shipped_policy_parses() -> None:
    rules = POLICY.rules
    assert len(rules.rules) >= 40
    assert ("system_admin", "security_admin") in rules.exclusive
    assert rules.tiers["civil_affairs.married"] == 3
    spaced = "# a comment\n\n  p ,prosecutor,  *, model:*, run , subtree, allow  \n"
    assert parse_policy_csv(MODEL_TEXT, spaced).rules == (("prosecutor", "*", "model:*", "run", "subtree", "allow"),)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only a comment\n",
        "p2, system_admin, security_admin\np3, court.multiple_terminated, 1\n",
        "# p, prosecutor, *, model:*, run, subtree, allow\np3, court.multiple_terminated, 1\n",
    ],
    ids=["empty", "comment", "p2-p3-only", "commented-out-rule"],
)
def test_a_rule_set_without_p_rules_is_refused(text: str) -> None:
    assert "no p rules" in invalid(text).public_message


def test_a_rule_set_without_p_rules_is_refused_as_policy_invalid() -> None:
    assert invalid("p2, system_admin, security_admin\n").code == "policy_invalid"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (RULE + "p, clerk, *, model:*, run, self, allow\n", "policy rule 2 (clerk, *, model:*, run, self, allow)"),
        (RULE + "p, Prosecutor, *, model:*, run, self, allow\n", "unknown role 'Prosecutor'"),
        (
            RULE + "p, prosecutor, *, model:*, run, self, alow\n",
            "policy rule 2 (prosecutor, *, model:*, run, self, alow)",
        ),
        (RULE + "p, prosecutor, *, model:*, run, everywhere, allow\n", "reach 'everywhere'"),
        (RULE + "p, prosecutor, 33080, model:*, run, self, allow\n", "org pattern '33080'"),
        (RULE + "p, prosecutor, county, model:*, run, self, allow\n", "org pattern 'county'"),
        (RULE + "p2, system_admin, root\n", "p2 line system_admin, root"),
        (RULE + "p2, system_admin, system_admin\n", "p2 line system_admin, system_admin"),
        (RULE + "p3, court.multiple_terminated, 0\n", "p3 line court.multiple_terminated"),
        (RULE + "p3, court.multiple_terminated, 4\n", "p3 line court.multiple_terminated"),
        (RULE + "p3, court.multiple_terminated, two\n", "p3 line court.multiple_terminated, two"),
        (RULE + "p3, court.multiple_terminated, 1\np3, court.multiple_terminated, 2\n", "court.multiple_terminated"),
        (RULE + "p9, prosecutor, x\n", "policy line 2: unknown line type 'p9'"),
        (RULE + "g, alice, prosecutor\n", "policy line 2: unknown line type 'g'"),
        ("# header\n" + RULE + "p, prosecutor, *, model:*, run, self\n", "policy line 3: p takes 6 fields"),
        (RULE + "p, prosecutor, *, model:*, run, self, allow, extra\n", "policy line 2: p takes 6 fields"),
        (RULE + "p2, system_admin\n", "policy line 2: p2 takes 2 fields"),
        (RULE + "p3, court.multiple_terminated\n", "policy line 2: p3 takes 2 fields"),
    ],
)
def test_a_mistake_in_the_rules_is_refused_naming_the_line(text: str, names: str) -> None:
    error = invalid(text)
    assert error.code == "policy_invalid"
    assert names in error.public_message


def test_a_repeated_p3_line_says_so() -> None:
    error = invalid(RULE + "p3, court.multiple_terminated, 1\np3, court.multiple_terminated, 1\n")
    assert error.code == "policy_invalid"
    assert "repeated" in error.public_message


def test_a_non_ascii_digit_tier_is_refused_as_policy_invalid() -> None:
    assert invalid(RULE + "p3, court.multiple_terminated, ²\n").code == "policy_invalid"


def test_to_csv_round_trips() -> None:
    again = parse_policy_csv(MODEL_TEXT, POLICY.rules.to_csv())
    assert again.rules == POLICY.rules.rules
    assert again.exclusive == POLICY.rules.exclusive
    assert dict(again.tiers) == dict(POLICY.rules.tiers)
    assert again.digest() == POLICY.rules.digest()


def test_a_field_holding_a_comma_is_refused_because_storage_could_not_read_it_back() -> None:
    # Casbin's table joins fields with commas: "model:a,b" would come back as two fields.
    refused = invalid('p, prosecutor, *, "model:a,b", run, self, allow\n')
    assert refused.code == "policy_invalid" and "commas" in refused.public_message


# --- limits ------------------------------------------------------------------------------


def write(path: Path, content: str) -> Path:
    path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("content", "names"),
    [
        ("quotas:\n  clerk: {subjects_per_day: 1, requests_per_minute: 1}\n", "clerk"),
        ("approval:\n  batch_limits:\n    auditor: {district: 10}\n", "auditor"),
        ("approval: [unclosed\n", "limits.yaml"),
        ("approval:\n  batch_limits:\n    prosecutor: {county: 10}\n", "limits.yaml"),
        ("approval:\n  batch_limits:\n    prosecutor: {district: -1}\n", "limits.yaml"),
        ("quotas:\n  prosecutor: {subjects_per_day: 1}\n", "limits.yaml"),
        ("colour: red\n", "limits.yaml"),
    ],
    ids=["unknown-quota-role", "unknown-batch-role", "bad-yaml", "unknown-level", "negative", "missing", "unknown"],
)
def test_load_limits_refuses(tmp_path: Path, content: str, names: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        load_limits(write(tmp_path / "limits.yaml", content))
    assert caught.value.code == "policy_invalid"
    assert names in caught.value.public_message


def test_batch_limit_is_zero_where_not_configured(tmp_path: Path) -> None:
    assert POLICY.limits.batch_limit("prosecutor", OrgLevel.DISTRICT) == 500
    assert POLICY.limits.batch_limit("assistant", OrgLevel.PROVINCE) == 5000
    assert POLICY.limits.batch_limit("security_admin", OrgLevel.DISTRICT) == 0
    partial = load_limits(write(tmp_path / "limits.yaml", "approval:\n  batch_limits:\n    prosecutor: {city: 7}\n"))
    assert partial.batch_limit("prosecutor", OrgLevel.CITY) == 7
    assert partial.batch_limit("prosecutor", OrgLevel.DISTRICT) == 0
    assert partial.batch_limit("dept_head", OrgLevel.CITY) == 0
    assert load_limits(write(tmp_path / "empty.yaml", "")) == Limits()


# --- the version -------------------------------------------------------------------------


def test_version_is_stable_for_the_same_content() -> None:
    again = load_policy_dir(POLICY_DIR)
    assert again.version == POLICY.version
    first, second = POLICY.version.split("-")
    assert len(first) == len(second) == 8 and int(first, 16) >= 0 and int(second, 16) >= 0


def test_a_version_never_looks_like_an_id_number_to_the_audit_log() -> None:
    # A digest whose first 16 hex digits are all decimal (once in ~650 policies).
    label = version_label("1234567890123456" + "0" * 48)
    assert not re.search(r"\d{15,}", label)
    AuditEvent(kind=EventKind.DECISION, at=datetime.now(UTC), actor="u", action="run", outcome="allow",
               detail={"policy_version": label}).payload()  # fmt: skip


def changed_policies() -> dict[str, Policy]:
    rules = POLICY.rules
    swapped = (*rules.rules[:-2], rules.rules[-1], rules.rules[-2])
    tiers = {**rules.tiers, "court.multiple_terminated": 2}
    limits = POLICY.limits.model_copy(update={"quotas": {}})
    actions = SpecialActionRegistry(list(POLICY.actions)[1:])
    return {
        "rule-removed": POLICY.replace(rules=dataclasses.replace(rules, rules=rules.rules[:-1])),
        "rule-order": POLICY.replace(rules=dataclasses.replace(rules, rules=swapped)),
        "p2-removed": POLICY.replace(rules=dataclasses.replace(rules, exclusive=rules.exclusive[:-1])),
        "tier-changed": POLICY.replace(rules=dataclasses.replace(rules, tiers=tiers)),
        "model-changed": POLICY.replace(rules=dataclasses.replace(rules, model_text=rules.model_text + "\n# x\n")),
        "org-added": POLICY.replace(orgs=POLICY.orgs.with_org(Organisation("330804", "测试区人民检察院", "330800"))),
        "org-renamed": POLICY.replace(orgs=POLICY.orgs.renamed("330803", "衢江区检察院")),
        "limits": dataclasses.replace(POLICY, limits=limits),
        "special-actions": dataclasses.replace(POLICY, actions=actions),
    }


@pytest.mark.parametrize("change", sorted(changed_policies()))
def test_version_changes_with_any_part_of_the_policy(change: str) -> None:
    changed = changed_policies()[change]
    assert changed is not POLICY
    assert changed.version != POLICY.version


# --- decisions fail closed ---------------------------------------------------------------


def run_ask(model: str) -> RunAsk:
    return RunAsk(CATALOG.get(model), PURPOSE, LEGAL_BASIS, None, 100, date(2026, 6, 1))


PROSECUTOR = Principal("pros-330803-01", "330803", frozenset({"prosecutor"}), clearance=3)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
def test_a_capability_without_a_tier_refuses(fast: bool) -> None:
    assert Authorizer(POLICY, fast=fast).decide_run(PROSECUTOR, run_ask("litigated_claims")).allowed
    tiers = {c: t for c, t in POLICY.rules.tiers.items() if c != "court.winning_plaintiff_unpaid"}
    policy = POLICY.replace(rules=dataclasses.replace(POLICY.rules, tiers=tiers))
    decision = Authorizer(policy, fast=fast).decide_run(PROSECUTOR, run_ask("litigated_claims"))
    assert (decision.outcome, decision.reason) == (Outcome.DENY, "capability_unclassified")
    assert "court.winning_plaintiff_unpaid" in decision.rule
    assert decision.policy_version == policy.version


def test_a_principal_without_roles_is_refused_everything() -> None:
    authorizer = Authorizer(POLICY)
    nobody = Principal("anon-330803-01", "330803", frozenset(), clearance=3)
    decisions = [
        authorizer.decide(nobody, "request:abc", "read"),
        authorizer.decide_run(nobody, run_ask("litigated_claims")),
        authorizer.decide_approval(nobody, requester="pros", approver_org="330803", model_id="litigated_claims"),
    ]
    assert {(d.outcome, d.reason) for d in decisions} == {(Outcome.DENY, "no_roles")}


def test_permit_turns_only_an_allow_into_a_permit() -> None:
    authorizer = Authorizer(POLICY)
    allowed = authorizer.decide(PROSECUTOR, "request:abc", "read")
    permitted = permit(PROSECUTOR, "abc", "read", allowed)
    assert (permitted.request_id, permitted.decision) == ("abc", allowed)
    denied = authorizer.decide(PROSECUTOR, "audit:entries", "read")
    with pytest.raises(Denied) as caught:
        permit(PROSECUTOR, "abc", "read", denied)
    assert caught.value.code == "not_granted"
    with pytest.raises(TypeError):
        AuthorizedRequest(PROSECUTOR, "abc", "read", allowed, object())


def test_reload_swaps_the_policy() -> None:
    authorizer = Authorizer(POLICY)
    assert authorizer.decide(PROSECUTOR, "request:abc", "read").allowed
    without = tuple(r for r in POLICY.rules.rules if r[:4] != ("prosecutor", "*", "request:*", "read"))
    smaller = POLICY.replace(rules=dataclasses.replace(POLICY.rules, rules=without))
    authorizer.reload(smaller)
    decision = authorizer.decide(PROSECUTOR, "request:abc", "read")
    assert (decision.reason, decision.policy_version) == ("not_granted", smaller.version)


# --- the policy in the database ----------------------------------------------------------


def store_in(tmp_path: Path) -> tuple[PolicyStore, Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'g.sqlite'}", migrate_empty=True)
    return PolicyStore(engine, POLICY_DIR), engine


def save(store: PolicyStore, engine: Engine, policy: Policy, change: str) -> None:
    with Session(engine) as session:
        store.write_rules(session, policy.rules)
        store.write_orgs(session, policy.orgs)
        store.add_revision(session, policy, change=change, actor="tester", at=datetime(2026, 6, 1, tzinfo=UTC))
        session.commit()


def test_an_empty_store_loads_nothing(tmp_path: Path) -> None:
    store, _ = store_in(tmp_path)
    assert store.load() is None
    assert store.revision() == 0


def test_rules_without_organisations_load_nothing(tmp_path: Path) -> None:
    store, engine = store_in(tmp_path)
    with Session(engine) as session:
        store.write_rules(session, POLICY.rules)
        session.commit()
    assert store.load() is None


def test_the_stored_policy_loads_back_equal_in_order(tmp_path: Path) -> None:
    store, engine = store_in(tmp_path)
    save(store, engine, POLICY, "seed")
    loaded = store.load()
    assert loaded is not None
    assert loaded.rules.rules == POLICY.rules.rules
    assert loaded.rules.exclusive == POLICY.rules.exclusive
    assert list(loaded.rules.tiers.items()) == list(POLICY.rules.tiers.items())
    assert loaded.orgs == POLICY.orgs
    assert loaded.version == POLICY.version
    assert store.revision() == 1
    # The rows really are Casbin's table, one per policy line, in order.
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT ptype, v0, v1, v2, v3, v4, v5 FROM casbin_rule ORDER BY id")).all()
    assert [[value for value in row if value is not None] for row in rows] == POLICY.rules.lines()


def test_rewriting_replaces_the_rules_and_bumps_the_revision(tmp_path: Path) -> None:
    store, engine = store_in(tmp_path)
    save(store, engine, POLICY, "seed")
    reordered = POLICY.replace(rules=dataclasses.replace(POLICY.rules, rules=POLICY.rules.rules[::-1]))
    save(store, engine, reordered, "rules")
    assert store.revision() == 2
    loaded = store.load()
    assert loaded is not None
    assert loaded.rules.rules == POLICY.rules.rules[::-1]
    assert loaded.version == reordered.version != POLICY.version
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM casbin_rule")).scalar_one()
        versions = connection.execute(text("SELECT version FROM policy_revisions ORDER BY revision")).scalars().all()
    assert count == len(POLICY.rules.lines())
    assert versions == [POLICY.version, reordered.version]
