"""Reading a procuratorate's subject list (CSV or XLSX) and validating every row.

Headers are Chinese: 案号 (case number) and 证件号码 (ID number or credit code) are
required; 证件类型 (居民身份证 or 统一社会信用代码, in a few spellings) may decide how a row's
ID is read, otherwise its type is detected (xiezhi.ids.normalise_subject_id); 姓名 or 名称
may be present: it is carried to the report's 被执行人 column, on this machine only, and
never sent. Rows are numbered 1-based over data rows (blank lines
are not data rows). A row whose ID fails validation is returned with its reason, never
dropped and never "fixed".

The file is read once, as bytes: its SHA-256 names the list in the report. A file that
cannot be read or parsed raises InvalidInput naming the file and, inside it, the row;
messages never quote a cell.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from xiezhi.errors import InvalidIdentifier, InvalidInput
from xiezhi.ids import IdType, SubjectId, clean, normalise_subject_id

CASE_HEADER = "案号"
ID_HEADER = "证件号码"
# Other headers agencies' exports use for the same column; 证件号码 is preferred.
ID_HEADER_ALIASES = ("身份证号码", "身份证号", "证件号", "统一社会信用代码")
TYPE_HEADERS = ("证件类型", "证件种类")
# Excel keeps 15 significant digits: an integer cell of up to 15 digits is exact.
EXACT_DIGITS = 15
NAME_HEADERS = ("姓名", "名称")

# 证件类型 values, compared after xiezhi.ids.clean (spaces and punctuation dropped). Since
# 2016 every registration certificate of an organisation carries its credit code.
ID_TYPE_NAMES: dict[str, IdType] = {
    **dict.fromkeys(
        (
            "居民身份证",
            "身份证",
            "公民身份号码",
            "公民身份证",
            "公民身份证号码",
            "身份证号码",
            "身份证号",
            "居民身份证号码",
            "中华人民共和国居民身份证",
            "第二代居民身份证",
            "二代身份证",
            "临时居民身份证",
            "RESIDENTID",  # IdType.RESIDENT's value, "resident_id", cleaned
        ),
        IdType.RESIDENT,
    ),
    **dict.fromkeys(
        (
            "统一社会信用代码",
            "社会信用代码",
            "信用代码",
            "统一社会信用代码证",
            "营业执照",
            "企业营业执照",
            "组织机构",
            "组织机构代码",
            "组织机构代码证",
            "事业单位法人证书",
            "社会团体法人登记证书",
            "民办非企业单位登记证书",
            "基金会法人登记证书",
            "USCC",
        ),
        IdType.USCC,
    ),
}


@dataclass(frozen=True)
class SubjectRow:
    row: int
    case_no: str
    subject: SubjectId = field(repr=False)
    name: str = field(default="", repr=False)  # 姓名 or 名称 as listed: for the report, never sent


@dataclass(frozen=True)
class RejectedRow:
    row: int
    case_no: str
    reason: str
    code: str = "invalid_identifier"  # the stable English reason code (InvalidIdentifier.code)
    name: str = field(default="", repr=False)


@dataclass(frozen=True)
class SubjectList:
    """A validated list: its file name and SHA-256, its valid and its rejected rows."""

    name: str
    sha256: str
    valid: list[SubjectRow]
    rejected: list[RejectedRow]


def load_subjects(path: Path, *, today: date | None = None) -> SubjectList:
    """Read and validate a subject list.

    Raises InvalidInput naming the file when it cannot be read, is no CSV or XLSX, lacks a
    required header, or a row cannot be parsed (naming the row).
    """
    data = _read_bytes(path)
    valid: list[SubjectRow] = []
    rejected: list[RejectedRow] = []
    for number, case_no, name, raw_type, raw_id in _data_rows(path, data):
        try:
            subject = normalise_subject_id(_cell_text(raw_id), today=today, id_type=id_type_of(raw_type))
        except InvalidIdentifier as exc:
            rejected.append(RejectedRow(number, case_no, exc.public_message, exc.code, name))
        else:
            valid.append(SubjectRow(number, case_no, subject, name))
    return SubjectList(path.name, hashlib.sha256(data).hexdigest(), valid, rejected)


def read_subjects(path: Path) -> tuple[list[SubjectRow], list[RejectedRow]]:
    """The valid and the rejected rows of a list (see load_subjects)."""
    subjects = load_subjects(path)
    return subjects.valid, subjects.rejected


def id_type_of(cell: object) -> IdType | None:
    """The type a 证件类型 cell names; None for a blank cell (the type is then detected).

    Raises InvalidIdentifier for a value it does not know; the message never repeats it.
    """
    label = clean("" if cell is None else str(cell))
    if not label:
        return None
    if label not in ID_TYPE_NAMES:
        raise InvalidIdentifier("证件类型无法识别：应为居民身份证或统一社会信用代码", code="unknown_id_type")
    return ID_TYPE_NAMES[label]


def _cell_text(raw_id: object) -> str:
    """The text of an ID cell; a number that may have lost digits is refused, not guessed."""
    if (
        isinstance(raw_id, bool)
        or isinstance(raw_id, float)
        or (isinstance(raw_id, int) and len(str(abs(raw_id))) > EXACT_DIGITS)
    ):
        raise InvalidIdentifier("证件号码以数值格式存储，可能已丢失位数，请设为文本", code="numeric_cell")
    return "" if raw_id is None else str(raw_id)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidInput(f"{path}: is a folder, not a subject list") from None
    except PermissionError:
        raise InvalidInput(f"{path}: permission denied") from None
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None


class _UnreadableRow(Exception):
    """A row the parser gave up on: what went wrong and, for CSV, the line it ends on."""

    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


def _data_rows(path: Path, data: bytes) -> Iterator[tuple[int, str, str, object, object]]:
    """(data row number, 案号, 姓名/名称, 证件类型 cell, 证件号码 cell) of every non-blank data row."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(path.name, data)
    elif suffix in (".xlsx", ".xlsm"):
        rows = _xlsx_rows(path.name, data)
    else:
        raise InvalidInput(f"{path.name}: subject lists are .csv or .xlsx files")
    number = 0
    header: list[object] | None = None
    try:
        header = next(rows, None)
        if header is None:
            raise InvalidInput(f"{path.name}: the file is empty")
        case_at, name_at, type_at, id_at = _columns(path.name, header)
        for cells in rows:
            if all(cell is None or str(cell).strip() == "" for cell in cells):
                continue
            number += 1
            case_no, name = _at(cells, case_at), _at(cells, name_at)
            yield (
                number, _text(case_no), _text(name), _at(cells, type_at), _at(cells, id_at),
            )  # fmt: skip
    except _UnreadableRow as exc:
        where = "the header row" if header is None else f"row {number + 1}"
        line = "" if exc.line is None else f" (line {exc.line})"
        raise InvalidInput(f"{path.name}: {where}{line}: {exc.problem}") from None


def _text(cell: object) -> str:
    return "" if cell is None else str(cell).strip()


def _columns(name: str, header: list[object]) -> tuple[int, int | None, int | None, int]:
    """The positions of 案号, 姓名 or 名称 and 证件类型 (None when absent), and the ID column."""
    columns = [str(cell).strip().lstrip("\ufeff") if cell is not None else "" for cell in header]
    id_header = next((h for h in (ID_HEADER, *ID_HEADER_ALIASES) if h in columns), ID_HEADER)
    for required in (CASE_HEADER, id_header):
        if required not in columns:
            raise InvalidInput(f"{name}: missing column {required} (headers: 案号, 姓名 or 名称, 证件号码)")
    type_at = next((columns.index(h) for h in TYPE_HEADERS if h in columns), None)
    name_at = next((columns.index(h) for h in NAME_HEADERS if h in columns), None)
    return columns.index(CASE_HEADER), name_at, type_at, columns.index(id_header)


def _at(cells: list[object], index: int | None) -> object:
    return cells[index] if index is not None and index < len(cells) else None


def _csv_rows(name: str, data: bytes) -> Iterator[list[object]]:
    # Excel on Chinese Windows saves CSV as GB18030 (GBK); everything else as UTF-8.
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
    else:
        raise InvalidInput(f"{name}: line {line}: not UTF-8 or GB18030 text")
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _UnreadableRow(_csv_problem(exc), reader.line_num) from None
        if any("\x00" in cell for cell in record):
            # Python's csv module lets NUL through; in a list it means binary or UTF-16 data.
            raise _UnreadableRow("holds a NUL character; save the list as CSV text (UTF-8)", reader.line_num)
        yield list(record)


def _csv_problem(exc: csv.Error) -> str:
    """What is wrong, in our words: csv.Error's text is not guaranteed to quote no data."""
    if "field larger than field limit" in str(exc):
        return f"a field is longer than {csv.field_size_limit()} characters; not a subject list row"
    return "malformed CSV (check quotes and stray control characters)"


def _xlsx_rows(name: str, data: bytes) -> Iterator[list[object]]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception:
        raise InvalidInput(f"{name}: not a readable .xlsx workbook") from None
    try:
        rows = workbook.worksheets[0].iter_rows(values_only=True)
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except Exception:
                # openpyxl parses the sheet lazily; any failure here is a damaged row.
                raise _UnreadableRow("the workbook cannot be read from here on") from None
            yield list(row)
    finally:
        workbook.close()
