"""Tests for gateway.orgs: the organisation tree, its validation, changes and the shipped file."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest

from gateway.orgs import Organisation, OrgLevel, OrgTree, load_orgs, parse_orgs
from xiezhi.errors import Conflict, InvalidInput, NotFound

ORGS_FILE = Path(__file__).resolve().parent.parent / "policies" / "orgs.yaml"


@pytest.fixture(scope="module")
def tree() -> OrgTree:
    return load_orgs(ORGS_FILE)


def small() -> OrgTree:
    return OrgTree(
        [
            Organisation("330000", "浙江省人民检察院", None),
            Organisation("330800", "衢州市人民检察院", "330000"),
            Organisation("330803", "衢州市衢江区人民检察院", "330800"),
        ]
    )


# --- the shipped file ---------------------------------------------------------------------

P, C, D = OrgLevel.PROVINCE, OrgLevel.CITY, OrgLevel.DISTRICT
SHIPPED_LEVELS = {
    **{"330000": P, "330100": C, "330200": C, "330800": C},
    **{"330106": D, "330203": D, "330802": D, "330803": D, "330822": D, "330881": D},
    **{"420000": P, "420500": C, "420582": D, "429004": D},
    **{"150000": P, "150200": C, "150204": D},
}


def test_shipped_file_loads_with_expected_levels(tree: OrgTree) -> None:
    assert {org.code: org.level for org in tree} == SHIPPED_LEVELS
    assert len(tree) == len(SHIPPED_LEVELS)
    assert [org.code for org in tree] == sorted(SHIPPED_LEVELS)
    assert tree.get("330803").name == "衢州市衢江区人民检察院"
    assert tree.get("429004").parent == "420000"


def test_children(tree: OrgTree) -> None:
    assert tree.children("330800") == ("330802", "330803", "330822", "330881")
    assert tree.children("420000") == ("420500", "429004")
    assert tree.children("330803") == ()
    with pytest.raises(NotFound) as caught:
        tree.children("330900")
    assert caught.value.code == "unknown_org"


# --- lookups ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("330000", ("330000",)),
        ("330800", ("330800", "330000")),
        ("330803", ("330803", "330800", "330000")),
        ("429004", ("429004", "420000")),
        ("150204", ("150204", "150200", "150000")),
    ],
)
def test_ancestors(tree: OrgTree, code: str, expected: tuple[str, ...]) -> None:
    assert tree.ancestors(code) == expected


@pytest.mark.parametrize("code", ["330900", "999999", "", "abc"])
def test_unknown_codes_are_not_found(tree: OrgTree, code: str) -> None:
    assert code not in tree
    for lookup in (tree.get, tree.ancestors, tree.children):
        with pytest.raises(NotFound) as caught:
            lookup(code)
        assert caught.value.code == "unknown_org"


@pytest.mark.parametrize(
    ("ancestor", "code", "expected"),
    [
        ("330803", "330803", True),  # self
        ("330800", "330803", True),  # parent
        ("330000", "330803", True),  # grandparent
        ("420000", "429004", True),  # province over a county directly under it
        ("330803", "330800", False),  # child does not cover parent
        ("330802", "330803", False),  # sibling
        ("330100", "330803", False),  # uncle
        ("420000", "330803", False),  # another province
        ("150000", "150204", True),
        ("330999", "330803", False),  # unknown ancestor
        ("330000", "330999", False),  # unknown code
        ("", "", False),
    ],
)
def test_covers(tree: OrgTree, ancestor: str, code: str, expected: bool) -> None:
    assert tree.covers(ancestor, code) is expected


def test_covers_and_contains_never_raise_on_odd_input(tree: OrgTree) -> None:
    odd: Any = ["330000"]
    assert odd not in tree
    assert tree.covers(odd, "330803") is False
    assert tree.covers("330000", odd) is False
    assert tree.common_ancestor(odd, "330803") is None


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("330802", "330803", "330800"),  # siblings → their city
        ("330106", "330803", "330000"),  # cousins across cities → province
        ("330803", "330800", "330800"),  # district vs its own city → the city
        ("330800", "330803", "330800"),  # a covers b → a
        ("330803", "330803", "330803"),
        ("330100", "330800", "330000"),  # two cities
        ("429004", "420582", "420000"),  # county under the province vs a city's district
        ("330803", "420582", None),  # different provinces
        ("150204", "330000", None),
        ("330803", "330999", None),  # unknown
        ("330999", "330803", None),
    ],
)
def test_common_ancestor(tree: OrgTree, a: str, b: str, expected: str | None) -> None:
    assert tree.common_ancestor(a, b) == expected
    assert tree.common_ancestor(b, a) == expected


# --- validation of one organisation -------------------------------------------------------

INVALID_ORGS: list[tuple[Any, Any, Any, str]] = [
    ("33080", "名", "330800", "6 ASCII digits"),
    ("3308031", "名", "330800", "6 ASCII digits"),
    ("33080a", "名", "330800", "6 ASCII digits"),
    ("３３０８０３", "名", "330800", "6 ASCII digits"),  # full-width digits
    ("330803\n", "名", "330800", "6 ASCII digits"),
    ("000000", "名", None, "not a region code"),
    ("710000", "台湾", None, "not a province code"),
    ("810000", "香港", None, "not a province code"),
    ("990100", "名", "990000", "not a province code"),
    (330803, "名", "330800", "must be a string"),
    ("330803", "", "330800", "non-empty"),
    ("330803", "   ", "330800", "non-empty"),
    ("330803", None, "330800", "non-empty"),
    ("330803", "检" * 65, "330800", "longer than 64"),
    ("330803", "衢江\n检察院", "330800", "printable"),
    ("330000", "浙江", "330000", "province has no parent"),
    ("330800", "衢州", None, "must be 330000"),
    ("330800", "衢州", "420000", "must be 330000"),
    ("330803", "衢江", None, "must be 330800 or 330000"),
    ("330803", "衢江", "330100", "must be 330800 or 330000"),
    ("330803", "衢江", "420000", "must be 330800 or 330000"),
    ("330803", "衢江", "330803", "must be 330800 or 330000"),
]


@pytest.mark.parametrize(("code", "name", "parent", "reason"), INVALID_ORGS)
def test_invalid_organisations_are_refused(code: Any, name: Any, parent: Any, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Organisation(code, name, parent)
    assert caught.value.code == "org_invalid"
    assert reason in caught.value.public_message


@pytest.mark.parametrize(
    ("code", "name", "parent", "level"),
    [
        ("330000", "浙江省人民检察院", None, P),
        ("330800", "衢州市人民检察院", "330000", C),
        ("330803", "衢州市衢江区人民检察院", "330800", D),
        ("429004", "仙桃市人民检察院", "420000", D),
        ("110101", "北京市东城区人民检察院", "110000", D),  # municipality: district under the province
        ("330803", "检" * 64, "330800", D),
    ],
)
def test_valid_organisations(code: str, name: str, parent: str | None, level: OrgLevel) -> None:
    assert Organisation(code, name, parent).level is level


def test_organisation_is_frozen() -> None:
    org = Organisation("330000", "浙江省人民检察院", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        org.name = "x"  # type: ignore[misc]
    with pytest.raises(InvalidInput):
        dataclasses.replace(org, parent="330000")


# --- validation of a tree -----------------------------------------------------------------

ZJ = Organisation("330000", "浙江省人民检察院", None)
QZ = Organisation("330800", "衢州市人民检察院", "330000")
QJ = Organisation("330803", "衢州市衢江区人民检察院", "330800")


@pytest.mark.parametrize(
    ("orgs", "reason"),
    [
        ([], "no organisations"),
        ([ZJ, QZ, ZJ], "organisations[2] (330000): duplicate code"),
        ([ZJ, QZ, dataclasses.replace(QZ, name="另一个")], "duplicate code"),
        ([ZJ, QJ], "organisations[1] (330803): parent 330800 is not in the tree"),
        ([QZ], "parent 330000 is not in the tree"),
        (["330000"], "not an Organisation"),
    ],
)
def test_invalid_trees_are_refused(orgs: list[Any], reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        OrgTree(orgs)
    assert caught.value.code == "org_invalid"
    assert reason in caught.value.public_message


def test_tree_accepts_any_order_and_iterables() -> None:
    assert OrgTree(iter([QJ, QZ, ZJ])) == small()
    assert [org.code for org in OrgTree([QJ, ZJ, QZ])] == ["330000", "330800", "330803"]


# --- changes ------------------------------------------------------------------------------


def test_with_org_returns_a_new_tree_and_leaves_the_old_one() -> None:
    old = small()
    before = (old.to_mapping(), old.digest())
    ke = Organisation("330802", "衢州市柯城区人民检察院", "330800")
    new = old.with_org(ke)
    assert new is not old
    assert "330802" in new and "330802" not in old
    assert new.children("330800") == ("330802", "330803")
    assert (old.to_mapping(), old.digest()) == before
    assert new.digest() != old.digest()


@pytest.mark.parametrize(
    ("org", "error", "code"),
    [
        (QJ, Conflict, "org_exists"),
        (dataclasses.replace(QJ, name="另一个名字"), Conflict, "org_exists"),
        (Organisation("330802", "柯城", "330800"), None, None),
        (Organisation("330106", "西湖", "330100"), InvalidInput, "org_invalid"),  # parent missing
        (Organisation("420000", "湖北", None), None, None),  # a second root is fine
    ],
)
def test_with_org_refusals(org: Organisation, error: type[Exception] | None, code: str | None) -> None:
    if error is None:
        assert org.code in small().with_org(org)
        return
    with pytest.raises(error) as caught:
        small().with_org(org)
    assert getattr(caught.value, "code", None) == code


def test_without() -> None:
    old = small()
    new = old.without("330803")
    assert [org.code for org in new] == ["330000", "330800"]
    assert "330803" in old
    assert new.children("330800") == ()
    assert [org.code for org in new.without("330800")] == ["330000"]


@pytest.mark.parametrize(
    ("tree_orgs", "code", "error", "reason"),
    [
        ([ZJ, QZ, QJ], "330802", NotFound, "unknown_org"),
        ([ZJ, QZ, QJ], "330800", Conflict, "org_has_children"),
        ([ZJ, QZ, QJ], "330000", Conflict, "org_has_children"),
        ([ZJ], "330000", Conflict, "org_last"),
    ],
)
def test_without_refusals(tree_orgs: list[Organisation], code: str, error: type[Exception], reason: str) -> None:
    tree = OrgTree(tree_orgs)
    with pytest.raises(error) as caught:
        tree.without(code)
    assert getattr(caught.value, "code", None) == reason
    assert len(tree) == len(tree_orgs)


def test_renamed() -> None:
    old = small()
    new = old.renamed("330803", "衢江区人民检察院")
    assert new.get("330803").name == "衢江区人民检察院"
    assert new.get("330803").parent == "330800"
    assert old.get("330803").name == "衢州市衢江区人民检察院"
    assert new.digest() != old.digest()
    assert old.renamed("330803", QJ.name) == old


@pytest.mark.parametrize(
    ("code", "name", "error", "reason"),
    [
        ("330802", "柯城", NotFound, "unknown_org"),
        ("330803", "", InvalidInput, "org_invalid"),
        ("330803", "检" * 65, InvalidInput, "org_invalid"),
    ],
)
def test_renamed_refusals(code: str, name: str, error: type[Exception], reason: str) -> None:
    with pytest.raises(error) as caught:
        small().renamed(code, name)
    assert getattr(caught.value, "code", None) == reason


# --- identity -----------------------------------------------------------------------------


def test_digest_is_independent_of_input_order(tree: OrgTree) -> None:
    orgs = list(tree)
    for seed in range(5):
        random.Random(seed).shuffle(orgs)
        shuffled = OrgTree(orgs)
        assert shuffled.digest() == tree.digest()
        assert shuffled == tree and hash(shuffled) == hash(tree)
    assert len(tree.digest()) == 64
    int(tree.digest(), 16)


def test_digest_changes_with_the_tree(tree: OrgTree) -> None:
    digests = {
        tree.digest(),
        tree.without("330881").digest(),
        tree.renamed("330881", "江山市检察院").digest(),
        tree.with_org(Organisation("330821", "衢州市衢江县人民检察院", "330800")).digest(),
        tree.with_org(Organisation("330821", "衢州市衢江县人民检察院", "330000")).digest(),
    }
    assert len(digests) == 5


def test_to_mapping_round_trips(tree: OrgTree) -> None:
    mapping = tree.to_mapping()
    assert mapping[0] == {"code": "150000", "name": "内蒙古自治区人民检察院", "parent": None}
    assert parse_orgs({"organisations": mapping}, "round trip") == tree


# --- the file format ----------------------------------------------------------------------


def _entry(**fields: Any) -> dict[str, Any]:
    return {"code": "330000", "name": "浙江省人民检察院", "parent": None, **fields}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "single key 'organisations'"),
        ([], "single key 'organisations'"),
        ({"organisations": [_entry()], "version": 1}, "single key 'organisations'"),
        ({"organisations": {"330000": "浙江"}}, "must be a list"),
        ({"organisations": []}, "no organisations"),
        ({"organisations": ["330000"]}, "organisations[0]: an organisation is a mapping"),
        ({"organisations": [_entry(code=330000)]}, "organisations[0]: code must be a quoted string"),
        ({"organisations": [_entry(), _entry(code="330800", parent=330000)]}, "organisations[1]: parent must be"),
        ({"organisations": [_entry(level="province")]}, "organisations[0]: unknown field(s) level"),
        ({"organisations": [{"code": "330000"}]}, "code and name are required"),
        ({"organisations": [_entry(), _entry(name="")]}, "organisations[1]: organisation 330000: name"),
        ({"organisations": [_entry(), _entry()]}, "organisations[1] (330000): duplicate code"),
        ({"organisations": [_entry(), _entry(code="330800")]}, "organisations[1]: organisation 330800: a city"),
        ({"organisations": [_entry(code="330800", parent="330000")]}, "parent 330000 is not in the tree"),
    ],
)
def test_parse_orgs_refusals(raw: object, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_orgs(raw, "orgs.yaml")
    assert caught.value.code == "org_invalid"
    assert caught.value.public_message.startswith("orgs.yaml: ")
    assert reason in caught.value.public_message


def test_parse_orgs_accepts_omitted_parent_for_a_province() -> None:
    parsed = parse_orgs({"organisations": [{"code": "330000", "name": "浙江省人民检察院"}]}, "x")
    assert parsed.get("330000").parent is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("organisations:\n  - {code: 330000, name: 浙江省人民检察院, parent: null}\n", "code must be a quoted string"),
        ("organisations:\n  - {code: 010000, name: x, parent: null}\n", "code must be a quoted string"),
        ("organisations: [\n", "not valid YAML at line"),
        ("", "single key 'organisations'"),
    ],
)
def test_load_orgs_refusals(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "orgs.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidInput) as caught:
        load_orgs(path)
    assert caught.value.code == "org_invalid"
    assert reason in caught.value.public_message
