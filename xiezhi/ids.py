"""Normalise and validate the identifiers a collision is keyed on.

Two identifier types exist (DOMAIN.md, "Identifiers"):

* the resident ID number (公民身份号码, GB 11643-1999): 6-digit region code, 8-digit birth
  date, 3-digit sequence, ISO 7064 MOD 11-2 check character; old 15-digit numbers are
  converted to 18 digits;
* the unified social credit code (统一社会信用代码, GB 32100-2015): registration authority,
  organisation type, the registering body's region code, a GB 11714 organisation code with
  its own check character, and a MOD 31 check character over a 31-symbol alphabet.

Agencies store these with lowercase x, full-width digits, spaces and stray punctuation, so
`clean()` folds those away first; anything that then fails validation raises
`InvalidIdentifier` and is reported with its row, never silently "fixed". Neither the
error's `public_message` nor its `code` ever carries the identifier or any part of it.

How `normalise_subject_id` reads a value whose type is not given (README, "How an ID is
read"): a valid resident ID is a resident ID; a value that reads as a resident ID with a
slip is a resident-ID error, never a credit code; only then may a value with a credit
code's full structure be a credit code. The check characters alone never decide.

Pure code: no I/O, and the clock is a parameter (`today`).
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from xiezhi.errors import InvalidIdentifier

__all__ = [
    "IdType",
    "SubjectId",
    "clean",
    "normalise_resident_id",
    "normalise_subject_id",
    "normalise_uscc",
    "organisation_code_check_char",
    "resident_id_check_char",
    "uscc_check_char",
]

_STRUCTURE = re.compile(r"[0-9A-Z]{18}")
_DIGITS = re.compile(r"[0-9]+")
_RESIDENT_18 = re.compile(r"[0-9]{17}[0-9X]")
_RESIDENT_PLAUSIBLE = re.compile(r"[0-9]+X?")


class IdType(enum.StrEnum):
    RESIDENT = "resident_id"  # 公民身份号码, GB 11643-1999
    USCC = "uscc"  # 统一社会信用代码, GB 32100-2015


@dataclass(frozen=True, slots=True, repr=False)
class SubjectId:
    """A normalised identifier: 18 characters, upper case, already validated."""

    id_type: IdType
    value: str

    def __post_init__(self) -> None:
        # Only a structural guard: full validation belongs to normalise_subject_id().
        if not isinstance(self.id_type, IdType) or not _STRUCTURE.fullmatch(self.value):
            raise InvalidIdentifier("证件号码格式错误", code="bad_subject_id")

    def oprf_input(self) -> bytes:
        """The exact bytes fed to the OPRF: domain tag, type and value, UTF-8."""
        return f"xiezhi:v1:{self.id_type.value}:{self.value}".encode()

    def __repr__(self) -> str:
        return f"SubjectId({self.id_type.value}, <redacted>)"


# --- check characters ---------------------------------------------------------------------

_RESIDENT_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_RESIDENT_CHECK_MAP = "10X98765432"  # indexed by (weighted sum mod 11)

_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # 31 symbols: no I, O, Z, S, V
_USCC_VALUE = {symbol: index for index, symbol in enumerate(_USCC_ALPHABET)}
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)

_ORGANISATION_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ORGANISATION_BODY = re.compile(r"[0-9A-Z]{8}")


def resident_id_check_char(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character of the first 17 digits of a resident ID.

    Raises InvalidIdentifier unless `first17` is exactly 17 ASCII digits.
    """
    if len(first17) != 17:
        raise InvalidIdentifier("长度应为18位或15位", code="bad_length")
    if not _DIGITS.fullmatch(first17):
        raise InvalidIdentifier("含有无效字符", code="bad_characters")
    total = sum(int(digit) * weight for digit, weight in zip(first17, _RESIDENT_WEIGHTS, strict=True))
    return _RESIDENT_CHECK_MAP[total % 11]


def uscc_check_char(first17: str) -> str:
    """GB 32100 MOD 31 check character of the first 17 characters of a credit code.

    Raises InvalidIdentifier unless `first17` is 17 symbols of the credit-code alphabet.
    """
    if len(first17) != 17:
        raise InvalidIdentifier("统一社会信用代码长度应为18位", code="uscc_bad_length")
    if any(symbol not in _USCC_VALUE for symbol in first17):
        raise InvalidIdentifier("统一社会信用代码含有无效字符", code="uscc_bad_characters")
    values = (_USCC_VALUE[symbol] for symbol in first17)
    total = sum(value * weight for value, weight in zip(values, _USCC_WEIGHTS, strict=True))
    return _USCC_ALPHABET[(31 - total % 31) % 31]


def organisation_code_check_char(body: str) -> str:
    """GB 11714 check character of an 8-character organisation code body (digits, A-Z).

    Letters count 10 (A) to 35 (Z); check = 11 - (weighted sum mod 11), 10 written X and
    11 written 0. Raises InvalidIdentifier unless `body` is 8 digits or capital letters.
    """
    if not _ORGANISATION_BODY.fullmatch(body):
        raise InvalidIdentifier("组织机构代码格式错误", code="uscc_bad_organisation_code")
    values = (int(char) if char.isdigit() else ord(char) - ord("A") + 10 for char in body)
    check = 11 - sum(value * weight for value, weight in zip(values, _ORGANISATION_WEIGHTS, strict=True)) % 11
    return {10: "X", 11: "0"}.get(check, str(check))


# --- cleaning -----------------------------------------------------------------------------

# Unicode categories dropped by clean(): separators (spaces, U+3000, NBSP), punctuation
# (- . _ , ' " ， 。 、 · …), control characters (tab, newline) and format characters
# (zero-width space, BOM) that spreadsheets leave behind.
_DROPPED_CATEGORIES = ("Z", "P", "Cc", "Cf")


def clean(raw: str) -> str:
    """Fold data-entry noise away: NFKC, drop spaces and punctuation, upper-case.

    NFKC turns full-width ０-９ and Ｘ into ASCII. No validation happens here.
    """
    if raw.isascii() and raw.isalnum():
        return raw.upper()  # the common case, and what the folding below would return
    folded = unicodedata.normalize("NFKC", raw)
    kept = (char for char in folded if not unicodedata.category(char).startswith(_DROPPED_CATEGORIES))
    return "".join(kept).upper()


# --- resident ID numbers ------------------------------------------------------------------

# First two digits of a real region code: the provinces, Taiwan, Hong Kong and Macao.
_PROVINCE_CODES = frozenset(
    {
        *("11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37"),
        *("41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64"),
        *("65", "71", "81", "82"),
    }
)
_EARLIEST_BIRTH = date(1900, 1, 1)
# Characters 7-8 of an 18-character resident ID: the century of a birth year (18xx is
# before _EARLIEST_BIRTH, but is still how a resident ID with a mistyped year looks).
_BIRTH_CENTURIES = frozenset({"18", "19", "20"})
# The characters each position of an 18-character resident ID may hold.
_RESIDENT_CHARS = ("0123456789",) * 17 + ("0123456789X",)


def normalise_resident_id(raw: str, *, today: date | None = None) -> str:
    """Return the 18-character upper-case form of a resident ID number.

    A 15-digit number gets "19" inserted after its region code and a computed check
    character. `today` (default: date.today()) bounds the birth date from above.

    Raises InvalidIdentifier with code empty, bad_length, bad_characters, bad_region,
    bad_birth_date or bad_check_character.
    """
    value = clean(raw)
    if not value:
        raise InvalidIdentifier("证件号码为空", code="empty")
    if len(value) == 15:
        if not _DIGITS.fullmatch(value):
            raise InvalidIdentifier("公民身份号码含有字母或其他无效字符", code="bad_characters")
        first17 = value[:6] + "19" + value[6:]
        value = first17 + resident_id_check_char(first17)
    elif len(value) != 18:
        raise InvalidIdentifier("长度应为18位或15位", code="bad_length")
    if not _RESIDENT_18.fullmatch(value):
        raise InvalidIdentifier("公民身份号码含有字母或其他无效字符", code="bad_characters")
    if not _has_province(value):
        raise InvalidIdentifier("行政区划代码无效", code="bad_region")
    if not _has_birth_date(value, today or date.today()):
        raise InvalidIdentifier("出生日期无效", code="bad_birth_date")
    if resident_id_check_char(value[:17]) != value[17]:
        raise InvalidIdentifier("校验码错误", code="bad_check_character")
    return value


def _has_province(value: str) -> bool:
    return value[:2] in _PROVINCE_CODES


def _has_birth_date(value: str, today: date) -> bool:
    digits = value[6:14]
    if not _DIGITS.fullmatch(digits):
        return False
    try:
        born = date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return False
    return _EARLIEST_BIRTH <= born <= today


def _is_resident_id(value: str, today: date) -> bool:
    """Whether an 18-character cleaned value is a valid resident ID (no exception)."""
    return (
        _RESIDENT_18.fullmatch(value) is not None
        and _has_province(value)
        and _has_birth_date(value, today)
        and resident_id_check_char(value[:17]) == value[17]
    )


# --- reading a value as a resident ID with a slip -----------------------------------------


def _reads_as_resident(value: str, today: date) -> bool:
    """Whether an invalid 18-character value is a resident ID with a slip, not a credit code.

    True when the value is 18 digits (the last may be X) with a birth century (18, 19, 20)
    in characters 7-8 and either a province code in characters 1-2 or a right MOD 11-2
    check character (so a wrong birth date or region keyed in with its check character
    recomputed is still a resident ID), or when one slip of the hand turns it into a valid
    resident ID: one character changed, or two neighbours swapped.

    NOTE: this errs towards the resident ID on purpose. A resident ID with one typo passes
    the MOD 31 check 1 time in 31 and, when its first four digits happen to fit, the whole
    credit-code structure about 1 time in 341: such a value must come back as an error,
    not as a company's "否". The price is that a rare all-digit credit code is refused too
    (README, "How an ID is read"); its list's 证件类型 column reads it as a credit code.
    """
    if (
        _RESIDENT_18.fullmatch(value)
        and value[6:8] in _BIRTH_CENTURIES
        and (_has_province(value) or resident_id_check_char(value[:17]) == value[17])
    ):
        return True
    return _one_slip_from_resident_id(value, today)


def _one_slip_from_resident_id(value: str, today: date) -> bool:
    """Whether changing one character, or swapping two neighbours, makes a valid resident ID."""
    if len(value) != 18:
        return False
    # Every broken part of the value must be touched by the slip: a character outside the
    # resident-ID alphabet, the province (characters 1-2), the birth date (characters 7-14).
    # Checking that first keeps this cheap for the credit codes that come here.
    broken = [frozenset({at}) for at, char in enumerate(value) if char not in _RESIDENT_CHARS[at]]
    if len(broken) > 1:
        return False  # a change mends one character, a swap at most one (an X moved last)
    if not _has_province(value):
        broken.append(frozenset({0, 1}))
    if not _has_birth_date(value, today):
        broken.append(frozenset(range(6, 14)))
    for at in range(18):
        if all(at in part for part in broken):
            for char in _RESIDENT_CHARS[at]:
                if char != value[at] and _is_resident_id(value[:at] + char + value[at + 1 :], today):
                    return True
    for at in range(17):
        if value[at] != value[at + 1] and all(at in part or at + 1 in part for part in broken):
            if _is_resident_id(value[:at] + value[at + 1] + value[at] + value[at + 2 :], today):
                return True
    return False


# --- unified social credit codes ----------------------------------------------------------

# GB 32100-2015 (and its 2016 amendment): registration authority (character 1) → the
# organisation types (character 2) that authority registers, as allocated for the standard. 1 机构编制: 1 机关,
# 2 事业单位, 3 中央编办直接管理机构编制的群众团体, 9 其他; 2 外交: 1 外国常驻新闻机构, 9 其他;
# 3 司法行政: 1 律师执业机构, 2 公证处, 3 基层法律服务所, 4 司法鉴定机构, 5 仲裁委员会, 9 其他;
# 4 文化: 1 外国在华文化中心, 9 其他; 5 民政: 1 社会团体, 2 民办非企业单位, 3 基金会, 9 其他;
# 6 旅游: 1 外国旅游部门常驻代表机构, 2 港澳台地区旅游部门常驻内地（大陆）代表机构, 9 其他;
# 7 宗教: 1 宗教活动场所, 2 宗教院校, 9 其他; 8 工会: 1 基层工会, 9 其他; 9 工商: 1 企业,
# 2 个体工商户, 3 农民专业合作社; A 中央军委改革和编制办公室: 1 军队事业单位, 9 其他;
# N 农业: 1 组级, 2 村级, 3 乡镇级集体经济组织, 9 其他; Y 其他: 1.
# Checked against the allocation as republished in "统一社会信用代码解析登记管理部门和机构类别"
# (https://blog.csdn.net/lh1424573495/article/details/108776492, the same text at
# http://ddrv.cn/?p=726373 and https://osuse.cn/post/10002590.html).
_ORGANISATION_TYPES: Mapping[str, str] = {
    "1": "1239",
    "2": "19",
    "3": "123459",
    "4": "19",
    "5": "1239",
    "6": "129",
    "7": "129",
    "8": "19",
    "9": "123",
    "A": "19",
    "N": "1239",
    "Y": "1",
}
# Characters 3-8: the region code of the registering body (GB/T 2260). Checked as far as
# the province: 100000 (the state: central bodies register there) or a real province code,
# followed by digits. County codes change every year, so a full table would refuse codes
# of districts newer than the table.
_USCC_REGION = re.compile(r"(100000|(?P<province>[0-9]{2})[0-9]{4})")


def normalise_uscc(raw: str) -> str:
    """Return the 18-character upper-case form of a unified social credit code.

    Checks the whole GB 32100 structure: an authority and organisation type pair that
    exists, a region code (see _USCC_REGION), a GB 11714 organisation code whose check
    character is right, and the MOD 31 check character.

    Raises InvalidIdentifier with code empty, uscc_bad_characters, uscc_bad_length,
    uscc_bad_authority, uscc_bad_region, uscc_bad_organisation_code or
    uscc_bad_check_character.
    """
    value = clean(raw)
    if not value:
        raise InvalidIdentifier("证件号码为空", code="empty")
    if any(symbol not in _USCC_VALUE for symbol in value):
        raise InvalidIdentifier("统一社会信用代码含有无效字符", code="uscc_bad_characters")
    if len(value) != 18:
        raise InvalidIdentifier("统一社会信用代码长度应为18位", code="uscc_bad_length")
    if value[1] not in _ORGANISATION_TYPES.get(value[0], ""):
        raise InvalidIdentifier("统一社会信用代码登记管理部门或机构类别代码无效", code="uscc_bad_authority")
    region = _USCC_REGION.fullmatch(value[2:8])
    if region is None or (region["province"] is not None and region["province"] not in _PROVINCE_CODES):
        raise InvalidIdentifier("统一社会信用代码登记管理机关行政区划码无效", code="uscc_bad_region")
    if organisation_code_check_char(value[8:16]) != value[16]:
        raise InvalidIdentifier("统一社会信用代码中的组织机构代码校验码错误", code="uscc_bad_organisation_code")
    if uscc_check_char(value[:17]) != value[17]:
        raise InvalidIdentifier("统一社会信用代码校验码错误", code="uscc_bad_check_character")
    return value


# --- reading a value of unknown type ------------------------------------------------------


def normalise_subject_id(raw: str, *, today: date | None = None, id_type: IdType | None = None) -> SubjectId:
    """Return the normalised SubjectId of `raw`, read as `id_type` or, if None, as detected.

    Given a type (a subject list's 证件类型 column), the value is that type or an error
    with that type's reason. Otherwise (README, "How an ID is read"):

    1. a valid resident ID is a resident ID;
    2. a value that reads as a resident ID with a slip (15 characters, or see
       _reads_as_resident) is an error with the resident-ID reason;
    3. a value with a credit code's full structure (normalise_uscc) is a credit code;
    4. anything else is an error: the resident-ID reason for digits (the last may be X)
       unless characters 1-2 are an authority and type pair but no province, the
       credit-code reason otherwise.

    Raises InvalidIdentifier (see normalise_resident_id and normalise_uscc for the codes).
    """
    today = today or date.today()
    value = clean(raw)
    if not value:
        raise InvalidIdentifier("证件号码为空", code="empty")
    if id_type is IdType.RESIDENT:
        return SubjectId(IdType.RESIDENT, normalise_resident_id(value, today=today))
    if id_type is IdType.USCC:
        return SubjectId(IdType.USCC, normalise_uscc(value))
    try:
        return SubjectId(IdType.RESIDENT, normalise_resident_id(value, today=today))
    except InvalidIdentifier as resident_error:
        if len(value) == 15 or _reads_as_resident(value, today):
            raise
        try:
            return SubjectId(IdType.USCC, normalise_uscc(value))
        except InvalidIdentifier as uscc_error:
            if _RESIDENT_PLAUSIBLE.fullmatch(value) and not _is_authority_not_province(value):
                raise resident_error from None
            raise uscc_error from None


def _is_authority_not_province(value: str) -> bool:
    """Characters 1-2 name a credit code's authority and type (91, 92, 93, 19, …), no province."""
    return len(value) >= 2 and value[1] in _ORGANISATION_TYPES.get(value[0], "") and not _has_province(value)
