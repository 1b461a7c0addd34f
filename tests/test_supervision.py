from __future__ import annotations

from pathlib import Path

import pytest

from xiezhi.errors import InvalidInput, NotFound
from xiezhi.supervision import ModelCatalog, SubjectKind, parse_model, parse_rule

MODELS = Path(__file__).resolve().parent.parent / "policies" / "models"
REQUIRED = {
    "litigated_claims",
    "housing_fund",
    "income_after_termination",
    "spouse_property",
    "applicant_hardship",
    "asset_sweep",
}


def test_shipped_models_load_and_cover_the_articles() -> None:
    catalog = ModelCatalog.load(MODELS)
    assert REQUIRED <= {model.id for model in catalog}
    assert catalog.get("applicant_hardship").subjects is SubjectKind.APPLICANTS
    assert catalog.get("housing_fund").subjects is SubjectKind.DEBTORS


def test_asset_sweep_covers_every_debtor_side_capability() -> None:
    catalog = ModelCatalog.load(MODELS)
    debtor_side = {
        c for m in catalog if m.subjects is SubjectKind.DEBTORS and m.id != "asset_sweep" for c in m.looks_up
    }
    assert debtor_side | {"court.multiple_terminated"} == set(catalog.get("asset_sweep").looks_up)


@pytest.mark.parametrize(
    ("rule", "flags", "expected"),
    [
        ("a.x", {"a.x": True}, True),
        ({"any": ["a.x", "a.y"]}, {"a.x": False, "a.y": True}, True),
        ({"any": ["a.x", "a.y"]}, {"a.x": False, "a.y": False}, False),
        ({"all": ["a.x", "a.y"]}, {"a.x": True, "a.y": False}, False),
        ({"all": ["a.x", {"not": "a.y"}]}, {"a.x": True, "a.y": False}, True),
    ],
)
def test_rules_evaluate(rule: object, flags: dict[str, bool], expected: bool) -> None:
    assert parse_rule(rule, "t").evaluate(flags) is expected


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"any": []}, "non-empty"),
        ({"all": []}, "non-empty"),
        ({"some": ["a.x"]}, "unknown rule operator"),
        ({"any": ["a.x"], "all": ["a.y"]}, "one of any/all/not"),
        ("not a capability", "is not a capability id"),
        (None, "one of any/all/not"),
    ],
)
def test_malformed_rules_fail_closed(rule: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_rule(rule, "t")


def _model(**overrides: object) -> dict[str, object]:
    raw: dict[str, object] = {"id": "m", "title": "模型", "looks_up": ["a.x", "a.y"], "reveals": ["a.x"], "clue": "a.x"}
    raw.update(overrides)
    return raw


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"looks_up": []}, "at least one capability"),
        ({"reveals": ["a.z"]}, "subset of looks_up"),
        ({"clue": "a.z"}, "does not look up"),
        ({"title": ""}, "'title' is required"),
        ({"subjects": "judges"}, "debtors"),
        ({"extra": 1}, "unknown fields"),
        ({"looks_up": ["a.x", "a.x"]}, "repeats"),
        ({"id": "Bad-Id"}, "lower_snake_case"),
    ],
)
def test_model_defects_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_model(_model(**overrides))


def test_revealed_subset_is_kept() -> None:
    model = parse_model(_model())
    assert model.reveals == ("a.x",)
    assert model.connectors() == ("a",)


def test_empty_catalog_and_unknown_model_are_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no supervision models"):
        ModelCatalog.load(tmp_path)
    with pytest.raises(NotFound):
        ModelCatalog.load(MODELS).get("no_such_model")


def test_model_file_name_must_match_id(tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text("id: m\ntitle: t\nlooks_up: [a.x]\nreveals: [a.x]\nclue: a.x\n")
    with pytest.raises(InvalidInput, match="must match the file name"):
        ModelCatalog.load(tmp_path)
