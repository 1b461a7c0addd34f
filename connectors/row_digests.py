"""Keyed digests of a capability's rows, computed by the agency's database (PostgreSQL,
MySQL, MariaDB), so an incremental build reads 16 bytes per unchanged row, not the row.

A row's digest is the first 16 bytes of SHA-256(key ‖ the row as the database writes it as
text), where the key is derived from the build state's key per capability
(`BuildState.row_key`). The database writes the row as

    PostgreSQL      the row value's text:   CAST(ROW(q.*) AS text)    e.g. (110105…,"（2023）…",t)
    MySQL, MariaDB  a JSON array of it:     JSON_ARRAY(q.c1, …, q.cn) (columns from the result)

Both keep a NULL apart from any text and a column from its neighbour. A build compares the
digests only with those the same database gave before: the build state keeps them
(`connectors.build_state`), and a change of representation (a new server version, another
database) makes every row read once as new, which costs time and changes no token.

`digests` gives the digests in ascending order (the database sorts them), which lets the
build merge them with the published rows' digests in one pass; `rows_with_digests` gives
each row with its digest, all of them or only those whose digest is in a given set.

The key goes to the agency's database as a query parameter. That database holds the rows
the digests are made of, so whoever can read its queries learns nothing from the key they
did not have; the key is derived one-way from the epoch's OPRF key and reveals nothing of it.
SQLite and other dialects have no SHA-256 in SQL: their builds digest rows in Python.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.sql.elements import TextClause

from connectors.config import Capability
from connectors.source import CHUNK_ROWS, column_names, stream, stream_scalars

DIGEST_BYTES = 16
GROUP = 4096  # digests the database joins into one value
PICK = 50_000  # new rows' digests per pass that picks them (each pass digests every row again)
_KEY = "xiezhi_row_key"  # the parameter's name, apart from any of a capability's own
_NEW = "xiezhi_new_rows"
_MYSQL = ("mysql", "mariadb")


def supported(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql" or connection.dialect.name in _MYSQL


def digests(connection: Connection, capability: Capability, key: bytes) -> Iterator[list[bytes]]:
    """The digest of every row of the capability's query, ascending, in chunks of at most
    `GROUP` digests. Raises as `connectors.source.stream` does.

    The database sends them `GROUP` at a time, joined into one value (a driver's cost is per
    row, and PyMySQL's is high), from a window numbering them in order."""
    if connection.dialect.name == "postgresql":
        joined = "string_agg(d, ''::bytea ORDER BY d)"
        group = f"(row_number() OVER (ORDER BY d) - 1) / {GROUP}"
    else:
        # GROUP_CONCAT stops at group_concat_max_len bytes (1 KiB by default): room for a group.
        connection.execute(text(f"SET SESSION group_concat_max_len = {GROUP * DIGEST_BYTES * 2}"))
        joined = "GROUP_CONCAT(d ORDER BY d SEPARATOR '')"
        group = f"FLOOR((ROW_NUMBER() OVER (ORDER BY d) - 1) / {GROUP})"
    shape = (
        f"SELECT {joined} FROM (SELECT d, {group} AS g FROM (SELECT {{digest}} AS d FROM ({{query}}) AS q) AS x) AS y"
        " GROUP BY g ORDER BY g"
    )
    query, params = _wrapped(connection, capability, key, shape)
    for chunk in stream_scalars(connection, query, params, capability, chunk_rows=16):
        for value in chunk:
            blob = bytes(value)
            yield [blob[at : at + DIGEST_BYTES] for at in range(0, len(blob), DIGEST_BYTES)]


def rows_with_digests(
    connection: Connection,
    capability: Capability,
    key: bytes,
    only: Sequence[bytes] | None = None,
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[list[tuple[bytes, tuple[Any, ...]]]]:
    """Each row of the capability's query with its digest, in chunks: every row, or (`only`)
    those whose digest is one of `only` (the database picks them, `PICK` digests per pass:
    PostgreSQL as one array parameter, MySQL as a list the driver writes into the query)."""
    shape = "SELECT {digest} AS d, q.* FROM ({query}) AS q"
    if only is None:
        query, params = _wrapped(connection, capability, key, shape)
        for chunk in stream(connection, query, params, capability, chunk_rows=chunk_rows):
            yield [(bytes(row[0]), tuple(row[1:])) for row in chunk]
        return
    postgresql = connection.dialect.name == "postgresql"
    shape += " WHERE {digest} = ANY(:" + _NEW + ")" if postgresql else " WHERE {digest} IN :" + _NEW
    query, params = _wrapped(connection, capability, key, shape)
    if not postgresql:
        query = query.bindparams(bindparam(_NEW, expanding=True))
    for first in range(0, len(only), PICK):
        params[_NEW] = list(only[first : first + PICK])
        for chunk in stream(connection, query, params, capability, chunk_rows=chunk_rows):
            yield [(bytes(row[0]), tuple(row[1:])) for row in chunk]


def _wrapped(
    connection: Connection, capability: Capability, key: bytes, shape: str
) -> tuple[TextClause, dict[str, Any]]:
    inner = capability.query_for(connection.dialect.name)
    if connection.dialect.name == "postgresql":
        digest = (
            f"substring(sha256(CAST(:{_KEY} AS bytea) || convert_to(CAST(ROW(q.*) AS text), 'UTF8')) FROM 1 FOR 16)"
        )
        value: object = key
    else:
        columns = ", ".join(f"q.`{name.replace('`', '``')}`" for name in column_names(connection, capability))
        digest = f"LEFT(UNHEX(SHA2(CONCAT(:{_KEY}, JSON_ARRAY({columns})), 256)), 16)"
        value = key.hex()
    return text(shape.format(digest=digest, query=inner)), {**capability.params, _KEY: value}
