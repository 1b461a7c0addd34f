"""Connector configuration: the agency database and its capabilities, from YAML.

    connector: court
    title: 人民法院
    database_url: ${XIEZHI_COURT_DATABASE_URL:-sqlite:///court.sqlite}
    capabilities:
      - id: court.multiple_terminated
        title: 多起终本案件的被执行人
        tier: 2
        query: SELECT debtor_id AS subject_id, case_no AS "key" FROM enforcement_cases WHERE status = '终本'
        reduce: {distinct_keys_at_least: 2}

A capability's query returns one row per piece of evidence: `subject_id` (the raw ID as
the agency stores it), and where its reduction needs them, `key` and `value`. The runtime
normalises `subject_id` exactly as the requester's client does, then reduces per
normalised subject — so "two cases" or "the latest registration" count one person once
however many spellings the agency's rows hold. Reductions:

- `any` (default): yes if the subject has at least one row.
- `{distinct_keys_at_least: N}`: yes if the subject's rows hold N or more distinct keys.
- `{latest_value_is: V}`: yes if every row at the subject's greatest key has value V
  (a tie between V and another value is not a yes). Rows with a null key are ignored.

`params` are bound to `:name` placeholders in the query, never spliced into the SQL.

`query` is one SQL string, or a mapping from SQLAlchemy dialect names to variants of it,
for an agency whose database needs its own spelling of the same question:

    query:
      default: SELECT … CAST(performed AS TEXT) …      # any dialect not named below
      mysql: SELECT … CAST(performed AS CHAR) …        # MySQL and MariaDB

The variant run is the one named by the engine's dialect (`postgresql`, `mysql`,
`mariadb`, `sqlite`, `oracle`, `mssql`, `dm` for 达梦, `kingbase`), else `mysql` for a
`mariadb` engine, else `default`; a dialect with none of these is an error when the query
runs, never a guess. Every variant must ask the same question: the runtime cannot check
that they agree, the tests of a roster must.

`${VAR}` and `${VAR:-default}` in the file expand from the environment.

`tables` (optional) describes the agency's tables the queries read, one entry per table
with its columns as SQL column definitions (`case_no TEXT, debtor_id TEXT, …`), in the
order the agency's rows hold them. The development kit creates databases from it; a
deployment reads the agency's own database and may leave it out.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from xiezhi import wire
from xiezhi.errors import InvalidInput
from xiezhi.wire import IDENTIFIER_PATTERN

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class DistinctKeys(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    distinct_keys_at_least: Annotated[int, Field(ge=1)]


class LatestValue(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    latest_value_is: str


Reduction = DistinctKeys | LatestValue | None

# The keys a per-dialect `query` mapping may use: SQLAlchemy's dialect names, and `default`.
# A fixed list, so that a misspelt dialect (`postgres:`) is refused, not silently never run.
QUERY_DIALECTS = frozenset({"default", "sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql", "dm", "kingbase"})


class Capability(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: wire.Capability  # knows its connector
    title: Annotated[str, Field(min_length=1)]
    tier: Annotated[int, Field(ge=1, le=3)]
    query: Annotated[str, Field(min_length=1)] | dict[str, Annotated[str, Field(min_length=1)]]
    params: dict[str, str | int | float] = Field(default_factory=dict)
    reduce: Reduction = None

    @field_validator("query")
    @classmethod
    def _known_dialects(cls, query: str | dict[str, str]) -> str | dict[str, str]:
        if isinstance(query, dict):
            if not query:
                raise ValueError("a query mapping needs at least one variant")
            unknown = sorted(set(query) - QUERY_DIALECTS)
            if unknown:
                raise ValueError(f"unknown dialect {unknown[0]!r}; use one of {', '.join(sorted(QUERY_DIALECTS))}")
        return query

    def query_for(self, dialect: str) -> str:
        """The query to run on an engine of `dialect`. Raises InvalidInput if none fits."""
        if isinstance(self.query, str):
            return self.query
        for name in (dialect, "mysql" if dialect == "mariadb" else "", "default"):
            if name in self.query:
                return self.query[name]
        raise InvalidInput(f"capability {self.id}: no query for dialect {dialect} and no default")


_SQL_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_COLUMN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s+([A-Za-z]+(?:\s*\(\s*\d+\s*(?:,\s*\d+\s*)?\))?)\s*$")


def table_columns(definition: str) -> list[tuple[str, str]]:
    """(name, type) of each column in a `tables` entry, in order. Raises ValueError."""
    columns = []
    for part in re.split(r",(?![^()]*\))", definition):  # not the comma of NUMERIC(12, 2)
        match = _COLUMN.match(part)
        if match is None:
            raise ValueError(f"column definition {part.strip()!r} is not 'name TYPE'")
        columns.append((match.group(1), match.group(2).upper()))
    names = [name for name, _ in columns]
    if len(set(names)) != len(names):
        raise ValueError("two columns share a name")
    return columns


class ConnectorConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    connector: Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]
    title: str
    database_url: str
    capabilities: Annotated[list[Capability], Field(min_length=1)]
    tables: dict[Annotated[str, Field(pattern=_SQL_NAME)], str] = Field(default_factory=dict)

    @field_validator("tables")
    @classmethod
    def _columns_parse(cls, tables: dict[str, str]) -> dict[str, str]:
        for name, definition in tables.items():
            try:
                table_columns(definition)
            except ValueError as exc:
                raise ValueError(f"table {name}: {exc}") from None
        return tables

    @model_validator(mode="after")
    def _own_capabilities(self) -> ConnectorConfig:
        for capability in self.capabilities:
            if capability.id.connector != self.connector:
                raise ValueError(f"capability {capability.id} must start with '{self.connector}.'")
        ids = [capability.id for capability in self.capabilities]
        if len(set(ids)) != len(ids):
            raise ValueError("two capabilities share an id")
        return self

    @classmethod
    def from_file(cls, path: Path, *, database_url: str | None = None) -> ConnectorConfig:
        """Load a config file; `database_url` overrides the file's. Raises InvalidInput."""
        text = _ENV.sub(_expand, path.read_text(encoding="utf-8"))
        raw: Any = yaml.safe_load(text)
        if not isinstance(raw, dict):
            raise InvalidInput(f"{path.name}: a connector config holds one mapping")
        if database_url is not None:
            raw["database_url"] = database_url
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise InvalidInput(f"{path.name}: {where}: {first['msg']}") from None


def _expand(match: re.Match[str]) -> str:
    value = os.environ.get(match.group(1))
    if value is not None:
        return value
    if match.group(2) is not None:
        return match.group(2)
    raise InvalidInput(f"environment variable {match.group(1)} is not set and has no default")
