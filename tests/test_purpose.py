"""Tests for gateway.purpose: case numbers, special actions, purposes and legal bases."""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.purpose import (
    CaseNumber,
    Purpose,
    PurposeKind,
    SpecialAction,
    SpecialActionRegistry,
    check_legal_basis,
    classify_purpose,
    load_special_actions,
    parse_case_number,
    parse_special_actions,
)
from xiezhi.errors import InvalidInput

TODAY = date(2025, 6, 1)
SHIPPED = Path(__file__).resolve().parent.parent / "policies" / "special_actions.yaml"
RESIDENT_ID = "330803199001011234"

# --- case numbers -------------------------------------------------------------------------

VALID_CASE_NUMBERS = [
    pytest.param("（2023）浙0803执1234号", "（2023）浙0803执1234号", "330803", id="full-width"),
    pytest.param("(2023)浙0803执1234号", "（2023）浙0803执1234号", "330803", id="half-width"),
    pytest.param("〔2023〕浙08执恢12号", "（2023）浙08执恢12号", "330800", id="tortoise-shell"),
    pytest.param("（２０２３）浙０８０３执１２３４号", "（2023）浙0803执1234号", "330803", id="full-width-digits"),
    pytest.param("  （2023）浙执复5号 \n", "（2023）浙执复5号", "330000", id="high-court-stripped"),
    pytest.param("\u3000(2022)京0105民初12345号\u3000", "（2022）京0105民初12345号", "110105", id="ideographic-space"),
    pytest.param("（2021）沪01民终9999999号", "（2021）沪01民终9999999号", "310100", id="seven-digit-sequence"),
    pytest.param("（2024）最高法民申1号", "（2024）最高法民申1号", None, id="supreme-court"),
    pytest.param("（2020）兵09民终123号", "（2020）兵09民终123号", None, id="xpcc-intermediate"),
    pytest.param("（2019）兵执7号", "（2019）兵执7号", None, id="xpcc-bare"),
    pytest.param("（1990）鄂0582破1号", "（1990）鄂0582破1号", "420582", id="earliest-year"),
    pytest.param("（2025）浙0803执1号", "（2025）浙0803执1号", "330803", id="this-year"),
    pytest.param("（2025）浙8601执保3号", "（2025）浙8601执保3号", "338601", id="special-court-basic"),
    pytest.param("（2023）浙86诉保4号", "（2023）浙86诉保4号", "338600", id="special-court-intermediate"),
    pytest.param("（2025）粤03破申10号", "（2025）粤03破申10号", "440300", id="po-shen"),
    pytest.param("（2018）新40刑初2号", "（2018）新40刑初2号", "654000", id="xin"),
    pytest.param("（2023）苏05行终8号", "（2023）苏05行终8号", "320500", id="admin-appeal"),
    pytest.param("（2023）蒙02财保1号", "（2023）蒙02财保1号", "150200", id="property-preservation"),
    pytest.param("（2023）鄂0582执异20号", "（2023）鄂0582执异20号", "420582", id="enforcement-objection"),
]


@pytest.mark.parametrize(("text", "canonical", "region"), VALID_CASE_NUMBERS)
def test_valid_case_numbers(text: str, canonical: str, region: str | None) -> None:
    case = parse_case_number(text, today=TODAY)
    assert case.canonical() == canonical
    assert case.region == region


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("（2023）浙0803执1234号", CaseNumber(2023, "浙0803", "33", "0803", "执", 1234)),
        ("（2023）浙08执恢12号", CaseNumber(2023, "浙08", "33", "08", "执恢", 12)),
        ("（2023）浙民初3号", CaseNumber(2023, "浙", "33", "", "民初", 3)),
        ("（2024）最高法民申1号", CaseNumber(2024, "最高法", None, "", "民申", 1)),
        ("（2020）兵09民终123号", CaseNumber(2020, "兵09", None, "09", "民终", 123)),
    ],
)
def test_case_number_fields(text: str, expected: CaseNumber) -> None:
    assert parse_case_number(text, today=TODAY) == expected


INVALID_CASE_NUMBERS = [
    pytest.param("（1989）浙0803执1号", "年份应在", id="year-1989"),
    pytest.param("（2026）浙0803执1号", "年份应在", id="year-in-future"),
    pytest.param("（23）浙0803执1号", "四位年份", id="two-digit-year"),
    pytest.param("（20230）浙0803执1号", "四位年份", id="five-digit-year"),
    pytest.param("2023浙0803执1号", "四位年份", id="no-parentheses"),
    pytest.param("【2023】浙0803执1号", "四位年份", id="wrong-brackets"),
    pytest.param("（2023)浙0803执1号", "不配对", id="mismatched-parentheses"),
    pytest.param("（2023）港0803执1号", "省份简称", id="unknown-province"),
    pytest.param("（2023）X0803执1号", "省份简称", id="latin-province"),
    pytest.param("（2023）0803执1号", "省份简称", id="no-province"),
    pytest.param("（2023）浙080执1号", "法院代码", id="three-digit-court-code"),
    pytest.param("（2023）浙08031执1号", "法院代码", id="five-digit-court-code"),
    pytest.param("（2023）浙8执1号", "法院代码", id="one-digit-court-code"),
    pytest.param("（2023）最高法01民申1号", "最高法", id="supreme-with-digits"),
    pytest.param("（2023）浙0803执行1号", "案件类型", id="unknown-case-type"),
    pytest.param("（2023）浙0803刑再1号", "案件类型", id="unlisted-case-type"),
    pytest.param("（2023）浙08031号", "法院代码", id="case-type-missing-digits-run-on"),
    pytest.param("（2023）浙08号", "案件类型", id="case-type-missing"),
    pytest.param("（2023）浙0803执01号", "不得以0开头", id="leading-zero-sequence"),
    pytest.param("（2023）浙0803执0号", "不得以0开头", id="zero-sequence"),
    pytest.param("（2023）浙0803执12345678号", "1至7位", id="eight-digit-sequence"),
    pytest.param("（2023）浙0803执号", "1至7位", id="missing-sequence"),
    pytest.param("（2023）浙0803民初", "1至7位", id="ends-after-case-type"),
    pytest.param("（2023）浙0803执1234", "“号”字结尾", id="missing-hao"),
    pytest.param("（2023）浙0803执1234#", "“号”字结尾", id="wrong-terminator"),
    pytest.param("（2023）浙0803执1234号附件", "之后", id="trailing-junk"),
    pytest.param("（2023）浙0803执1234号号", "之后", id="double-hao"),
    pytest.param("（2023）浙0803 执1234号", "空白", id="embedded-space"),
    pytest.param("（2023）\u3000浙0803执1234号", "空白", id="embedded-ideographic-space"),
    pytest.param("", "四位年份", id="empty"),
]


@pytest.mark.parametrize(("text", "fragment"), INVALID_CASE_NUMBERS)
def test_invalid_case_numbers(text: str, fragment: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_case_number(text, today=TODAY)
    assert caught.value.code == "purpose_malformed"
    assert fragment in caught.value.public_message


def test_year_bound_follows_today() -> None:
    assert parse_case_number("（2026）浙0803执1号", today=date(2026, 1, 1)).year == 2026


# --- special actions ----------------------------------------------------------------------


def _action(action_id: str, organiser: str, starts: date, ends: date) -> SpecialAction:
    return SpecialAction(action_id, "民事执行“终本”案件专项监督", organiser, starts, ends)


REGISTRY = SpecialActionRegistry(
    [
        _action("ZX-330000-2025-01", "330000", date(2025, 1, 1), date(2026, 12, 31)),
        _action("ZX-330800-2025-002", "330800", date(2025, 7, 1), date(2026, 12, 31)),
        _action("ZX-330000-2024-03", "330000", date(2024, 4, 1), date(2024, 12, 31)),
    ]
)


@pytest.mark.parametrize(
    ("text", "today", "region"),
    [
        ("ZX-330000-2025-01", TODAY, "330000"),
        (" ZX-330000-2025-01\n", TODAY, "330000"),
        ("ZX-３３００００-2025-01", TODAY, "330000"),
        ("ZX-330000-2025-01", date(2025, 1, 1), "330000"),
        ("ZX-330000-2025-01", date(2026, 12, 31), "330000"),
        ("ZX-330800-2025-002", date(2025, 7, 1), "330800"),
        ("ZX-330000-2024-03", date(2024, 12, 31), "330000"),
    ],
)
def test_active_special_action(text: str, today: date, region: str) -> None:
    purpose = classify_purpose(text, REGISTRY, today=today)
    assert purpose == Purpose(PurposeKind.SPECIAL_ACTION, text.strip().replace("３", "3").replace("０", "0"), region)


@pytest.mark.parametrize(
    ("text", "today", "code"),
    [
        ("ZX-330000-2025-99", TODAY, "special_action_unknown"),
        ("ZX-420000-2025-01", TODAY, "special_action_unknown"),
        ("ZX-330800-2025-002", TODAY, "special_action_inactive"),  # before it starts
        ("ZX-330800-2025-002", date(2025, 6, 30), "special_action_inactive"),
        ("ZX-330000-2024-03", TODAY, "special_action_inactive"),  # after it ended
        ("ZX-330000-2025-01", date(2027, 1, 1), "special_action_inactive"),
        ("ZX-330000-2025-01", date(2024, 12, 31), "special_action_inactive"),
        ("ZX-33000-2025-01", TODAY, "purpose_malformed"),
        ("ZX-330000-25-01", TODAY, "purpose_malformed"),
        ("ZX-330000-2025-1", TODAY, "purpose_malformed"),
        ("ZX-330000-2025-0001", TODAY, "purpose_malformed"),
        ("ZX-330000-2025-01-x", TODAY, "purpose_malformed"),
        ("ZX-330000-2025-01 ZX-330000-2025-01", TODAY, "purpose_malformed"),
        ("ZX-", TODAY, "purpose_malformed"),
        ("zx-330000-2025-01", TODAY, "purpose_malformed"),
    ],
)
def test_refused_special_action(text: str, today: date, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        classify_purpose(text, REGISTRY, today=today)
    assert caught.value.code == code


# --- classifying a purpose ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reference", "region"),
    [
        ("(2023)浙0803执1234号", "（2023）浙0803执1234号", "330803"),
        ("  〔2024〕最高法民申1号 ", "（2024）最高法民申1号", None),
    ],
)
def test_case_purpose(text: str, reference: str, region: str | None) -> None:
    assert classify_purpose(text, REGISTRY, today=TODAY) == Purpose(PurposeKind.CASE, reference, region)


def test_case_purpose_with_empty_registry() -> None:
    purpose = classify_purpose("（2023）浙0803执1234号", SpecialActionRegistry([]), today=TODAY)
    assert purpose.kind is PurposeKind.CASE


@pytest.mark.parametrize("text", [None, "", "  ", "\u3000", "\n\t"])
def test_missing_purpose(text: str | None) -> None:
    with pytest.raises(InvalidInput) as caught:
        classify_purpose(text, REGISTRY, today=TODAY)
    assert caught.value.code == "purpose_missing"


@pytest.mark.parametrize(
    "text",
    [
        RESIDENT_ID,
        f"（2023）浙0803执1234号{RESIDENT_ID}",
        f"（2023）浙0803执1234号 {RESIDENT_ID}",
        f"身份证{RESIDENT_ID}",
        f"ZX-{RESIDENT_ID}",
        "（2023）浙0803执1234号 33080319900101123X",
        "３３０８０３１９９００１０１１２３４",
        "330803900101123",  # old 15-digit number
    ],
)
def test_id_like_digits_are_refused_without_echo(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        classify_purpose(text, REGISTRY, today=TODAY)
    assert caught.value.code == "purpose_malformed"
    for message in (caught.value.public_message, str(caught.value)):
        assert RESIDENT_ID not in message
        assert not re.search(r"[0-9０-９]{6,}", message)


def test_fourteen_digits_are_not_mistaken_for_an_id() -> None:
    with pytest.raises(InvalidInput) as caught:
        classify_purpose("（2023）浙0803执12345678901234号", REGISTRY, today=TODAY)
    assert caught.value.code == "purpose_malformed"
    assert "1至7位" in caught.value.public_message


# --- legal basis --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("《中华人民共和国民事诉讼法》第二百四十二条", "《中华人民共和国民事诉讼法》第二百四十二条"),
        ("  《人民检察院民事诉讼监督规则》第一百零六条\n", "《人民检察院民事诉讼监督规则》第一百零六条"),
        ("依据12345678901234", "依据12345678901234"),
        ("法" * 200, "法" * 200),
    ],
)
def test_valid_legal_basis(text: str, expected: str) -> None:
    assert check_legal_basis(text) == expected


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (None, "legal_basis_missing"),
        ("", "legal_basis_missing"),
        (" \u3000\n", "legal_basis_missing"),
        ("法" * 201, "legal_basis_invalid"),
        (f"依据{RESIDENT_ID}", "legal_basis_invalid"),
        ("123456789012345", "legal_basis_invalid"),
        ("依据１２３４５６７８９０１２３４５", "legal_basis_invalid"),
        ("依据1234567８９０１２３４５", "legal_basis_invalid"),
    ],
)
def test_refused_legal_basis(text: str | None, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_legal_basis(text)
    assert caught.value.code == code
    assert RESIDENT_ID not in caught.value.public_message


# --- the registry and its file ------------------------------------------------------------


def _entry(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": "ZX-330000-2025-01",
        "title": "涉企终本案件清理专项活动",
        "organiser": "330000",
        "starts": date(2025, 1, 1),
        "ends": date(2026, 12, 31),
    }
    entry.update(overrides)
    return entry


def test_parse_special_actions() -> None:
    second = _entry(id="ZX-330800-2025-02", organiser="330800", starts=date(2025, 3, 1), ends=date(2025, 3, 1))
    registry = parse_special_actions({"special_actions": [_entry(), second]}, "test")
    assert len(registry) == 2
    assert [action.id for action in registry] == ["ZX-330000-2025-01", "ZX-330800-2025-02"]
    action = registry.get("ZX-330800-2025-02")
    assert action is not None and action.starts == action.ends == date(2025, 3, 1)
    assert registry.get("ZX-330000-2025-99") is None


def test_empty_registry_is_allowed() -> None:
    assert len(parse_special_actions({"special_actions": []}, "test")) == 0


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (None, "single key"),
        ([], "single key"),
        ({"special_actions": [], "extra": 1}, "single key"),
        ({"special_actions": None}, "must be a list"),
        ({"special_actions": ["ZX-330000-2025-01"]}, "special_actions[0]: must be a mapping"),
        ({"special_actions": [_entry(), _entry()]}, "duplicate special action id ZX-330000-2025-01"),
        ({"special_actions": [_entry(), _entry(id="ZX-330000-2025-02", ends=date(2024, 12, 31))]}, "[1]: ends"),
        ({"special_actions": [_entry(organiser="33000")]}, "[0]: organiser"),
        ({"special_actions": [_entry(organiser="33000a")]}, "[0]: organiser"),
        ({"special_actions": [_entry(organiser=330000)]}, "[0]: organiser: must be a quoted string"),
        ({"special_actions": [_entry(organiser="420000")]}, "[0]: id: its organiser code"),
        ({"special_actions": [_entry(note="x")]}, "[0]: unknown fields ['note']"),
        ({"special_actions": [{k: v for k, v in _entry().items() if k != "ends"}]}, "[0]: missing fields ['ends']"),
        ({"special_actions": [_entry(title="")]}, "[0]: title"),
        ({"special_actions": [_entry(title="  ")]}, "[0]: title"),
        ({"special_actions": [_entry(title=None)]}, "[0]: title"),
        ({"special_actions": [_entry(id="ZX-330000-2025-1")]}, "[0]: id"),
        ({"special_actions": [_entry(id="330000-2025-01")]}, "[0]: id"),
        ({"special_actions": [_entry(starts=datetime(2025, 1, 1, 8, 0))]}, "[0]: starts"),
        ({"special_actions": [_entry(starts="2025-01-01")]}, "[0]: starts"),
        ({"special_actions": [_entry(ends="2026-12-31")]}, "[0]: ends"),
        ({"special_actions": [_entry(ends=20261231)]}, "[0]: ends"),
    ],
)
def test_invalid_special_actions(raw: object, fragment: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_special_actions(raw, "special_actions.yaml")
    assert caught.value.code == "special_action_invalid"
    assert caught.value.public_message.startswith("special_actions.yaml: ")
    assert fragment in caught.value.public_message


def test_registry_refuses_duplicate_ids() -> None:
    action = _action("ZX-330000-2025-01", "330000", date(2025, 1, 1), date(2026, 12, 31))
    with pytest.raises(InvalidInput) as caught:
        SpecialActionRegistry([action, action])
    assert caught.value.code == "special_action_invalid"


def test_special_action_checks_itself() -> None:
    with pytest.raises(InvalidInput) as caught:
        _action("ZX-330000-2025-01", "330000", date(2025, 2, 1), date(2025, 1, 31))
    assert caught.value.code == "special_action_invalid"


def test_digest_is_canonical() -> None:
    actions = list(REGISTRY)
    digest = REGISTRY.digest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert SpecialActionRegistry(reversed(actions)).digest() == digest
    assert SpecialActionRegistry(actions[:2]).digest() != digest
    assert SpecialActionRegistry([]).digest() != digest
    changed = SpecialAction(actions[0].id, actions[0].title, actions[0].organiser, actions[0].starts, date(2027, 1, 1))
    assert SpecialActionRegistry([changed, *actions[1:]]).digest() != digest


def test_shipped_special_actions_load() -> None:
    registry = load_special_actions(SHIPPED)
    assert 3 <= len(registry) <= 4
    assert {action.organiser for action in registry} >= {"330000", "330800", "420000"}
    active = [action for action in registry if action.active_on(date(2026, 12, 31))]
    assert {action.organiser for action in active} == {"330000", "330800", "420000"}
    assert not any(action.active_on(date(2027, 1, 1)) for action in registry)
    assert any(action.ends == date(2024, 12, 31) for action in registry)
    assert classify_purpose("ZX-330000-2025-01", registry, today=TODAY).region == "330000"


def test_load_special_actions_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("special_actions: [\n", encoding="utf-8")
    with pytest.raises(InvalidInput) as caught:
        load_special_actions(broken)
    assert caught.value.code == "special_action_invalid"
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing registered\nspecial_actions: []\n", encoding="utf-8")
    assert len(load_special_actions(empty)) == 0
