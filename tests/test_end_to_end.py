"""The full protocol over real HTTP: four connectors, the gateway, the requester client.

Every model's report must agree, row by row, with a plain SQL join of the raw agency
tables on normalised IDs (devkit/reference.py), and nothing the gateway stores may hold
any subject's ID in any normal form.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path

import pytest
from sqlmodel import Session, select

from audit_log import AuditRecord
from devkit.environment import REPO_ROOT
from devkit.reference import read_report
from gateway.db import Approval, Publication, aware, make_engine
from requester.job import match_file
from requester.protocol import MatchSpec
from requester.report import china_time
from tests.agreement import (
    assert_report_agrees,
    find_leaks,
    find_token_leaks,
    subject_id_forms,
    subject_names,
    subject_tokens,
    subjects_file,
)
from tests.stack import LEGAL_BASIS, ORG, PURPOSE, Stack
from xiezhi.supervision import ModelCatalog

CATALOG = ModelCatalog.load(REPO_ROOT / "policies" / "models")


@pytest.fixture(scope="module")
def reports(stack: Stack, generated: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("reports")
    token = stack.user_token(["prosecutor"])
    for model in CATALOG:
        summary = match_file(
            stack.gateway_url,
            token,
            MatchSpec(model.id, PURPOSE, LEGAL_BASIS, batch_size=97),
            subjects_file(generated, model),
            out / f"{model.id}.csv",
            show_progress=False,
            workers=1,
            on_pending=stack.approver(),
        )
        # Each report names the request that produced it.
        assert summary.request_id and read_report(summary.report)[0]["请求编号"] == summary.request_id
    return {model.id: out / f"{model.id}.csv" for model in CATALOG}


@pytest.mark.parametrize("model", [m.id for m in CATALOG])
def test_report_agrees_with_the_reference_join(model: str, reports: dict[str, Path], generated: Path) -> None:
    clues = assert_report_agrees(generated, CATALOG.get(model), reports[model])
    assert clues > 0, "the generated data plants matches for every model"


def test_gateway_stores_no_subject_id(reports: dict[str, Path], stack: Stack, generated: Path) -> None:
    needles = subject_id_forms(generated)
    assert len(needles) > 500
    gateway_dir = stack.root / "gateway"
    assert any(gateway_dir.glob("gateway.sqlite*"))
    assert find_leaks(gateway_dir, needles) == []


def test_gateway_stores_no_name(reports: dict[str, Path], stack: Stack, generated: Path) -> None:
    names = subject_names(generated)
    assert len(names) > 300
    assert find_leaks(stack.root / "gateway", names) == []


def test_gateway_keeps_no_token_in_the_clear(reports: dict[str, Path], stack: Stack, generated: Path) -> None:
    """Indexes and lookups are sealed or keyed digests: no published or looked-up token is stored."""
    tokens = subject_tokens(generated, stack.oprf_keys(), {c for m in CATALOG for c in m.looks_up})
    assert len(tokens) > 1000
    gateway_dir = stack.root / "gateway"
    assert find_token_leaks(gateway_dir, tokens) == []
    # The scan finds what it looks for: a token planted in a file, raw and in base64url.
    planted = gateway_dir.parent / "planted"
    planted.mkdir(exist_ok=True)
    token = next(iter(tokens))
    (planted / "raw.bin").write_bytes(b"x" * 7 + token + b"y")
    (planted / "text.log").write_text(f"token={base64.urlsafe_b64encode(token).decode().rstrip('=')}!")
    assert sorted(form for _, form in find_token_leaks(planted, tokens)) == ["base64url", "raw"]


def test_every_request_is_audited_from_creation_to_result(reports: dict[str, Path], stack: Stack) -> None:
    engine = make_engine(f"sqlite:///{stack.root / 'gateway' / 'gateway.sqlite'}")
    with Session(engine) as session:
        entries = [json.loads(r.entry) for r in session.exec(select(AuditRecord))]
    engine.dispose()
    created = [e for e in entries if e["kind"] == "request.created"]
    assert {e["model"] for e in created} == {m.id for m in CATALOG}
    for entry in created:
        trail = [e for e in entries if e["request_id"] == entry["request_id"]]
        kinds = [e["kind"] for e in trail]  # in log order
        assert {"decision", "request.created", "relay", "lookup", "result.read"} <= set(kinds)
        assert kinds[0] == "decision" and kinds[-1] == "result.read"
        assert kinds.index("request.created") < kinds.index("relay") < kinds.index("lookup")
        assert all(e["model"] == entry["model"] for e in trail if e["kind"] in ("relay", "lookup", "result.read"))
        assert [e["seq"] for e in trail] == sorted(e["seq"] for e in trail)
    decisions = [e for e in entries if e["kind"] == "decision"]
    assert all(e["detail"]["rule"] and e["detail"]["policy_version"] for e in decisions)


def test_each_report_says_who_ran_it_why_with_whose_approval_and_over_which_data(
    reports: dict[str, Path], stack: Stack
) -> None:
    engine = make_engine(f"sqlite:///{stack.root / 'gateway' / 'gateway.sqlite'}")
    with Session(engine) as session:
        committed = {p.capability: p for p in session.exec(select(Publication).where(Publication.committed))}
        approvals = {a.request_id: a for a in session.exec(select(Approval))}
    engine.dispose()
    for model in CATALOG:
        about, table = read_report(reports[model.id])
        assert (about["模型名称"], about["办案用途"], about["法律依据"]) == (model.title, PURPOSE, LEGAL_BASIS)
        assert about["发起人"].startswith("prosecutor-") and about["发起单位"] == ORG
        approval = approvals.get(about["请求编号"])
        if approval is not None:  # spouse_property looks up a tier-3 capability
            assert (about["审批人"], about["审批时间"]) == (
                approval.decided_by,
                china_time(aware(approval.decided_at or datetime.min)),
            )
        else:
            assert (about["审批人"], about["审批时间"]) == ("无需审批", "—")
        for capability in model.looks_up:
            publication = committed[capability]
            as_of = aware(publication.updated_at or datetime.min)
            assert about[f"数据截至：{publication.title}"] == china_time(as_of), (model.id, capability)
        titles = [committed[c].title for c in model.reveals]
        assert table[0] == ["线索", "行号", "案号", "被执行人（姓名/名称）", *titles]
    assert any(a.status == "approved" for a in approvals.values()), "some model needed approval"


def test_the_leak_scan_finds_planted_leaks(tmp_path: Path, generated: Path) -> None:
    # Guard against a scanner that can find nothing in these needles: plant one ID form and
    # one name (tests/test_agreement.py plants them in every encoding the scanner covers).
    ids, names = sorted(subject_id_forms(generated)), sorted(subject_names(generated))
    (tmp_path / "a.log").write_text(f"x {ids[0]} y", encoding="utf-8")
    (tmp_path / "b.txt").write_text(f"姓名 {names[0]}", encoding="utf-16")  # with its BOM
    found = find_leaks(tmp_path, set(ids) | set(names))
    assert found == [(str(tmp_path / "a.log"), ids[0]), (str(tmp_path / "b.txt"), names[0])]
