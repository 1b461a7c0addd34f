"""Tests for devkit.demo.generate: the synthetic agency databases and procuratorate lists."""

from __future__ import annotations

import csv
import re
import sqlite3
from collections import Counter, defaultdict
from contextlib import closing
from pathlib import Path

import pytest

from devkit.demo.generate import AS_OF, GenerationSummary, generate
from devkit.reference import CAPABILITIES, expected_flags, normalised_key, subject_rows
from xiezhi.errors import InvalidIdentifier, InvalidInput
from xiezhi.ids import normalise_subject_id

SCHEMAS = {
    "court": {
        "enforcement_cases": [
            ("case_no", "TEXT"),
            ("debtor_id", "TEXT"),
            ("debtor_name", "TEXT"),
            ("applicant_id", "TEXT"),
            ("applicant_name", "TEXT"),
            ("amount_owed", "REAL"),
            ("status", "TEXT"),
            ("terminated_on", "TEXT"),
        ],
        "civil_cases": [
            ("case_no", "TEXT"),
            ("plaintiff_id", "TEXT"),
            ("plaintiff_name", "TEXT"),
            ("defendant_id", "TEXT"),
            ("outcome", "TEXT"),
            ("judgment_amount", "REAL"),
            ("performed", "INTEGER"),
            ("closed_on", "TEXT"),
        ],
    },
    "tax": {
        "tax_declarations": [
            ("taxpayer_id", "TEXT"),
            ("tax_year", "INTEGER"),
            ("income_type", "TEXT"),
            ("amount", "REAL"),
        ],
    },
    "housing_fund": {
        "hf_accounts": [
            ("holder_id", "TEXT"),
            ("status", "TEXT"),
            ("balance", "REAL"),
            ("updated_on", "TEXT"),
        ],
    },
    "civil_affairs": {
        "marriage_registrations": [
            ("person_id", "TEXT"),
            ("spouse_id", "TEXT"),
            ("kind", "TEXT"),
            ("registered_on", "TEXT"),
        ],
        "dibao_recipients": [("person_id", "TEXT"), ("since", "TEXT"), ("until", "TEXT")],
    },
}
ID_COLUMNS = {
    ("court", "enforcement_cases"): ("debtor_id", "applicant_id"),
    ("court", "civil_cases"): ("plaintiff_id", "defendant_id"),
    ("tax", "tax_declarations"): ("taxpayer_id",),
    ("housing_fund", "hf_accounts"): ("holder_id",),
    ("civil_affairs", "marriage_registrations"): ("person_id", "spouse_id"),
    ("civil_affairs", "dibao_recipients"): ("person_id",),
}
CASE_NO = re.compile(r"[（(](20\d\d)[）)](浙|鄂)\d{4}(执|执恢|民初|民终)\d+号")
ISO_DATE = re.compile(r"\d{4}-\d\d-\d\d")
DIRTY = {
    "lowercase x": re.compile(r"x"),
    "15 digits": re.compile(r"\s*[0-9]{15}\s*"),
    "full-width": re.compile(r"[０-９Ｘ]"),
    "whitespace": re.compile(r"[\s\u3000]"),
    "hyphen": re.compile(r"-"),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    """The default-size data set and its summary."""
    root = tmp_path_factory.mktemp("generated")
    return root, generate(root)


@pytest.fixture(scope="module")
def data_dir(data: tuple[Path, GenerationSummary]) -> Path:
    return data[0]


def _rows(data_dir: Path, agency: str, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(data_dir / "agencies" / f"{agency}.sqlite")) as connection:
        return connection.execute(sql).fetchall()


def _ids(data_dir: Path, agency: str, table: str) -> list[str]:
    """Every raw identifier stored in a table, one entry per identifier column and row."""
    return [
        str(value)
        for column in ID_COLUMNS[agency, table]
        for (value,) in _rows(data_dir, agency, f"SELECT {column} FROM {table}")
    ]


def _list_ids(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return [row["证件号码"] for row in csv.DictReader(handle)]


def _dump(data_dir: Path) -> dict[str, object]:
    dumped: dict[str, object] = {}
    for agency in SCHEMAS:
        with closing(sqlite3.connect(data_dir / "agencies" / f"{agency}.sqlite")) as connection:
            dumped[agency] = list(connection.iterdump())
    for name in ("subjects.csv", "applicants.csv"):
        dumped[name] = (data_dir / name).read_bytes()
    return dumped


def _reason(raw: str) -> str | None:
    try:
        normalise_subject_id(raw, today=AS_OF)
    except InvalidIdentifier as error:
        return error.code
    return None


# --- determinism and size -----------------------------------------------------------------


def test_same_seed_same_data_other_seed_other_data(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", seed=3, debtors=150)
    again = generate(tmp_path / "b", seed=3, debtors=150)
    other = generate(tmp_path / "c", seed=4, debtors=150)
    assert first == again
    assert _dump(tmp_path / "a") == _dump(tmp_path / "b")
    assert _dump(tmp_path / "a")["subjects.csv"] != _dump(tmp_path / "c")["subjects.csv"]
    assert other.subject_rows > 150


def test_generating_again_replaces_the_old_data(tmp_path: Path) -> None:
    generate(tmp_path, seed=5, debtors=120)
    generate(tmp_path, seed=6, debtors=100)
    fresh = generate(tmp_path / "fresh", seed=6, debtors=100)
    assert _dump(tmp_path) == _dump(tmp_path / "fresh")
    assert fresh.subject_rows == len(subject_rows(tmp_path / "subjects.csv"))


def test_default_size(data: tuple[Path, GenerationSummary]) -> None:
    # The size only: how long generating takes depends on the machine's load, a matter for bench/.
    _, summary = data
    assert 1200 < summary.subject_rows < 1400


def test_summary_counts_what_was_written(data: tuple[Path, GenerationSummary]) -> None:
    data_dir, summary = data
    for (agency, table), columns in ID_COLUMNS.items():
        key = f"{agency}.{table}"
        rows = _rows(data_dir, agency, f"SELECT {', '.join(columns)} FROM {table}")
        assert summary.table_rows[key] == len(rows)
        invalid = sum(1 for row in rows if any(_reason(str(value)) for value in row))
        assert summary.invalid_rows[key] == invalid
    subjects = subject_rows(data_dir / "subjects.csv")
    applicants = subject_rows(data_dir / "applicants.csv")
    assert (summary.subject_rows, summary.applicant_rows) == (len(subjects), len(applicants))
    for name, listed in (("subjects.csv", subjects), ("applicants.csv", applicants)):
        assert summary.invalid_rows[name] == sum(1 for _, _, key in listed if key is None)
    assert summary.invalid_total == sum(summary.invalid_rows.values())


# --- schemas and vocabularies -------------------------------------------------------------


@pytest.mark.parametrize("agency", sorted(SCHEMAS))
def test_exact_schemas(data_dir: Path, agency: str) -> None:
    tables = _rows(data_dir, agency, "SELECT name FROM sqlite_master WHERE type = 'table'")
    assert sorted(str(name) for (name,) in tables) == sorted(SCHEMAS[agency])
    for table, columns in SCHEMAS[agency].items():
        info = _rows(data_dir, agency, f"PRAGMA table_info({table})")
        assert [(row[1], row[2]) for row in info] == columns


def test_court_vocabularies(data_dir: Path) -> None:
    enforcement = _rows(data_dir, "court", "SELECT status, terminated_on FROM enforcement_cases")
    assert {status for status, _ in enforcement} == {"终本", "执行中", "执行完毕"}
    for status, terminated_on in enforcement:
        if status == "终本":
            assert isinstance(terminated_on, str) and ISO_DATE.fullmatch(terminated_on)
            assert terminated_on <= AS_OF.isoformat()
        else:
            assert terminated_on is None
    civil = _rows(data_dir, "court", "SELECT outcome, performed, closed_on FROM civil_cases")
    assert {outcome for outcome, _, _ in civil} == {"判决", "调解成功", "撤诉", "调解无效"}
    assert {performed for _, performed, _ in civil} == {0, 1}
    assert all(isinstance(closed, str) and ISO_DATE.fullmatch(closed) for *_, closed in civil)


def test_case_numbers_have_the_real_format(data_dir: Path) -> None:
    numbers = [
        str(case_no)
        for table in ("enforcement_cases", "civil_cases")
        for (case_no,) in _rows(data_dir, "court", f"SELECT case_no FROM {table}")
    ]
    assert all(CASE_NO.fullmatch(case_no) for case_no in numbers)
    assert any(case_no.startswith("（") for case_no in numbers)
    assert any(case_no.startswith("(") for case_no in numbers)
    words = {match[3] for case_no in numbers if (match := CASE_NO.fullmatch(case_no))}
    assert {"执", "民初"} <= words


def test_tax_and_housing_fund_vocabularies(data_dir: Path) -> None:
    tax = _rows(data_dir, "tax", "SELECT tax_year, income_type, amount FROM tax_declarations")
    assert {kind for _, kind, _ in tax} == {"工资薪金", "利息股息红利", "经营所得"}
    assert {year for year, _, _ in tax} == set(range(2019, 2026))
    assert any(amount == 0 for *_, amount in tax)
    accounts = _rows(data_dir, "housing_fund", "SELECT holder_id, status, balance FROM hf_accounts")
    assert {status for _, status, _ in accounts} == {"正常", "封存"}
    assert any(balance == 0 for *_, balance in accounts)
    holders = Counter(normalised_key(str(holder), today=AS_OF) for holder, _, _ in accounts)
    assert sum(1 for key, count in holders.items() if key and count >= 2) >= 5


def test_civil_affairs_vocabularies(data_dir: Path) -> None:
    registrations = _rows(
        data_dir,
        "civil_affairs",
        "SELECT person_id, kind, registered_on FROM marriage_registrations",
    )
    assert {kind for _, kind, _ in registrations} == {"结婚", "离婚"}
    divorces = [str(on) for _, kind, on in registrations if kind == "离婚"]
    assert min(divorces) < "2020-01-01" <= max(divorces)
    history: defaultdict[str, list[str]] = defaultdict(list)
    for person, kind, _ in registrations:
        if key := normalised_key(str(person), today=AS_OF):
            history[key].append(str(kind))
    assert any(kinds.count("结婚") >= 2 and "离婚" in kinds for kinds in history.values())
    dibao = _rows(data_dir, "civil_affairs", "SELECT since, until FROM dibao_recipients")
    assert any(until is None for _, until in dibao)
    assert any(until is not None and str(until) > str(since) for since, until in dibao)


def test_a_marriage_writes_a_row_for_each_spouse(data_dir: Path) -> None:
    rows = _rows(
        data_dir,
        "civil_affairs",
        "SELECT person_id, spouse_id, kind, registered_on FROM marriage_registrations",
    )
    events: Counter[tuple[frozenset[str | None], object, object]] = Counter()
    for person, spouse, kind, on in rows:
        pair = frozenset((normalised_key(str(person)), normalised_key(str(spouse))))
        if None not in pair:
            events[pair, kind, on] += 1
    assert events and Counter(events.values())[2] >= 0.95 * len(events)


# --- dirty and invalid identifiers --------------------------------------------------------


def test_dirty_spellings_in_agency_tables_and_lists(data_dir: Path) -> None:
    agency_ids = [raw for agency, table in ID_COLUMNS for raw in _ids(data_dir, agency, table)]
    for sample in (
        agency_ids,
        _list_ids(data_dir / "subjects.csv"),
        _list_ids(data_dir / "applicants.csv"),
    ):
        for kind, pattern in DIRTY.items():
            assert any(pattern.search(raw) for raw in sample), kind
    for agency, table in ID_COLUMNS:
        ids = _ids(data_dir, agency, table)
        assert sum(1 for raw in ids if raw != raw.strip().upper() or len(raw) != 18) >= 10


def test_one_person_spelled_differently_in_different_rows(data_dir: Path) -> None:
    spellings: defaultdict[str, set[str]] = defaultdict(set)
    for raw in _ids(data_dir, "tax", "tax_declarations"):
        if key := normalised_key(raw, today=AS_OF):
            spellings[key].add(raw)
    assert sum(1 for found in spellings.values() if len(found) >= 2) >= 20


def test_15_digit_numbers_only_for_people_born_last_century(data_dir: Path) -> None:
    for agency, table in ID_COLUMNS:
        for raw in _ids(data_dir, agency, table):
            if re.fullmatch(r"\s*[0-9]{15}\s*", raw) and (key := normalised_key(raw)):
                assert key.startswith("resident_id:") and key[18:20] == "19"


@pytest.mark.parametrize(("agency", "table"), sorted(ID_COLUMNS))
def test_invalid_ids_planted_in_every_table(data_dir: Path, agency: str, table: str) -> None:
    reasons = [reason for raw in _ids(data_dir, agency, table) if (reason := _reason(raw))]
    assert len(reasons) >= 3


@pytest.mark.parametrize("name", ["subjects.csv", "applicants.csv"])
def test_invalid_ids_planted_in_both_lists(data_dir: Path, name: str) -> None:
    reasons = [reason for raw in _list_ids(data_dir / name) if (reason := _reason(raw))]
    assert len(reasons) >= 3


def test_invalid_ids_are_real_mistakes(data_dir: Path) -> None:
    reasons = Counter(
        reason for agency, table in ID_COLUMNS for raw in _ids(data_dir, agency, table) if (reason := _reason(raw))
    )
    assert {"bad_check_character", "bad_birth_date"} <= set(reasons)


# --- the lists ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["subjects.csv", "applicants.csv"])
def test_lists_are_utf8_with_bom_and_chinese_headers(data_dir: Path, name: str) -> None:
    raw = (data_dir / name).read_bytes()
    assert raw.startswith("\ufeff案号,姓名,证件号码\r\n".encode())


def test_one_subject_row_per_terminated_case(data_dir: Path) -> None:
    terminated = _rows(data_dir, "court", "SELECT DISTINCT case_no FROM enforcement_cases WHERE status = '终本'")
    listed = [case_no for _, case_no, _ in subject_rows(data_dir / "subjects.csv")]
    assert sorted(listed) == sorted(str(case_no) for (case_no,) in terminated)
    applicants = [case_no for _, case_no, _ in subject_rows(data_dir / "applicants.csv")]
    assert sorted(applicants) == sorted(listed)


def test_subject_list_names_companies_and_repeat_debtors(data_dir: Path) -> None:
    with (data_dir / "subjects.csv").open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    keys = [normalised_key(row["证件号码"], today=AS_OF) for row in rows]
    companies = [row for row, key in zip(rows, keys, strict=True) if key and "uscc:" in key]
    assert 0.05 * len(rows) < len(companies) < 0.12 * len(rows)
    assert all(row["姓名"].endswith("公司") for row in companies)
    assert sum(1 for count in Counter(k for k in keys if k).values() if count >= 2) >= 20


def test_every_capability_matches_some_subjects_but_not_all(data_dir: Path) -> None:
    flags = expected_flags(data_dir)
    assert set(flags) == set(CAPABILITIES)
    subjects = [key for _, _, key in subject_rows(data_dir / "subjects.csv") if key]
    applicants = [key for _, _, key in subject_rows(data_dir / "applicants.csv") if key]
    for capability, flagged in flags.items():
        assert sum(1 for key in subjects if key in flagged) >= 10, capability
        assert sum(1 for key in subjects if key not in flagged) >= 10, capability
    assert sum(1 for key in applicants if key in flags["civil_affairs.dibao_recipient"]) >= 10
    unmatched = [key for key in subjects if not any(key in flagged for flagged in flags.values())]
    assert len(unmatched) >= 100


def test_agency_tables_hold_people_in_no_list(data_dir: Path) -> None:
    listed = {key for name in ("subjects.csv", "applicants.csv") for _, _, key in subject_rows(data_dir / name)}
    taxpayers = {normalised_key(raw) for raw in _ids(data_dir, "tax", "tax_declarations")}
    assert len(taxpayers - listed - {None}) >= 100


def test_small_data_set_still_plants_every_capability(tmp_path: Path) -> None:
    generate(tmp_path, seed=11, debtors=160)
    flags = expected_flags(tmp_path)
    subjects = {key for _, _, key in subject_rows(tmp_path / "subjects.csv") if key}
    for capability, flagged in flags.items():
        assert len(subjects & flagged) >= 3, capability


def test_a_database_url_for_an_agency_outside_the_roster_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no connector pension in the roster"):
        generate(tmp_path, seed=3, debtors=20, databases={"pension": f"sqlite:///{tmp_path / 'p.sqlite'}"})


def test_an_agency_given_a_url_is_written_there_with_the_rows_of_its_sqlite_file(tmp_path: Path) -> None:
    generate(tmp_path / "files", seed=3, debtors=40)
    url = f"sqlite:///{tmp_path / 'elsewhere.sqlite'}"
    generate(tmp_path / "url", seed=3, debtors=40, databases={"court": url})
    assert not (tmp_path / "url" / "agencies" / "court.sqlite").exists()
    for table in SCHEMAS["court"]:
        with closing(sqlite3.connect(tmp_path / "files" / "agencies" / "court.sqlite")) as files:
            expected = files.execute(f"SELECT * FROM {table}").fetchall()
        with closing(sqlite3.connect(tmp_path / "elsewhere.sqlite")) as written:
            assert written.execute(f"SELECT * FROM {table}").fetchall() == expected
