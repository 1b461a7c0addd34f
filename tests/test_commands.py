"""The two user-facing commands as users run them: `xiezhi demo` and `xiezhi match`, as processes.

`xiezhi demo --data` runs here on a hand-built data set the generator never produced;
its reports must agree with the reference SQL join and with answers reasoned out by hand.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from openpyxl import Workbook

from devkit.environment import REPO_ROOT
from tests import handmade
from tests.agreement import assert_report_agrees, find_leaks, read_csv, subject_id_forms, subject_names
from tests.stack import PURPOSE, Stack, run_cli
from xiezhi.supervision import ModelCatalog

pytestmark = pytest.mark.integration  # every test runs the CLI or a stack

CATALOG = ModelCatalog.load(REPO_ROOT / "policies" / "models")


@pytest.fixture(scope="module")
def demo_on_handmade(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    data = handmade.build(tmp_path_factory.mktemp("handmade"))
    work = tmp_path_factory.mktemp("work")
    return data, work, run_cli("demo", "--data", str(data), "--workdir", str(work))


def test_demo_on_foreign_data_exits_0_and_prints_its_summary(
    demo_on_handmade: tuple[Path, Path, subprocess.CompletedProcess[str]],
) -> None:
    _, work, done = demo_on_handmade
    assert done.returncode == 0, done.stderr[-3000:]
    for heading in ("Indexes published", "Supervision models run", "Time per phase", "over mutual TLS"):
        assert heading in done.stdout
    reports = {p.name for p in (work / "reports").glob("*.csv")}
    assert reports == {f"{m.id}.csv" for m in CATALOG} | {f"{m.id}.csv.errors.csv" for m in CATALOG}
    assert (work / "gateway" / "gateway.log").is_file()
    # Every service ran over mutual TLS with the demo's PKI, and nothing warned of plain HTTP.
    settings = yaml.safe_load((work / "gateway" / "gateway.yaml").read_text(encoding="utf-8"))
    assert settings["tls"]["ca"] == str((work / "pki" / "ca.pem").resolve()) and "insecure_http" not in settings
    assert all(url.startswith("https://") for url in settings["connectors"].values())
    logs = [work / "gateway" / "gateway.log", *(work / "connectors").glob("*/connector.log")]
    assert len(logs) == 5 and not any("INSECURE" in log.read_text(encoding="utf-8") for log in logs)


@pytest.mark.parametrize("model", [m.id for m in CATALOG])
def test_demo_reports_agree_with_reference_and_hand_answers(
    demo_on_handmade: tuple[Path, Path, subprocess.CompletedProcess[str]], model: str
) -> None:
    data, work, done = demo_on_handmade
    assert done.returncode == 0
    spec = CATALOG.get(model)
    report = work / "reports" / f"{model}.csv"
    assert_report_agrees(data, spec, report)
    subjects = read_csv(data / ("applicants.csv" if spec.subjects.value == "applicants" else "subjects.csv"))
    rows = {int(r[0]): r for r in read_csv(report)[1:]}
    header = read_csv(report)[0]
    for number, (_, _, raw) in enumerate(subjects[1:], start=1):
        if number not in rows:
            continue
        subject = _normalised(raw)
        for capability in spec.reveals:
            expected = "是" if subject in handmade.EXPECTED[capability] else "否"
            assert rows[number][header.index(capability)] == expected, (model, number, capability)


def test_demo_gateway_folder_holds_no_subject_id(
    demo_on_handmade: tuple[Path, Path, subprocess.CompletedProcess[str]],
) -> None:
    data, work, done = demo_on_handmade
    assert done.returncode == 0
    assert find_leaks(work / "gateway", subject_id_forms(data)) == []
    assert find_leaks(work / "gateway", subject_names(data)) == []


def test_demo_refuses_an_incomplete_data_folder(tmp_path: Path) -> None:
    done = run_cli("demo", "--data", str(tmp_path), "--workdir", str(tmp_path / "w"))
    assert done.returncode == 2
    assert "missing agencies/court.sqlite" in done.stderr


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
    assert "housing_fund:" in done.stdout and out.is_file()
    assert (tmp_path / "clues.xlsx.errors.csv").is_file()


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
    done = run_cli(*args, "--token-file", str(token_file))
    assert done.returncode == 2 and "denied_by_policy" in done.stderr
    assert "Traceback" not in done.stderr


def _normalised(raw: str) -> str | None:
    from xiezhi.errors import InvalidIdentifier
    from xiezhi.ids import normalise_subject_id

    try:
        return normalise_subject_id(raw).value
    except InvalidIdentifier:
        return None
