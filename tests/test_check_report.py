"""deploy/compose/check_report.py: a report equal to the reference join passes; any difference
is named by row and column, without the list's identifiers or case numbers."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from devkit.demo.generate import generate
from devkit.environment import REPO_ROOT
from devkit.reference import checked_rows, expected_report, read_csv
from tests.agreement import roster_titles
from xiezhi.supervision import ModelCatalog

MODELS = REPO_ROOT / "policies" / "models"


def _load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_report", REPO_ROOT / "deploy" / "compose" / "check_report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checker = _load_checker()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    generate(folder, seed=3, debtors=60)
    return folder


def _write(path: Path, about: dict[str, str], table: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows([[key, value] for key, value in about.items()])
        writer.writerow([])
        writer.writerows(table)


def _report(data: Path, out: Path, model_id: str = "housing_fund") -> tuple[Path, dict[str, str], list[list[str]]]:
    """A report as the gateway's client writes it, made from the reference join itself."""
    subjects = data / "subjects.csv"
    table, invalid = expected_report(data, ModelCatalog.load(MODELS).get(model_id), subjects, titles=roster_titles())
    about = {
        "请求编号": "request-1",
        "模型": model_id,
        "名单文件": subjects.name,
        "名单SHA-256": hashlib.sha256(subjects.read_bytes()).hexdigest(),
        "核对行数": str(len(checked_rows(table))),
        "线索数": str(sum(row[0] == "是" for row in table[1:])),
        "无效行数": str(len(invalid)),
    }
    report = out / "all.csv"
    _write(report, about, table)
    _write(out / "all.csv.errors.csv", about, [["行号", "案号", "原因"], *([str(n), c, "无效"] for n, c in invalid)])
    return report, about, table


def _check(data: Path, report: Path, request_id: str | None = "request-1") -> int:
    clues: int = checker.check(data, data / "subjects.csv", report, "housing_fund", MODELS, request_id)
    return clues


def test_the_reference_report_passes(data: Path, tmp_path: Path) -> None:
    report, about, _ = _report(data, tmp_path)
    assert _check(data, report) == int(about["线索数"]) > 0
    assert int(about["无效行数"]) > 0  # the generated list has invalid rows: the errors file is checked too


def test_a_flipped_flag_is_named_by_row_and_column_only(data: Path, tmp_path: Path) -> None:
    report, about, table = _report(data, tmp_path)
    at = next(n for n in range(5, len(table)) if table[n][0] in ("是", "否"))
    table[at][0] = "否" if table[at][0] == "是" else "是"
    _write(report, about, table)
    with pytest.raises(checker.Differs, match=rf"table row {at} \(list row \d+\): 线索 is") as raised:
        _check(data, report)
    _assert_no_subject_data(str(raised.value), data)


def test_a_wrong_case_number_is_named_without_it(data: Path, tmp_path: Path) -> None:
    report, about, table = _report(data, tmp_path)
    table[3][2] = "（2099）浙0803执1号"
    _write(report, about, table)
    with pytest.raises(checker.Differs, match="table row 3: its 案号") as raised:
        _check(data, report)
    assert "2099" not in str(raised.value)


def test_a_missing_row_a_wrong_request_and_a_wrong_errors_file_are_refused(data: Path, tmp_path: Path) -> None:
    report, about, table = _report(data, tmp_path)
    _write(report, about, table[:-1])
    with pytest.raises(checker.Differs, match="table rows, the reference join has"):
        _check(data, report)
    report, about, table = _report(data, tmp_path)
    with pytest.raises(checker.Differs, match="header 请求编号"):
        _check(data, report, request_id="another")
    errors = tmp_path / "all.csv.errors.csv"
    _write(errors, about, read_csv(errors)[len(about) + 1 : -1])
    with pytest.raises(checker.Differs, match=r"errors\.csv: lists rows"):
        _check(data, report)


def _assert_no_subject_data(message: str, data: Path) -> None:
    rows = read_csv(data / "subjects.csv")
    for row in rows[1:]:
        for cell in row:
            if len(cell) >= 2 and not re.fullmatch(r"\d+", cell):
                assert cell not in message


def test_a_wrong_name_is_named_without_it(data: Path, tmp_path: Path) -> None:
    report, about, table = _report(data, tmp_path)
    table[4][3] = "某某某"
    _write(report, about, table)
    with pytest.raises(checker.Differs, match="table row 4: its 被执行人（姓名/名称） is not") as raised:
        _check(data, report)
    assert "某某某" not in str(raised.value)
