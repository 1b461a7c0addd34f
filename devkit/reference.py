"""An independent reference answer: plain SQL over the raw agency tables, keyed on normalised IDs.

Written from the capability definitions alone, without any connector code, so the match
flags the gateway returns can be checked against it: by the tests (tests/agreement.py) and
by the compose topology's check (deploy/compose/check_report.py). Identifiers are normalised inside
SQLite by a registered function `norm(raw)` that returns "type:value" (e.g.
"resident_id:11010519491231002X") or NULL for a value that fails validation; such rows
are skipped.

Definitions (the contract):

- court.winning_plaintiff_unpaid: plaintiff of a civil case closed by 判决 or 调解成功 and
  not performed (performed 0, or the text '0', '否', 'false').
- court.multiple_terminated: debtor in two or more distinct 终本 case numbers, counted per
  normalised ID (different spellings of one person add up).
- tax.wage_income_declared: 工资薪金 with amount > 0 in a tax year >= 2023.
- tax.interest_income_declared: 利息股息红利 with amount > 0, any year.
- housing_fund.balance_positive: any account with balance > 0, whatever its status.
- housing_fund.sealed_with_balance: a 封存 account with balance > 0.
- civil_affairs.married: the latest registration of the person (over all their rows) is
  结婚; on a date tie 离婚 wins (a tie is no evidence of a current marriage).
- civil_affairs.divorced_since: any 离婚 registered on or after 2020-01-01.
- civil_affairs.dibao_recipient: any dibao_recipients row with until IS NULL.
"""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Mapping
from contextlib import closing
from datetime import date
from pathlib import Path

from xiezhi.errors import InvalidIdentifier
from xiezhi.ids import normalise_subject_id
from xiezhi.supervision import SupervisionModel

NAME_COLUMN = "被执行人（姓名/名称）"
NOT_CHECKED = "未核对（证件号码无效）"  # as the report says of a row whose ID failed validation

# capability id -> (agency database, SQL returning normalised subject ids in one column)
Queries = dict[str, tuple[str, str]]
REFERENCE_QUERIES: Queries = {
    "court.winning_plaintiff_unpaid": (
        "court",
        """
        SELECT norm(plaintiff_id) FROM civil_cases
        WHERE outcome IN ('判决', '调解成功')
          AND (performed = 0 OR lower(trim(CAST(performed AS TEXT))) IN ('0', '否', 'false'))
        """,
    ),
    "court.multiple_terminated": (
        "court",
        """
        SELECT subject FROM (
            SELECT norm(debtor_id) AS subject, case_no FROM enforcement_cases
            WHERE status = '终本'
        )
        WHERE subject IS NOT NULL
        GROUP BY subject
        HAVING COUNT(DISTINCT case_no) >= 2
        """,
    ),
    "tax.wage_income_declared": (
        "tax",
        """
        SELECT norm(taxpayer_id) FROM tax_declarations
        WHERE income_type = '工资薪金' AND amount > 0 AND tax_year >= 2023
        """,
    ),
    "tax.interest_income_declared": (
        "tax",
        """
        SELECT norm(taxpayer_id) FROM tax_declarations
        WHERE income_type = '利息股息红利' AND amount > 0
        """,
    ),
    "housing_fund.balance_positive": (
        "housing_fund",
        "SELECT norm(holder_id) FROM hf_accounts WHERE balance > 0",
    ),
    "housing_fund.sealed_with_balance": (
        "housing_fund",
        "SELECT norm(holder_id) FROM hf_accounts WHERE status = '封存' AND balance > 0",
    ),
    "civil_affairs.married": (
        "civil_affairs",
        """
        WITH registrations AS (
            SELECT norm(person_id) AS subject, kind, registered_on
            FROM marriage_registrations
        ),
        latest AS (
            SELECT subject, MAX(registered_on) AS registered_on
            FROM registrations WHERE subject IS NOT NULL
            GROUP BY subject
        )
        SELECT latest.subject
        FROM latest JOIN registrations
          ON registrations.subject = latest.subject
         AND registrations.registered_on = latest.registered_on
        GROUP BY latest.subject
        HAVING SUM(registrations.kind = '离婚') = 0 AND SUM(registrations.kind = '结婚') > 0
        """,
    ),
    "civil_affairs.divorced_since": (
        "civil_affairs",
        """
        SELECT norm(person_id) FROM marriage_registrations
        WHERE kind = '离婚' AND registered_on >= '2020-01-01'
        """,
    ),
    "civil_affairs.dibao_recipient": (
        "civil_affairs",
        "SELECT norm(person_id) FROM dibao_recipients WHERE until IS NULL",
    ),
}

CAPABILITIES = tuple(REFERENCE_QUERIES)


def normalised_key(raw: object, *, today: date | None = None) -> str | None:
    """The "type:value" key of a raw identifier, or None if it is missing or invalid."""
    if not isinstance(raw, str):
        return None
    try:
        subject = normalise_subject_id(raw, today=today)
    except InvalidIdentifier:
        return None
    return f"{subject.id_type}:{subject.value}"


def expected_flags(
    data_dir: Path, *, today: date | None = None, queries: Queries = REFERENCE_QUERIES
) -> dict[str, set[str]]:
    """Capability id -> normalised subject ids ("type:value") for which the answer is yes."""
    flags: dict[str, set[str]] = {}
    for capability, (agency, sql) in queries.items():
        database = data_dir / "agencies" / f"{agency}.sqlite"
        with closing(_connect_read_only(database, today)) as connection:
            rows = connection.execute(sql).fetchall()
        flags[capability] = {subject for (subject,) in rows if subject is not None}
    return flags


def _connect_read_only(database: Path, today: date | None) -> sqlite3.Connection:
    if not database.is_file():
        raise FileNotFoundError(database)
    connection = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
    connection.create_function("norm", 1, lambda raw: normalised_key(raw, today=today), deterministic=True)
    return connection


def subject_rows(csv_path: Path, *, today: date | None = None) -> list[tuple[int, str, str | None]]:
    """(1-based data row, 案号, normalised "type:value" or None) for each row of a list.

    Reads UTF-8 with or without a BOM; headers 案号, 姓名 or 名称, 证件号码. Blank lines
    are not data rows and are not numbered.
    """
    with csv_path.open(encoding="utf-8-sig", newline="") as handle:
        records = [record for record in csv.reader(handle) if any(c.strip() for c in record)]
    if not records:
        raise ValueError(f"{csv_path.name}: the file is empty")
    header = [cell.strip() for cell in records[0]]
    if "案号" not in header or "证件号码" not in header:
        raise ValueError(f"{csv_path.name}: headers must include 案号 and 证件号码")
    if "姓名" not in header and "名称" not in header:
        raise ValueError(f"{csv_path.name}: headers must include 姓名 or 名称")
    case_at, id_at = header.index("案号"), header.index("证件号码")
    return [
        (number, _cell(record, case_at).strip(), normalised_key(_cell(record, id_at), today=today))
        for number, record in enumerate(records[1:], start=1)
    ]


def _cell(record: list[str], at: int) -> str:
    return record[at] if at < len(record) else ""


def read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def read_report(path: Path) -> tuple[dict[str, str], list[list[str]]]:
    """A CSV report or errors file: its key,value block (which request, which list) and the
    table after the empty row (README, "The clue report")."""
    lines = read_csv(path)
    if [] not in lines:
        raise ValueError(f"{path.name}: no empty row between the report's header block and its table")
    blank = lines.index([])
    return dict((key, value) for key, value in lines[:blank]), lines[blank + 1 :]


def expected_report(
    data_dir: Path,
    model: SupervisionModel,
    subjects: Path,
    queries: Queries = REFERENCE_QUERIES,
    titles: Mapping[str, str] | None = None,
) -> tuple[list[list[str]], list[tuple[int, str]]]:
    """The report of `model` over the list `subjects` that the reference join predicts (its
    header row, then one row per row of the list: 线索, 行号, 案号, 姓名/名称, a flag per
    revealed capability; an invalid row says it was not checked and has no flags), and the
    (row, 案号) pairs it predicts invalid. `titles` are the capabilities' column titles (the
    Chinese titles the connectors publish; the ids where not given)."""
    flags = expected_flags(data_dir, queries=queries)
    names = subject_names(subjects)
    rows, invalid = [], []
    for number, case_no, key in subject_rows(subjects):
        name = names.get(number, "")
        if key is None:
            invalid.append((number, case_no))
            rows.append([NOT_CHECKED, str(number), case_no, name, *("" for _ in model.reveals)])
            continue
        subject_flags: dict[str, bool] = {capability: key in flags[capability] for capability in model.looks_up}
        clue = model.clue.evaluate(subject_flags)
        rows.append([_yes(clue), str(number), case_no, name, *(_yes(subject_flags[c]) for c in model.reveals)])
    columns = [(titles or {}).get(c, c) for c in model.reveals]
    return [["线索", "行号", "案号", NAME_COLUMN, *columns], *rows], invalid


def checked_rows(table: list[list[str]]) -> list[list[str]]:
    """The rows of a report's table (header first) that were checked: 线索 是 or 否."""
    return [row for row in table[1:] if row and row[0] in ("是", "否")]


def subject_names(csv_path: Path) -> dict[int, str]:
    """1-based data row → the list's 姓名 or 名称, as written (stripped)."""
    with csv_path.open(encoding="utf-8-sig", newline="") as handle:
        records = [record for record in csv.reader(handle) if any(c.strip() for c in record)]
    header = [cell.strip() for cell in records[0]] if records else []
    at = next((header.index(h) for h in ("姓名", "名称") if h in header), None)
    if at is None:
        return {}
    return {number: _cell(record, at).strip() for number, record in enumerate(records[1:], start=1)}


def _yes(value: bool) -> str:
    return "是" if value else "否"
