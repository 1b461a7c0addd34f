"""The gateway's schema through Alembic migrations (gateway/schema.py, gateway/migrations/).

An empty database is migrated at start only when asked (development); a database behind
head, or of the release before migrations, is refused until `xiezhi gateway migrate` runs;
that release's database is adopted with its data, and its audit log still verifies; on
PostgreSQL the application's role cannot change the schema or rewrite the log.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy_adapter import CasbinRule
from sqlmodel import Session, SQLModel, select

import gateway.authz.store
import gateway.sealing
import gateway.sightings  # noqa: F401  (their tables join SQLModel.metadata)
from audit_log.entries import AuditEvent, EventKind
from audit_log.export import DatabaseSource
from audit_log.store import LOG_TABLES, AuditLog
from audit_log.verify import verify
from gateway import indexes, schema
from gateway.db import Alarm, ConnectorEpoch, IndexDigest, Publication, QuotaUsage, make_engine
from gateway.keyring import LocalKeyring
from gateway.sealing import Sealer, SqlDataKeys
from gateway.vault import Vault
from tests.previous_release import AT, ENTRIES, LOG_KEY, create_previous_release
from tests.test_index_deltas import EVERY, Store, tokens


def _append_one(log: AuditLog) -> int:
    return log.append_now(
        AuditEvent(kind=EventKind.LOOKUP, at=AT, actor="prosecutor-2", org="330803", request_id="r-new",
                   action="lookup", outcome="ok", model="asset_sweep", detail={"rows": 1})
    )  # fmt: skip


def test_an_empty_database_is_refused_unless_start_may_migrate_it(database_url: str) -> None:
    with pytest.raises(schema.SchemaOutdated, match="xiezhi gateway migrate"):
        make_engine(database_url)
    engine = make_engine(database_url, migrate_empty=True)
    assert schema.current(engine) == schema.head()
    log = AuditLog.existing(engine)
    assert log.size() == 0 and _append_one(log) == 0  # the tail row is there
    with engine.begin() as connection, pytest.raises(DBAPIError, match="append-only"):
        connection.execute(text("UPDATE audit_entries SET kind = 'x'"))
    engine.dispose()
    make_engine(database_url).dispose()  # at head: opens without migrating


def test_a_database_behind_head_is_refused_even_in_development(database_url: str) -> None:
    engine = make_engine(database_url, migrate_empty=True)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    engine.dispose()
    with pytest.raises(schema.SchemaOutdated, match=r"revision older.*xiezhi gateway migrate"):
        make_engine(database_url, migrate_empty=True)


def test_the_migrated_schema_is_the_models(database_url: str) -> None:
    """Every table, column, type and index the models declare comes from the migrations, and
    the grants cover every table: a model changed without a revision fails here."""
    engine = make_engine(database_url, migrate_empty=True)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, [SQLModel.metadata, CasbinRule.metadata])  # type: ignore[arg-type]
        tables = set(inspect(connection).get_table_names())
    engine.dispose()
    assert differences == []
    assert tables == {*schema.ORDINARY_TABLES, *LOG_TABLES, "audit_tail", "alembic_version"}


def test_the_previous_release_database_is_refused_then_migrated_with_its_data(database_url: str) -> None:
    written = create_previous_release(database_url)
    with pytest.raises(schema.SchemaOutdated, match=r"no schema revision.*xiezhi gateway migrate"):
        make_engine(database_url, migrate_empty=True)  # holds data: never migrated at start

    done = schema.migrate(database_url, database_url)
    assert (done.before, done.after, done.granted) == (None, schema.head(), None)
    engine = make_engine(database_url)
    log = AuditLog.existing(engine)
    assert log.size() == ENTRIES and len(log.checkpoints()) == written.checkpoints > 1
    report = verify(DatabaseSource(log), LOG_KEY.verifier())
    assert report.ok, report.problems
    assert report.entries == ENTRIES and report.latest_checkpoint == ENTRIES
    with Session(engine) as session:
        assert session.exec(select(QuotaUsage.used)).one() == 42
        assert session.exec(select(ConnectorEpoch.connector)).one() == "court"
        assert session.exec(select(Alarm.id)).one() == "a-1"
    assert _append_one(log) == ENTRIES  # the log goes on where it was
    assert verify(DatabaseSource(log), LOG_KEY.verifier()).ok
    with engine.begin() as connection, pytest.raises(DBAPIError, match="append-only"):
        connection.execute(text("DELETE FROM audit_entries WHERE seq = 3"))
    engine.dispose()
    assert schema.migrate(database_url, database_url).before == schema.head()  # again: nothing to do


def test_tables_without_the_previous_schema_are_not_adopted(database_url: str) -> None:
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE something_else (id INTEGER PRIMARY KEY)"))
    with pytest.raises(schema.SchemaOutdated, match="not a Xiezhi gateway database"):
        schema.upgrade(engine)
    assert schema.current(engine) is None  # nothing stamped
    engine.dispose()


# ---- PostgreSQL: the migration role and the application role ---------------------------------


@dataclass(frozen=True)
class Roles:
    owner_url: str
    app_url: str
    app: str


def two_roles(base_url: str) -> Roles:
    """A new database owned by a new migration role, and a new application role that owns nothing."""
    suffix = uuid.uuid4().hex[:10]
    owner, app, database = f"owner_{suffix}", f"app_{suffix}", f"gw_{suffix}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE ROLE {owner} LOGIN"))
        connection.execute(text(f"CREATE ROLE {app} LOGIN"))
        connection.execute(text(f"CREATE DATABASE {database} OWNER {owner}"))
    admin.dispose()
    url = make_url(base_url).set(database=database)
    as_owner = url.set(username=owner).render_as_string(hide_password=False)
    return Roles(as_owner, url.set(username=app).render_as_string(hide_password=False), app)


@pytest.fixture
def roles(postgres: str) -> Iterator[Roles]:
    yield two_roles(postgres)


REFUSED_TO_THE_APPLICATION = [
    "DROP TRIGGER audit_entries_no_change ON audit_entries",
    "ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_no_change",
    "ALTER TABLE audit_entries DISABLE TRIGGER ALL",
    "DROP TABLE audit_entries",
    "DROP TABLE match_requests",
    "ALTER TABLE match_requests ADD COLUMN x integer",
    "UPDATE audit_entries SET kind = 'x'",
    "DELETE FROM audit_entries",
    "TRUNCATE audit_entries",
    "INSERT INTO alembic_version VALUES ('x')",
    "CREATE TABLE extra (id integer)",
    "CREATE OR REPLACE FUNCTION audit_log_refuse() RETURNS trigger AS $$ BEGIN RETURN NEW; END $$ LANGUAGE plpgsql",
    # Digest partitions: made and dropped only through the migration role's two functions.
    "DROP TABLE index_digests",
    "CREATE TABLE index_partitions.extra PARTITION OF index_digests FOR VALUES IN ('x')",
    "ALTER TABLE index_digests DETACH PARTITION index_partitions.extra",
    "CREATE OR REPLACE FUNCTION xiezhi_drop_digest_partition(publication text) RETURNS void AS $$ BEGIN END $$ "
    "LANGUAGE plpgsql",
]


@pytest.mark.integration
@pytest.mark.parametrize("statement", REFUSED_TO_THE_APPLICATION)
def test_the_application_role_cannot_change_the_schema_or_rewrite_the_log(roles: Roles, statement: str) -> None:
    done = schema.migrate(roles.owner_url, roles.app_url)
    assert done.granted == roles.app
    engine = make_engine(roles.app_url)  # at head: the application starts
    AuditLog.existing(engine).append_now(
        AuditEvent(kind=EventKind.LOOKUP, at=AT, actor="p", org="330803", request_id="r", action="lookup",
                   outcome="ok", model="m", detail={})
    )  # fmt: skip
    with engine.begin() as connection, pytest.raises(DBAPIError, match=r"must be owner|permission denied"):
        connection.execute(text(statement))
    engine.dispose()


@pytest.mark.integration
def test_the_application_role_does_the_gateways_work(roles: Roles) -> None:
    schema.migrate(roles.owner_url, roles.app_url)
    engine = make_engine(roles.app_url)
    log = AuditLog.existing(engine)
    assert _append_one(log) == 0 and log.size() == 1  # appends: INSERT and the tail's UPDATE
    with Session(engine) as session:  # rows of ordinary tables: insert, update, delete; serial ids
        session.add(ConnectorEpoch(connector="court", epoch=1, public_key=b"\x01" * 32))
        session.add(QuotaUsage(user="u", window="day:x", used=1))
        session.commit()
        quota = session.exec(select(QuotaUsage)).one()
        quota.used = 2
        session.add(quota)
        session.commit()
        session.delete(quota)
        session.commit()
        assert session.exec(select(ConnectorEpoch.id)).one() is not None
    with engine.connect() as connection:
        owners = connection.execute(text("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"))
        assert roles.app not in set(owners.scalars())
    engine.dispose()


def _store(engine: Engine, folder: Path) -> Store:
    LocalKeyring.create(folder / "keyring.json", AT)
    return Store(engine, Vault(Sealer(LocalKeyring(folder / "keyring.json"), SqlDataKeys(engine), lambda: AT)))


@pytest.mark.integration
def test_the_application_role_publishes_looks_up_and_drops_through_the_partition_functions(
    roles: Roles, tmp_path: Path
) -> None:
    schema.migrate(roles.owner_url, roles.app_url)
    engine = make_engine(roles.app_url)
    store = _store(engine, tmp_path)
    base = store.publish(tokens(1, 2, 3))
    applied = store.delta(base, tokens(4), tokens(1))
    assert store.present(base, applied.version, EVERY) == set(tokens(2, 3, 4))
    partition = f"d_{hashlib.md5(base.encode()).hexdigest()}"
    with engine.begin() as connection, pytest.raises(DBAPIError, match=r"permission denied|must be owner"):
        connection.execute(text(f"DROP TABLE index_partitions.{partition}"))
    owners = "SELECT relowner::regrole::text FROM pg_class WHERE relname = :name"
    with engine.connect() as connection:
        assert connection.execute(text(owners), {"name": partition}).scalar_one() != roles.app
    with Session(engine) as session:
        publication = session.get(Publication, base)
        assert publication is not None
        indexes.drop_publication(session, store.vault, publication)
        session.commit()
    with engine.connect() as connection:
        assert connection.execute(text(owners), {"name": partition}).first() is None
    engine.dispose()


def test_digests_stored_before_partitioning_are_migrated_with_them(database_url: str, tmp_path: Path) -> None:
    """A database at revision 0004 holding a publication and a delta applied to it: after
    the upgrade (PostgreSQL: into a partition) every version looks up as before."""
    engine = create_engine(database_url)
    with engine.begin() as connection:
        command.upgrade(schema._config(connection), "0004")
    store = _store(engine, tmp_path)
    with Session(engine) as session:
        publication = Publication(
            id=str(uuid.uuid4()), connector="court", capability="court.multiple_terminated", title="t", tier=1,
            epoch=1, token_count=3, digest="0" * 64, created_at=AT, committed=True, version=2, received=3,
            lookup_key=b"",
        )  # fmt: skip
        publication.lookup_key = store.vault.new_lookup_key(publication.id, "court")
        # The columns revision 0004 has: the model's later ones are left out.
        table = Publication.__table__  # type: ignore[attr-defined]
        session.execute(table.insert().values(**publication.model_dump(exclude={"updated_at"})))
        since = {1: 1, 2: 1, 3: 1, 4: 2}
        session.add_all(
            IndexDigest(publication_id=publication.id, digest=d, since=since[n], until=2 if n == 1 else None)
            for n, d in zip(since, store.vault.digests(publication, tokens(*since)), strict=True)
        )
        session.commit()
        publication_id = publication.id
    engine.dispose()
    schema.migrate(database_url, database_url)
    store.engine = make_engine(database_url)
    assert store.present(publication_id, 1, EVERY) == set(tokens(1, 2, 3))
    assert store.present(publication_id, 2, EVERY) == set(tokens(2, 3, 4))
    assert store.stored(publication_id) == 4
    store.engine.dispose()
