"""Writing generated agency tables into a database given by a SQLAlchemy URL.

The roster's `tables` declare columns with SQL types as an agency would write them
(`TEXT`, `INTEGER`, `REAL`, `NUMERIC(12, 2)`, …); here each becomes a SQLAlchemy type, so
that every dialect gets its own spelling of it (`REAL` is `DOUBLE PRECISION` on PostgreSQL
and `DOUBLE` on MySQL, both holding what SQLite's REAL holds) and reserved words among the
column names (`until`) are quoted. MySQL and MariaDB tables are created in utf8mb4, so
Chinese text and full-width digits survive whatever the server's default character set.

Development only: the database named by the URL must exist; its tables of these names are
replaced.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Double,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    create_engine,
)
from sqlalchemy.types import TypeEngine

from xiezhi.errors import InvalidInput

__all__ = ["sql_type", "write_tables"]

Value = str | int | float | None
_TYPE = re.compile(r"^([A-Z]+)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?$")
_PLAIN: dict[str, TypeEngine[Any]] = {
    "TEXT": Text(),
    "CLOB": Text(),
    "INTEGER": Integer(),
    "INT": Integer(),
    "SMALLINT": Integer(),
    "BIGINT": BigInteger(),
    "REAL": Double(),
    "DOUBLE": Double(),
    "FLOAT": Double(),
    "BOOLEAN": Boolean(),
    "DATE": Date(),
    "DATETIME": DateTime(),
    "TIMESTAMP": DateTime(),
}
_BATCH = 5_000  # rows per INSERT round trip


def sql_type(declared: str) -> TypeEngine[Any]:
    """The SQLAlchemy type for a `tables` column type such as `TEXT` or `NUMERIC(12, 2)`.

    Raises InvalidInput for a type this writer does not know."""
    match = _TYPE.match(declared.upper())
    if match is None:
        raise InvalidInput(f"column type {declared!r} is not understood")
    name, first, second = match.groups()
    if name in ("VARCHAR", "CHAR", "NVARCHAR", "VARCHAR2") and first is not None:
        return String(int(first))
    if name in ("NUMERIC", "DECIMAL", "NUMBER"):
        return Numeric(int(first) if first else None, int(second) if second else None)
    if name in _PLAIN and first is None:
        return _PLAIN[name]
    raise InvalidInput(f"column type {declared!r} has no mapping to other databases")


def write_tables(
    url: str,
    tables: Mapping[str, Sequence[tuple[str, str]]],
    rows: Mapping[str, Sequence[Sequence[Value]]],
) -> None:
    """Create `tables` (name → (column, declared type) in row order) at `url`, replacing
    tables of the same names, and insert each table's `rows` in one transaction."""
    metadata = MetaData()
    created = [
        Table(
            name,
            metadata,
            *(Column(column, sql_type(declared)) for column, declared in columns),
            mysql_charset="utf8mb4",
        )
        for name, columns in tables.items()
    ]
    engine = create_engine(url)
    try:
        metadata.drop_all(engine)
        metadata.create_all(engine)
        with engine.begin() as connection:
            for table in created:
                names = [column.name for column in table.columns]
                values = [dict(zip(names, row, strict=True)) for row in rows.get(table.name, ())]
                for start in range(0, len(values), _BATCH):
                    connection.execute(table.insert(), values[start : start + _BATCH])
    finally:
        engine.dispose()
