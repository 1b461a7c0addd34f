"""Writing the clue report and the errors file, and setting earlier ones aside.

The report (CSV or XLSX by the file's extension) has one row per row of the subject list, in
its order, with the columns 线索 (是/否), 行号 (the list's data row), 案号, 被执行人（姓名/名称）
(carried from the list: it never leaves this machine), then one column per capability the
model reveals, titled in Chinese as the agency published it (是/否). A row whose ID failed
validation was not checked: its 线索 says so and its capability cells stay empty — never 否.
Invalid rows are also listed with their reason in `<out>.errors.csv` (行号, 案号, 原因) and,
in XLSX, on a sheet of their own. Both files state which request and which list they belong
to (`Provenance`: the request, the model and its title, purpose and legal basis, who ran it
and who approved it, when, each capability's data as of when, the list's name and SHA-256,
the counts, and what a flag means and does not mean; README "The clue report"):

* CSV: those key,value rows, one empty row, then the table (UTF-8 with a BOM, for Excel);
* XLSX: the table on sheet 线索, invalid rows on sheet 无效行, the key,value rows on sheet
  说明; header rows frozen, filters on, columns sized to their text.

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
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING

from requester.subjects import RejectedRow
from xiezhi.wire import ResultAbout

if TYPE_CHECKING:
    from openpyxl.worksheet.worksheet import Worksheet
from xiezhi.errors import InvalidInput

# China has one time zone and no daylight saving time.
CHINA_TIME = timezone(timedelta(hours=8), "CST")
REPORT_SUFFIXES = (".csv", ".xlsx")
TABLE_SHEET = "线索"
ERRORS_SHEET = "无效行"
PROVENANCE_SHEET = "说明"
NO_REQUEST = "（未发出请求）"
CLUE, ROW, CASE, NAME = "线索", "行号", "案号", "被执行人（姓名/名称）"
NOT_CHECKED = "未核对（证件号码无效）"
ERRORS_HEADER = ["行号", "案号", "原因"]
MEANING = (
    "“是”表示该机关在所列时间的数据中有与该证件号码相符的记录；“否”表示在该数据中未找到，"
    "不表示当事人没有财产或记录。线索仅供检察机关依法核实，须经人工核查后方可作为监督依据。"
    "证件号码无效的行未经核对，见“无效行”。"
)
NO_APPROVAL = "无需审批"
NONE = "—"  # a 说明 field that does not apply (an empty cell would read as missing)

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# What XML 1.0 (and so XLSX) cannot hold: C0 controls other than tab, line feed, return.
_UNSAFE_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


@dataclass(frozen=True)
class ReportRow:
    row: int
    case_no: str
    clue: bool
    flags: dict[str, bool]
    name: str = field(default="", repr=False)  # 姓名/名称 as listed


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
    about: ResultAbout | None = None  # what the gateway says of the request (None: no request)

    def items(self) -> list[tuple[str, str]]:
        """The key,value rows, in their order in the file."""
        about = self.about
        described = [] if about is None else _about_items(about)
        return [
            ("请求编号", self.request_id or NO_REQUEST),
            ("模型", self.model),
            *described,
            ("名单文件", self.subjects_name),
            ("名单SHA-256", self.subjects_sha256),
            ("生成时间", china_time(self.generated_at)),
            ("名单行数", str(self.rows_checked + self.invalid_rows)),
            ("核对行数", str(self.rows_checked)),
            ("线索数", str(self.clues)),
            ("无效行数", str(self.invalid_rows)),
            ("说明", MEANING),
        ]


def _about_items(about: ResultAbout) -> list[tuple[str, str]]:
    titles = column_titles([c.id for c in about.capabilities], about)  # two alike told apart by id
    return [
        ("模型名称", about.model_title),
        ("办案用途", about.purpose),
        ("法律依据", about.legal_basis),
        ("发起人", about.requester),
        ("发起单位", about.org),
        ("审批人", about.approved_by or NO_APPROVAL),
        ("审批时间", china_time(about.approved_at) if about.approved_at else NONE),
        ("提出时间", china_time(about.created_at)),
        ("完成时间", china_time(about.completed_at) if about.completed_at else NONE),
        *(
            (f"数据截至：{title}", china_time(c.data_as_of) if c.data_as_of else "未知")
            for c, title in zip(about.capabilities, titles, strict=True)
        ),
    ]


def china_time(moment: datetime) -> str:
    return moment.astimezone(CHINA_TIME).isoformat(timespec="seconds")


def column_titles(reveals: Sequence[str], about: ResultAbout | None) -> list[str]:
    """Each revealed capability's column title: its Chinese title (the id where the title is
    unknown, or where two capabilities share a title, the id after it)."""
    titles = {c.id: c.title for c in about.capabilities} if about else {}
    named = [titles.get(c, c) for c in reveals]
    return [t if named.count(t) == 1 or t == c else f"{t}（{c}）" for t, c in zip(named, reveals, strict=True)]


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


def report_table(
    rows: Sequence[ReportRow], reveals: Sequence[str], rejected: Sequence[RejectedRow], about: ResultAbout | None
) -> list[list[object]]:
    """The report's table: its header, then one row per list row, in list order."""
    lines: list[tuple[int, list[object]]] = [
        (r.row, [yes_no(r.clue), r.row, r.case_no, r.name, *(yes_no(r.flags[c]) for c in reveals)]) for r in rows
    ]
    lines += [(r.row, [NOT_CHECKED, r.row, r.case_no, r.name, *("" for _ in reveals)]) for r in rejected]
    return [[CLUE, ROW, CASE, NAME, *column_titles(reveals, about)], *(line for _, line in sorted(lines, key=_first))]


def _first(item: tuple[int, list[object]]) -> int:
    return item[0]


def write_report(
    path: Path,
    rows: Sequence[ReportRow],
    reveals: Sequence[str],
    provenance: Provenance,
    rejected: Sequence[RejectedRow] = (),
) -> None:
    """Write the clue report at `path` (.csv or .xlsx), atomically."""
    check_report_path(path)
    table = report_table(rows, reveals, rejected, provenance.about)
    if path.suffix.lower() == ".csv":
        _write_atomically(path, _as_csv(provenance, table))
    else:
        errors: list[list[object]] = [[ROW, CASE, NAME, "原因"]]
        errors += [[r.row, r.case_no, r.name, r.reason] for r in rejected]
        _write_atomically(path, _as_xlsx(provenance, table, errors))


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
        write_report(out, rows, reveals, provenance, rejected)
    except BaseException:
        errors.unlink(missing_ok=True)
        raise
    return errors


def write_errors(out: Path, rejected: Sequence[RejectedRow], provenance: Provenance) -> Path:
    """Write `<out>.errors.csv` with the invalid rows, atomically; return its path."""
    path = errors_path(out)
    table: list[list[object]] = [list(ERRORS_HEADER), *([r.row, r.case_no, r.reason] for r in rejected)]
    _write_atomically(path, _as_csv(provenance, table))
    return path


# --- cells --------------------------------------------------------------------------------


def _csv_cell(value: object) -> object:
    """A cell as written to CSV: text neutralised (leading quote before formula text)."""
    if not isinstance(value, str):
        return value
    text = _UNSAFE_CONTROLS.sub("\ufffd", value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _as_csv(provenance: Provenance, table: list[list[object]]) -> Callable[[IO[bytes]], None]:
    def write(handle: IO[bytes]) -> None:
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerows([[_csv_cell(key), _csv_cell(value)] for key, value in provenance.items()])
        writer.writerow([])
        writer.writerows([_csv_cell(cell) for cell in line] for line in table)
        # UTF-8 with BOM: Excel opens it with the Chinese headers intact.
        handle.write(buffer.getvalue().encode("utf-8-sig"))

    return write


def _as_xlsx(
    provenance: Provenance, table: list[list[object]], errors: list[list[object]]
) -> Callable[[IO[bytes]], None]:
    def write(handle: IO[bytes]) -> None:
        from openpyxl import Workbook
        from openpyxl.styles import Alignment

        workbook = Workbook()
        sheet = workbook.active
        assert sheet is not None
        sheet.title = TABLE_SHEET
        _fill(sheet, table, header=True)
        _fill(workbook.create_sheet(ERRORS_SHEET), errors, header=True)
        about = workbook.create_sheet(PROVENANCE_SHEET)
        _fill(about, [list(item) for item in provenance.items()], header=False)
        about.column_dimensions["B"].width = 80
        for row in about.iter_rows(min_col=2, max_col=2):
            row[0].alignment = Alignment(wrap_text=True, vertical="top")
        workbook.save(handle)

    return write


def _fill(sheet: Worksheet, lines: list[list[object]], *, header: bool) -> None:
    """Append `lines` as safe cells; with `header`, the first is a frozen, filtered header row.
    Columns are sized to their longest text (a CJK character counts two)."""
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    widths: dict[int, int] = {}
    for line in lines:
        sheet.append([_UNSAFE_CONTROLS.sub("\ufffd", c) if isinstance(c, str) else c for c in line])
        for cell in sheet[sheet.max_row]:
            if isinstance(cell.value, str):
                # NOTE: openpyxl stores any text starting with "=" as a formula; this keeps
                # every text cell a string, and the quote prefix keeps Excel from re-reading it.
                cell.data_type = "s"
                cell.quotePrefix = cell.value.startswith(_FORMULA_START)
            widths[cell.column] = max(widths.get(cell.column, 0), _display_width(cell.value))
    for column, width in widths.items():
        sheet.column_dimensions[get_column_letter(column)].width = min(max(width + 2, 6), 60)
    if header and lines:
        sheet.freeze_panes = "A2"
        sheet.auto_filter.ref = f"A1:{get_column_letter(len(lines[0]))}{max(len(lines), 2)}"
        for cell in sheet[1]:
            cell.font = Font(bold=True)


def _display_width(value: object) -> int:
    text = "" if value is None else str(value)
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


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
