"""Writing the clue report and the errors file, CSV or XLSX by the file's extension.

Columns: 行号 (input data row), 案号, 线索 (是/否), then one column per revealed
capability (是/否). Invalid rows go to `<out>.errors.csv` with 行号, 案号 and 原因.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from requester.subjects import RejectedRow
from xiezhi.errors import InvalidInput


@dataclass(frozen=True)
class ReportRow:
    row: int
    case_no: str
    clue: bool
    flags: dict[str, bool]


def yes_no(value: bool) -> str:
    return "是" if value else "否"


def write_report(path: Path, rows: Sequence[ReportRow], reveals: Sequence[str]) -> None:
    header = ["行号", "案号", "线索", *reveals]
    table = [[r.row, r.case_no, yes_no(r.clue), *(yes_no(r.flags[c]) for c in reveals)] for r in rows]
    _write(path, header, table)


def errors_path(out: Path) -> Path:
    return out.with_name(out.name + ".errors.csv")


def write_errors(out: Path, rejected: Sequence[RejectedRow]) -> Path:
    path = errors_path(out)
    _write(path, ["行号", "案号", "原因"], [[r.row, r.case_no, r.reason] for r in rejected])
    return path


def _write(path: Path, header: list[str], table: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        # UTF-8 with BOM: Excel opens it with the Chinese headers intact.
        with path.open("w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(table)
    elif suffix == ".xlsx":
        from openpyxl import Workbook

        workbook = Workbook()
        sheet = workbook.active
        assert sheet is not None
        sheet.append(header)
        for line in table:
            sheet.append(line)
        workbook.save(path)
    else:
        raise InvalidInput(f"{path.name}: reports are written as .csv or .xlsx")
