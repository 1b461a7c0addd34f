"""Normalise and validate the identifiers a collision is keyed on.

Two identifier types exist (DOMAIN.md, "Identifiers"):

* the resident ID number (公民身份号码, GB 11643-1999): 6-digit region code, 8-digit birth
  date, 3-digit sequence, ISO 7064 MOD 11-2 check character; old 15-digit numbers are
  converted to 18 digits;
* the unified social credit code (统一社会信用代码, GB 32100-2015): 18 characters of a
  31-symbol alphabet, MOD 31 check character.

Agencies store these with lowercase x, full-width digits, spaces and stray punctuation, so
`clean()` folds those away first; anything that then fails validation raises
`InvalidIdentifier` and is reported with its row, never silently "fixed". Neither the
error's `public_message` nor its `code` ever carries the identifier or any part of it.

Pure code: no I/O, and the clock is a parameter (`today`).
"""

from __future__ import annotations

import enum
import re
import unicodedata
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


# --- cleaning -----------------------------------------------------------------------------

# Unicode categories dropped by clean(): separators (spaces, U+3000, NBSP), punctuation
# (- . _ , ' " ， 。 、 · …), control characters (tab, newline) and format characters
# (zero-width space, BOM) that spreadsheets leave behind.
_DROPPED_CATEGORIES = ("Z", "P", "Cc", "Cf")


def clean(raw: str) -> str:
    """Fold data-entry noise away: NFKC, drop spaces and punctuation, upper-case.

    NFKC turns full-width ０-９ and Ｘ into ASCII. No validation happens here.
    """
    folded = unicodedata.normalize("NFKC", raw)
    kept = (char for char in folded if not unicodedata.category(char).startswith(_DROPPED_CATEGORIES))
    return "".join(kept).upper()


# --- resident ID numbers ------------------------------------------------------------------

# First two digits of a real region code: the provinces, Taiwan, Hong Kong and Macao.
_PROVINCE_CODES = frozenset(
    {
        *(11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46),
        *(50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82),
    }
)
_EARLIEST_BIRTH = date(1900, 1, 1)


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
            raise InvalidIdentifier("含有无效字符", code="bad_characters")
        first17 = value[:6] + "19" + value[6:]
        value = first17 + resident_id_check_char(first17)
    elif len(value) != 18:
        raise InvalidIdentifier("长度应为18位或15位", code="bad_length")
    if not _RESIDENT_18.fullmatch(value):
        raise InvalidIdentifier("含有无效字符", code="bad_characters")
    _check_region_and_birth_date(value, today or date.today())
    if resident_id_check_char(value[:17]) != value[17]:
        raise InvalidIdentifier("校验码错误", code="bad_check_character")
    return value


def _check_region_and_birth_date(value: str, today: date) -> None:
    if int(value[:2]) not in _PROVINCE_CODES:
        raise InvalidIdentifier("行政区划代码无效", code="bad_region")
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        raise InvalidIdentifier("出生日期无效", code="bad_birth_date") from None
    if not _EARLIEST_BIRTH <= born <= today:
        raise InvalidIdentifier("出生日期无效", code="bad_birth_date")


def _is_resident_shaped(value: str, today: date) -> bool:
    """18 digits (last may be X) with a real region code and a real birth date."""
    if not _RESIDENT_18.fullmatch(value):
        return False
    try:
        _check_region_and_birth_date(value, today)
    except InvalidIdentifier:
        return False
    return True


# --- unified social credit codes ----------------------------------------------------------


def normalise_uscc(raw: str) -> str:
    """Return the 18-character upper-case form of a unified social credit code.

    Raises InvalidIdentifier with code empty, uscc_bad_characters, uscc_bad_length or
    uscc_bad_check_character.
    """
    value = clean(raw)
    if not value:
        raise InvalidIdentifier("证件号码为空", code="empty")
    if any(symbol not in _USCC_VALUE for symbol in value):
        raise InvalidIdentifier("统一社会信用代码含有无效字符", code="uscc_bad_characters")
    if len(value) != 18:
        raise InvalidIdentifier("统一社会信用代码长度应为18位", code="uscc_bad_length")
    if uscc_check_char(value[:17]) != value[17]:
        raise InvalidIdentifier("统一社会信用代码校验码错误", code="uscc_bad_check_character")
    return value


# --- auto-detection -----------------------------------------------------------------------


def normalise_subject_id(raw: str, *, today: date | None = None) -> SubjectId:
    """Detect the identifier type and return the normalised SubjectId.

    A valid resident ID wins; otherwise a valid credit code. If neither validates, the
    error of the more plausible type is raised: digits only (optionally ending in X) or
    15 characters give the resident-ID reason, anything else the credit-code reason.

    NOTE: an 18-character value with a real region code and a real birth date is decided
    as a resident ID even when its check character is wrong. One in 31 such typos would
    otherwise pass the MOD 31 check and be silently re-read as a company's credit code,
    instead of being reported back with its row.

    Raises InvalidIdentifier (see normalise_resident_id and normalise_uscc for the codes).
    """
    today = today or date.today()
    value = clean(raw)
    if not value:
        raise InvalidIdentifier("证件号码为空", code="empty")
    try:
        return SubjectId(IdType.RESIDENT, normalise_resident_id(value, today=today))
    except InvalidIdentifier as resident_error:
        if _is_resident_shaped(value, today):
            raise
        try:
            return SubjectId(IdType.USCC, normalise_uscc(value))
        except InvalidIdentifier as uscc_error:
            if len(value) == 15 or _RESIDENT_PLAUSIBLE.fullmatch(value):
                raise resident_error from None
            raise uscc_error from None
