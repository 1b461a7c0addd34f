from __future__ import annotations

import csv
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook

from requester.report import ReportRow, write_errors, write_report
from requester.subjects import read_subjects
from xiezhi.errors import InvalidInput

VALID = "11010519491231002X"
OLD = "130503670401001"


def _csv(path: Path, rows: list[list[str]], encoding: str = "utf-8-sig") -> Path:
    with path.open("w", encoding=encoding, newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_csv_rows_are_validated_and_numbered(tmp_path: Path) -> None:
    path = _csv(
        tmp_path / "s.csv",
        [
            ["案号", "姓名", "证件号码"],
            ["（2023）浙0803执1号", "张三", VALID.lower()],
            ["（2023）浙0803执2号", "李四", "110105194912310021"],
            ["", "", ""],
            ["(2023)浙0803执3号", "王五", f" {OLD} "],
            ["（2023）浙0803执4号", "赵六", ""],
        ],
    )
    valid, rejected = read_subjects(path)
    assert [(r.row, r.case_no, r.subject.value) for r in valid] == [
        (1, "（2023）浙0803执1号", VALID),
        (3, "(2023)浙0803执3号", "130503196704010016"),
    ]
    assert [(r.row, r.case_no) for r in rejected] == [(2, "（2023）浙0803执2号"), (4, "（2023）浙0803执4号")]
    assert all(r.reason and VALID[:6] not in r.reason for r in rejected)


def test_gbk_csv_and_name_header_variant(tmp_path: Path) -> None:
    path = _csv(
        tmp_path / "s.csv",
        [["案号", "名称", "证件号码"], ["（2023）浙0803执9号", "某公司", "91350100M000100Y43"]],
        encoding="gb18030",
    )
    valid, rejected = read_subjects(path)
    assert [r.subject.id_type.value for r in valid] == ["uscc"] and not rejected


def test_xlsx_with_numeric_id_cell_is_rejected_not_guessed(tmp_path: Path) -> None:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["案号", "姓名", "证件号码"])
    sheet.append(["（2023）浙0803执1号", "张三", VALID])
    sheet.append(["（2023）浙0803执2号", "李四", 130503196704010016])  # 18 digits: beyond Excel's precision
    sheet.append(["（2023）浙0803执3号", "王五", 130503670401001])  # 15 digits: exact
    sheet.append(["（2023）浙0803执4号", "赵六", 1.30503196704010016e17])
    workbook.save(tmp_path / "s.xlsx")
    valid, rejected = read_subjects(tmp_path / "s.xlsx")
    assert [(r.row, r.subject.value) for r in valid] == [(1, VALID), (3, "130503196704010016")]
    assert [r.row for r in rejected] == [2, 4] and all("数值" in r.reason for r in rejected)


def test_id_header_aliases(tmp_path: Path) -> None:
    path = _csv(tmp_path / "s.csv", [["案号", "姓名", "身份证号码"], ["（2023）浙0803执1号", "张三", VALID]])
    assert [r.subject.value for r in read_subjects(path)[0]] == [VALID]


@pytest.mark.parametrize(
    ("content", "message"),
    [("案号,姓名\n（2023）浙0803执1号,张三\n", "missing column 证件号码"), ("", "empty")],
)
def test_bad_files_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "s.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInput, match=message):
        read_subjects(path)


def test_unsupported_extension(tmp_path: Path) -> None:
    (tmp_path / "s.txt").write_text("x")
    with pytest.raises(InvalidInput, match=r"\.csv or \.xlsx"):
        read_subjects(tmp_path / "s.txt")


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_report_columns(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"r{suffix}"
    write_report(out, [ReportRow(3, "（2023）浙0803执1号", True, {"a.x": True, "a.y": False})], ["a.x", "a.y"])
    if suffix == ".csv":
        rows = list(csv.reader(out.open(encoding="utf-8-sig")))
    else:
        rows = [[str(c) for c in r] for r in load_workbook(out).active.iter_rows(values_only=True)]
    assert rows == [["行号", "案号", "线索", "a.x", "a.y"], ["3", "（2023）浙0803执1号", "是", "是", "否"]]
    errors = write_errors(out, [])
    assert errors.name == f"r{suffix}.errors.csv"
    assert list(csv.reader(errors.open(encoding="utf-8-sig"))) == [["行号", "案号", "原因"]]
