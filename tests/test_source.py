"""connectors.source on SQLite: chunks bounded and complete, memory flat, the dialect's query
variant chosen, driver errors translated naming the capability and never a value.

The same reading against real PostgreSQL and MariaDB servers is in tests/test_agency_databases.py.
"""

from __future__ import annotations

import gc
import sqlite3
import tracemalloc
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from pydantic import ValidationError
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError, ProgrammingError

from connectors import source
from connectors.config import Capability, ConnectorConfig
from connectors.indexer import collect
from connectors.source import agency_database, evidence_chunks
from xiezhi.errors import InvalidInput, Unavailable

VALID_ID = "11010519491231002X"
CAPABILITY = {"id": "tax.rows", "title": "证据行", "tier": 2, "query": "SELECT 1"}


def _config(url: str, query: str | dict[str, str], capability: str = "tax.rows") -> ConnectorConfig:
    return ConnectorConfig.model_validate(
        {
            "connector": "tax",
            "title": "税务机关",
            "database_url": url,
            "capabilities": [{"id": capability, "title": "证据行", "tier": 2, "query": query}],
        }
    )


def _database(path: Path, rows: int) -> str:
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("CREATE TABLE evidence (subject_id TEXT, seq INTEGER)")
        connection.executemany("INSERT INTO evidence VALUES (?, ?)", ((VALID_ID, n) for n in range(rows)))
    return f"sqlite:///{path}"


def _chunks(config: ConnectorConfig, chunk_rows: int) -> list[list[tuple[Any, ...]]]:
    with agency_database(config) as connection:
        return list(evidence_chunks(connection, config.capabilities[0], chunk_rows=chunk_rows))


def test_chunks_hold_every_row_once_in_order_and_none_holds_more_than_the_bound(tmp_path: Path) -> None:
    config = _config(_database(tmp_path / "a.sqlite", 2_345), "SELECT subject_id, seq FROM evidence ORDER BY seq")
    chunks = _chunks(config, 1_000)
    assert [len(chunk) for chunk in chunks] == [1_000, 1_000, 345]
    assert [row for chunk in chunks for row in chunk] == [(VALID_ID, n) for n in range(2_345)]
    assert [len(chunk) for chunk in _chunks(config, 1)] == [1] * 2_345


def test_an_empty_result_yields_no_chunk_and_a_chunk_bound_below_one_is_refused(tmp_path: Path) -> None:
    config = _config(_database(tmp_path / "a.sqlite", 0), "SELECT subject_id FROM evidence")
    assert _chunks(config, 10) == []
    assert collect(config)["tax.rows"].rows == 0
    with pytest.raises(ValueError, match="chunk_rows"):
        _chunks(config, 0)


def _peak_while_reading(config: ConnectorConfig) -> int:
    """The most memory Python allocates at once while every chunk is read and dropped."""
    with agency_database(config) as connection:
        gc.collect()
        tracemalloc.start()
        try:
            for _chunk in evidence_chunks(connection, config.capabilities[0], chunk_rows=500):
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


def test_memory_while_reading_does_not_grow_with_the_result(tmp_path: Path) -> None:
    query = "SELECT subject_id, seq FROM evidence"
    small = _peak_while_reading(_config(_database(tmp_path / "small.sqlite", 5_000), query))
    large = _peak_while_reading(_config(_database(tmp_path / "large.sqlite", 100_000), query))
    # Twenty times the rows; the rows of one result alone would take megabytes.
    assert large < 2 * small + 200_000, (small, large)


def test_the_connections_dialect_chooses_the_query_variant(tmp_path: Path) -> None:
    url = _database(tmp_path / "a.sqlite", 3)
    variants = {"default": "SELECT 'default' FROM evidence", "sqlite": "SELECT 'sqlite' FROM evidence"}
    assert _chunks(_config(url, variants), 10) == [[("sqlite",)] * 3]
    assert _chunks(_config(url, {"default": "SELECT 'default' FROM evidence"}), 10) == [[("default",)] * 3]
    with pytest.raises(InvalidInput, match=r"capability tax\.rows: no query for dialect sqlite and no default"):
        _chunks(_config(url, {"postgresql": "SELECT 1"}), 10)


def test_a_mariadb_engine_runs_the_mysql_variant_and_other_dialects_the_default() -> None:
    capability = Capability.model_validate(
        {"id": "tax.rows", "title": "证据行", "tier": 2, "query": {"default": "A", "mysql": "M", "oracle": "O"}}
    )
    assert [capability.query_for(name) for name in ("mariadb", "mysql", "oracle", "postgresql", "dm")] == list("MMOAA")
    plain = Capability.model_validate({"id": "tax.rows", "title": "证据行", "tier": 2, "query": "Q"})
    assert plain.query_for("oracle") == "Q"


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ({"postgres": "SELECT 1"}, "unknown dialect .postgres."),
        ({}, "at least one variant"),
        ({"mysql": ""}, "at least 1 character"),
    ],
)
def test_a_query_mapping_with_a_misspelt_dialect_or_no_variant_is_refused(query: dict[str, str], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        _config("sqlite://", query)


def test_a_query_the_database_refuses_is_invalid_input_naming_the_capability_not_a_value(tmp_path: Path) -> None:
    url = _database(tmp_path / "a.sqlite", 3)
    for query in ("SELECT no_such_column FROM evidence", "SELECT subject_id FROM no_such_table", "SELEKT 1"):
        with pytest.raises(InvalidInput) as caught:
            _chunks(_config(url, query, capability="tax.broken"), 10)
        message = caught.value.public_message
        assert message.startswith("capability tax.broken: the agency database refused the query (OperationalError")
        assert "SQLite error 1" in message
        assert "no_such" not in message and VALID_ID not in message


def test_a_database_that_cannot_be_opened_is_unavailable_naming_the_connector(tmp_path: Path) -> None:
    config = _config(f"sqlite:///{tmp_path / 'missing' / 'a.sqlite'}", "SELECT 1")
    with pytest.raises(Unavailable, match=r"^connector tax: the agency database cannot be reached \(OperationalError"):
        collect(config)


def test_a_url_naming_no_installed_driver_is_invalid_input_without_the_url() -> None:
    config = _config("nosuchdialect+nodriver://reader:s3cret@db.example/agency", "SELECT 1")
    with pytest.raises(InvalidInput) as caught:
        collect(config)
    assert caught.value.public_message.startswith("connector tax: database_url names no installed dialect")
    assert "s3cret" not in caught.value.public_message


def _driver_error(kind: type[DBAPIError], original: Exception, *, invalidated: bool = False) -> DBAPIError:
    return kind("SELECT …", {}, original, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    ("error", "expected", "described"),
    [
        (_driver_error(ProgrammingError, psycopg.errors.UndefinedColumn()), InvalidInput, "SQLSTATE 42703"),
        (_driver_error(DataError, psycopg.errors.InvalidTextRepresentation()), InvalidInput, "SQLSTATE 22P02"),
        (_driver_error(OperationalError, psycopg.errors.QueryCanceled()), Unavailable, "SQLSTATE 57014"),
        (_driver_error(OperationalError, psycopg.errors.DeadlockDetected()), Unavailable, "SQLSTATE 40P01"),
        (_driver_error(OperationalError, psycopg.OperationalError(), invalidated=True), Unavailable, "Operational"),
        (_driver_error(OperationalError, pymysql.err.OperationalError(1054)), InvalidInput, "error 1054"),
        (_driver_error(ProgrammingError, pymysql.err.ProgrammingError(1064)), InvalidInput, "error 1064"),
        (_driver_error(OperationalError, pymysql.err.OperationalError(1205)), Unavailable, "error 1205"),
        (_driver_error(OperationalError, pymysql.err.OperationalError(2013), invalidated=True), Unavailable, "2013"),
        (_driver_error(InterfaceError, Exception()), Unavailable, "Exception"),
        (_driver_error(OperationalError, Exception()), InvalidInput, "Exception"),
    ],
)
def test_driver_errors_are_told_apart_by_their_code_and_never_quote_the_driver(
    error: DBAPIError, expected: type[Exception], described: str
) -> None:
    error.orig.args = (*error.orig.args[:1], f"invalid input syntax: {VALID_ID}")  # type: ignore[union-attr]
    translated = source._translated(error, Capability.model_validate(CAPABILITY))
    assert type(translated) is expected
    assert translated.public_message.startswith("capability tax.rows: ")
    assert described in translated.public_message and VALID_ID not in translated.public_message
