"""Tests for xiezhi.ids: normalisation and validation of resident IDs and credit codes.

Every valid example below was checked by hand against the standards, never against a
second implementation: 11010519491231002X is the GB 11643-1999 example, and the credit
codes in REAL_USCC are published ones (where each was read is noted beside it). Resident
IDs other than the standard's example are made up.
"""

from __future__ import annotations

import dataclasses
import random
import re
from datetime import date

import pytest

from xiezhi.errors import InvalidIdentifier, InvalidInput
from xiezhi.ids import (
    IdType,
    SubjectId,
    clean,
    normalise_resident_id,
    normalise_subject_id,
    normalise_uscc,
    organisation_code_check_char,
    resident_id_check_char,
    uscc_check_char,
)

TODAY = date(2026, 11, 21)

# --- check characters ---------------------------------------------------------------------

RESIDENT_CHECK_CHARS = [
    ("11010519491231002", "X"),  # GB 11643-1999 example
    ("13050319670401001", "6"),
    ("33080319850115001", "1"),
    ("42058219720603152", "6"),
    ("11010120000229003", "4"),
    ("33060219590817241", "4"),
    ("42050519880808888", "X"),
    ("32081319951001234", "5"),
]


@pytest.mark.parametrize(("first17", "expected"), RESIDENT_CHECK_CHARS)
def test_resident_id_check_char(first17: str, expected: str) -> None:
    assert resident_id_check_char(first17) == expected


USCC_CHECK_CHARS = [
    ("91350100M000100Y4", "3"),
    ("91110000802100433", "B"),
    ("91330803MA28F3K7X", "K"),
    ("92330803MA2E1N0L3", "X"),
    ("12330000470051726", "F"),
    ("91420582179745620", "4"),
]


@pytest.mark.parametrize(("first17", "expected"), USCC_CHECK_CHARS)
def test_uscc_check_char(first17: str, expected: str) -> None:
    assert uscc_check_char(first17) == expected


# GB 11714 bodies of the organisation codes inside REAL_USCC: letters count A=10 … Z=35,
# 11 - (sum mod 11), 10 written X and 11 written 0.
ORGANISATION_CHECK_CHARS = [
    ("19220382", "1"),
    ("71526726", "X"),
    ("42500615", "X"),
    ("40000062", "4"),
    ("70846113", "6"),
    ("M000100Y", "4"),
    ("MAKCUYD4", "6"),
    ("80210043", "3"),
]


@pytest.mark.parametrize(("body", "expected"), ORGANISATION_CHECK_CHARS)
def test_organisation_code_check_char(body: str, expected: str) -> None:
    assert organisation_code_check_char(body) == expected


@pytest.mark.parametrize("body", ["1922038", "192203821", "1922038a", "19220-82"])
def test_organisation_code_check_char_rejects_bad_bodies(body: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        organisation_code_check_char(body)
    assert caught.value.code == "uscc_bad_organisation_code"


@pytest.mark.parametrize(
    ("first17", "code"),
    [("1101051949123100", "bad_length"), ("1101051949123100X", "bad_characters")],
)
def test_resident_id_check_char_rejects_bad_input(first17: str, code: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        resident_id_check_char(first17)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("first17", "code"),
    [("91350100M000100Y", "uscc_bad_length"), ("91350100I000100Y4", "uscc_bad_characters")],
)
def test_uscc_check_char_rejects_bad_input(first17: str, code: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        uscc_check_char(first17)
    assert caught.value.code == code


# --- clean --------------------------------------------------------------------------------

CLEAN_CASES = [
    ("11010519491231002x", "11010519491231002X"),
    ("１１０１０５１９４９１２３１００２Ｘ", "11010519491231002X"),
    ("１１０１０５１９４９１２３１００２ｘ", "11010519491231002X"),
    (" 110105 19491231 002X ", "11010519491231002X"),
    ("110105-1949-1231-002X", "11010519491231002X"),
    ("\u3000110105\u00a019491231\t002X\n", "11010519491231002X"),
    ("'110105.19491231_002X", "11010519491231002X"),
    ('"110105,19491231，002X。"', "11010519491231002X"),
    ("110105、19491231·002X", "11010519491231002X"),
    ("“110105194912310 02X”", "11010519491231002X"),
    ("\ufeff\u200b11010519491231002X", "11010519491231002X"),
    ("－110105－19491231－002X", "11010519491231002X"),
    ("91350100m000100y43", "91350100M000100Y43"),
    ("", ""),
    (" -\u3000", ""),
]


@pytest.mark.parametrize(("raw", "expected"), CLEAN_CASES)
def test_clean(raw: str, expected: str) -> None:
    assert clean(raw) == expected


# --- resident ID numbers ------------------------------------------------------------------

VALID_RESIDENT = [
    ("11010519491231002X", "11010519491231002X"),
    ("11010519491231002x", "11010519491231002X"),
    ("１１０１０５１９４９１２３１００２Ｘ", "11010519491231002X"),
    ("110105 19491231 002x", "11010519491231002X"),
    ("110105-19491231-002X", "11010519491231002X"),
    ("\u300011010519491231002X\u00a0", "11010519491231002X"),
    ("330803198501150011", "330803198501150011"),
    ("420582197206031526", "420582197206031526"),
    ("110101200002290034", "110101200002290034"),  # born on a leap day
    ("330602195908172414", "330602195908172414"),
    ("42050519880808888X", "42050519880808888X"),
    ("42050519880808888x", "42050519880808888X"),
    ("320813199510012345", "320813199510012345"),
    # 15-digit numbers: insert "19" after the region code, append the check character.
    ("130503670401001", "130503196704010016"),
    ("130503 670401 001", "130503196704010016"),
    ("１３０５０３６７０４０１００１", "130503196704010016"),
    ("330803850115001", "330803198501150011"),
    ("420505880808888", "42050519880808888X"),
]


@pytest.mark.parametrize(("raw", "expected"), VALID_RESIDENT)
def test_normalise_resident_id_accepts(raw: str, expected: str) -> None:
    assert normalise_resident_id(raw, today=TODAY) == expected


INVALID_RESIDENT = [
    ("", "empty"),
    (" \u3000-", "empty"),
    ("11010519491231002", "bad_length"),
    ("1101051949123100200", "bad_length"),
    ("1305036704010", "bad_length"),
    ("11010519491231X02X", "bad_characters"),
    ("X10105194912310020", "bad_characters"),
    ("11010519491231002Y", "bad_characters"),
    ("1305036704010X1", "bad_characters"),
    ("13050367040100X", "bad_characters"),
    ("990105194912310023", "bad_region"),
    ("010105194912310023", "bad_region"),
    ("240105194912310023", "bad_region"),
    ("110105194902300020", "bad_birth_date"),  # 30 February
    ("110105190002290011", "bad_birth_date"),  # 1900 is no leap year
    ("110105194913010011", "bad_birth_date"),  # month 13
    ("110105189912310015", "bad_birth_date"),  # before 1900
    ("110105202611220011", "bad_birth_date"),  # after TODAY
    ("130503670230001", "bad_birth_date"),  # 15-digit, 30 February
    ("110105194912310021", "bad_check_character"),
    ("11010519491231002０", "bad_check_character"),
    ("330803198501150012", "bad_check_character"),
    ("420582197206031523", "bad_check_character"),
]


@pytest.mark.parametrize(("raw", "code"), INVALID_RESIDENT)
def test_normalise_resident_id_rejects(raw: str, code: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_resident_id(raw, today=TODAY)
    assert caught.value.code == code
    assert caught.value.status == 400
    assert caught.value.public_message


def test_birth_date_bound_is_the_today_parameter() -> None:
    born_today = "11010520261121001" + resident_id_check_char("11010520261121001")
    assert normalise_resident_id(born_today, today=TODAY) == born_today
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_resident_id(born_today, today=date(2026, 11, 20))
    assert caught.value.code == "bad_birth_date"


def test_earliest_birth_date_is_1900_01_01() -> None:
    first = "11010519000101001" + resident_id_check_char("11010519000101001")
    assert normalise_resident_id(first, today=TODAY) == first


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("110105194912310021", "校验码错误"),
        ("110105194902300020", "出生日期无效"),
        ("11010519491231002", "长度应为18位或15位"),
    ],
)
def test_public_messages_are_chinese_reasons(code: str, message: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_resident_id(code, today=TODAY)
    assert caught.value.public_message == message


# --- unified social credit codes ----------------------------------------------------------

# Published credit codes, each with where it was read. All of them have the full GB 32100
# structure; several are all digits, and two carry an organisation-code check character X.
REAL_USCC = [
    "914403001922038216",  # 华为技术有限公司: zh.wikipedia.org, 華為 (機構代碼)
    "91440300708461136T",  # 深圳市腾讯计算机系统有限公司: check-china.com example report 8
    "9144030071526726XG",  # 腾讯科技（深圳）有限公司: the company's published licence details
    "91110000710925462X",  # 中国石油天然气股份有限公司: GLEIF LEI 529900RPY4YG47TRSV05, registeredAs
    "91110000625905205U",  # 华能国际电力股份有限公司: GLEIF, registeredAs
    "91350000157987632G",  # 紫金矿业集团股份有限公司: GLEIF, registeredAs
    "911100006000650192",  # 北京吉野家快餐有限公司: seller on a published 增值税发票
    "12100000400000624D",  # 清华大学 (事业单位, registered by the state: 100000): its invoice header
    "1210000042500615X0",  # 复旦大学: published invoice header (organisation code check X)
    "12440300455752807L",  # 清华大学深圳国际研究生院: its published invoice header
    "11410182005291054B",  # 荥阳市司法局 (机关): 河南省郑州市中级人民法院（2019）豫01行终492号
    "11140800558745220K",  # 晋中市文化和旅游局 (机关): a published procurement contract
    "53100000500019795A",  # 中国社会福利基金会 (基金会): its published registration details
    "92361130MA386N427K",  # a 个体工商户 in 婺源县: its published contact page
    "91350100M000100Y43",
    "91110000802100433B",
    "12330000470051726F",
]

VALID_USCC = [
    *((code, code) for code in REAL_USCC),
    ("91350100m000100y43", "91350100M000100Y43"),
    ("9135 0100 M000 100Y 43", "91350100M000100Y43"),
    ("9135-0100-M000-100Y-43", "91350100M000100Y43"),
    ("９１３５０１００Ｍ０００１００Ｙ４３", "91350100M000100Y43"),
    ("1210000042500615x0", "1210000042500615X0"),
]


@pytest.mark.parametrize(("raw", "expected"), VALID_USCC)
def test_normalise_uscc_accepts(raw: str, expected: str) -> None:
    assert normalise_uscc(raw) == expected


def uscc(first16: str) -> str:
    """A made-up credit code: `first16` then its organisation-code and MOD 31 characters."""
    first17 = first16 + organisation_code_check_char(first16[8:16])
    return first17 + uscc_check_char(first17)


# Every authority and organisation type pair of GB 32100-2015 table 1 (see xiezhi/ids.py).
AUTHORITY_TYPE_PAIRS = [
    *("11", "12", "13", "19", "21", "29", "31", "32", "33", "34", "35", "39", "41", "49"),
    *("51", "52", "53", "59", "61", "62", "69", "71", "72", "79", "81", "89", "91", "92", "93"),
    *("A1", "A9", "N1", "N2", "N3", "N9", "Y1"),
]


@pytest.mark.parametrize("pair", AUTHORITY_TYPE_PAIRS)
def test_every_authority_and_type_pair_is_a_credit_code(pair: str) -> None:
    code = uscc(pair + "330803MA2D4K6L")
    assert normalise_uscc(code) == code
    assert normalise_subject_id(code, today=TODAY) == SubjectId(IdType.USCC, code)


def test_pairs_outside_the_table_are_refused() -> None:
    listed = set(AUTHORITY_TYPE_PAIRS)
    for authority in "0123456789ABCDEFGHJKLMNPQRTUWXY":
        for kind in "0123456789ABCDEFGHJKLMNPQRTUWXY":
            code = uscc(authority + kind + "330803MA2D4K6L")
            if authority + kind in listed:
                continue
            with pytest.raises(InvalidIdentifier) as caught:
                normalise_uscc(code)
            assert caught.value.code == "uscc_bad_authority", authority + kind


INVALID_USCC = [
    ("", "empty"),
    ("91350100M000100Y44", "uscc_bad_check_character"),
    ("91350100M000100Y34", "uscc_bad_organisation_code"),
    ("91110000802100433A", "uscc_bad_check_character"),
    ("91350100I000100Y43", "uscc_bad_characters"),
    ("91350100O000100Y43", "uscc_bad_characters"),
    ("91350100M000100Z43", "uscc_bad_characters"),
    ("91350100M000100S43", "uscc_bad_characters"),
    ("91350100M000100V43", "uscc_bad_characters"),
    ("衢州市恒达建材有限公司", "uscc_bad_characters"),
    ("91350100M000100Y4", "uscc_bad_length"),
    ("91350100M000100Y433", "uscc_bad_length"),
    # Each below is right in everything but the part its reason names.
    (uscc("94330803MA2D4K6L"), "uscc_bad_authority"),  # 工商 registers no type 4
    (uscc("Y2330803MA2D4K6L"), "uscc_bad_authority"),  # Y 其他 has type 1 only
    (uscc("B1330803MA2D4K6L"), "uscc_bad_authority"),  # no authority B
    (uscc("91000000MA2D4K6L"), "uscc_bad_region"),
    (uscc("91990100MA2D4K6L"), "uscc_bad_region"),
    (uscc("91103300MA2D4K6L"), "uscc_bad_region"),  # 10: only 100000, the state
    (uscc("913308A3MA2D4K6L"), "uscc_bad_region"),
    ("91330803MA2D4K6L1" + uscc_check_char("91330803MA2D4K6L1"), "uscc_bad_organisation_code"),
    ("914205821797456204", "uscc_bad_organisation_code"),
    ("9144030071526726XH", "uscc_bad_check_character"),
]


@pytest.mark.parametrize(("raw", "code"), INVALID_USCC)
def test_normalise_uscc_rejects(raw: str, code: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_uscc(raw)
    assert caught.value.code == code


def test_organisation_check_x_is_not_the_credit_check_x() -> None:
    # 9144030071526726XG: X is character 17 (GB 11714), G character 18 (MOD 31). Either
    # changed alone is caught by its own check.
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_uscc("91440300715267260" + uscc_check_char("91440300715267260"))
    assert caught.value.code == "uscc_bad_organisation_code"
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_uscc("9144030071526726XX")
    assert caught.value.code == "uscc_bad_check_character"


# --- auto-detection -----------------------------------------------------------------------

DETECTED = [
    ("11010519491231002x", IdType.RESIDENT, "11010519491231002X"),
    ("130503670401001", IdType.RESIDENT, "130503196704010016"),
    ("１３０５０３１９６７０４０１００１６", IdType.RESIDENT, "130503196704010016"),
    ("91350100m000100y43", IdType.USCC, "91350100M000100Y43"),
    ("91110000802100433B", IdType.USCC, "91110000802100433B"),
    *((code, IdType.USCC, code) for code in REAL_USCC),
    # Both a valid resident ID and a valid credit code (41 文化/外国在华文化中心, region
    # 130219, …): a valid resident ID is read as one.
    ("411302198501014578", IdType.RESIDENT, "411302198501014578"),
]


@pytest.mark.parametrize(("raw", "id_type", "value"), DETECTED)
def test_normalise_subject_id_detects_type(raw: str, id_type: IdType, value: str) -> None:
    assert normalise_subject_id(raw, today=TODAY) == SubjectId(id_type, value)


def test_the_doubly_valid_value_is_a_credit_code_too() -> None:
    # Guards the premise of the last DETECTED case.
    assert normalise_uscc("411302198501014578") == "411302198501014578"


# Resident IDs with one slip that nonetheless have a credit code's full structure (pair,
# region, organisation code, MOD 31): each was a company's "否" before. Each must come
# back as the resident-ID error it is.
RESIDENT_TYPOS_SHAPED_AS_CREDIT_CODES = [
    ("51130219700D084270", "bad_characters"),  # a letter typed in (511302197007084270)
    ("341202199407130789", "bad_check_character"),  # wrong check character (…0784)
    ("131102159206217311", "bad_birth_date"),  # 1952 typed 1592 (two neighbours swapped)
    ("411302200302309904", "bad_birth_date"),  # 30 February, check character recomputed
    ("911302194912264176", "bad_region"),  # region 41 keyed as 91, check character recomputed
]


@pytest.mark.parametrize(("raw", "code"), RESIDENT_TYPOS_SHAPED_AS_CREDIT_CODES)
def test_a_resident_id_typo_is_never_a_credit_code(raw: str, code: str) -> None:
    assert normalise_uscc(raw) == raw  # the premise: the structure alone would accept it
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_subject_id(raw, today=TODAY)
    assert caught.value.code == code


@pytest.mark.parametrize(("raw", "_"), RESIDENT_TYPOS_SHAPED_AS_CREDIT_CODES)
def test_the_id_type_reads_such_a_value_as_a_credit_code(raw: str, _: str) -> None:
    # What a list's 证件类型 column does when the value really is a credit code.
    assert normalise_subject_id(raw, today=TODAY, id_type=IdType.USCC) == SubjectId(IdType.USCC, raw)


DETECTION_ERRORS = [
    ("", "empty"),
    ("\u3000 ", "empty"),
    ("11010519491231002", "bad_length"),  # digits: the resident-ID reason
    ("1101051949123100X", "bad_length"),
    ("1305036704010X1", "bad_characters"),  # 15 characters: the resident-ID reason
    ("990105194912310023", "bad_region"),
    ("110105194902300021", "bad_birth_date"),
    ("110105194912310021", "bad_check_character"),
    # A real region and birth date with a wrong check character stays a resident-ID
    # error although the MOD 31 check happens to accept it.
    ("420582197206031523", "bad_check_character"),
    ("330803197707071239", "bad_check_character"),
    ("110105194912310B2X", "bad_characters"),  # a letter typed into a resident ID
    ("110105149912310025", "bad_birth_date"),  # 1949 typed 1499
    ("101105194912310025", "bad_region"),  # 11 typed 10
    ("91350100M000100Y44", "uscc_bad_check_character"),
    ("91350100I000100Y43", "uscc_bad_characters"),
    ("不详", "uscc_bad_characters"),
    ("91350100M000", "uscc_bad_length"),
    # All digits, but 91 is a credit code's authority and type, no province: its reason.
    ("914205821797456204", "uscc_bad_organisation_code"),
    ("914403001922038217", "uscc_bad_check_character"),
]


@pytest.mark.parametrize(("raw", "code"), DETECTION_ERRORS)
def test_normalise_subject_id_reports_the_plausible_reason(raw: str, code: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_subject_id(raw, today=TODAY)
    assert caught.value.code == code


def test_an_all_digit_credit_code_that_reads_as_a_resident_id_needs_its_type() -> None:
    # The documented price of the rule: 12 (机构编制/事业单位) is Tianjin's province code
    # and 19 in characters 7-8 a birth century, so this made-up all-digit credit code reads
    # as a resident ID with a wrong birth date. Its 证件类型 column reads it as what it is.
    code = "121101191234568092"
    assert normalise_uscc(code) == code
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_subject_id(code, today=TODAY)
    assert caught.value.code == "bad_birth_date"
    assert normalise_subject_id(code, today=TODAY, id_type=IdType.USCC) == SubjectId(IdType.USCC, code)


@pytest.mark.parametrize(
    ("raw", "id_type", "code"),
    [
        ("91350100M000100Y43", IdType.RESIDENT, "bad_characters"),
        ("914403001922038216", IdType.RESIDENT, "bad_region"),
        ("11010519491231002X", IdType.USCC, "uscc_bad_region"),
        ("230102198501150019", IdType.USCC, "uscc_bad_authority"),
        ("130503670401001", IdType.USCC, "uscc_bad_length"),
        ("", IdType.USCC, "empty"),
    ],
)
def test_a_given_type_gives_that_types_reason(raw: str, id_type: IdType, code: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_subject_id(raw, today=TODAY, id_type=id_type)
    assert caught.value.code == code


def test_a_given_type_accepts_that_type() -> None:
    assert normalise_subject_id("130503670401001", today=TODAY, id_type=IdType.RESIDENT) == SubjectId(
        IdType.RESIDENT, "130503196704010016"
    )
    assert normalise_subject_id("９１３５０１００ｍ０００１００ｙ４３", today=TODAY, id_type=IdType.USCC) == SubjectId(
        IdType.USCC, "91350100M000100Y43"
    )


# Regions whose city digits are a province code too (4113 南阳, 3412 阜阳, 3311 丽水, …): their
# resident IDs, slipped, fit the credit-code structure most often.
SLIP_REGIONS = ("411302", "341202", "331102", "321102", "511302", "131102", "110105", "330803")


def _valid_resident_ids(count: int) -> list[str]:
    rng = random.Random(20261121)
    ids = []
    for _ in range(count):
        born = date.fromordinal(rng.randrange(date(1920, 1, 1).toordinal(), date(2020, 1, 1).toordinal()))
        first17 = f"{rng.choice(SLIP_REGIONS)}{born:%Y%m%d}{rng.randrange(1000):03d}"
        ids.append(first17 + resident_id_check_char(first17))
    return ids


def _slips(value: str) -> list[str]:
    """Every value one slip away: one character changed (to a digit, X or a letter), or two
    neighbours swapped."""
    changed = [
        value[:at] + char + value[at + 1 :]
        for at in range(18)
        for char in "0123456789ABCDEFGHJKLMNPQRTUWXY"
        if char != value[at]
    ]
    swapped = [
        value[:at] + value[at + 1] + value[at] + value[at + 2 :] for at in range(17) if value[at] != value[at + 1]
    ]
    return changed + swapped


def test_no_single_slip_of_a_resident_id_is_read_as_anything_valid() -> None:
    # Exhaustive over every slip of 60 IDs (about 33,000 values): each is refused with a
    # resident-ID reason, never read as a credit code, never as another resident ID.
    for value in _valid_resident_ids(60):
        for slipped in _slips(value):
            with pytest.raises(InvalidIdentifier) as caught:
                normalise_subject_id(slipped, today=TODAY)
            assert not caught.value.code.startswith("uscc_"), (value, slipped)


def test_normalise_subject_id_threads_today() -> None:
    born_today = "11010520261121001" + resident_id_check_char("11010520261121001")
    assert normalise_subject_id(born_today, today=TODAY).id_type is IdType.RESIDENT
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_subject_id(born_today, today=date(2026, 1, 1))
    assert caught.value.code == "bad_birth_date"


def test_invalid_identifier_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        normalise_subject_id("123")


# --- nothing leaks ------------------------------------------------------------------------

ALL_INVALID = (
    [raw for raw, _ in INVALID_RESIDENT] + [raw for raw, _ in INVALID_USCC] + [raw for raw, _ in DETECTION_ERRORS]
)


def _digit_runs(raw: str) -> list[str]:
    return re.findall(r"[0-9]{3,}", clean(raw))


@pytest.mark.parametrize("raw", ALL_INVALID)
def test_errors_never_contain_the_identifier(raw: str) -> None:
    errors: list[InvalidIdentifier] = []
    for normalise in (normalise_resident_id, normalise_uscc, normalise_subject_id):
        try:
            normalise(raw)
        except InvalidIdentifier as caught:
            errors.append(caught)
    assert errors
    for error in errors:
        rendered = " ".join([error.public_message, error.code, str(error), repr(error)])
        rendered += " ".join(str(arg) for arg in error.args)
        for run in _digit_runs(raw):
            assert run not in rendered


# --- SubjectId ----------------------------------------------------------------------------


def test_oprf_input_is_domain_tag_type_and_value() -> None:
    resident = SubjectId(IdType.RESIDENT, "11010519491231002X")
    company = SubjectId(IdType.USCC, "91350100M000100Y43")
    assert resident.oprf_input() == b"xiezhi:v1:resident_id:11010519491231002X"
    assert company.oprf_input() == b"xiezhi:v1:uscc:91350100M000100Y43"


def test_repr_and_str_redact_the_value() -> None:
    subject = SubjectId(IdType.RESIDENT, "11010519491231002X")
    assert repr(subject) == "SubjectId(resident_id, <redacted>)"
    for rendered in (repr(subject), str(subject), f"{subject}", repr([subject])):
        assert "1949" not in rendered


def test_subject_id_is_frozen_hashable_and_slotted() -> None:
    subject = SubjectId(IdType.USCC, "91350100M000100Y43")
    with pytest.raises(dataclasses.FrozenInstanceError):
        subject.value = "91110000802100433B"  # type: ignore[misc]
    assert {subject, SubjectId(IdType.USCC, "91350100M000100Y43")} == {subject}
    assert not hasattr(subject, "__dict__")


@pytest.mark.parametrize("value", ["", "11010519491231002x", "1101051949123100", "１" * 18])
def test_subject_id_refuses_unnormalised_values(value: str) -> None:
    with pytest.raises(InvalidIdentifier):
        SubjectId(IdType.RESIDENT, value)
