"""Tests for xiezhi.ids: normalisation and validation of resident IDs and credit codes.

Every valid example below was checked by hand against the standards, never against a
second implementation: 11010519491231002X is the GB 11643-1999 example,
91350100M000100Y43 and 91110000802100433B are credit codes in public use.
"""

from __future__ import annotations

import dataclasses
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

VALID_USCC = [
    ("91350100M000100Y43", "91350100M000100Y43"),
    ("91110000802100433B", "91110000802100433B"),
    ("91330803MA28F3K7XK", "91330803MA28F3K7XK"),
    ("92330803MA2E1N0L3X", "92330803MA2E1N0L3X"),
    ("12330000470051726F", "12330000470051726F"),
    ("914205821797456204", "914205821797456204"),
    ("91350100m000100y43", "91350100M000100Y43"),
    ("9135 0100 M000 100Y 43", "91350100M000100Y43"),
    ("9135-0100-M000-100Y-43", "91350100M000100Y43"),
    ("９１３５０１００Ｍ０００１００Ｙ４３", "91350100M000100Y43"),
]


@pytest.mark.parametrize(("raw", "expected"), VALID_USCC)
def test_normalise_uscc_accepts(raw: str, expected: str) -> None:
    assert normalise_uscc(raw) == expected


INVALID_USCC = [
    ("", "empty"),
    ("91350100M000100Y44", "uscc_bad_check_character"),
    ("91350100M000100Y34", "uscc_bad_check_character"),
    ("91110000802100433A", "uscc_bad_check_character"),
    ("91350100I000100Y43", "uscc_bad_characters"),
    ("91350100O000100Y43", "uscc_bad_characters"),
    ("91350100M000100Z43", "uscc_bad_characters"),
    ("91350100M000100S43", "uscc_bad_characters"),
    ("91350100M000100V43", "uscc_bad_characters"),
    ("衢州市恒达建材有限公司", "uscc_bad_characters"),
    ("91350100M000100Y4", "uscc_bad_length"),
    ("91350100M000100Y433", "uscc_bad_length"),
]


@pytest.mark.parametrize(("raw", "code"), INVALID_USCC)
def test_normalise_uscc_rejects(raw: str, code: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_uscc(raw)
    assert caught.value.code == code


# --- auto-detection -----------------------------------------------------------------------

DETECTED = [
    ("11010519491231002x", IdType.RESIDENT, "11010519491231002X"),
    ("130503670401001", IdType.RESIDENT, "130503196704010016"),
    ("１３０５０３１９６７０４０１００１６", IdType.RESIDENT, "130503196704010016"),
    ("91350100m000100y43", IdType.USCC, "91350100M000100Y43"),
    ("91110000802100433B", IdType.USCC, "91110000802100433B"),
    # All digits, yet no resident ID (91 is no province code): a valid credit code.
    ("914205821797456204", IdType.USCC, "914205821797456204"),
]


@pytest.mark.parametrize(("raw", "id_type", "value"), DETECTED)
def test_normalise_subject_id_detects_type(raw: str, id_type: IdType, value: str) -> None:
    assert normalise_subject_id(raw, today=TODAY) == SubjectId(id_type, value)


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
    # error although the MOD 31 check happens to accept it as a credit code.
    ("420582197206031523", "bad_check_character"),
    ("330803197707071239", "bad_check_character"),
    ("91350100M000100Y44", "uscc_bad_check_character"),
    ("91350100I000100Y43", "uscc_bad_characters"),
    ("不详", "uscc_bad_characters"),
    ("91350100M000", "uscc_bad_length"),
]


@pytest.mark.parametrize(("raw", "code"), DETECTION_ERRORS)
def test_normalise_subject_id_reports_the_plausible_reason(raw: str, code: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalise_subject_id(raw, today=TODAY)
    assert caught.value.code == code


def test_resident_shaped_typo_would_pass_mod_31() -> None:
    # Guards the premise of the DETECTION_ERRORS cases above.
    assert normalise_uscc("420582197206031523") == "420582197206031523"
    assert normalise_uscc("330803197707071239") == "330803197707071239"


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
