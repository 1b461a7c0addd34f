"""A small hand-built agency data set, unlike anything the generator writes.

Different storage habits (performed as 是/否 text, NULLs, duplicate rows, dates on the
boundary, a tie between a marriage and a divorce on one day, IDs in full-width digits,
15-digit form, lowercase x, hyphens and spaces, companies), with the expected answer for
each person written down by hand in `EXPECTED`.
"""

from __future__ import annotations

import csv
import sqlite3
from contextlib import closing
from pathlib import Path

from xiezhi.ids import resident_id_check_char, uscc_check_char


def rid(first17: str) -> str:
    return first17 + resident_id_check_char(first17)


def uscc(first17: str) -> str:
    return first17 + uscc_check_char(first17)


def full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isdigit() or c == "X" else c for c in text)


# People (normalised IDs). The 15-digit spelling exists for those born 19xx.
A = rid("33080319750312001")  # two 终本 cases, spelled two ways; winning plaintiff (判决, 否)
B = rid("42050219880709002")  # one 终本 case and one 执行中; wage 2024; housing fund sealed with balance
C = uscc("91330803MA2D4K6L9")  # company: two 终本 cases; interest income 2019
D = rid("11010519491231002")  # duplicate row of one 终本 case; plaintiff but performed 是; married then tie
E = rid("33082219650101003")  # divorced exactly 2020-01-01; dibao current
F = rid("33082219700215004")  # divorced 2019-12-31 then remarried 2021; dibao ended
G = rid("35010019901111005")  # nothing anywhere
BAD = "330803197503120019"  # wrong check character

# capability → normalised IDs for which the answer is yes, reasoned out by hand.
EXPECTED = {
    "court.winning_plaintiff_unpaid": {A},
    "court.multiple_terminated": {A, C},
    "tax.wage_income_declared": {B},
    "tax.interest_income_declared": {C},
    "housing_fund.balance_positive": {B, F},
    "housing_fund.sealed_with_balance": {B},
    "civil_affairs.married": {F},
    "civil_affairs.divorced_since": {D, E},
    "civil_affairs.dibao_recipient": {E},
}


def fifteen(value: str) -> str:
    return value[:6] + value[8:17]


def build(root: Path) -> Path:
    agencies = root / "agencies"
    agencies.mkdir(parents=True, exist_ok=True)
    _db(
        agencies / "court.sqlite",
        {
            "enforcement_cases(case_no TEXT, debtor_id TEXT, debtor_name TEXT, applicant_id TEXT, applicant_name TEXT,"
            " amount_owed REAL, status TEXT, terminated_on TEXT)": [
                ("(2021)浙0803执101号", fifteen(A), "甲某", E, "戊某", 52000.0, "终本", "2021-09-01"),
                ("（2022）浙0803执202号", A.lower().replace("x", "x"), "甲某", F, "己某", 8000.0, "终本", "2022-10-11"),
                (
                    "（2022）浙0803执203号",
                    f" {B[:6]}-{B[6:14]}-{B[14:]} ",
                    "乙某",
                    G,
                    "庚某",
                    3000.0,
                    "终本",
                    "2022-11-30",
                ),
                ("（2023）浙0803执301号", B, "乙某", G, "庚某", 1000.0, "执行中", None),
                ("（2023）浙0803执302号", C.lower(), "某某建材有限公司", E, "戊某", 99000.0, "终本", "2023-03-03"),
                ("（2023）浙0803执303号", full_width(C), "某某建材有限公司", F, "己某", 12000.0, "终本", "2023-04-04"),
                ("（2023）浙0803执304号", D, "丁某", E, "戊某", 500.0, "终本", "2023-05-05"),
                ("（2023）浙0803执304号", D, "丁某", E, "戊某", 500.0, "终本", "2023-05-05"),
                ("（2023）浙0803执305号", BAD, "无效", E, "戊某", 1.0, "终本", "2023-06-06"),
            ],
            "civil_cases(case_no TEXT, plaintiff_id TEXT, plaintiff_name TEXT, defendant_id TEXT, outcome TEXT,"
            " judgment_amount REAL, performed TEXT, closed_on TEXT)": [
                ("（2022）浙0803民初11号", full_width(A), "甲某", G, "判决", 30000.0, "否", "2022-05-01"),
                ("（2022）浙0803民初12号", D, "丁某", G, "调解成功", 2000.0, "是", "2022-06-01"),
                ("（2022）浙0803民初13号", B, "乙某", G, "撤诉", 1000.0, "否", "2022-07-01"),
                ("（2022）浙0803民初14号", E, "戊某", G, "调解无效", 1000.0, "否", "2022-08-01"),
                ("（2022）浙0803民初15号", F, "己某", G, "判决", 1000.0, None, "2022-09-01"),
            ],
        },
    )
    _db(
        agencies / "tax.sqlite",
        {
            "tax_declarations(taxpayer_id TEXT, tax_year INTEGER, income_type TEXT, amount REAL)": [
                (B, 2022, "工资薪金", 50000.0),
                (B.lower(), 2024, "工资薪金", 61000.0),
                (A, 2023, "工资薪金", 0.0),
                (A, 2021, "工资薪金", 40000.0),
                (C, 2019, "利息股息红利", 3000.0),
                (D, 2024, "经营所得", 9000.0),
                (E, 2024, "利息股息红利", 0.0),
            ],
        },
    )
    _db(
        agencies / "housing_fund.sqlite",
        {
            "hf_accounts(holder_id TEXT, status TEXT, balance REAL, updated_on TEXT)": [
                (B, "封存", 40000.0, "2023-01-01"),
                (F, "正常", 0.0, "2024-01-01"),
                (fifteen(F), "正常", 120.5, "2024-06-01"),
                (A, "封存", 0.0, "2022-01-01"),
                (BAD, "正常", 100.0, "2024-01-01"),
            ],
        },
    )
    _db(
        agencies / "civil_affairs.sqlite",
        {
            "marriage_registrations(person_id TEXT, spouse_id TEXT, kind TEXT, registered_on TEXT)": [
                (D, G, "结婚", "2001-01-01"),
                (D, G, "结婚", "2022-02-02"),
                (D, G, "离婚", "2022-02-02"),
                (E, G, "结婚", "1990-05-05"),
                (E, G, "离婚", "2020-01-01"),
                (F, G, "结婚", "1995-01-01"),
                (F, G, "离婚", "2019-12-31"),
                (fifteen(F), B, "结婚", "2021-07-07"),
            ],
            "dibao_recipients(person_id TEXT, since TEXT, until TEXT)": [
                (f"{E[:9]} {E[9:]}", "2021-01-01", None),
                (F, "2015-01-01", "2018-01-01"),
            ],
        },
    )
    _list(
        root / "subjects.csv",
        "姓名",
        [
            ("(2021)浙0803执101号", "甲某", fifteen(A)),
            ("（2022）浙0803执202号", "甲某", A.lower()),
            ("（2022）浙0803执203号", "乙某", full_width(B)),
            ("（2023）浙0803执302号", "某某建材有限公司", C.lower()),
            ("（2023）浙0803执304号", "丁某", D),
            ("（2023）浙0803执305号", "无效", BAD),
            ("（2023）浙0803执306号", "己某", f"{F[:6]} {F[6:]}"),
            ("（2023）浙0803执307号", "庚某", G),
            ("（2023）浙0803执308号", "空", ""),
        ],
    )
    _list(
        root / "applicants.csv",
        "名称",
        [
            ("(2021)浙0803执101号", "戊某", E),
            ("（2022）浙0803执202号", "己某", F),
            ("（2022）浙0803执203号", "庚某", G),
        ],
    )
    return root


def _db(path: Path, tables: dict[str, list[tuple[object, ...]]]) -> None:
    path.unlink(missing_ok=True)
    with closing(sqlite3.connect(path)) as connection:
        for definition, rows in tables.items():
            connection.execute(f"CREATE TABLE {definition}")
            name = definition.split("(", 1)[0]
            connection.executemany(f"INSERT INTO {name} VALUES ({', '.join('?' * len(rows[0]))})", rows)
        connection.commit()


def _list(path: Path, name_header: str, rows: list[tuple[str, str, str]]) -> None:
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["案号", name_header, "证件号码"])
        writer.writerows(rows)
