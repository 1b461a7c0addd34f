"""Tests for requester.job's output handling: a failed run leaves no report at --out, and a
successful run's report names its request and its list.

The gateway is replaced by a fake `run_match` (an in-memory stand-in, as STYLE.md allows
for unit tests); the end-to-end tests (tests/test_end_to_end.py, tests/test_commands.py)
run the same code against a real gateway.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

import requester.job
from requester.job import match_file
from requester.protocol import MatchSpec
from requester.report import CHINA_TIME, MEANING, errors_path
from xiezhi.errors import InvalidInput, Unavailable
from xiezhi.wire import MatchResult, RowFlags

NOW = datetime(2026, 11, 21, 9, 30, 5, tzinfo=CHINA_TIME)
SPEC = MatchSpec("housing_fund", "（2023）浙0803执1号", "《人民检察院民事诉讼监督规则》第一百零四条")
GATEWAY = "https://gateway.invalid"
LIST = [
    ["案号", "姓名", "证件号码"],
    ["（2023）浙0803执1号", "甲", "11010519491231002X"],
    ["（2023）浙0803执2号", "乙", "110105194912310021"],
    ["（2023）浙0803执3号", "丙", "91350100M000100Y43"],
]


def _subjects(tmp_path: Path, rows: list[list[str]] = LIST) -> Path:
    path = tmp_path / "名单.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def _read_csv(path: Path) -> tuple[dict[str, str], list[list[str]]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        lines = list(csv.reader(handle))
    blank = lines.index([])
    return {key: value for key, value in lines[:blank]}, lines[blank + 1 :]


class FakeGateway:
    """Stands in for requester.protocol.run_match: answers, or fails, once it is asked."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.failure = failure
        self.asked: list[int] = []

    def __call__(self, client: object, spec: MatchSpec, inputs: Sequence[bytes], **_: Any) -> MatchResult:
        self.asked.append(len(inputs))
        if self.failure is not None:
            raise self.failure
        rows = [
            RowFlags(row=at, clue=at == 0, flags={"housing_fund.balance_positive": at == 0})
            for at in range(len(inputs))
        ]
        return MatchResult(
            request_id="req-0042", model=spec.model, reveals=("housing_fund.balance_positive",), rows=rows
        )


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Callable[[Exception | None], FakeGateway]:
    def install(failure: Exception | None = None) -> FakeGateway:
        fake = FakeGateway(failure)
        monkeypatch.setattr(requester.job, "run_match", fake)
        return fake

    return install


def _run(subjects: Path, out: Path) -> requester.job.MatchSummary:
    return match_file(GATEWAY, "token", SPEC, subjects, out, show_progress=False, clock=lambda: NOW)


def test_a_failed_run_leaves_no_report_and_sets_the_earlier_one_aside(
    tmp_path: Path, gateway: Callable[[Exception | None], FakeGateway]
) -> None:
    out = tmp_path / "clues.csv"
    out.write_text("是/否 of last week", encoding="utf-8")
    errors_path(out).write_text("errors of last week", encoding="utf-8")
    fake = gateway(Unavailable("gateway unreachable (ConnectError)", code="gateway_unreachable"))
    with pytest.raises(Unavailable):
        _run(_subjects(tmp_path), out)
    assert fake.asked == [2], "the failure comes after the list was read and validated"
    assert not out.exists() and not errors_path(out).exists()
    previous = tmp_path / "clues.previous-20261121T093005.csv"
    assert previous.read_text(encoding="utf-8") == "是/否 of last week"
    assert errors_path(previous).read_text(encoding="utf-8") == "errors of last week"


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_a_successful_run_names_its_request_and_list(
    tmp_path: Path, gateway: Callable[[Exception | None], FakeGateway], suffix: str
) -> None:
    gateway(None)
    subjects = _subjects(tmp_path)
    out = tmp_path / f"clues{suffix}"
    summary = _run(subjects, out)
    assert (summary.request_id, summary.rows, summary.clues, summary.invalid_rows) == ("req-0042", 2, 1, 1)
    about = {
        "请求编号": "req-0042",
        "模型": "housing_fund",
        "名单文件": "名单.csv",
        "名单SHA-256": hashlib.sha256(subjects.read_bytes()).hexdigest(),
        "生成时间": "2026-11-21T09:30:05+08:00",
        "名单行数": "3",
        "核对行数": "2",
        "线索数": "1",
        "无效行数": "1",
        "说明": MEANING,
    }
    if suffix == ".csv":
        written, table = _read_csv(out)
    else:
        workbook = load_workbook(out)
        written = {str(k): str(v) for k, v in workbook["说明"].iter_rows(values_only=True)}
        table = [[str(c) for c in row] for row in workbook["线索"].iter_rows(values_only=True)]
    assert written == about
    assert table == [
        ["线索", "行号", "案号", "被执行人（姓名/名称）", "housing_fund.balance_positive"],
        ["是", "1", "（2023）浙0803执1号", "甲", "是"],
        ["未核对（证件号码无效）", "2", "（2023）浙0803执2号", "乙", "" if suffix == ".csv" else "None"],
        ["否", "3", "（2023）浙0803执3号", "丙", "否"],
    ]
    errors_about, errors = _read_csv(errors_path(out))
    assert errors_about == about
    assert errors == [["行号", "案号", "原因"], ["2", "（2023）浙0803执2号", "校验码错误"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["名单.csv", out.name, errors_path(out).name])


def test_a_list_with_no_valid_row_leaves_only_its_errors_file(
    tmp_path: Path, gateway: Callable[[Exception | None], FakeGateway]
) -> None:
    fake = gateway(None)
    out = tmp_path / "clues.csv"
    out.write_text("old", encoding="utf-8")
    with pytest.raises(InvalidInput, match="no valid row"):
        _run(_subjects(tmp_path, LIST[:1] + LIST[2:3]), out)
    assert fake.asked == [] and not out.exists()
    about, table = _read_csv(errors_path(out))
    assert about["请求编号"] == "（未发出请求）" and table[1][0] == "1"


def test_an_unreadable_list_leaves_no_report(
    tmp_path: Path, gateway: Callable[[Exception | None], FakeGateway]
) -> None:
    fake = gateway(None)
    out = tmp_path / "clues.csv"
    out.write_text("old", encoding="utf-8")
    with pytest.raises(InvalidInput, match="no such file"):
        _run(tmp_path / "missing.csv", out)
    assert fake.asked == [] and not out.exists() and not errors_path(out).exists()


def test_a_report_name_that_is_no_csv_or_xlsx_is_refused_first(
    tmp_path: Path, gateway: Callable[[Exception | None], FakeGateway]
) -> None:
    fake = gateway(None)
    out = tmp_path / "clues.txt"
    out.write_text("someone's notes", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"\.csv or \.xlsx"):
        _run(_subjects(tmp_path), out)
    assert fake.asked == [] and out.read_text(encoding="utf-8") == "someone's notes"
