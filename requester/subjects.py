"""Reading a procuratorate's subject list (CSV or XLSX) and validating every row.

Headers are Chinese: 案号 (case number) and 证件号码 (ID number or credit code) are
required; 姓名 or 名称 may be present and is never used. Rows are numbered 1-based over
data rows (blank lines are not data rows). A row whose ID fails validation is returned
with its reason, never dropped and never "fixed".
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from xiezhi.errors import InvalidIdentifier, InvalidInput
from xiezhi.ids import SubjectId, normalise_subject_id

CASE_HEADER = "案号"
ID_HEADER = "证件号码"
# Other headers agencies' exports use for the same column; 证件号码 is preferred.
ID_HEADER_ALIASES = ("身份证号码", "身份证号", "证件号", "统一社会信用代码")
# Excel keeps 15 significant digits: an integer cell of up to 15 digits is exact.
EXACT_DIGITS = 15
NAME_HEADERS = ("姓名", "名称")


@dataclass(frozen=True)
class SubjectRow:
    row: int
    case_no: str
    subject: SubjectId = field(repr=False)


@dataclass(frozen=True)
class RejectedRow:
    row: int
    case_no: str
    reason: str


def read_subjects(path: Path) -> tuple[list[SubjectRow], list[RejectedRow]]:
    """Read and validate a subject list; raises InvalidInput for an unreadable file or headers."""
    valid: list[SubjectRow] = []
    rejected: list[RejectedRow] = []
    for number, (case_no, raw_id) in enumerate(_data_rows(path), start=1):
        try:
            valid.append(SubjectRow(number, case_no, normalise_subject_id(_cell_text(raw_id))))
        except InvalidIdentifier as exc:
            rejected.append(RejectedRow(number, case_no, exc.public_message))
    return valid, rejected


def _cell_text(raw_id: object) -> str:
    """The text of an ID cell; a number that may have lost digits is refused, not guessed."""
    if (
        isinstance(raw_id, bool)
        or isinstance(raw_id, float)
        or (isinstance(raw_id, int) and len(str(abs(raw_id))) > EXACT_DIGITS)
    ):
        raise InvalidIdentifier("证件号码以数值格式存储，可能已丢失位数，请设为文本", code="numeric_cell")
    return "" if raw_id is None else str(raw_id)


def _data_rows(path: Path) -> Iterator[tuple[str, object]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(path)
    elif suffix in (".xlsx", ".xlsm"):
        rows = _xlsx_rows(path)
    else:
        raise InvalidInput(f"{path.name}: subject lists are .csv or .xlsx files")
    header = next(rows, None)
    if header is None:
        raise InvalidInput(f"{path.name}: the file is empty")
    columns = [str(cell).strip().lstrip("\ufeff") if cell is not None else "" for cell in header]
    id_header = next((h for h in (ID_HEADER, *ID_HEADER_ALIASES) if h in columns), ID_HEADER)
    for required in (CASE_HEADER, id_header):
        if required not in columns:
            raise InvalidInput(f"{path.name}: missing column {required} (headers: 案号, 姓名 or 名称, 证件号码)")
    case_at, id_at = columns.index(CASE_HEADER), columns.index(id_header)
    for cells in rows:
        if all(cell is None or str(cell).strip() == "" for cell in cells):
            continue
        case_no = cells[case_at] if case_at < len(cells) else None
        raw_id = cells[id_at] if id_at < len(cells) else None
        yield ("" if case_no is None else str(case_no).strip()), raw_id


def _csv_rows(path: Path) -> Iterator[list[object]]:
    data = path.read_bytes()
    # Excel on Chinese Windows saves CSV as GB18030 (GBK); everything else as UTF-8.
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise InvalidInput(f"{path.name}: not UTF-8 or GB18030 text")
    yield from csv.reader(io.StringIO(text, newline=""))


def _xlsx_rows(path: Path) -> Iterator[list[object]]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception:
        raise InvalidInput(f"{path.name}: not a readable .xlsx workbook") from None
    try:
        for row in workbook.worksheets[0].iter_rows(values_only=True):
            yield list(row)
    finally:
        workbook.close()
