"""Purpose binding: every match request names why it is made, and on what legal basis.

A purpose is a court case number (案号, e.g. `（2023）浙0803执1234号`) or the id of a registered special
supervision action (专项监督活动, e.g. `ZX-330000-2025-01`) active on the request's day. Every refusal is an
InvalidInput with a stable `code`; no message echoes the purpose text, so an ID number typed into the wrong
field is never copied into a log. Pure: no I/O but `load_special_actions`, and the clock is a parameter.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from xiezhi.errors import InvalidInput

_malformed = partial(InvalidInput, code="purpose_malformed")
_invalid_action = partial(InvalidInput, code="special_action_invalid")
_FULL_WIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")
# 15 digits is the shortest (old-format) resident ID number: no purpose or legal basis needs such a run.
_ID_LIKE = re.compile(r"[0-9]{15,}")
_LEGAL_BASIS_MAX = 200

# --- case numbers (案号) ----------------------------------------------------------------

_EARLIEST_YEAR = 1990
_PARENTHESES = {"（": "）", "(": ")", "〔": "〕"}
_YEAR = re.compile(r"([（(〔])([0-9]{4})([）)〕])")
_SUPREME = "最高法"
# Province abbreviation → GB/T 2260 province code. 兵 (XPCC courts) has no region of its own.
_PROVINCES = {
    pair[0]: pair[1:]
    for pair in "京11 津12 冀13 晋14 蒙15 辽21 吉22 黑23 沪31 苏32 浙33 皖34 闽35 赣36 鲁37 豫41 鄂42 "
    "湘43 粤44 桂45 琼46 渝50 川51 贵52 云53 藏54 陕61 甘62 青63 宁64 新65".split()
}
_COURT = re.compile(rf"({_SUPREME}|兵|[{''.join(_PROVINCES)}])([0-9]*)")
# Case-type word, sequence, rest. The word runs up to the digits (or 号), so 执恢 is never read as 执.
_TAIL = re.compile(r"([^0-9号]*)([0-9]*)(.*)", re.DOTALL)
_CASE_TYPES = frozenset(
    "执 执恢 执异 执复 执监 执保 执协 执他 执外 民初 民终 民再 民申 民抗 民监 民特 民督 民催 民辖 民撤 "
    "破申 破 刑初 刑终 行初 行终 财保 诉保".split()
)


@dataclass(frozen=True, slots=True)
class CaseNumber:
    """`court` is the whole designation ("浙0803", "最高法", "兵09"), `court_code` its digits."""

    year: int
    court: str
    province_code: str | None
    court_code: str
    case_type: str
    sequence: int

    @property
    def region(self) -> str | None:
        """6-digit region code of the court's area ("330803", "330800", "330000"), or None."""
        if self.province_code is None:
            return None
        return self.province_code + self.court_code.ljust(4, "0")

    def canonical(self) -> str:
        """The number with full-width parentheses and ASCII digits: `（2023）浙0803执1234号`."""
        return f"（{self.year}）{self.court}{self.case_type}{self.sequence}号"


def parse_case_number(text: str, *, today: date) -> CaseNumber:
    """Parse a case number (outer whitespace stripped, full-width digits folded; year 1990..today.year).
    Raises InvalidInput (code purpose_malformed) naming the wrong part, never quoting the input."""
    value = text.strip().translate(_FULL_WIDTH_DIGITS)
    if any(char.isspace() for char in value):
        raise _malformed("案号中不得含有空白字符")
    year = _parse_year(value, today)
    prefix, court_code, end = _parse_court(value)
    case_type, sequence = _parse_tail(value[end:])
    return CaseNumber(year, prefix + court_code, _PROVINCES.get(prefix), court_code, case_type, sequence)


def _parse_year(value: str, today: date) -> int:
    match = _YEAR.match(value)
    if match is None:
        raise _malformed("案号应以括号括起的四位年份开头")
    opening, digits, closing = match.groups()
    if _PARENTHESES[opening] != closing:
        raise _malformed("案号年份的括号不配对")
    year = int(digits)
    if not _EARLIEST_YEAR <= year <= today.year:
        raise _malformed(f"案号年份应在{_EARLIEST_YEAR}年至{today.year}年之间")
    return year


def _parse_court(value: str) -> tuple[str, str, int]:
    """The court designation after the year: (最高法/兵/province, court code, end index)."""
    match = _COURT.match(value, 6)
    if match is None:
        raise _malformed("案号的法院代字无效：省份简称未知")
    prefix, court_code = match.groups()
    if prefix == _SUPREME and court_code:
        raise _malformed("案号中“最高法”之后不应有法院代码")
    if len(court_code) not in (0, 2, 4):
        raise _malformed("案号的法院代码应为2位或4位数字")
    return prefix, court_code, match.end()


def _parse_tail(rest: str) -> tuple[str, int]:
    """Case-type word and sequence, then 号 and nothing more."""
    match = _TAIL.fullmatch(rest)
    assert match is not None  # every string matches _TAIL
    case_type, digits, end = match.groups()
    if case_type not in _CASE_TYPES:
        raise _malformed("案号的案件类型代字无效")
    if not 1 <= len(digits) <= 7:
        raise _malformed("案号序号应为1至7位数字")
    if digits.startswith("0"):
        raise _malformed("案号序号不得以0开头")
    if not end.startswith("号"):
        raise _malformed("案号应以“号”字结尾")
    if end != "号":
        raise _malformed("案号在“号”字之后不应有其他字符")
    return case_type, int(digits)


# --- special supervision actions (专项监督活动) ------------------------------------------

_ACTION_ID = re.compile(r"ZX-([0-9]{6})-[0-9]{4}-[0-9]{2,3}")
_ORG_CODE = re.compile(r"[0-9]{6}")
_ACTION_FIELDS = frozenset({"id", "title", "organiser", "starts", "ends"})


@dataclass(frozen=True, slots=True)
class SpecialAction:
    """The organiser code in `id` must equal `organiser`. Raises InvalidInput (special_action_invalid)."""

    id: str
    title: str
    organiser: str
    starts: date
    ends: date

    def __post_init__(self) -> None:
        match = _ACTION_ID.fullmatch(self.id)
        if match is None:
            raise _invalid_action("id: must look like ZX-330000-2025-01")
        if not _ORG_CODE.fullmatch(self.organiser):
            raise _invalid_action("organiser: must be a 6-digit org code")
        if match.group(1) != self.organiser:
            raise _invalid_action("id: its organiser code differs from the organiser field")
        if not self.title.strip():
            raise _invalid_action("title: must not be empty")
        if self.ends < self.starts:
            raise _invalid_action("ends: must not be before starts")

    def active_on(self, day: date) -> bool:
        """True when `day` lies within starts..ends, both inclusive."""
        return self.starts <= day <= self.ends


class SpecialActionRegistry:
    """The registered actions, keyed by id. May be empty; duplicate ids are refused."""

    def __init__(self, actions: Iterable[SpecialAction]) -> None:
        self._actions: dict[str, SpecialAction] = {}
        for action in actions:
            if action.id in self._actions:
                raise _invalid_action(f"duplicate special action id {action.id}")
            self._actions[action.id] = action

    def get(self, action_id: str) -> SpecialAction | None:
        return self._actions.get(action_id)

    def __iter__(self) -> Iterator[SpecialAction]:
        return iter(sorted(self._actions.values(), key=lambda action: action.id))

    def __len__(self) -> int:
        return len(self._actions)

    def digest(self) -> str:
        """sha256 hex over a canonical JSON of the actions sorted by id; insertion order is irrelevant."""
        entries = [[a.id, a.title, a.organiser, a.starts.isoformat(), a.ends.isoformat()] for a in self]
        # The tag keeps this digest distinct from any other JSON list hashed into a policy version.
        payload = json.dumps(["xiezhi:special_actions:v1", entries], ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def parse_special_actions(raw: object, where: str) -> SpecialActionRegistry:
    """Build the registry from `{special_actions: [{id, title, organiser, starts, ends}, …]}`. Raises
    InvalidInput (code special_action_invalid) naming `where`, the entry index and the field."""
    if not isinstance(raw, dict) or set(raw) != {"special_actions"}:
        raise _invalid_action(f"{where}: must be a mapping with the single key special_actions")
    entries = raw["special_actions"]
    if not isinstance(entries, list):
        raise _invalid_action(f"{where}: special_actions must be a list (use [] for none)")
    actions = [_parse_action(entry, f"{where}: special_actions[{index}]") for index, entry in enumerate(entries)]
    try:
        return SpecialActionRegistry(actions)
    except InvalidInput as exc:
        raise _invalid_action(f"{where}: {exc.public_message}") from None


def _parse_action(entry: object, where: str) -> SpecialAction:
    if not isinstance(entry, dict):
        raise _invalid_action(f"{where}: must be a mapping")
    _check_fields(entry, where)
    try:
        return SpecialAction(**entry)
    except InvalidInput as exc:
        raise _invalid_action(f"{where}: {exc.public_message}") from None


def _check_fields(entry: dict[Any, Any], where: str) -> None:
    unknown = set(entry) - _ACTION_FIELDS
    if unknown:
        raise _invalid_action(f"{where}: unknown fields {sorted(map(str, unknown))}")
    missing = _ACTION_FIELDS - set(entry)
    if missing:
        raise _invalid_action(f"{where}: missing fields {sorted(missing)}")
    for field in ("id", "title", "organiser"):
        # YAML reads an unquoted 330000 as an int; refusing it keeps leading zeros from being lost.
        if not isinstance(entry[field], str):
            raise _invalid_action(f"{where}: {field}: must be a quoted string")
    for field in ("starts", "ends"):
        # YAML reads 2025-01-01 as a date; a datetime (a date subclass) would break active_on().
        if not isinstance(entry[field], date) or isinstance(entry[field], datetime):
            raise _invalid_action(f"{where}: {field}: must be a date like 2025-01-01")


def load_special_actions(path: Path) -> SpecialActionRegistry:
    """Read a special-actions YAML file (UTF-8). OSError propagates; bad content raises as above."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        raise _invalid_action(f"{path.name}: not valid YAML") from None
    return parse_special_actions(raw, path.name)


# --- classifying a purpose ----------------------------------------------------------------


class PurposeKind(StrEnum):
    CASE = "case"
    SPECIAL_ACTION = "special_action"


@dataclass(frozen=True, slots=True)
class Purpose:
    """`reference` is the canonical case number or the action id; `region` the court's area or organiser."""

    kind: PurposeKind
    reference: str
    region: str | None


def classify_purpose(text: str | None, registry: SpecialActionRegistry, *, today: date) -> Purpose:
    """A special action id if `text` starts with "ZX-", else a case number. Raises InvalidInput with code
    purpose_missing, purpose_malformed (first of all for any run of 15+ digits), special_action_unknown or
    special_action_inactive."""
    value = (text or "").strip().translate(_FULL_WIDTH_DIGITS)
    if not value:
        raise InvalidInput("未填写监督目的（案号或专项监督活动编号）", code="purpose_missing")
    if _ID_LIKE.search(value):
        raise _malformed("监督目的中不得含有15位以上的连续数字")
    if value.startswith("ZX-"):
        return _special_action_purpose(value, registry, today)
    case = parse_case_number(value, today=today)
    return Purpose(PurposeKind.CASE, case.canonical(), case.region)


def _special_action_purpose(value: str, registry: SpecialActionRegistry, today: date) -> Purpose:
    if not _ACTION_ID.fullmatch(value):
        raise _malformed("专项监督活动编号格式应为 ZX-330000-2025-01")
    # Safe to quote from here on: the value is exactly an id of the format above.
    action = registry.get(value)
    if action is None:
        raise InvalidInput(f"专项监督活动 {value} 未登记", code="special_action_unknown")
    if not action.active_on(today):
        raise InvalidInput(f"专项监督活动 {value} 不在有效期内", code="special_action_inactive")
    return Purpose(PurposeKind.SPECIAL_ACTION, action.id, action.organiser)


def holds_identifier(text: str) -> bool:
    """Whether free text holds a run of 15 or more digits (ASCII or full-width): an ID number's shape."""
    return bool(_ID_LIKE.search(text.translate(_FULL_WIDTH_DIGITS)))


def check_legal_basis(text: str | None) -> str:
    """Return the stripped text. Raises InvalidInput with code legal_basis_missing (empty) or
    legal_basis_invalid (over 200 characters, or a run of 15 or more ASCII or full-width digits)."""
    value = (text or "").strip()
    if not value:
        raise InvalidInput("未填写法律依据", code="legal_basis_missing")
    if len(value) > _LEGAL_BASIS_MAX:
        raise InvalidInput(f"法律依据不得超过{_LEGAL_BASIS_MAX}字", code="legal_basis_invalid")
    if holds_identifier(value):
        raise InvalidInput("法律依据中不得含有15位以上的连续数字", code="legal_basis_invalid")
    return value
