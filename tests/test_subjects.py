"""Tests for requester.subjects: reading a list, the 证件类型 column, unreadable files, and a
100,000-row list with planted typos of every kind."""

from __future__ import annotations

import csv
import hashlib
import random
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pytest
from openpyxl import Workbook

from requester.report import CHINA_TIME, Provenance, write_errors
from requester.subjects import id_type_of, load_subjects, read_subjects
from xiezhi.errors import InvalidIdentifier, InvalidInput
from xiezhi.ids import IdType, organisation_code_check_char, resident_id_check_char, uscc_check_char

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


def _xlsx(path: Path, rows: list[list[object]]) -> Path:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


# --- the 证件类型 column ------------------------------------------------------------------

# 51130219700D084270: a resident ID with a letter typed in that has a credit code's full
# structure (tests/test_ids.py); 121101191234568092: an all-digit credit code that reads
# as a resident ID with a wrong birth date.
TYPED_ROWS = [
    ["案号", "名称", "证件类型", "证件号码"],
    ["（2023）浙0803执1号", "甲", "居民身份证", VALID],
    ["（2023）浙0803执2号", "乙", "统一社会信用代码", "91350100M000100Y43"],
    ["（2023）浙0803执3号", "丙", "营业执照", "121101191234568092"],
    ["（2023）浙0803执4号", "丁", "身份证", "91350100M000100Y43"],
    ["（2023）浙0803执5号", "戊", "组织机构代码", VALID],
    ["（2023）浙0803执6号", "己", "", "121101191234568092"],
    ["（2023）浙0803执7号", "庚", " 公民身份号码 ", OLD],
    ["（2023）浙0803执8号", "辛", "护照", VALID],
    ["（2023）浙0803执9号", "壬", "统一社会信用代码", "51130219700D084270"],
    ["（2023）浙0803执10号", "癸", "", "51130219700D084270"],
]


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_the_id_type_column_decides_the_reading(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"s{suffix}"
    if suffix == ".csv":
        _csv(path, TYPED_ROWS)
    else:
        _xlsx(path, [list[object](row) for row in TYPED_ROWS])
    valid, rejected = read_subjects(path)
    assert [(r.row, r.subject.id_type, r.subject.value) for r in valid] == [
        (1, IdType.RESIDENT, VALID),
        (2, IdType.USCC, "91350100M000100Y43"),
        (3, IdType.USCC, "121101191234568092"),
        (7, IdType.RESIDENT, "130503196704010016"),
        (9, IdType.USCC, "51130219700D084270"),
    ]
    assert [(r.row, r.code) for r in rejected] == [
        (4, "bad_characters"),  # read as a resident ID, as its type says
        (5, "uscc_bad_region"),  # read as a credit code, as its type says
        (6, "bad_birth_date"),  # no type: the all-digit value reads as a resident ID
        (8, "unknown_id_type"),
        (10, "bad_characters"),  # no type: a resident ID with a letter typed in
    ]
    unknown = rejected[3].reason
    assert "证件类型" in unknown and "护照" not in unknown


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("居民身份证", IdType.RESIDENT),
        ("身份证", IdType.RESIDENT),
        ("公民身份号码", IdType.RESIDENT),
        ("身份证号码", IdType.RESIDENT),
        ("统一社会信用代码", IdType.USCC),
        ("营业执照", IdType.USCC),
        ("组织机构", IdType.USCC),
        ("组织机构代码", IdType.USCC),
        ("统一 社会信用代码。", IdType.USCC),
        ("uscc", IdType.USCC),
        ("resident_id", IdType.RESIDENT),
        ("二代身份证", IdType.RESIDENT),
    ],
)
def test_id_type_spellings(label: str | None, expected: IdType | None) -> None:
    assert id_type_of(label) is expected


@pytest.mark.parametrize("label", ["护照", "港澳居民来往内地通行证", "军官证", "1", "=cmd|' /C calc'!A0"])
def test_an_unknown_id_type_is_an_error_that_does_not_repeat_it(label: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        id_type_of(label)
    assert caught.value.code == "unknown_id_type"
    assert label not in caught.value.public_message and label not in str(caught.value)


# --- files that cannot be read ------------------------------------------------------------


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "名单.csv"
    with pytest.raises(InvalidInput, match=r"名单\.csv: no such file"):
        read_subjects(missing)


def test_a_folder_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "lists.csv"
    folder.mkdir()
    with pytest.raises(InvalidInput, match=r"lists\.csv: is a folder"):
        read_subjects(folder)


def test_a_field_over_the_csv_limit_names_its_row(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    huge = "执" * (csv.field_size_limit() + 1)
    _csv(path, [["案号", "姓名", "证件号码"], ["（2023）浙0803执1号", "张三", VALID], [], [huge, "李四", VALID]])
    with pytest.raises(InvalidInput) as caught:
        read_subjects(path)
    message = caught.value.public_message
    assert message.startswith("s.csv: row 2 (line 4): a field is longer than")
    assert "执执" not in message


def test_a_nul_byte_names_its_row(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes("案号,姓名,证件号码\n（2023）浙0803执1号,张三,1101\x0005194912310\n".encode())
    with pytest.raises(InvalidInput, match=r"s\.csv: row 1 \(line 2\): holds a NUL character"):
        read_subjects(path)


def test_a_damaged_header_is_named(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes("案号,\x00姓名,证件号码\n".encode())
    with pytest.raises(InvalidInput, match=r"s\.csv: the header row \(line 1\)"):
        read_subjects(path)


def test_text_in_neither_encoding_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes("案号,姓名,证件号码\n".encode() + b"x,y,\x81\x30\xff\n")
    with pytest.raises(InvalidInput, match=r"s\.csv: line 2: not UTF-8 or GB18030 text"):
        read_subjects(path)


def test_a_damaged_workbook_is_named(tmp_path: Path) -> None:
    path = tmp_path / "s.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a workbook")
    with pytest.raises(InvalidInput, match=r"s\.xlsx: not a readable \.xlsx workbook"):
        read_subjects(path)


def test_the_list_is_named_by_its_digest(tmp_path: Path) -> None:
    path = _csv(tmp_path / "s.csv", [["案号", "姓名", "证件号码"], ["（2023）浙0803执1号", "张三", VALID]])
    listed = load_subjects(path)
    assert listed.name == "s.csv"
    assert listed.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


# --- 100,000 rows with planted typos ------------------------------------------------------

TODAY = date(2026, 11, 21)
PROVINCES = {
    *("11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41", "42"),
    *("43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71", "81", "82"),
}
# Regions whose city digits are a province code too: their typos fit a credit code best.
REGIONS = ("411302", "341202", "331102", "321102", "511302", "131102", "110105", "330803", "420582", "500118")
NOT_PROVINCES = ("00", "10", "19", "24", "29", "39", "49", "55", "66", "72", "80", "91", "92", "93", "99")
FULL_WIDTH = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")
PUBLISHED_USCC = ("914403001922038216", "911100006000650192", "12100000400000624D", "1210000042500615X0")


def _resident_reason(value: str) -> str:
    """The reason a resident ID fails, worked out here from GB 11643 alone."""
    if len(value) != 18:
        return "bad_length"
    if not re.fullmatch(r"[0-9]{17}[0-9X]", value):
        return "bad_characters"
    if value[:2] not in PROVINCES:
        return "bad_region"
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return "bad_birth_date"
    if not date(1900, 1, 1) <= born <= TODAY:
        return "bad_birth_date"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    check = "10X98765432"[sum(int(d) * w for d, w in zip(value[:17], weights, strict=True)) % 11]
    return "bad_check_character" if value[17] != check else "valid"


@dataclass
class _Planter:
    rng: random.Random

    def resident(self) -> str:
        born = date.fromordinal(self.rng.randrange(date(1930, 1, 1).toordinal(), date(2008, 1, 1).toordinal()))
        first17 = f"{self.rng.choice(REGIONS)}{born:%Y%m%d}{self.rng.randrange(1000):03d}"
        return first17 + resident_id_check_char(first17)

    def company(self) -> str:
        body = "MA" + "".join(self.rng.choices("0123456789ABCDEFGHJKLMNPQRTUWXY", k=6))
        first17 = "91" + self.rng.choice(REGIONS) + body + organisation_code_check_char(body)
        return first17 + uscc_check_char(first17)

    def spelled(self, value: str) -> str:
        """A valid value as agencies type it: full-width, spaced, lower case, or the old 15 digits."""
        roll = self.rng.random()
        if roll < 0.1:
            return value.translate(FULL_WIDTH)
        if roll < 0.2:
            return f" {value[:6]} {value[6:14]} {value[14:]}"
        if roll < 0.3:
            return value.lower()
        if roll < 0.4 and value.isdigit() and value[6:8] == "19":
            return value[:6] + value[8:17]
        return value

    def resident_typo(self, value: str, kind: int) -> tuple[str, str]:
        """(typed value, expected reason) for one kind of mistake in a resident ID."""
        rng, at = self.rng, self.rng.randrange(17)
        if kind == 0:  # impossible birth date, check character recomputed
            leap = int(value[6:10]) % 4 == 0  # no year of 1930-2007 is a century
            first17 = value[:10] + rng.choice(("0230", "1301", "0431", "0000", "1232", "0230" if leap else "0229"))
            first17 += value[14:17]
            if rng.random() < 0.2:
                first17 = value[:6] + rng.choice(("1899", "2031")) + value[10:17]
            return first17 + resident_id_check_char(first17), "bad_birth_date"
        if kind == 1:  # region that is no province, check character recomputed
            first17 = rng.choice(NOT_PROVINCES) + value[2:17]
            return first17 + resident_id_check_char(first17), "bad_region"
        if kind == 2:  # a letter typed in
            return value[:at] + rng.choice("ABCDEFGHIJKLMNOPQRSTUVWYZ") + value[at + 1 :], "bad_characters"
        if kind == 3:  # two different neighbours swapped
            at = rng.choice([at for at in range(17) if value[at] != value[at + 1]])
            typed = value[:at] + value[at + 1] + value[at] + value[at + 2 :]
            return typed, _resident_reason(typed)
        if kind == 4:  # one digit changed
            typed = value[:at] + rng.choice("0123456789".replace(value[at], "")) + value[at + 1 :]
            return typed, _resident_reason(typed)
        if kind == 5:  # wrong check character
            return value[:17] + rng.choice("0123456789X".replace(value[17], "")), "bad_check_character"
        if kind == 6:  # a digit lost or doubled
            typed = value[:at] + value[at + 1 :] if rng.random() < 0.5 else value[:at] + value[at] + value[at:]
            return typed, "bad_length"
        # full-width digits, fine in themselves, with a wrong check character
        typed = value[:17] + rng.choice("0123456789X".replace(value[17], ""))
        return typed.translate(FULL_WIDTH), "bad_check_character"

    def company_typo(self, value: str, kind: int) -> tuple[str, str]:
        rng = self.rng
        if kind == 0:
            return value[:17] + rng.choice(uscc_alphabet(value[17])), "uscc_bad_check_character"
        if kind == 1:  # organisation code check character wrong, MOD 31 recomputed
            first17 = value[:16] + rng.choice("0123456789X".replace(value[16], ""))
            return first17 + uscc_check_char(first17), "uscc_bad_organisation_code"
        if kind == 2:  # an authority and type pair that does not exist
            first17 = rng.choice(("94", "99", "22", "Y2", "B1", "15")) + value[2:17]
            return first17 + uscc_check_char(first17), "uscc_bad_authority"
        if kind == 3:  # a letter the alphabet leaves out
            at = rng.randrange(18)
            return value[:at] + rng.choice("IOZSV") + value[at + 1 :], "uscc_bad_characters"
        if kind == 4:  # a region that is none
            first17 = value[:2] + rng.choice(("000000", "990100", "103300")) + value[8:17]
            return first17 + uscc_check_char(first17), "uscc_bad_region"
        return value[:-1], "uscc_bad_length"


def uscc_alphabet(leave_out: str) -> str:
    return "0123456789ABCDEFGHJKLMNPQRTUWXY".replace(leave_out, "")


def _planted_list(path: Path, rows: int) -> dict[int, str]:
    """Write a list of `rows` rows, 5% of them with a planted mistake; return, per row, the
    normalised value it must read as, or "!" and the reason code it must be refused with."""
    planter = _Planter(random.Random(20261121))
    expected: dict[int, str] = {}
    records = [["案号", "姓名", "证件号码"]]
    for number in range(1, rows + 1):
        is_company = planter.rng.random() < 0.15
        value = planter.company() if is_company else planter.resident()
        if planter.rng.random() < 0.05:
            kind = planter.rng.randrange(6 if is_company else 8)
            typed, reason = (planter.company_typo if is_company else planter.resident_typo)(value, kind)
            expected[number] = "!" + reason
        else:
            if planter.rng.random() < 0.01:
                value = planter.rng.choice(PUBLISHED_USCC)
            typed, expected[number] = planter.spelled(value), value
        records.append([f"（2024）浙0803执{number}号", "某", typed])
    _csv(path, records)
    return expected


def test_no_planted_typo_in_100000_rows_reads_as_valid(tmp_path: Path) -> None:
    expected = _planted_list(tmp_path / "list.csv", 100_000)
    planted = {number: want[1:] for number, want in expected.items() if want.startswith("!")}
    assert 4_500 < len(planted) < 5_500
    assert {"bad_birth_date", "bad_region", "bad_characters", "bad_check_character", "bad_length"} <= set(
        planted.values()
    )

    listed = load_subjects(tmp_path / "list.csv", today=TODAY)

    # No planted value comes out as a valid row, and every valid one reads as itself.
    assert {row.row: row.subject.value for row in listed.valid} == {
        number: want for number, want in expected.items() if number not in planted
    }
    # Every planted value is refused with its own reason.
    assert {row.row: row.code for row in listed.rejected} == planted
    # And it is in the errors file, with its reason.
    provenance = Provenance(None, "m", listed.name, listed.sha256, datetime_now(), 0, 0, len(listed.rejected))
    errors = write_errors(tmp_path / "report.csv", listed.rejected, provenance)
    with errors.open(encoding="utf-8-sig", newline="") as handle:
        lines = list(csv.reader(handle))
    table = lines[lines.index([]) + 2 :]
    assert [(int(line[0]), line[2]) for line in table] == [(row.row, row.reason) for row in listed.rejected]
    assert all(line[2] for line in table)


def datetime_now() -> datetime:
    return datetime(2026, 11, 21, 10, 0, tzinfo=CHINA_TIME)
