"""Writing the clue report and the errors file, and setting earlier ones aside.

The report (CSV or XLSX by the file's extension) has the columns 行号 (input data row), 案号,
线索 (是/否), then one column per revealed capability (是/否). Invalid rows go to
`<out>.errors.csv` with 行号, 案号 and 原因. Both state which request and which subject list
they belong to (`Provenance`, README "The clue report"):

* CSV: key,value rows (请求编号, 模型, 名单文件, 名单SHA-256, 生成时间, 核对行数, 线索数,
  无效行数), one empty row, then the table;
* XLSX: the table on sheet 线索, the same key,value rows on sheet 说明.

Both files are written whole or not at all: to a temporary file in the same folder,
fsync'ed, then renamed over the target. `set_aside_previous` renames an earlier report and
errors file out of the way before a run starts, so a run that fails leaves nothing at
`--out` to be mistaken for its answer.

Every text cell is neutralised against formula injection (OWASP "CSV Injection"): in CSV
a cell starting with = + - @ tab or carriage return gets a leading single quote; in XLSX
the cell keeps its text and is stored as a string with Excel's quote prefix, never as a
formula. Control characters XML cannot hold become U+FFFD.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO

from requester.subjects import RejectedRow
from xiezhi.errors import InvalidInput

# China has one time zone and no daylight saving time.
CHINA_TIME = timezone(timedelta(hours=8), "CST")
REPORT_SUFFIXES = (".csv", ".xlsx")
TABLE_SHEET = "线索"
PROVENANCE_SHEET = "说明"
NO_REQUEST = "（未发出请求）"

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# What XML 1.0 (and so XLSX) cannot hold: C0 controls other than tab, line feed, return.
_UNSAFE_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


@dataclass(frozen=True)
class ReportRow:
    row: int
    case_no: str
    clue: bool
    flags: dict[str, bool]


@dataclass(frozen=True)
class Provenance:
    """Which request and which subject list a report (or errors file) belongs to."""

    request_id: str | None  # None: no request was made (no valid row)
    model: str
    subjects_name: str
    subjects_sha256: str
    generated_at: datetime
    rows_checked: int
    clues: int
    invalid_rows: int

    def items(self) -> list[tuple[str, str]]:
        """The key,value rows, in their order in the file."""
        return [
            ("请求编号", self.request_id or NO_REQUEST),
            ("模型", self.model),
            ("名单文件", self.subjects_name),
            ("名单SHA-256", self.subjects_sha256),
            ("生成时间", self.generated_at.astimezone(CHINA_TIME).isoformat(timespec="seconds")),
            ("核对行数", str(self.rows_checked)),
            ("线索数", str(self.clues)),
            ("无效行数", str(self.invalid_rows)),
        ]


def yes_no(value: bool) -> str:
    return "是" if value else "否"


def errors_path(out: Path) -> Path:
    return out.with_name(out.name + ".errors.csv")


def check_report_path(out: Path) -> None:
    """Raises InvalidInput unless `out` names a .csv or .xlsx file."""
    if out.suffix.lower() not in REPORT_SUFFIXES:
        raise InvalidInput(f"{out.name}: reports are written as .csv or .xlsx")


def set_aside_previous(out: Path, now: datetime) -> Path | None:
    """Rename an earlier report at `out` and its errors file out of the way.

    They become `<stem>.previous-<YYYYMMDDTHHMMSS><suffix>` (China time) and its errors file,
    a counter added if that name is taken. Returns the report's new name, or None if there
    was nothing to move. Raises InvalidInput if a file cannot be moved.
    """
    present = [path for path in (out, errors_path(out)) if path.exists() or path.is_symlink()]
    if not present:
        return None
    previous = _previous_name(out, now.astimezone(CHINA_TIME).strftime("%Y%m%dT%H%M%S"))
    for path, target in ((out, previous), (errors_path(out), errors_path(previous))):
        if path in present:
            try:
                path.rename(target)
            except OSError as exc:
                raise InvalidInput(f"{path}: cannot move the earlier output aside ({exc.strerror})") from None
    return previous


def _previous_name(out: Path, stamp: str) -> Path:
    for attempt in range(1, 1000):
        tag = stamp if attempt == 1 else f"{stamp}-{attempt}"
        previous = out.with_name(f"{out.stem}.previous-{tag}{out.suffix}")
        if not (previous.exists() or errors_path(previous).exists()):
            return previous
    raise InvalidInput(f"{out.name}: too many earlier reports set aside; clear some away")


def write_report(path: Path, rows: Sequence[ReportRow], reveals: Sequence[str], provenance: Provenance) -> None:
    """Write the clue report at `path` (.csv or .xlsx), atomically."""
    check_report_path(path)
    header = ["行号", "案号", "线索", *reveals]
    table = [[r.row, r.case_no, yes_no(r.clue), *(yes_no(r.flags[c]) for c in reveals)] for r in rows]
    if path.suffix.lower() == ".csv":
        _write_atomically(path, _as_csv(provenance, header, table))
    else:
        _write_atomically(path, _as_xlsx(provenance, header, table))


def write_outputs(
    out: Path,
    rows: Sequence[ReportRow],
    reveals: Sequence[str],
    rejected: Sequence[RejectedRow],
    provenance: Provenance,
) -> Path:
    """Write the errors file, then the report; if the report cannot be written, remove the
    errors file again, so that a run leaves both or neither. Returns the errors file's path."""
    errors = write_errors(out, rejected, provenance)
    try:
        write_report(out, rows, reveals, provenance)
    except BaseException:
        errors.unlink(missing_ok=True)
        raise
    return errors


def write_errors(out: Path, rejected: Sequence[RejectedRow], provenance: Provenance) -> Path:
    """Write `<out>.errors.csv` with the invalid rows, atomically; return its path."""
    path = errors_path(out)
    table: list[list[object]] = [[r.row, r.case_no, r.reason] for r in rejected]
    _write_atomically(path, _as_csv(provenance, ["行号", "案号", "原因"], table))
    return path


# --- cells --------------------------------------------------------------------------------


def _csv_cell(value: object) -> object:
    """A cell as written to CSV: text neutralised (leading quote before formula text)."""
    if not isinstance(value, str):
        return value
    text = _UNSAFE_CONTROLS.sub("\ufffd", value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _as_csv(provenance: Provenance, header: list[str], table: list[list[object]]) -> Callable[[IO[bytes]], None]:
    def write(handle: IO[bytes]) -> None:
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerows([[_csv_cell(key), _csv_cell(value)] for key, value in provenance.items()])
        writer.writerow([])
        writer.writerow([_csv_cell(cell) for cell in header])
        writer.writerows([_csv_cell(cell) for cell in line] for line in table)
        # UTF-8 with BOM: Excel opens it with the Chinese headers intact.
        handle.write(buffer.getvalue().encode("utf-8-sig"))

    return write


def _as_xlsx(provenance: Provenance, header: list[str], table: list[list[object]]) -> Callable[[IO[bytes]], None]:
    from openpyxl import Workbook
    from openpyxl.worksheet.worksheet import Worksheet

    def append(sheet: Worksheet, line: Sequence[object]) -> None:
        sheet.append([_UNSAFE_CONTROLS.sub("\ufffd", c) if isinstance(c, str) else c for c in line])
        for cell in sheet[sheet.max_row]:
            if isinstance(cell.value, str):
                # NOTE: openpyxl stores any text starting with "=" as a formula; this keeps
                # every text cell a string, and the quote prefix keeps Excel from re-reading it.
                cell.data_type = "s"
                cell.quotePrefix = cell.value.startswith(_FORMULA_START)

    def write(handle: IO[bytes]) -> None:
        workbook = Workbook()
        table_sheet = workbook.active
        assert table_sheet is not None
        table_sheet.title = TABLE_SHEET
        append(table_sheet, header)
        for line in table:
            append(table_sheet, line)
        about = workbook.create_sheet(PROVENANCE_SHEET)
        for item in provenance.items():
            append(about, item)
        workbook.save(handle)

    return write


# --- atomic files -------------------------------------------------------------------------


def _write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` whole or not at all; raises InvalidInput if the folder refuses it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot be written ({exc.strerror})") from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise InvalidInput(f"{path}: cannot be written ({exc.strerror})") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable: fsync the folder (POSIX; a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
