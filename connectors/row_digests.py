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

`digests` gives the digests in buckets by their first two bytes, the buckets in ascending
order, which lets the build compare them with the published rows' digests bucket by bucket
in one pass; `rows_with_digests` gives each row with its digest, all of them or only those
whose digest is in a given set.

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
PREFIX_BYTES = 2  # digests are bucketed by this many leading bytes: 65,536 buckets
MAX_BUCKET_BYTES = 16 * 2**20  # MySQL: a bucket's joined digests, under the default packet size
PICK = 50_000  # new rows' digests per pass that picks them (each pass digests every row again)
_KEY = "xiezhi_row_key"  # the parameter's name, apart from any of a capability's own
_NEW = "xiezhi_new_rows"
_MYSQL = ("mysql", "mariadb")


def supported(connection: Connection) -> bool:
    return _postgresql(connection) or connection.dialect.name in _MYSQL


def digests(connection: Connection, capability: Capability, key: bytes) -> Iterator[list[bytes]]:
    """The digest of every row of the capability's query, in buckets: each the digests that
    share their first `PREFIX_BYTES` bytes (in no order, a row held twice there twice), the
    buckets in ascending order of that prefix. Raises as `connectors.source.stream` does.

    The database joins each bucket's digests into one value: a driver's cost is per row
    (PyMySQL's is high), and grouping by a prefix needs no sort of the rows themselves."""
    prefix = f"substring(d FROM 1 FOR {PREFIX_BYTES})" if _postgresql(connection) else f"LEFT(d, {PREFIX_BYTES})"
    if _postgresql(connection):
        joined = "string_agg(d, ''::bytea)"
    else:
        # GROUP_CONCAT stops at group_concat_max_len bytes (1 KiB by default): room for a bucket.
        connection.execute(text(f"SET SESSION group_concat_max_len = {MAX_BUCKET_BYTES}"))
        joined = "GROUP_CONCAT(d SEPARATOR '')"
    shape = (
        f"SELECT {joined} FROM (SELECT {{digest}} AS d FROM ({{query}}) AS q) AS x GROUP BY {prefix} ORDER BY {prefix}"
    )
    query, params = _wrapped(connection, capability, key, shape)
    for chunk in stream_scalars(connection, query, params, capability, chunk_rows=256):
        for value in chunk:
            blob = bytes(value)
            yield [blob[at : at + DIGEST_BYTES] for at in range(0, len(blob), DIGEST_BYTES)]


def _postgresql(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


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
    postgresql = _postgresql(connection)
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
    if _postgresql(connection):
        digest = (
            f"substring(sha256(CAST(:{_KEY} AS bytea) || convert_to(CAST(ROW(q.*) AS text), 'UTF8')) FROM 1 FOR 16)"
        )
        value: object = key
    else:
        columns = ", ".join(f"q.`{name.replace('`', '``')}`" for name in column_names(connection, capability))
        digest = f"LEFT(UNHEX(SHA2(CONCAT(:{_KEY}, JSON_ARRAY({columns})), 256)), 16)"
        value = key.hex()
    return text(shape.format(digest=digest, query=inner)), {**capability.params, _KEY: value}
