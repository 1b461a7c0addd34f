"""Connectors reading the agency's own PostgreSQL and MariaDB databases (connectors.source).

Each backend gets the generated agency rows (devkit.demo.generate, `databases=`), and every
reference connector's index built from it under one fixed key must equal the SQLite build
of the same rows token for token, capability by capability, with the same row and
invalid-row counts, whether built in memory (connectors.indexer) or incrementally
(connectors.incremental, the build `xiezhi connector publish` runs). The connector reads
through an account that may only SELECT. A table of one subject per ID spelled every way
the domain allows must collapse to one subject per person on every backend. Broken queries
fail naming the capability, never a value; the drivers read through server-side cursors,
in bounded memory.
"""

from __future__ import annotations

import gc
import re
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, make_url, text

from connectors import row_digests
from connectors.config import Capability, ConnectorConfig
from connectors.incremental import build_and_publish_incremental
from connectors.indexer import BuiltIndex, build
from connectors.publisher import TokenStream
from connectors.source import agency_database, evidence_chunks
from devkit.demo.agency_db import write_tables
from devkit.demo.generate import generate
from devkit.environment import load_roster
from xiezhi import oprf
from xiezhi.errors import InvalidInput, Unavailable, XiezhiError
from xiezhi.ids import organisation_code_check_char, resident_id_check_char, uscc_check_char
from xiezhi.wire import PublicationView

pytestmark = [
    pytest.mark.integration,  # every test starts PostgreSQL or MariaDB
    # PyMySQL's unbuffered cursor, collected after its connection was killed (the lost
    # connection test), tries to finish reading from the closed socket inside __del__.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

KEY = oprf.derive_key_pair(bytes(range(32)), b"xiezhi test agency databases", oprf.Mode.VOPRF)
SEED, DEBTORS = 11, 160
BACKENDS = ["postgresql", "mysql"]


@dataclass(frozen=True)
class Server:
    """A database server the test may create databases and read-only accounts on."""

    dialect: str
    admin_url: str

    def database(self, name: str) -> tuple[str, str]:
        """A new empty database: (an admin URL, a URL of an account that may only read it)."""
        reader = f"r{uuid.uuid4().hex[:12]}"
        url = make_url(self.admin_url)
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                for statement in self._setup(name, reader):
                    connection.execute(text(statement))
        finally:
            admin.dispose()
        admin_url = url.set(database=name).render_as_string(hide_password=False)
        return admin_url, url.set(username=reader, database=name).render_as_string(hide_password=False)

    def grant_reading(self, name: str, reader_url: str) -> None:
        """Let the reader SELECT every table now in the database (PostgreSQL grants per table)."""
        if self.dialect != "postgresql":
            return
        engine = create_engine(make_url(self.admin_url).set(database=name), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                reader = make_url(reader_url).username
                connection.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader}"))
        finally:
            engine.dispose()

    def _setup(self, name: str, reader: str) -> list[str]:
        if self.dialect == "postgresql":
            return [f"CREATE DATABASE {name} ENCODING 'UTF8'", f"CREATE ROLE {reader} LOGIN"]
        return [
            f"CREATE DATABASE {name} CHARACTER SET utf8mb4",
            f"CREATE USER '{reader}'@'127.0.0.1'",
            f"GRANT SELECT ON {name}.* TO '{reader}'@'127.0.0.1'",
        ]


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest) -> Server:
    fixture = "postgres" if request.param == "postgresql" else "mariadb"
    return Server(request.param, request.getfixturevalue(fixture))


def _roster_configs() -> list[ConnectorConfig]:
    return [entry.config for entry in load_roster()]


def _with_url(config: ConnectorConfig, url: str) -> ConnectorConfig:
    return config.model_copy(update={"database_url": url})


def _fingerprint(built: BuiltIndex) -> list[tuple[str, tuple[bytes, ...], int, int]]:
    return [(index.capability.id, index.tokens, index.rows, index.invalid_rows) for index in built.capabilities]


@pytest.fixture(scope="module")
def sqlite_builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltIndex]:
    """Every reference connector built from the generated SQLite databases."""
    root = tmp_path_factory.mktemp("sqlite")
    generate(root, seed=SEED, debtors=DEBTORS)
    return {
        config.connector: build(_with_url(config, f"sqlite:///{root / 'agencies' / config.connector}.sqlite"), KEY, 1)
        for config in _roster_configs()
    }


@pytest.fixture(scope="module")
def server_databases(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The same generated rows written to the server, one database per agency: each
    connector's URL of an account that may only read its database."""
    configs = _roster_configs()
    urls = {config.connector: server.database(f"a{uuid.uuid4().hex[:10]}_{config.connector}") for config in configs}
    admins = {name: admin for name, (admin, _) in urls.items()}
    generate(tmp_path_factory.mktemp(server.dialect), seed=SEED, debtors=DEBTORS, databases=admins)
    for admin, reader in urls.values():
        server.grant_reading(make_url(admin).database or "", reader)
    return {name: reader for name, (_, reader) in urls.items()}


@pytest.fixture(scope="module")
def server_builds(server_databases: dict[str, str]) -> dict[str, BuiltIndex]:
    """Every reference connector built (connectors.indexer) from the server's databases."""
    return {c.connector: build(_with_url(c, server_databases[c.connector]), KEY, 1) for c in _roster_configs()}


@pytest.mark.parametrize("connector", ["court", "tax", "housing_fund", "civil_affairs"])
def test_the_index_built_from_the_server_equals_the_sqlite_build(
    connector: str, sqlite_builds: dict[str, BuiltIndex], server_builds: dict[str, BuiltIndex]
) -> None:
    expected, actual = sqlite_builds[connector], server_builds[connector]
    assert [index.capability.id for index in expected.capabilities] == [
        c.id for c in next(c for c in _roster_configs() if c.connector == connector).capabilities
    ]
    assert _fingerprint(actual) == _fingerprint(expected)
    assert (actual.subjects, actual.public_key) == (expected.subjects, expected.public_key)


def test_the_compared_rows_hold_invalid_ids_and_each_capability_holds_for_someone(
    sqlite_builds: dict[str, BuiltIndex],
) -> None:
    indexes = [index for built in sqlite_builds.values() for index in built.capabilities]
    assert len(indexes) == 9 and all(index.tokens for index in indexes)
    assert sum(index.invalid_rows for index in indexes) >= 5, "mistyped IDs are read and counted, not dropped"


class _Recorder:
    """Stands in for the gateway in a first incremental build: records each whole set's count
    and digest (what the gateway checks at commit) and publishes nothing."""

    def __init__(self) -> None:
        self.sets: dict[str, tuple[int, str]] = {}

    def publish_set(
        self, connector: str, epoch: int, public_key: bytes, capability: Capability, tokens: TokenStream
    ) -> PublicationView:
        self.sets[capability.id] = (tokens.count, tokens.digest)
        return PublicationView(
            publication_id=f"p-{capability.id}",
            connector=connector,
            capability=capability.id,
            epoch=epoch,
            token_count=tokens.count,
            received=tokens.count,
            committed=True,
        )

    def publish_delta(self, *args: object) -> PublicationView:
        raise AssertionError("a first build in an epoch publishes whole sets")

    def publication(self, connector: str, publication_id: str) -> PublicationView:
        raise AssertionError("a first build in an epoch asks for no publication")

    def activate(self, connector: str, epoch: int) -> None:
        pass


@pytest.mark.parametrize("connector", ["court", "tax", "housing_fund", "civil_affairs"])
def test_the_incremental_build_from_the_server_publishes_the_sqlite_builds_sets(
    connector: str, sqlite_builds: dict[str, BuiltIndex], server_databases: dict[str, str], tmp_path: Path
) -> None:
    """The build `xiezhi connector publish` runs (connectors.incremental) reads the same rows."""
    config = _with_url(next(c for c in _roster_configs() if c.connector == connector), server_databases[connector])
    recorder = _Recorder()
    report = build_and_publish_incremental(config, KEY, 1, tmp_path, recorder, workers=1)
    expected = sqlite_builds[connector].capabilities
    assert recorder.sets == {index.capability.id: (len(index.tokens), index.digest) for index in expected}
    assert [(r.rows, r.invalid_rows) for r in report.capabilities] == [(i.rows, i.invalid_rows) for i in expected]


class _Keeper(_Recorder):
    """Stands in for the gateway across builds: keeps each capability's set and applies deltas."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: dict[str, set[bytes]] = {}
        self.versions: dict[str, int] = {}

    def publish_set(
        self, connector: str, epoch: int, public_key: bytes, capability: Capability, tokens: TokenStream
    ) -> PublicationView:
        self.tokens[capability.id] = set(_tokens(tokens))
        self.versions[capability.id] = 1
        return super().publish_set(connector, epoch, public_key, capability, tokens)

    def publish_delta(  # type: ignore[override]
        self, connector: str, epoch: int, public_key: bytes, capability: Capability, base: str,
        added: TokenStream, removed: TokenStream,
    ) -> PublicationView:  # fmt: skip
        held = self.tokens[capability.id]
        assert not held & set(_tokens(added)) and set(_tokens(removed)) <= held
        self.tokens[capability.id] = (held - set(_tokens(removed))) | set(_tokens(added))
        self.versions[capability.id] += 1
        view = super().publish_set(connector, epoch, public_key, capability, added)
        return view.model_copy(update={"version": self.versions[capability.id]})


def _tokens(stream: TokenStream) -> list[bytes]:
    joined = b"".join(stream.chunks())
    return [joined[at : at + 16] for at in range(0, len(joined), 16)]


def _cases(count: int) -> list[tuple[str, str, str]]:
    """终本 and other cases of `count` debtors, two or three each, some rows twice, some IDs invalid."""
    rows = []
    for n in range(count):
        first17 = f"3308031980{n // 28 + 1:02d}{n % 28 + 1:02d}{n % 1000:03d}"
        debtor = first17 + resident_id_check_char(first17) if n % 17 else first17 + "0" * (first17[-1] != "0")
        for k in range(2 + n % 2):
            rows.append(
                (
                    debtor if n % 5 else debtor.lower(),
                    f"（2023）浙0803执{n * 10 + k}号",
                    "终本" if k or n % 3 else "执行中",
                )
            )
    return [*rows, *rows[:7]]


CASES_TABLE = {"enforcement_cases": [("debtor_id", "TEXT"), ("case_no", "TEXT"), ("status", "TEXT")]}


def _cases_config(url: str) -> ConnectorConfig:
    court = next(c for c in _roster_configs() if c.connector == "court")
    kept = [c for c in court.capabilities if c.id == "court.multiple_terminated"]
    return court.model_copy(update={"database_url": url, "capabilities": kept})


def test_a_rebuild_reads_only_new_rows_whole_and_publishes_what_a_clean_build_would(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database digests the rows (connectors.row_digests): the rebuild merges the sorted
    digests with the published ones, reads whole only the rows that changed or appeared, and
    its set equals a clean build of the changed table (rows deleted, re-dated, new, doubled)."""
    rows = _cases(400)
    admin, _ = server.database(f"i{uuid.uuid4().hex[:12]}")
    write_tables(admin, CASES_TABLE, {"enforcement_cases": rows})
    keeper = _Keeper()
    build_and_publish_incremental(_cases_config(admin), KEY, 1, tmp_path / "state", keeper, workers=1)
    changed = [r for n, r in enumerate(rows) if n % 50 != 3]  # deleted
    changed = [(d, c, "执行中" if n % 61 == 5 else s) for n, (d, c, s) in enumerate(changed)]  # status changed
    changed += [(rows[n][0], f"（2024）浙0803执{n}号", "终本") for n in range(0, 120, 9)]  # new cases, known people
    changed += [changed[11], changed[11]]  # one row three times over
    write_tables(admin, CASES_TABLE, {"enforcement_cases": changed})
    monkeypatch.setattr(row_digests, "PICK", 7)  # several passes, as for many new rows
    statements: list[str] = []

    def record(_connection: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if "xiezhi_row_key" in statement or "enforcement_cases" in statement:
            statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        report = build_and_publish_incremental(_cases_config(admin), KEY, 1, tmp_path / "state", keeper, workers=1)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    write_tables(f"sqlite:///{tmp_path / 'clean.sqlite'}", CASES_TABLE, {"enforcement_cases": changed})
    (clean,) = build(_cases_config(f"sqlite:///{tmp_path / 'clean.sqlite'}"), KEY, 1).capabilities
    assert keeper.tokens["court.multiple_terminated"] == set(clean.tokens)
    (reported,) = report.capabilities
    assert (reported.rows, reported.invalid_rows, reported.full) == (clean.rows, clean.invalid_rows, False)
    assert 0 < report.subjects < 60  # only the subjects whose rows changed
    # The rebuild asked for the sorted digests, then for the new rows by digest: never every row whole.
    reads = [s for s in statements if "xiezhi_row_key" in s and "GROUP BY" not in s]
    assert any("GROUP BY" in s for s in statements) and reads, statements
    assert all(" IN (" in s or "= ANY(" in s for s in reads), reads
    assert len(reads) > 1  # the new rows picked PICK at a time, over several passes


# --- every spelling of an ID --------------------------------------------------------------


def _resident(first16: str) -> str:
    """A valid resident ID: `first16` and a sequence digit chosen so the check character is X."""
    for digit in "0123456789":
        if resident_id_check_char(first16 + digit) == "X":
            return first16 + digit + "X"
    raise AssertionError("no sequence digit gives X")


def _uscc() -> str:
    body = "MA2CDE7P"
    first17 = "91330803" + body + organisation_code_check_char(body)
    return first17 + uscc_check_char(first17)


FULL_WIDTH = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")


def _spellings(canonical: str) -> list[str]:
    """The ways agencies store one ID: every spelling normalises to `canonical`."""
    spelt = [
        canonical,
        canonical.lower(),
        canonical.translate(FULL_WIDTH),
        canonical.translate(FULL_WIDTH).replace("Ｘ", "ｘ"),
        f"{canonical[:6]} {canonical[6:14]} {canonical[14:]}",
        f"{canonical[:6]}-{canonical[6:14]}-{canonical[14:]}",
        f"\u3000{canonical}\t",
        f"{canonical}.",
        f" {canonical[:6]}/{canonical[6:]} ",
    ]
    if canonical[6:8] == "19" and canonical[:17].isdigit():
        spelt.append(canonical[:6] + canonical[8:17])  # the old 15-digit number
    return spelt


SPELLED = [_resident("3308031965021400"), _resident("1101051949123100"), _uscc()]
SPELLINGS_TABLE = {"id_spellings": [("holder_id", "TEXT"), ("spelling_no", "INTEGER")]}


def _spellings_config(url: str) -> ConnectorConfig:
    """Two capabilities: every row (counts), and subjects holding all their spellings."""
    fewest = min(len(_spellings(canonical)) for canonical in SPELLED)
    return ConnectorConfig.model_validate(
        {
            "connector": "tax",
            "title": "税务机关",
            "database_url": url,
            "capabilities": [
                {"id": "tax.any_row", "title": "任一行", "tier": 2, "query": "SELECT holder_id FROM id_spellings"},
                {
                    "id": "tax.every_spelling",
                    "title": "每种写法",
                    "tier": 2,
                    "query": 'SELECT holder_id, spelling_no AS "key" FROM id_spellings',
                    "reduce": {"distinct_keys_at_least": fewest},
                },
            ],
        }
    )


def _spelling_rows() -> list[tuple[str, int]]:
    rows = [(spelt, n) for canonical in SPELLED for n, spelt in enumerate(_spellings(canonical))]
    return [*rows, (SPELLED[0][:17] + "0", 99)]  # one number with a wrong check character


def test_every_spelling_of_an_id_normalises_identically_on_every_backend(server: Server, tmp_path: Path) -> None:
    write_tables(f"sqlite:///{tmp_path / 'spellings.sqlite'}", SPELLINGS_TABLE, {"id_spellings": _spelling_rows()})
    expected = build(_spellings_config(f"sqlite:///{tmp_path / 'spellings.sqlite'}"), KEY, 1)
    admin, reader = server.database(f"s{uuid.uuid4().hex[:12]}")
    write_tables(admin, SPELLINGS_TABLE, {"id_spellings": _spelling_rows()})
    server.grant_reading(make_url(admin).database or "", reader)
    actual = build(_spellings_config(reader), KEY, 1)
    assert _fingerprint(actual) == _fingerprint(expected)
    every_row, every_spelling = expected.capabilities
    assert (every_row.rows, every_row.invalid_rows, len(every_row.tokens)) == (len(_spelling_rows()), 1, 3)
    assert len(every_spelling.tokens) == len(SPELLED)  # each person's spellings added up to one subject


# --- `performed` as the agency stores it ----------------------------------------------------

PERFORMED: dict[str, tuple[list[str | int | bool | None], int]] = {  # type → (values, how many mean "not performed")
    "TEXT": (["0", "否", "FALSE", " no ", "f", "N", "1", "是", "true", "yes", None], 6),
    "INTEGER": ([0, 1, None], 1),
    "BOOLEAN": ([False, True, None], 1),
}


def _unpaid_config(url: str) -> ConnectorConfig:
    court = next(c for c in _roster_configs() if c.connector == "court")
    unpaid = [c for c in court.capabilities if c.id == "court.winning_plaintiff_unpaid"]
    return court.model_copy(update={"database_url": url, "capabilities": unpaid})


@pytest.mark.parametrize("declared", sorted(PERFORMED))
def test_performed_read_as_text_means_the_same_on_every_backend(server: Server, tmp_path: Path, declared: str) -> None:
    values, unpaid = PERFORMED[declared]
    first17s = [f"33080319700101{n:03d}" for n in range(len(values))]
    plaintiffs = [first17 + resident_id_check_char(first17) for first17 in first17s]
    table = {"civil_cases": [("plaintiff_id", "TEXT"), ("outcome", "TEXT"), ("performed", declared)]}
    rows = {"civil_cases": [(pid, "判决", value) for pid, value in zip(plaintiffs, values, strict=True)]}
    write_tables(f"sqlite:///{tmp_path / 'court.sqlite'}", table, rows)
    expected = build(_unpaid_config(f"sqlite:///{tmp_path / 'court.sqlite'}"), KEY, 1)
    admin, _ = server.database(f"p{uuid.uuid4().hex[:12]}")
    write_tables(admin, table, rows)
    actual = build(_unpaid_config(admin), KEY, 1)
    assert len(expected.capabilities[0].tokens) == unpaid
    assert _fingerprint(actual) == _fingerprint(expected)


# --- errors -------------------------------------------------------------------------------


@pytest.fixture
def agency(server: Server) -> Iterator[str]:
    """A database holding one table of two rows (an ID and a name); its admin URL."""
    admin, _ = server.database(f"e{uuid.uuid4().hex[:12]}")
    write_tables(admin, {"people": [("person_id", "TEXT"), ("name", "TEXT")]}, {"people": [(SPELLED[0], "张三")]})
    yield admin


def _one_capability(url: str, query: str) -> ConnectorConfig:
    return ConnectorConfig.model_validate(
        {
            "connector": "tax",
            "title": "税务机关",
            "database_url": url,
            "capabilities": [{"id": "tax.broken", "title": "坏查询", "tier": 2, "query": query}],
        }
    )


@pytest.mark.parametrize(
    "query",
    [
        "SELECT no_such_column FROM people",
        "SELECT person_id FROM no_such_table",
        "SELEKT person_id FROM people",
        "SELECT CAST(person_id AS INTEGER) FROM people",  # PostgreSQL would quote the ID: never passed on
    ],
)
def test_a_query_the_database_refuses_names_the_capability_and_no_value(agency: str, query: str) -> None:
    try:
        build(_one_capability(agency, query), KEY, 1)
    except InvalidInput as refused:
        message = refused.public_message
        assert message.startswith("capability tax.broken: the agency database refused the query ("), message
        assert SPELLED[0] not in message and "张三" not in message and "no_such" not in message
        assert "SQLSTATE" in message or "error" in message, "the driver's code is named"
    else:
        # MySQL reads a non-numeric string as 0 with a warning instead of refusing: nothing to report.
        assert "CAST" in query and make_url(agency).get_backend_name() == "mysql"


def test_a_server_that_is_not_there_is_unavailable_naming_the_connector(server: Server) -> None:
    url = make_url(server.admin_url).set(port=1, database="absent")
    with pytest.raises(Unavailable, match=r"^connector tax: the agency database cannot be reached \("):
        build(_one_capability(url.render_as_string(False), "SELECT 1"), KEY, 1)


# --- server-side cursors ------------------------------------------------------------------


def _generated_rows(dialect: str, count: int) -> str:
    if dialect == "postgresql":
        return f"SELECT 'id-' || n AS subject_id, n AS seq FROM generate_series(1, {count}) AS n"
    return f"SELECT CONCAT('id-', seq) AS subject_id, seq FROM seq_1_to_{count}"  # MariaDB's sequence engine


def _peak_while_reading(url: str, dialect: str, count: int) -> tuple[int, int]:
    """(rows read, the most memory Python held at once) reading `count` rows in chunks of 1,000."""
    config = _one_capability(url, _generated_rows(dialect, count))
    read = 0
    with agency_database(config) as connection:
        gc.collect()
        tracemalloc.start()
        try:
            for chunk in evidence_chunks(connection, config.capabilities[0], chunk_rows=1_000):
                assert 1 <= len(chunk) <= 1_000
                read += len(chunk)
            return read, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


def test_rows_stream_in_bounded_memory_from_a_server_side_cursor(server: Server, agency: str) -> None:
    small_rows, small = _peak_while_reading(agency, server.dialect, 10_000)
    large_rows, large = _peak_while_reading(agency, server.dialect, 200_000)
    assert (small_rows, large_rows) == (10_000, 200_000)
    # Twenty times the rows: a client-side cursor would hold them all (tens of megabytes).
    assert large < 2 * small + 500_000, (small, large)


def test_the_driver_reads_through_a_server_side_cursor(server: Server, agency: str) -> None:
    """psycopg's named cursor (DECLARE … FETCH), PyMySQL's unbuffered SSCursor."""
    config = _one_capability(agency, _generated_rows(server.dialect, 5_000))
    cursors: list[str] = []

    def record(connection: Any, cursor: Any, *rest: Any) -> None:
        cursors.append(type(cursor).__name__)

    with agency_database(config) as connection:
        event.listen(connection, "before_cursor_execute", record)
        assert sum(len(chunk) for chunk in evidence_chunks(connection, config.capabilities[0], chunk_rows=100)) == 5_000
    assert cursors == ["ServerCursor" if server.dialect == "postgresql" else "SSCursor"]


_SESSION_ID = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}


def _kill(dialect: str, session: int) -> str:
    return f"SELECT pg_terminate_backend({session})" if dialect == "postgresql" else f"KILL {session}"


def _read_while_killed(dialect: str, url: str) -> XiezhiError:
    """Read 200,000 rows; after the first chunk, kill the reading session from another. The
    error the read ends with."""
    config = _one_capability(url, _generated_rows(dialect, 200_000))
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with agency_database(config) as connection:
            session = int(connection.execute(text(_SESSION_ID[dialect])).scalar_one())
            chunks = evidence_chunks(connection, config.capabilities[0], chunk_rows=100)
            next(chunks)
            with admin.connect() as other:
                other.execute(text(_kill(dialect, session)))
            for _chunk in chunks:
                pass
    except XiezhiError as failed:
        return failed
    finally:
        admin.dispose()
    raise AssertionError("the read outlived its connection")


def test_a_connection_lost_while_reading_is_unavailable(server: Server, agency: str) -> None:
    failed = _read_while_killed(server.dialect, agency)
    gc.collect()  # the dead cursor is collected here, under this module's warning filter
    assert isinstance(failed, Unavailable)
    # PostgreSQL's next FETCH fails. MariaDB may already have written every row into the
    # socket's buffers, so the read completes and the rollback on closing fails instead:
    # either way the build stops, and no read ends short of its rows without an error.
    assert re.match(r"(capability tax\.broken|connector tax): the agency database failed", failed.public_message)


def test_a_statement_postgresql_cancels_is_unavailable(postgres: str) -> None:
    admin, _ = Server("postgresql", postgres).database(f"c{uuid.uuid4().hex[:12]}")
    url = make_url(admin).update_query_dict({"options": "-c statement_timeout=50"})
    config = _one_capability(url.render_as_string(hide_password=False), "SELECT 'x' FROM pg_sleep(2)")
    with pytest.raises(Unavailable, match=r"the agency database failed \(QueryCanceled, SQLSTATE 57014\)"):
        build(config, KEY, 1)
