"""Decision tables: the policy's tests, kept beside it under `policies/tests/`.

Each CSV file is one table; its header says which kind:

    run      case, user, org, roles, clearance, model, purpose, legal_basis, scope, subjects,
             on, expect, reason[, approver]
    access   case, user, org, roles, object, action, target, expect, reason
    approve  case, user, org, roles, requester, approver_org, model, expect, reason

`roles` joins several roles with "+"; an empty `scope` or `target` means the user's own
organisation; `on` is the day the run is asked for (purposes name dated special actions);
`expect` is allow, deny or needs_approval, `reason` the code the caller would get. Every
row is decided by a real `Authorizer` over the policy under test.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from gateway.auth import Principal
from gateway.authz.decide import Authorizer, Decision, RunAsk
from xiezhi.errors import InvalidInput
from xiezhi.supervision import ModelCatalog

_COMMON = ("case", "user", "org", "roles", "expect", "reason")
KINDS = {
    "run": {*_COMMON, "clearance", "model", "purpose", "legal_basis", "scope", "subjects", "on"},
    "access": {*_COMMON, "object", "action", "target"},
    "approve": {*_COMMON, "requester", "approver_org", "model"},
}
OPTIONAL = {"approver", "clearance", "note"}


@dataclass(frozen=True)
class RowResult:
    table: str
    case: str
    expected: str
    decision: Decision

    @property
    def got(self) -> str:
        got = f"{self.decision.outcome.value}/{self.decision.reason}"
        # A row that names the approving organisation is checked on it too.
        return got + (f"@{self.decision.approver_org}" if "@" in self.expected else "")

    @property
    def passed(self) -> bool:
        return self.got == self.expected


@dataclass(frozen=True)
class Row:
    table: str
    kind: str
    values: Mapping[str, str]

    @property
    def case(self) -> str:
        return self.values["case"]

    def principal(self) -> Principal:
        roles = frozenset(r.strip() for r in self.values["roles"].split("+") if r.strip())
        clearance = self.values.get("clearance", "").strip()
        return Principal(
            subject=self.values["user"],
            org=self.values["org"] or None,
            roles=roles,
            connector=self.values["user"] if "connector" in roles else None,
            clearance=int(clearance) if clearance else 0,
        )

    def expected(self) -> str:
        expected = f"{self.values['expect']}/{self.values['reason']}"
        approver = self.values.get("approver", "").strip()
        return expected + (f"@{approver}" if approver else "")


def read_tables(directory: Path) -> Iterator[Row]:
    """Every row of every `*.csv` under `directory`; a malformed table raises InvalidInput."""
    paths = sorted(directory.glob("*.csv"))
    if not paths:
        raise InvalidInput(f"no decision tables under {directory}", code="policy_tests_missing")
    for path in paths:
        with path.open(encoding="utf-8", newline="") as handle:
            lines = (line for line in handle if line.strip() and not line.startswith("#"))
            reader = csv.DictReader(lines, skipinitialspace=True)
            kind = _kind(path, set(reader.fieldnames or ()))
            for values in reader:
                yield Row(path.name, kind, {k: (v or "").strip() for k, v in values.items()})


def _kind(path: Path, header: set[str]) -> str:
    for kind, columns in KINDS.items():
        if columns - {"clearance"} <= header and header <= columns | OPTIONAL:
            return kind
    raise InvalidInput(f"{path.name}: header matches no table kind ({', '.join(KINDS)})", code="policy_tests_invalid")


def decide_row(authorizer: Authorizer, catalog: ModelCatalog, row: Row) -> RowResult:
    values, principal = row.values, row.principal()
    if row.kind == "run":
        ask = RunAsk(
            model=catalog.get(values["model"]),
            purpose=values["purpose"] or None,
            legal_basis=values["legal_basis"] or None,
            scope=values["scope"] or None,
            subjects=int(values["subjects"]),
            today=date.fromisoformat(values["on"]),
        )
        decision = authorizer.decide_run(principal, ask)
    elif row.kind == "approve":
        decision = authorizer.decide_approval(
            principal, requester=values["requester"], approver_org=values["approver_org"], model_id=values["model"]
        )
    else:
        decision = authorizer.decide(principal, values["object"], values["action"], values["target"] or None)
    return RowResult(row.table, row.case, row.expected(), decision)


def run_tables(authorizer: Authorizer, catalog: ModelCatalog, directory: Path) -> list[RowResult]:
    return [decide_row(authorizer, catalog, row) for row in read_tables(directory)]
