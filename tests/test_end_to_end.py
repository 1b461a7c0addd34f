"""The full protocol over real HTTP: four connectors, the gateway, the requester client.

Every model's report must agree, row by row, with a plain SQL join of the raw agency
tables on normalised IDs (devkit/reference.py), and nothing the gateway stores may hold
any subject's ID in any normal form.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from sqlmodel import Session, select

from audit_log import AuditRecord
from devkit.environment import REPO_ROOT
from devkit.reference import read_report
from gateway.db import make_engine
from requester.job import match_file
from requester.protocol import MatchSpec
from tests.agreement import (
    assert_report_agrees,
    find_leaks,
    find_token_leaks,
    subject_id_forms,
    subject_names,
    subject_tokens,
    subjects_file,
)
from tests.stack import LEGAL_BASIS, PURPOSE, Stack
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


def test_the_leak_scan_finds_planted_leaks(tmp_path: Path, generated: Path) -> None:
    # Guard against a scanner that can find nothing in these needles: plant one ID form and
    # one name (tests/test_agreement.py plants them in every encoding the scanner covers).
    ids, names = sorted(subject_id_forms(generated)), sorted(subject_names(generated))
    (tmp_path / "a.log").write_text(f"x {ids[0]} y", encoding="utf-8")
    (tmp_path / "b.txt").write_text(f"姓名 {names[0]}", encoding="utf-16")  # with its BOM
    found = find_leaks(tmp_path, set(ids) | set(names))
    assert found == [(str(tmp_path / "a.log"), ids[0]), (str(tmp_path / "b.txt"), names[0])]
