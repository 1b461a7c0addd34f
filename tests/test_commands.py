"""The two user-facing commands as users run them: `xiezhi demo` and `xiezhi match`, as processes.

`xiezhi demo --data` runs (once, shared: tests/demo_run.py) on a hand-built data set the
generator never produced, with a fifth agency added as configuration; its reports must
agree with the reference SQL join and with answers reasoned out by hand.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from openpyxl import Workbook, load_workbook

from devkit.environment import REPO_ROOT
from devkit.reference import checked_rows, read_csv, read_report
from tests import handmade
from tests.agreement import (
    assert_report_agrees,
    find_leaks,
    roster_titles,
    subject_id_forms,
    subject_names,
)
from tests.demo_run import FIFTH, PENSION, PENSION_EXPECTED, PENSION_REFERENCE, DemoRun
from tests.stack import PURPOSE, Stack, client_env, run_cli
from xiezhi.supervision import ModelCatalog, SupervisionModel

pytestmark = pytest.mark.integration  # every test runs the CLI or a stack

CATALOG = ModelCatalog.load(REPO_ROOT / "policies" / "models")
ON_THE_DEMO = pytest.mark.xdist_group("demo")  # the tests sharing the one demo run


def _succeeded(run: DemoRun) -> None:
    assert run.done.returncode == 0, run.done.stderr[-3000:]


@ON_THE_DEMO
def test_demo_on_foreign_data_exits_0_and_prints_its_summary(demo_run: DemoRun) -> None:
    _succeeded(demo_run)
    work = demo_run.work
    for heading in ("Indexes published", "Supervision models run", "Time per phase", "over mutual TLS"):
        assert heading in demo_run.done.stdout
    reports = {p.name for p in (work / "reports").glob("*.csv")}
    models = [m.id for m in CATALOG] + ["pension"]
    assert reports == {f"{m}.csv" for m in models} | {f"{m}.csv.errors.csv" for m in models}
    assert (work / "gateway" / "gateway.log").is_file()
    # Every service ran over mutual TLS with the demo's PKI, and nothing warned of plain HTTP.
    settings = yaml.safe_load((work / "gateway" / "gateway.yaml").read_text(encoding="utf-8"))
    assert settings["tls"]["ca"] == str((work / "pki" / "ca.pem").resolve()) and "insecure_http" not in settings
    assert all(url.startswith("https://") for url in settings["connectors"].values())
    logs = [work / "gateway" / "gateway.log", *(work / "connectors").glob("*/connector.log")]
    assert len(logs) == 6 and not any("INSECURE" in log.read_text(encoding="utf-8") for log in logs)


@ON_THE_DEMO
@pytest.mark.parametrize("model", [m.id for m in CATALOG])
def test_demo_reports_agree_with_reference_and_hand_answers(demo_run: DemoRun, model: str) -> None:
    _succeeded(demo_run)
    spec = CATALOG.get(model)
    report = demo_run.work / "reports" / f"{model}.csv"
    _agrees_with_hand_answers(demo_run, spec, report, handmade.EXPECTED)
    assert_report_agrees(demo_run.data, spec, report)


@ON_THE_DEMO
def test_a_fifth_agency_joins_by_configuration_alone(demo_run: DemoRun) -> None:
    """A social-security connector, added as a configuration file, a database, a model file
    and a tier (tests/demo_run.py), is started, built, published and matched by the demo."""
    _succeeded(demo_run)
    assert demo_run.connectors == sorted(["court", "tax", "housing_fund", "civil_affairs", FIFTH])
    assert PENSION in demo_run.done.stdout  # its index, in the summary of published indexes
    settings = yaml.safe_load((demo_run.work / "gateway" / "gateway.yaml").read_text(encoding="utf-8"))
    assert list(settings["connectors"]) == ["court", "tax", "housing_fund", "civil_affairs", FIFTH]
    assert settings["audit"]["witnesses"].keys() == settings["connectors"].keys()
    pension = ModelCatalog.load(demo_run.policies / "models").get("pension")
    report = demo_run.work / "reports" / "pension.csv"
    _agrees_with_hand_answers(demo_run, pension, report, {PENSION: PENSION_EXPECTED})
    clues = assert_report_agrees(
        demo_run.data, pension, report, {PENSION: PENSION_REFERENCE}, titles=roster_titles(demo_run.roster)
    )
    assert clues == 3  # A's two 终本 cases and F's: the hand answer, through every spelling


@ON_THE_DEMO
def test_demo_gateway_folder_holds_no_subject_id(demo_run: DemoRun) -> None:
    _succeeded(demo_run)
    assert find_leaks(demo_run.work / "gateway", subject_id_forms(demo_run.data)) == []
    assert find_leaks(demo_run.work / "gateway", subject_names(demo_run.data)) == []


def test_demo_refuses_an_incomplete_data_folder(tmp_path: Path) -> None:
    done = run_cli("demo", "--data", str(tmp_path), "--workdir", str(tmp_path / "w"))
    assert done.returncode == 2
    assert "missing agencies/court.sqlite" in done.stderr


def _agrees_with_hand_answers(
    run: DemoRun, model: SupervisionModel, report: Path, expected: dict[str, set[str]]
) -> None:
    """Every valid row's revealed flags are the answers `expected` reasoned out by hand."""
    subjects = read_csv(run.data / ("applicants.csv" if model.subjects.value == "applicants" else "subjects.csv"))
    _, table = read_report(report)
    rows = {int(r[1]): r for r in checked_rows(table)}
    header, titles = table[0], roster_titles(run.roster)
    checked = 0
    for number, (_, _, raw) in enumerate(subjects[1:], start=1):
        if number not in rows:
            continue
        subject = _normalised(raw)
        for capability in model.reveals:
            answer = "是" if subject in expected[capability] else "否"
            assert rows[number][header.index(titles[capability])] == answer, (model.id, number, capability)
            checked += 1
    assert checked > 0


def test_match_command_with_xlsx_subjects(stack: Stack, generated: Path, tmp_path: Path) -> None:
    rows = read_csv(generated / "subjects.csv")
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    workbook.save(tmp_path / "subjects.xlsx")
    token_file = tmp_path / "token"
    token_file.write_text(stack.user_token(["prosecutor"]))
    out = tmp_path / "clues.xlsx"
    done = run_cli(
        "match",
        "--gateway",
        stack.gateway_url,
        "--model",
        "housing_fund",
        "--subjects",
        str(tmp_path / "subjects.xlsx"),
        "--purpose",
        PURPOSE,
        "--out",
        str(out),
        "--token-file",
        str(token_file),
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "housing_fund:" in done.stdout and " rows checked, " in done.stdout and out.is_file()
    assert (tmp_path / "clues.xlsx.errors.csv").is_file()
    # The report names its request and its list (the 说明 sheet), as does its errors file.
    about = {str(k): str(v) for k, v in load_workbook(out)["说明"].iter_rows(values_only=True)}
    assert about["请求编号"] not in ("", "（未发出请求）") and about["模型"] == "housing_fund"
    assert about["名单文件"] == "subjects.xlsx"
    assert about["名单SHA-256"] == hashlib.sha256((tmp_path / "subjects.xlsx").read_bytes()).hexdigest()
    assert read_report(tmp_path / "clues.xlsx.errors.csv")[0] == about


def test_match_command_errors_are_clear(stack: Stack, generated: Path, tmp_path: Path) -> None:
    args = [
        "match",
        "--gateway",
        stack.gateway_url,
        "--model",
        "housing_fund",
        "--subjects",
        str(generated / "subjects.csv"),
        "--purpose",
        PURPOSE,
        "--out",
        str(tmp_path / "o.csv"),
        "--no-progress",
    ]
    done = run_cli(*args)
    assert done.returncode == 2 and "no bearer token" in done.stderr
    token_file = tmp_path / "token"
    token_file.write_text(stack.user_token(["system_admin"]))
    # A run the gateway refuses leaves no report at --out; last week's is set aside.
    (tmp_path / "o.csv").write_text("last week's 是/否", encoding="utf-8")
    done = run_cli(*args, "--token-file", str(token_file), env=client_env("admin"))  # the administrators' system
    assert done.returncode == 2 and "denied_by_policy" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "o.csv").exists()
    (previous,) = tmp_path.glob("o.previous-*.csv")
    assert previous.read_text(encoding="utf-8") == "last week's 是/否"
    # So does a gateway that cannot be reached.
    token_file.write_text(stack.user_token(["prosecutor"]))
    unreachable = [*args, "--token-file", str(token_file)]
    unreachable[unreachable.index(stack.gateway_url)] = "https://127.0.0.1:9"
    done = run_cli(*unreachable)
    assert done.returncode == 2 and "gateway_unreachable" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o.csv").exists()
    # A list that is not there is named.
    missing = [*args, "--token-file", str(token_file)]
    missing[missing.index(str(generated / "subjects.csv"))] = str(tmp_path / "nowhere.csv")
    done = run_cli(*missing)
    assert done.returncode == 2 and f"{tmp_path / 'nowhere.csv'}: no such file" in done.stderr
    assert "Traceback" not in done.stderr


def _normalised(raw: str) -> str | None:
    from xiezhi.errors import InvalidIdentifier
    from xiezhi.ids import normalise_subject_id

    try:
        return normalise_subject_id(raw).value
    except InvalidIdentifier:
        return None
