"""Tests for requester.report: the layout of the report and errors file, what names them,
formula text neutralised, whole-or-nothing writes, and earlier output set aside."""

from __future__ import annotations

import csv
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from openpyxl import load_workbook

from requester.report import (
    CHINA_TIME,
    MEANING,
    NO_REQUEST,
    Provenance,
    ReportRow,
    column_titles,
    errors_path,
    set_aside_previous,
    write_errors,
    write_outputs,
    write_report,
)
from requester.subjects import RejectedRow
from xiezhi.errors import InvalidInput
from xiezhi.wire import CapabilityAbout, ResultAbout

GENERATED = datetime(2026, 11, 21, 9, 30, 5, tzinfo=CHINA_TIME)
UTC_TIME = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 in China
DESCRIBED = ResultAbout(
    model_title="住房公积金",
    requester="prosecutor-330803-01",
    org="330803",
    purpose="（2026）浙0803民监1号",
    legal_basis="《人民检察院民事诉讼监督规则》第一百零六条",
    created_at=UTC_TIME,
    completed_at=UTC_TIME,
    approved_by="head-330800-01",
    approved_at=UTC_TIME,
    capabilities=(
        CapabilityAbout(id="a.x", title="公积金账户有余额", data_as_of=UTC_TIME),
        CapabilityAbout(id="a.y", title="封存账户有余额", data_as_of=None),
    ),
)
PROVENANCE = Provenance("req-0001", "housing_fund", "名单.csv", "ab" * 32, GENERATED, 3, 1, 2)
ABOUT = [
    ["请求编号", "req-0001"],
    ["模型", "housing_fund"],
    ["名单文件", "名单.csv"],
    ["名单SHA-256", "ab" * 32],
    ["生成时间", "2026-11-21T09:30:05+08:00"],
    ["名单行数", "5"],
    ["核对行数", "3"],
    ["线索数", "1"],
    ["无效行数", "2"],
    ["说明", MEANING],
]
HEADER = ["线索", "行号", "案号", "被执行人（姓名/名称）"]
ROWS = [ReportRow(3, "（2023）浙0803执1号", True, {"a.x": True, "a.y": False}, "张三")]


def _read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def _split(lines: list[list[str]]) -> tuple[list[list[str]], list[list[str]]]:
    """The key,value block and the table after its empty row."""
    blank = lines.index([])
    return lines[:blank], lines[blank + 1 :]


def test_csv_report_states_its_request_and_list_then_the_table(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    write_report(out, ROWS, ["a.x", "a.y"], PROVENANCE)
    about, table = _split(_read_csv(out))
    assert about == ABOUT
    assert table == [[*HEADER, "a.x", "a.y"], ["是", "3", "（2023）浙0803执1号", "张三", "是", "否"]]


def test_the_report_describes_its_request_and_titles_its_columns_in_chinese(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    write_report(out, ROWS, ["a.x", "a.y"], replace(PROVENANCE, about=DESCRIBED))
    about, table = _split(_read_csv(out))
    assert dict(about) == {
        "请求编号": "req-0001",
        "模型": "housing_fund",
        "模型名称": "住房公积金",
        "办案用途": "（2026）浙0803民监1号",
        "法律依据": "《人民检察院民事诉讼监督规则》第一百零六条",
        "发起人": "prosecutor-330803-01",
        "发起单位": "330803",
        "审批人": "head-330800-01",
        "审批时间": "2026-11-20T10:00:00+08:00",
        "提出时间": "2026-11-20T10:00:00+08:00",
        "完成时间": "2026-11-20T10:00:00+08:00",
        "数据截至：公积金账户有余额": "2026-11-20T10:00:00+08:00",
        "数据截至：封存账户有余额": "未知",
        **{key: value for key, value in ABOUT[2:]},
    }
    assert table[0] == [*HEADER, "公积金账户有余额", "封存账户有余额"]


def test_a_request_without_approval_says_so(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    unapproved = DESCRIBED.model_copy(update={"approved_by": None, "approved_at": None})
    write_report(out, ROWS, ["a.x", "a.y"], replace(PROVENANCE, about=unapproved))
    about = dict(_split(_read_csv(out))[0])
    assert (about["审批人"], about["审批时间"]) == ("无需审批", "—")


def test_two_capabilities_of_one_title_are_told_apart_by_id() -> None:
    same = DESCRIBED.model_copy(update={"capabilities": tuple(
        c.model_copy(update={"title": "有余额"}) for c in DESCRIBED.capabilities
    )})  # fmt: skip
    assert column_titles(["a.x", "a.y", "b.z"], same) == ["有余额（a.x）", "有余额（a.y）", "b.z"]


def test_every_list_row_is_in_the_table_in_list_order_and_invalid_ones_are_not_否(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    rows = [*ROWS, ReportRow(1, "（2023）浙0803执9号", False, {"a.x": False, "a.y": False}, "李四")]
    rejected = [RejectedRow(2, "（2023）浙0803执2号", "校验码错误", "bad_check_character", "王五")]
    write_report(out, rows, ["a.x", "a.y"], PROVENANCE, rejected)
    _, table = _split(_read_csv(out))
    assert table[1:] == [
        ["否", "1", "（2023）浙0803执9号", "李四", "否", "否"],
        ["未核对（证件号码无效）", "2", "（2023）浙0803执2号", "王五", "", ""],
        ["是", "3", "（2023）浙0803执1号", "张三", "是", "否"],
    ]


def test_xlsx_report_has_the_table_the_invalid_rows_and_a_说明_sheet(tmp_path: Path) -> None:
    out = tmp_path / "r.xlsx"
    rejected = [RejectedRow(2, "（2023）浙0803执2号", "校验码错误", "bad_check_character", "王五")]
    write_report(out, ROWS, ["a.x", "a.y"], replace(PROVENANCE, about=DESCRIBED), rejected)
    workbook = load_workbook(out)
    assert workbook.sheetnames == ["线索", "无效行", "说明"]
    clues = workbook["线索"]
    table = [list(r) for r in clues.iter_rows(values_only=True)]
    assert table == [
        [*HEADER, "公积金账户有余额", "封存账户有余额"],
        ["未核对（证件号码无效）", 2, "（2023）浙0803执2号", "王五", None, None],
        ["是", 3, "（2023）浙0803执1号", "张三", "是", "否"],
    ]
    assert clues.freeze_panes == "A2" and clues.auto_filter.ref == "A1:F3"
    assert clues.column_dimensions["A"].width >= 2 * len("未核对（证件号码无效）")  # its text fits
    assert [list(r) for r in workbook["无效行"].iter_rows(values_only=True)] == [
        ["行号", "案号", "被执行人（姓名/名称）", "原因"], [2, "（2023）浙0803执2号", "王五", "校验码错误"],
    ]  # fmt: skip
    about = {key: value for key, value in workbook["说明"].iter_rows(values_only=True)}
    assert about["模型名称"] == "住房公积金" and about["审批人"] == "head-330800-01" and about["说明"] == MEANING
    assert not any(cell.data_type == "f" for sheet in workbook for row in sheet.iter_rows() for cell in row)


def test_errors_file_states_its_request_too(tmp_path: Path) -> None:
    rejected = [RejectedRow(2, "（2023）浙0803执2号", "校验码错误", "bad_check_character")]
    errors = write_errors(tmp_path / "r.xlsx", rejected, PROVENANCE)
    assert errors == tmp_path / "r.xlsx.errors.csv"
    about, table = _split(_read_csv(errors))
    assert about == ABOUT
    assert table == [["行号", "案号", "原因"], ["2", "（2023）浙0803执2号", "校验码错误"]]


def test_an_errors_file_without_a_request_says_so(tmp_path: Path) -> None:
    alone = Provenance(None, "housing_fund", "名单.csv", "ab" * 32, GENERATED, 0, 0, 1)
    about, _ = _split(_read_csv(write_errors(tmp_path / "r.csv", [], alone)))
    assert about[0] == ["请求编号", NO_REQUEST]


def test_the_time_is_written_in_china_time(tmp_path: Path) -> None:
    utc = datetime.fromisoformat("2026-11-21T01:30:05+00:00")
    out = tmp_path / "r.csv"
    write_report(out, [], [], Provenance("r", "m", "s.csv", "00", utc, 0, 0, 0))
    assert ["生成时间", "2026-11-21T09:30:05+08:00"] in _read_csv(out)


# --- formula text -------------------------------------------------------------------------

FORMULAS = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1:A2)", "\t=1", "\r=1", "=cmd|' /C calc'!A0"]


@pytest.mark.parametrize("text", FORMULAS)
def test_formula_text_is_neutralised_in_csv(tmp_path: Path, text: str) -> None:
    out = tmp_path / "r.csv"
    write_report(out, [ReportRow(1, text, False, {})], [], PROVENANCE)
    write_errors(out, [RejectedRow(2, text, "校验码错误")], PROVENANCE)
    for path in (out, errors_path(out)):
        _, table = _split(_read_csv(path))
        assert table[1][2 if path == out else 1] == "'" + text


@pytest.mark.parametrize("text", FORMULAS)
def test_formula_text_is_a_string_in_xlsx(tmp_path: Path, text: str) -> None:
    out = tmp_path / "r.xlsx"
    write_report(out, [ReportRow(1, text, False, {})], [], PROVENANCE)
    cell = load_workbook(out)["线索"]["C2"]
    assert cell.data_type == "s"  # "f" would be a formula
    assert cell.quotePrefix
    assert cell.value == text.replace("\r", "\n")  # XML reads a carriage return as a line feed


def test_a_formula_looking_list_name_is_neutralised_too(tmp_path: Path) -> None:
    named = Provenance("r", "m", "=1+1.csv", "00", GENERATED, 0, 0, 0)
    write_report(tmp_path / "r.csv", [], [], named)
    assert ["名单文件", "'=1+1.csv"] in _read_csv(tmp_path / "r.csv")
    write_report(tmp_path / "r.xlsx", [], [], named)
    assert load_workbook(tmp_path / "r.xlsx")["说明"]["B3"].data_type == "s"


def test_control_characters_do_not_break_the_workbook(tmp_path: Path) -> None:
    out = tmp_path / "r.xlsx"
    write_report(out, [ReportRow(1, "（2023）浙\x010803执1号", False, {})], [], PROVENANCE)
    assert load_workbook(out)["线索"]["C2"].value == "（2023）浙\ufffd0803执1号"


def test_ordinary_text_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    write_report(out, [ReportRow(1, "(2023)浙0803执-1号", False, {})], [], PROVENANCE)
    assert _split(_read_csv(out))[1][1][2] == "(2023)浙0803执-1号"


# --- whole or nothing ---------------------------------------------------------------------


def test_a_failed_write_leaves_the_earlier_file_and_no_debris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r.csv"
    out.write_text("earlier", encoding="utf-8")

    def full_disk(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(InvalidInput, match=r"r\.csv: cannot be written \(No space left on device\)"):
        write_report(out, ROWS, ["a.x", "a.y"], PROVENANCE)
    assert out.read_text(encoding="utf-8") == "earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]


def test_outputs_are_both_written_or_neither(tmp_path: Path) -> None:
    out = tmp_path / "r.xlsx"
    rejected = [RejectedRow(2, "（2023）浙0803执2号", "校验码错误")]
    assert write_outputs(out, ROWS, ["a.x", "a.y"], rejected, PROVENANCE) == errors_path(out)
    assert out.is_file() and errors_path(out).is_file()
    again = tmp_path / "again.xlsx"
    with pytest.raises(KeyError):  # a capability the rows do not carry: the report fails
        write_outputs(again, ROWS, ["a.missing"], rejected, PROVENANCE)
    assert not again.exists() and not errors_path(again).exists()


def test_an_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(InvalidInput, match="cannot be written"):
        write_report(blocked / "r.csv", ROWS, ["a.x", "a.y"], PROVENANCE)


def test_reports_are_csv_or_xlsx(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"\.csv or \.xlsx"):
        write_report(tmp_path / "r.txt", ROWS, ["a.x", "a.y"], PROVENANCE)


# --- earlier output -----------------------------------------------------------------------


def test_earlier_output_is_renamed_out_of_the_way(tmp_path: Path) -> None:
    out = tmp_path / "clues.csv"
    out.write_text("old report")
    errors_path(out).write_text("old errors")
    previous = set_aside_previous(out, GENERATED)
    assert previous == tmp_path / "clues.previous-20261121T093005.csv"
    assert not out.exists() and not errors_path(out).exists()
    assert previous.read_text() == "old report"
    assert errors_path(previous).read_text() == "old errors"
    # A second run in the same second does not overwrite the first one's.
    out.write_text("newer report")
    again = set_aside_previous(out, GENERATED)
    assert again == tmp_path / "clues.previous-20261121T093005-2.csv" and again.read_text() == "newer report"
    assert previous.read_text() == "old report"


def test_a_lone_errors_file_is_set_aside_too(tmp_path: Path) -> None:
    out = tmp_path / "clues.xlsx"
    errors_path(out).write_text("old errors")
    previous = set_aside_previous(out, GENERATED)
    assert previous is not None and not previous.exists()
    assert errors_path(previous).read_text() == "old errors"


def test_nothing_to_set_aside(tmp_path: Path) -> None:
    assert set_aside_previous(tmp_path / "clues.csv", GENERATED) is None
    assert list(tmp_path.iterdir()) == []


def test_an_earlier_report_that_cannot_be_moved_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "clues.csv").write_text("old")

    def refuse(self: Path, target: Path) -> Path:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "rename", refuse)
    with pytest.raises(InvalidInput, match="cannot move the earlier output aside"):
        set_aside_previous(tmp_path / "clues.csv", GENERATED)
