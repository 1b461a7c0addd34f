"""Supervision models (监督模型): which capabilities a model looks up, which it reveals,
and the rule that turns a subject's flags into a clue (线索).

A model file (YAML, under `policies/models/`) reads:

    id: housing_fund
    title: 住房公积金
    subjects: debtors            # debtors (被执行人) or applicants (申请执行人)
    looks_up: [housing_fund.balance_positive, housing_fund.sealed_with_balance]
    reveals:  [housing_fund.balance_positive, housing_fund.sealed_with_balance]
    clue: {any: [housing_fund.balance_positive, housing_fund.sealed_with_balance]}

A rule is a capability id, or `{any: [rule…]}`, `{all: [rule…]}`, `{not: rule}`. Rules
fail closed: an empty `any`/`all`, a capability the model does not look up, or an
unknown operator is an error at load time, never "true".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from xiezhi.errors import InvalidInput, NotFound
from xiezhi.wire import CAPABILITY_PATTERN, IDENTIFIER_PATTERN, Capability


class SubjectKind(StrEnum):
    DEBTORS = "debtors"
    APPLICANTS = "applicants"


@dataclass(frozen=True)
class Rule:
    """A parsed clue rule: `op` is "cap", "any", "all" or "not"."""

    op: str
    capability: str | None = None
    operands: tuple[Rule, ...] = ()

    def evaluate(self, flags: Mapping[str, bool]) -> bool:
        """Evaluate over per-capability flags; a missing capability raises KeyError."""
        if self.op == "cap":
            assert self.capability is not None
            return flags[self.capability]
        if self.op == "any":
            return any(rule.evaluate(flags) for rule in self.operands)
        if self.op == "all":
            return all(rule.evaluate(flags) for rule in self.operands)
        return not self.operands[0].evaluate(flags)

    def capabilities(self) -> frozenset[str]:
        if self.capability is not None:
            return frozenset({self.capability})
        return frozenset().union(*(rule.capabilities() for rule in self.operands))


@dataclass(frozen=True)
class SupervisionModel:
    id: str
    title: str
    subjects: SubjectKind
    looks_up: tuple[Capability, ...]
    reveals: tuple[Capability, ...]
    clue: Rule
    description: str = ""

    def connectors(self) -> tuple[str, ...]:
        """The connectors a run needs: the connector of every looked-up capability."""
        return tuple(sorted({capability.connector for capability in self.looks_up}))


def parse_rule(raw: object, where: str) -> Rule:
    """Parse a rule expression; raises InvalidInput naming `where` on any defect."""
    if isinstance(raw, str):
        if not re.match(CAPABILITY_PATTERN, raw):
            raise InvalidInput(f"{where}: {raw!r} is not a capability id")
        return Rule("cap", capability=raw)
    if not isinstance(raw, dict) or len(raw) != 1:
        raise InvalidInput(f"{where}: a rule is a capability id or one of any/all/not")
    ((op, body),) = raw.items()
    if op in ("any", "all"):
        if not isinstance(body, list) or not body:
            raise InvalidInput(f"{where}: '{op}' needs a non-empty list")
        return Rule(op, operands=tuple(parse_rule(item, where) for item in body))
    if op == "not":
        return Rule("not", operands=(parse_rule(body, where),))
    raise InvalidInput(f"{where}: unknown rule operator {op!r}")


def parse_model(raw: Mapping[str, Any], where: str = "model") -> SupervisionModel:
    """Build a model from its mapping form, checking every cross-reference."""
    allowed = {"id", "title", "subjects", "looks_up", "reveals", "clue", "description"}
    unknown = set(raw) - allowed
    if unknown:
        raise InvalidInput(f"{where}: unknown fields {sorted(unknown)}")
    model_id = _required_str(raw, "id", where)
    if not re.match(IDENTIFIER_PATTERN, model_id):
        raise InvalidInput(f"{where}: id {model_id!r} must be lower_snake_case")
    looks_up = _capability_list(raw, "looks_up", where)
    reveals = _capability_list(raw, "reveals", where)
    if not looks_up:
        raise InvalidInput(f"{where}: looks_up must name at least one capability")
    if not set(reveals) <= set(looks_up):
        raise InvalidInput(f"{where}: reveals must be a subset of looks_up")
    clue = parse_rule(raw.get("clue"), f"{where}.clue")
    stray = clue.capabilities() - set(looks_up)
    if stray:
        raise InvalidInput(f"{where}: clue uses capabilities it does not look up: {sorted(stray)}")
    try:
        subjects = SubjectKind(raw.get("subjects", "debtors"))
    except ValueError as exc:
        raise InvalidInput(f"{where}: subjects must be 'debtors' or 'applicants'") from exc
    return SupervisionModel(
        id=model_id,
        title=_required_str(raw, "title", where),
        subjects=subjects,
        looks_up=looks_up,
        reveals=reveals,
        clue=clue,
        description=str(raw.get("description", "")),
    )


def _required_str(raw: Mapping[str, Any], field: str, where: str) -> str:
    value = raw.get(field)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{where}: field '{field}' is required")
    return value


def _capability_list(raw: Mapping[str, Any], field: str, where: str) -> tuple[Capability, ...]:
    value = raw.get(field, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidInput(f"{where}: field '{field}' must be a list of capability ids")
    for item in value:
        if not re.match(CAPABILITY_PATTERN, item):
            raise InvalidInput(f"{where}: {item!r} in '{field}' is not a capability id")
    if len(set(value)) != len(value):
        raise InvalidInput(f"{where}: field '{field}' repeats a capability")
    return tuple(Capability(item) for item in value)


class ModelCatalog:
    """The supervision models a gateway runs, keyed by id. Empty catalogs are refused."""

    def __init__(self, models: list[SupervisionModel]) -> None:
        if not models:
            raise InvalidInput("no supervision models configured")
        self._models = {model.id: model for model in models}
        if len(self._models) != len(models):
            raise InvalidInput("two supervision models share an id")

    @classmethod
    def load(cls, directory: Path) -> ModelCatalog:
        models = []
        for path in sorted(directory.glob("*.yaml")):
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise InvalidInput(f"{path.name}: a model file holds one mapping")
            model = parse_model(raw, where=path.name)
            if model.id != path.stem:
                raise InvalidInput(f"{path.name}: id {model.id!r} must match the file name")
            models.append(model)
        return cls(models)

    def get(self, model_id: str) -> SupervisionModel:
        try:
            return self._models[model_id]
        except KeyError:
            raise NotFound(f"unknown supervision model {model_id!r}", code="unknown_model") from None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self._models.values(), key=lambda model: model.id))
