"""The gateway's schema: which Alembic revision a database holds, the upgrade to this
release's head (`xiezhi gateway migrate`), and the start-up check.

Start-up never changes a schema that holds anything: a database behind this release's head
(or ahead of it, or created by the release before migrations) is refused with
`SchemaOutdated`, naming `xiezhi gateway migrate`. Only an empty database, and only when the
caller asks (`make_engine(..., migrate_empty=True)`: the development environment), is
migrated at start, so `make demo` and the tests need no separate step; production never is.

On PostgreSQL the migration runs as the owner of the tables and grants the application's
role only what the gateway's work needs (`grant_application_role`): rows of ordinary tables
read, written and deleted; the audit log's tables read and appended to, never updated or
deleted (their triggers refuse it even to the owner); the tail row read and updated. The
application's role owns nothing, so it cannot drop or disable a trigger, alter or drop a table.
It creates and drops the partitions of publications' digests only through the two functions
of `gateway.digest_partitions`, which it may execute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, inspect, make_url, text

from audit_log.store import LOG_TABLES, install_append_only_on
from xiezhi.errors import XiezhiError

MIGRATIONS = Path(__file__).parent / "migrations"
BASELINE = "0001"  # the schema of the release before migrations, exactly
MIGRATE_COMMAND = "xiezhi gateway migrate --config <settings>"


class SchemaOutdated(XiezhiError):
    """The database's schema revision is not this release's head; an operator must migrate."""

    status = 503
    code = "schema_outdated"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """This release's head revision."""
    found = ScriptDirectory.from_config(_config()).get_current_head()
    assert found is not None, "gateway/migrations holds at least one revision"
    return found


def current(engine: Engine) -> str | None:
    """The revision the database holds, or None when it has no `alembic_version` row."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def check(engine: Engine, *, migrate_empty: bool) -> None:
    """Return when the database is at head; migrate it first if it is empty and `migrate_empty`.

    Raises SchemaOutdated for any other revision, or for tables without a revision."""
    revision = current(engine)
    if revision == head():
        return
    if revision is None and migrate_empty and not inspect(engine).get_table_names():
        upgrade(engine)
        return
    held = f"revision {revision}" if revision is not None else "no schema revision (a release before migrations)"
    raise SchemaOutdated(
        f"the gateway database holds {held}, this release needs {head()}: run `{MIGRATE_COMMAND}` "
        "with the migration role, then start the gateway again"
    )


@dataclass(frozen=True)
class Migrated:
    before: str | None
    after: str
    granted: str | None  # the application's role, when it was granted its rows


def migrate(migration_database_url: str, database_url: str) -> Migrated:
    """`xiezhi gateway migrate`: upgrade as the migration role, granting the application's
    role (`database_url`'s user) its rows when it is another PostgreSQL role."""
    engine = create_engine(migration_database_url)
    try:
        before = current(engine)
        role = application_role(database_url, migration_database_url)
        return Migrated(before, upgrade(engine, app_role=role), role)
    finally:
        engine.dispose()


def upgrade(engine: Engine, app_role: str | None = None) -> str:
    """Migrate to head in one transaction; returns the head revision.

    A database the release before migrations created is adopted: its tables are checked,
    its triggers and tail ensured, and the baseline stamped, then later revisions run. With
    `app_role` (PostgreSQL), the role is granted what the application needs, and no more."""
    with engine.begin() as connection:
        config = _config(connection)
        if MigrationContext.configure(connection).get_current_revision() is None and _has_tables(connection):
            _adopt(connection)
            command.stamp(config, BASELINE)
        command.upgrade(config, "head")
        if app_role is not None:
            grant_application_role(connection, app_role)
    return head()


def application_role(database_url: str, migration_database_url: str) -> str | None:
    """The application's PostgreSQL role to grant, when the migration connects as another one."""
    app, owner = make_url(database_url), make_url(migration_database_url)
    if app.get_backend_name() != "postgresql" or app.username is None or app.username == owner.username:
        return None
    return app.username


def _has_tables(connection: Connection) -> bool:
    return any(name != "alembic_version" for name in inspect(connection).get_table_names())


def _adopt(connection: Connection) -> None:
    """Check that an unversioned database holds the baseline's tables; ensure its triggers."""
    missing = sorted(set(_BASELINE_TABLES) - set(inspect(connection).get_table_names()))
    if missing:
        raise SchemaOutdated(
            f"the database holds tables but no schema revision, and lacks {', '.join(missing)}: "
            "it is not a Xiezhi gateway database of the release before migrations"
        )
    install_append_only_on(connection)


# Tables of rows the gateway reads, writes and deletes (everything but the audit log).
ORDINARY_TABLES = (
    "alarms", "approvals", "casbin_rule", "connector_epochs", "evaluation_counts", "evaluation_slots",
    "index_chunks", "index_digests", "match_requests", "organisations", "policy_revisions", "publications",
    "quota_usage", "result_batches", "sealing_data_keys", "token_sightings", "gateway_secrets",
    "ticket_keys", "index_removals", "anomaly_triage",
)  # fmt: skip
# What the release before migrations created (revision 0001); later revisions' tables are not in it.
# Revision 0005: a publication's digest partition made and dropped (`gateway.digest_partitions`).
PARTITION_FUNCTIONS = ("xiezhi_open_digest_partition", "xiezhi_drop_digest_partition")
_LATER_TABLES = ("gateway_secrets", "ticket_keys", "index_removals", "anomaly_triage")  # revisions 0002–0009
_BASELINE_TABLES = (*(t for t in ORDINARY_TABLES if t not in _LATER_TABLES), *LOG_TABLES, "audit_tail")


def grant_application_role(connection: Connection, role: str) -> None:
    """PostgreSQL: what the application's role may do, and nothing more (see the module doc)."""
    if connection.dialect.name != "postgresql":
        return
    quoted = connection.dialect.identifier_preparer.quote(role)
    tables = [name for name in inspect(connection).get_table_names()]
    statements = [
        f"GRANT USAGE ON SCHEMA public TO {quoted}",
        f"REVOKE ALL ON {', '.join(tables)} FROM {quoted}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(ORDINARY_TABLES)} TO {quoted}",
        f"GRANT SELECT, INSERT ON {', '.join(LOG_TABLES)} TO {quoted}",
        f"GRANT SELECT, UPDATE ON audit_tail TO {quoted}",  # the append lock and the new tail
        f"GRANT SELECT ON alembic_version TO {quoted}",  # the start-up check
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}",
        f"GRANT EXECUTE ON FUNCTION {', '.join(f'{name}(text)' for name in PARTITION_FUNCTIONS)} TO {quoted}",
        # Lookups read a publication's partition by name (`gateway.digest_partitions`): the
        # partitions there now, and those the functions make later (owned by this role).
        f"GRANT USAGE ON SCHEMA index_partitions TO {quoted}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA index_partitions TO {quoted}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA index_partitions GRANT SELECT ON TABLES TO {quoted}",
    ]
    for statement in statements:
        connection.execute(text(statement))
