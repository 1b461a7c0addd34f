"""Tests for devkit/reference.py on a tiny hand-written agency data set with exact answers.

Every identifier below was checked by hand (ISO 7064 MOD 11-2, GB 32100 MOD 31); each
person appears under more than one spelling somewhere.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from devkit.reference import CAPABILITIES, expected_flags, normalised_key, subject_rows

A = "11010519491231002X"  # the GB 11643-1999 example
B = "130503196704010016"  # 15-digit 130503670401001
C = "330803198501150011"
D = "420582197206031526"  # 15-digit 420582720603152
E = "330602195908172414"
F = "42050519880808888X"
G = "320813199510012345"
H = "330681196303300022"
P = "330803197707071234"
Q = "110101200002290034"
R = "420500199011110050"
K = "91350100M000100Y43"  # companies
L = "91330803MA28F3K720"
BAD_CHECK = "110105194912310021"
BAD_DATE = "110105194902300020"

SCHEMAS = {
    "court": {
        "enforcement_cases": "case_no TEXT, debtor_id TEXT, debtor_name TEXT, applicant_id TEXT,"
        " applicant_name TEXT, amount_owed REAL, status TEXT, terminated_on TEXT",
        "civil_cases": "case_no TEXT, plaintiff_id TEXT, plaintiff_name TEXT, defendant_id TEXT,"
        " outcome TEXT, judgment_amount REAL, performed INTEGER, closed_on TEXT",
    },
    "tax": {"tax_declarations": "taxpayer_id TEXT, tax_year INTEGER, income_type TEXT, amount REAL"},
    "housing_fund": {"hf_accounts": "holder_id TEXT, status TEXT, balance REAL, updated_on TEXT"},
    "civil_affairs": {
        "marriage_registrations": "person_id TEXT, spouse_id TEXT, kind TEXT, registered_on TEXT",
        "dibao_recipients": "person_id TEXT, since TEXT, until TEXT",
    },
}


def _enforcement(case_no: str, debtor: str, status: str) -> tuple[object, ...]:
    terminated_on = "2023-06-01" if status == "终本" else None
    return (case_no, debtor, "某某", P, "申请人", 10000.0, status, terminated_on)


def _civil(plaintiff: str, outcome: str, performed: object, defendant: str = R) -> tuple[object, ...]:
    return (
        "（2022）浙0803民初567号",
        plaintiff,
        "原告",
        defendant,
        outcome,
        5000.0,
        performed,
        "2022-09-01",
    )


ROWS: dict[str, list[tuple[object, ...]]] = {
    "enforcement_cases": [
        # A: two 终本 cases under two spellings -> multiple.
        _enforcement("（2023）浙0803执1234号", "11010519491231002x", "终本"),
        _enforcement("(2022)浙0803执567号", "１１０１０５１９４９１２３１００２Ｘ", "终本"),
        # B: one 终本 case entered twice, old and new number -> not multiple.
        _enforcement("（2021）浙0803执88号", "130503670401001", "终本"),
        _enforcement("（2021）浙0803执88号", B, "终本"),
        # C: one 终本 case and one paid in full -> not multiple.
        _enforcement("（2020）浙0802执12号", "330803-19850115-0011", "终本"),
        _enforcement("（2019）浙0802执13号", C, "执行完毕"),
        # D: two cases still running -> not multiple.
        _enforcement("（2024）浙0803执1号", D, "执行中"),
        _enforcement("（2024）浙0803执2号", D, "执行中"),
        # K: a company in two 终本 cases -> multiple.
        _enforcement("（2019）浙0803执700号", "91350100m000100y43", "终本"),
        _enforcement("（2020）浙0803执恢9号", K, "终本"),
        # An invalid number in two 终本 cases -> skipped.
        _enforcement("（2021）浙0803执301号", BAD_CHECK, "终本"),
        _enforcement("（2021）浙0803执302号", BAD_CHECK, "终本"),
    ],
    "civil_cases": [
        _civil("11010519491231002X", "判决", 0),  # A
        _civil(" 330803 19850115 0011 ", "调解成功", "否"),  # C, performed as text
        _civil(D, "撤诉", 0),
        _civil(D, "判决", 1),
        _civil(E, "调解无效", 0),
        _civil(F.lower(), "判决", "false"),  # F
        _civil(H, "判决", 1, defendant=G),  # G is a losing defendant
        _civil(H, "调解成功", "0"),  # H, '0' stored in an INTEGER column
        _civil("91330803ma28f3k720", "判决", 0),  # L, a company
        _civil(BAD_CHECK, "判决", 0),
    ],
    "tax_declarations": [
        (A, 2023, "工资薪金", 5000.0),
        ("130503670401001", 2022, "工资薪金", 80000.0),  # B: wages only before 2023
        (B, 2019, "利息股息红利", 300.0),  # B: interest, any year
        (C, 2024, "工资薪金", 0.0),
        (C, 2021, "利息股息红利", 0.0),
        ("420582720603152", 2025, "工资薪金", 100.0),  # D
        (E, 2024, "经营所得", 50000.0),
        (BAD_DATE, 2024, "工资薪金", 9999.0),
    ],
    "hf_accounts": [
        (A, "正常", 1000.0, "2024-01-01"),
        ("１３０５０３１９６７０４０１００１６", "封存", 40000.0, "2023-05-01"),  # B
        (C, "封存", 0.0, "2023-05-01"),
        (C, "正常", 0.0, "2024-05-01"),
        (D, "正常", 0.0, "2024-05-01"),
        ("420582720603152", "封存", 12.5, "2020-05-01"),  # D's second, sealed account
        (E, "正常", 0.0, "2024-05-01"),
        (BAD_CHECK, "封存", 5000.0, "2024-05-01"),
    ],
    "marriage_registrations": [
        # A and E married in 2010, divorced in 2021.
        (A, E, "结婚", "2010-05-01"),
        (E, A.lower(), "结婚", "2010-05-01"),
        (A.lower(), E, "离婚", "2021-03-01"),
        (E, A, "离婚", "2021-03-01"),
        # B married P, divorced in 2015, married G in 2018.
        (B, P, "结婚", "2000-01-01"),
        (P, B, "结婚", "2000-01-01"),
        ("130503670401001", P, "离婚", "2015-06-01"),
        (P, B, "离婚", "2015-06-01"),
        (B, G, "结婚", "2018-08-08"),
        (G, "130503670401001", "结婚", "2018-08-08"),
        # C: 结婚 and 离婚 on one day -> not married; divorced since 2020.
        (C, Q, "结婚", "2022-02-02"),
        ("330803 198501150011", Q, "离婚", "2022-02-02"),
        # D and R: divorced on 2019-12-31, the day before the cut-off.
        (D, R, "结婚", "2012-10-01"),
        (R, D, "结婚", "2012-10-01"),
        ("420582720603152", R, "离婚", "2019-12-31"),
        (R, D, "离婚", "2019-12-31"),
        # F: divorced on 2020-01-01, the cut-off itself.
        (F.lower(), Q, "结婚", "2010-01-01"),
        (F, Q, "离婚", "2020-01-01"),
        # H: married to someone whose number is invalid.
        (H, BAD_CHECK, "结婚", "1990-01-01"),
        (BAD_DATE, A, "结婚", "2024-01-01"),
    ],
    "dibao_recipients": [
        (A, "2019-01-01", None),
        (B, "2015-01-01", "2020-01-01"),
        (C, "2012-01-01", "2016-01-01"),
        ("330803-19850115-0011", "2021-01-01", None),
        (BAD_CHECK, "2021-01-01", None),
    ],
}

EXPECTED = {
    "court.winning_plaintiff_unpaid": {A, C, F, H, L},
    "court.multiple_terminated": {A, K},
    "tax.wage_income_declared": {A, D},
    "tax.interest_income_declared": {B},
    "housing_fund.balance_positive": {A, B, D},
    "housing_fund.sealed_with_balance": {B, D},
    "civil_affairs.married": {B, G, H},
    "civil_affairs.divorced_since": {A, E, C, F},
    "civil_affairs.dibao_recipient": {A, C},
}


def _key(value: str) -> str:
    return f"uscc:{value}" if value in (K, L) else f"resident_id:{value}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "agencies").mkdir()
    for agency, tables in SCHEMAS.items():
        path = tmp_path / "agencies" / f"{agency}.sqlite"
        with closing(sqlite3.connect(path)) as connection, connection:
            for table, columns in tables.items():
                connection.execute(f"CREATE TABLE {table} ({columns})")
                marks = ", ".join("?" * len(columns.split(",")))
                connection.executemany(f"INSERT INTO {table} VALUES ({marks})", ROWS[table])
    return tmp_path


def test_capabilities_are_the_nine_defined() -> None:
    assert set(CAPABILITIES) == set(EXPECTED)


@pytest.mark.parametrize("capability", sorted(EXPECTED))
def test_expected_flags_exact(data_dir: Path, capability: str) -> None:
    flags = expected_flags(data_dir)
    assert flags[capability] == {_key(value) for value in EXPECTED[capability]}


def test_expected_flags_never_contain_invalid_numbers(data_dir: Path) -> None:
    flagged = set().union(*expected_flags(data_dir).values())
    assert not any(BAD_CHECK in key or BAD_DATE in key for key in flagged)


def test_expected_flags_needs_every_database(data_dir: Path) -> None:
    (data_dir / "agencies" / "tax.sqlite").unlink()
    with pytest.raises(FileNotFoundError):
        expected_flags(data_dir)


def test_expected_flags_leaves_the_databases_unchanged(data_dir: Path) -> None:
    before = {p.name: p.read_bytes() for p in (data_dir / "agencies").iterdir()}
    expected_flags(data_dir)
    assert {p.name: p.read_bytes() for p in (data_dir / "agencies").iterdir()} == before


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("11010519491231002x", f"resident_id:{A}"),
        ("130503670401001", f"resident_id:{B}"),
        ("９１３５０１００Ｍ０００１００Ｙ４３", f"uscc:{K}"),
        (BAD_CHECK, None),
        ("", None),
        (None, None),
        (110105194912310021, None),
    ],
)
def test_normalised_key(raw: object, key: str | None) -> None:
    assert normalised_key(raw) == key


@pytest.mark.parametrize(("encoding", "name_header"), [("utf-8-sig", "姓名"), ("utf-8", "名称")])
def test_subject_rows(tmp_path: Path, encoding: str, name_header: str) -> None:
    path = tmp_path / "subjects.csv"
    path.write_text(
        f"案号,{name_header},证件号码\r\n"
        "（2023）浙0803执1234号,张三,11010519491231002x\r\n"
        "\r\n"
        " (2022)浙0803执567号 ,某某建材有限公司,91350100m000100y43\r\n"
        f"（2021）浙0803执301号,李四,{BAD_CHECK}\r\n"
        "（2021）浙0803执88号,王五,130503 670401 001\r\n"
        "（2021）浙0803执89号,赵六\r\n",
        encoding=encoding,
    )
    assert subject_rows(path) == [
        (1, "（2023）浙0803执1234号", f"resident_id:{A}"),
        (2, "(2022)浙0803执567号", f"uscc:{K}"),
        (3, "（2021）浙0803执301号", None),
        (4, "（2021）浙0803执88号", f"resident_id:{B}"),
        (5, "（2021）浙0803执89号", None),
    ]


@pytest.mark.parametrize("header", ["案号,姓名,身份证号", "姓名,证件号码", "案号,证件号码", ""])
def test_subject_rows_refuses_unknown_headers(tmp_path: Path, header: str) -> None:
    path = tmp_path / "subjects.csv"
    path.write_text(header + "\r\n", encoding="utf-8")
    with pytest.raises(ValueError):
        subject_rows(path)
