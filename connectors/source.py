"""Reading a capability's evidence rows from the agency's own database, chunk by chunk.

    with agency_database(config) as connection:
        for chunk in evidence_chunks(connection, capability):
            ...  # at most CHUNK_ROWS tuples (subject_id[, key[, value]])

The query runs through SQLAlchemy with `stream_results`, so the driver reads from a
server-side cursor and never holds the whole result: psycopg a named cursor (DECLARE …
FETCH in chunks; it needs the transaction SQLAlchemy begins), PyMySQL and mysqlclient their
unbuffered `SSCursor`, oracledb its array fetch. SQLite's cursor is already lazy. Memory is
bounded by the chunk size, not the table.

Driver errors are translated here and only here. A database that cannot be reached, drops
the connection or gives up for a reason of its own (a deadlock, a timeout, a shutdown) is
`Unavailable`; a query the database refuses (a syntax error, an unknown table or column, a
type error) is `InvalidInput`. Each message names the capability (or, for a connection
that fails, the connector) and the driver's error class and code, never the driver's text,
which may quote a row's value.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Connection, Executable, create_engine, text
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    NoSuchModuleError,
    SQLAlchemyError,
)

from connectors.config import Capability, ConnectorConfig
from xiezhi.errors import InvalidInput, Unavailable, XiezhiError

__all__ = ["CHUNK_ROWS", "agency_database", "column_names", "evidence_chunks", "stream", "stream_scalars"]

# Rows fetched from the server per round trip, and the most a chunk holds.
CHUNK_ROWS = 10_000

# SQLSTATE classes that blame the database, not the query: connection exception, transaction
# rollback (deadlock, serialisation), insufficient resources, operator intervention (a
# cancelled statement, a shutdown), system error.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
# The same for MySQL and MariaDB, whose drivers report an error number instead: too many
# connections, shutdown, lock wait timeout, deadlock, query interrupted, statement timeouts
# (MariaDB 1969, MySQL 3024), server gone, connection lost.
_TRANSIENT_MYSQL_ERRORS = frozenset({1040, 1053, 1205, 1213, 1317, 1969, 3024, 2006, 2013})
# SQLite's primary result codes of the same kind: busy, locked, out of memory, I/O error,
# corrupt, disk full, cannot open the file.
_TRANSIENT_SQLITE_ERRORS = frozenset({5, 6, 7, 10, 11, 13, 14})


@contextmanager
def agency_database(config: ConnectorConfig) -> Iterator[Connection]:
    """A connection to the connector's database, closed and its engine disposed afterwards.

    Raises InvalidInput if `database_url` names no installed dialect or driver, Unavailable if
    the database cannot be reached or fails as the connection closes. Errors raised by the
    caller's block pass through untouched.
    """
    try:
        engine = create_engine(config.database_url)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        # The URL is not repeated: it may carry a password.
        raise InvalidInput(
            f"connector {config.connector}: database_url names no installed dialect and driver ({type(exc).__name__})"
        ) from None
    try:
        try:
            connection = engine.connect()
        except SQLAlchemyError as exc:
            raise Unavailable(
                f"connector {config.connector}: the agency database cannot be reached ({_described(exc)})"
            ) from None
        try:
            yield connection
        except BaseException:
            # Closing rolls back, which fails too on a lost connection: the block's error is
            # the one that says what happened.
            with suppress(SQLAlchemyError):
                connection.close()
            raise
        try:
            connection.close()
        except SQLAlchemyError as exc:
            raise Unavailable(
                f"connector {config.connector}: the agency database failed as the connection closed ({_described(exc)})"
            ) from None
    finally:
        engine.dispose()


def evidence_chunks(
    connection: Connection, capability: Capability, *, chunk_rows: int = CHUNK_ROWS
) -> Iterator[list[tuple[Any, ...]]]:
    """Yield the capability's rows as tuples, in chunks of 1 to `chunk_rows` rows.

    The query is the capability's variant for the connection's dialect, its params bound.
    Raises InvalidInput (no variant for the dialect; the database refused the query) or
    Unavailable (the database failed), when the query starts or while it is read.
    """
    query = text(capability.query_for(connection.dialect.name))
    yield from stream(connection, query, capability.params, capability, chunk_rows=chunk_rows)


def stream(
    connection: Connection,
    query: Executable,
    params: Mapping[str, Any],
    capability: Capability,
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[list[tuple[Any, ...]]]:
    """`query`'s rows as tuples, in chunks of 1 to `chunk_rows`, from a server-side cursor;
    errors translated as for `capability`'s query (see `evidence_chunks`)."""
    for partition in _partitions(connection, query, params, capability, chunk_rows, scalars=False):
        yield [tuple(row) for row in partition]


def stream_scalars(
    connection: Connection,
    query: Executable,
    params: Mapping[str, Any],
    capability: Capability,
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[Sequence[Any]]:
    """The first column of `query`'s rows, in chunks, as `stream` gives rows."""
    yield from _partitions(connection, query, params, capability, chunk_rows, scalars=True)


def _partitions(
    connection: Connection,
    query: Executable,
    params: Mapping[str, Any],
    capability: Capability,
    chunk_rows: int,
    *,
    scalars: bool,
) -> Iterator[Sequence[Any]]:
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    streaming = connection.execution_options(stream_results=True, yield_per=chunk_rows)
    try:
        with streaming.execute(query, dict(params)) as result:
            yield from (result.scalars() if scalars else result).partitions(chunk_rows)
    except SQLAlchemyError as exc:
        raise _translated(exc, capability) from None


def column_names(connection: Connection, capability: Capability) -> list[str]:
    """The names of the columns the capability's query returns (the query run for no row)."""
    query = f"SELECT * FROM ({capability.query_for(connection.dialect.name)}) AS q LIMIT 0"
    try:
        with connection.execute(text(query), capability.params) as result:
            return list(result.keys())
    except SQLAlchemyError as exc:
        raise _translated(exc, capability) from None


def _translated(exc: SQLAlchemyError, capability: Capability) -> XiezhiError:
    if _is_transient(exc):
        return Unavailable(f"capability {capability.id}: the agency database failed ({_described(exc)})")
    return InvalidInput(f"capability {capability.id}: the agency database refused the query ({_described(exc)})")


def _is_transient(exc: SQLAlchemyError) -> bool:
    if not isinstance(exc, DBAPIError):
        return True  # a pool timeout or a closed connection: nothing about the query
    if exc.connection_invalidated:
        return True
    code = _code(exc)
    if code is None:
        # Nothing to go by but the class; SQLite and MySQL drivers report a refused query as
        # OperationalError too, so only an InterfaceError (the driver's own state) blames
        # the database.
        return isinstance(exc, InterfaceError)
    kind, value = code
    if kind == "SQLSTATE":
        return str(value)[:2] in _TRANSIENT_SQLSTATE_CLASSES
    if kind == "SQLite error":
        return int(value) & 0xFF in _TRANSIENT_SQLITE_ERRORS  # the primary code of an extended one
    return value in _TRANSIENT_MYSQL_ERRORS


def _code(exc: DBAPIError) -> tuple[str, str | int] | None:
    """What the driver says the error is: a SQLSTATE (psycopg, psycopg2, ksycopg2), a SQLite
    result code (sqlite3), or a MySQL error number (PyMySQL, mysqlclient)."""
    original = exc.orig
    for attribute in ("sqlstate", "pgcode"):
        value = getattr(original, attribute, None)
        if isinstance(value, str) and len(value) == 5:
            return "SQLSTATE", value
    sqlite_code = getattr(original, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        return "SQLite error", sqlite_code
    arguments = getattr(original, "args", ())
    if arguments and isinstance(arguments[0], int):
        return "error", arguments[0]
    return None


def _described(exc: SQLAlchemyError) -> str:
    """The error's class and code: never its message, which may quote a value."""
    if not isinstance(exc, DBAPIError) or exc.orig is None:
        return type(exc).__name__
    code = _code(exc)
    name = type(exc.orig).__name__
    return name if code is None else f"{name}, {code[0]} {code[1]}"
