"""Tests for the shipped decision tables (policies/tests/*.csv) and `xiezhi policy test`.

Every row passes; together the rows name every p line and p2 pair of policy.csv as the
deciding rule and expect every refusal reason decide.py can give; the CLI exits 1 naming
the failing case when a rule is broken.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.authz import Authorizer, Outcome, load_policy_dir
from gateway.authz.tables import Row, RowResult, decide_row, read_tables
from xiezhi.errors import InvalidInput
from xiezhi.supervision import ModelCatalog

REPO_ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = REPO_ROOT / "policies"
ROWS = list(read_tables(POLICY_DIR / "tests"))
CATALOG = ModelCatalog.load(POLICY_DIR / "models")

REFUSALS = (
    "no_roles",
    "unknown_role",
    "separation_of_duties",
    "not_granted",
    "denied_by_policy",
    "unknown_org",
    "purpose_missing",
    "purpose_malformed",
    "special_action_unknown",
    "special_action_inactive",
    "special_action_out_of_scope",
    "legal_basis_missing",
    "legal_basis_invalid",
    "capability_not_granted",
    "clearance_insufficient",
    "unknown_scope",
    "scope_unreachable",
    "self_approval",
    "approver_out_of_scope",
)
TRIGGERS = ("cross_region", "batch_over_limit", "tier3_capability")
# Only reachable with a policy that lacks a tier, which policy.csv never does (see test_authz_policy.py).
UNREACHABLE = ("capability_unclassified",)


@pytest.fixture(scope="module")
def authorizer() -> Authorizer:
    return Authorizer(load_policy_dir(POLICY_DIR))


@pytest.fixture(scope="module")
def results(authorizer: Authorizer) -> list[RowResult]:
    return [decide_row(authorizer, CATALOG, row) for row in ROWS]


# --- every row ---------------------------------------------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=[f"{row.table}:{row.case}" for row in ROWS])
def test_row_passes(row: Row, authorizer: Authorizer) -> None:
    result = decide_row(authorizer, CATALOG, row)
    assert result.got == result.expected, result.decision.rule


def test_tables_are_substantial() -> None:
    assert len(ROWS) >= 60
    assert {row.kind for row in ROWS} == {"run", "access", "approve"}
    assert {row.table for row in ROWS} == {"run.csv", "access.csv", "approve.csv"}


def test_case_names_are_unique() -> None:
    names = [f"{row.table}:{row.case}" for row in ROWS]
    assert sorted(names) == sorted(set(names))
    assert all(row.case for row in ROWS)


def test_every_outcome_is_expected_somewhere() -> None:
    assert {row.values["expect"] for row in ROWS} == {o.value for o in Outcome}


# --- coverage ----------------------------------------------------------------------------


def deciding_lines(results: list[RowResult]) -> set[str]:
    # An allow's rule is its p line; a needs_approval's rule continues after "; " with the triggers.
    return {result.decision.rule.split("; ")[0] for result in results}


def test_every_p_line_decides_some_row(results: list[RowResult], authorizer: Authorizer) -> None:
    file_lines = [
        ", ".join(field.strip() for field in line.split(","))
        for line in (POLICY_DIR / "policy.csv").read_text(encoding="utf-8").splitlines()
        if line.startswith("p,")
    ]
    assert len(file_lines) == len(authorizer.policy.rules.rules) >= 40
    missing = set(file_lines) - deciding_lines(results)
    assert sorted(missing) == []


def test_every_p2_pair_refuses_some_row(results: list[RowResult], authorizer: Authorizer) -> None:
    pairs = {f"p2, {a}, {b}" for a, b in authorizer.policy.rules.exclusive}
    assert len(pairs) == 18
    named = {r.decision.rule for r in results if r.decision.reason == "separation_of_duties"}
    assert sorted(pairs - named) == []


def expected_reasons() -> set[str]:
    return {code for row in ROWS for code in row.values["reason"].split("+")}


def test_every_refusal_reason_and_trigger_is_expected_somewhere() -> None:
    assert sorted(set(REFUSALS) - expected_reasons()) == []
    assert sorted(set(TRIGGERS) - expected_reasons()) == []


def test_no_row_expects_a_reason_decide_cannot_give() -> None:
    known = {"allowed", *REFUSALS, *TRIGGERS, *UNREACHABLE}
    assert sorted(expected_reasons() - known) == []


def test_needs_approval_rows_name_their_approver() -> None:
    waiting = [row for row in ROWS if row.values["expect"] == "needs_approval"]
    assert waiting
    assert [row.case for row in waiting if not row.values.get("approver")] == []


# --- malformed tables --------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "case,user,org,roles,colour,expect,reason",
        "case,user,org,roles,object,action,target,expect",  # access without reason
        "case,user,org,roles,object,action,target,expect,reason,extra",
        "case,user,org,roles,object,action,target,requester,approver_org,model,expect,reason",  # two kinds
    ],
    ids=["no-kind", "missing-column", "unknown-column", "two-kinds"],
)
def test_a_table_whose_header_matches_no_kind_is_refused(tmp_path: Path, header: str) -> None:
    (tmp_path / "bad.csv").write_text(f"# a table\n{header}\nx,u,330803,prosecutor,a,b,,allow,allowed\n")
    with pytest.raises(InvalidInput) as caught:
        list(read_tables(tmp_path))
    assert caught.value.code == "policy_tests_invalid"
    assert "bad.csv" in caught.value.public_message


def test_a_folder_without_tables_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no tables here\n")
    with pytest.raises(InvalidInput) as caught:
        list(read_tables(tmp_path))
    assert caught.value.code == "policy_tests_missing"


def test_a_table_reads_with_comments_and_the_optional_columns(tmp_path: Path) -> None:
    (tmp_path / "mine.csv").write_text(
        "# comment\ncase,user,org,roles,object,action,target,expect,reason,note\n"
        "# another\nmine-1,pros-1,330803,prosecutor + dept_head,request:abc,read,,allow,allowed,a note\n"
    )
    (row,) = read_tables(tmp_path)
    assert (row.table, row.kind, row.case) == ("mine.csv", "access", "mine-1")
    assert row.principal().roles == frozenset({"prosecutor", "dept_head"})
    assert row.expected() == "allow/allowed"


# --- the CLI, as a process ---------------------------------------------------------------


def policy_test(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "policy", "test", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
    )


ALL_PASS = re.compile(r"\b(\d+)/\1 rows pass in 3 tables\b")


@pytest.mark.integration
@pytest.mark.parametrize("extra", [[], ["--plain"]], ids=["fast", "plain"])
def test_cli_passes_on_the_shipped_policy(extra: list[str]) -> None:
    done = policy_test("--policy-dir", str(POLICY_DIR), *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    passed = ALL_PASS.search(done.stdout)
    assert passed is not None, done.stdout
    assert int(passed.group(1)) == len(ROWS)
    assert ("plain enforcer" if extra else "fast enforcer") in done.stdout
    assert "Failing rows" not in done.stdout


def broken_copy(tmp_path: Path, line: str, replacement: str) -> Path:
    copy = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, copy)
    policy = copy / "policy.csv"
    content = policy.read_text(encoding="utf-8")
    assert content.count(line + "\n") == 1
    policy.write_text(content.replace(line + "\n", replacement), encoding="utf-8")
    return copy


@pytest.mark.integration
@pytest.mark.parametrize(
    ("line", "replacement", "failing"),
    [
        # Without the explicit deny an assistant's civil_affairs lookup is merely not granted, and an
        # assistant who is also a prosecutor gets the prosecutor's allow (and a tier-3 run waits).
        (
            "p, assistant, *, capability:civil_affairs.*, lookup, any, deny",
            "",
            [
                "acc-asst-lookup-dibao",
                "acc-asst-lookup-married",
                "acc-asst-pros-lookup-married",
                "run-asst-pros-spouse",
            ],
        ),
        (
            "p, security_admin, *, audit:entries, read, any, deny",
            "p, security_admin, *, audit:entries, read, any, allow\n",
            ["acc-secadm-audit-entries"],
        ),
    ],
    ids=["deny-removed", "deny-flipped"],
)
def test_cli_fails_and_names_the_case_when_a_rule_breaks(
    tmp_path: Path, line: str, replacement: str, failing: list[str]
) -> None:
    done = policy_test("--policy-dir", str(broken_copy(tmp_path, line, replacement)))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Failing rows" in done.stdout
    for case in failing:
        assert case in done.stdout
    summary = re.search(r"(\d+)/(\d+) rows pass", done.stdout)
    assert summary is not None
    assert (int(summary.group(1)), int(summary.group(2))) == (len(ROWS) - len(failing), len(ROWS))


@pytest.mark.integration
def test_cli_refuses_an_invalid_policy(tmp_path: Path) -> None:
    broken = broken_copy(
        tmp_path,
        "p, system_admin, *, system:status, read, any, allow",
        "p, system_admin, *, system:status, read, any, alow\n",
    )
    done = policy_test("--policy-dir", str(broken))
    assert done.returncode == 2
    assert "error (policy_invalid)" in done.stderr
    assert "alow" in done.stderr
