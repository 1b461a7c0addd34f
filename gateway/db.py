"""Gateway storage: SQLModel tables and the engine. SQLite by default, PostgreSQL in production.

Nothing here holds an ID number or a name, and what derives from agency data or subject
lists is sealed (`gateway.sealing`, AES-256-GCM under wrapped data keys): published tokens
are kept only in sealed chunks, with a keyed digest per token for lookups under a
per-publication key that is itself sealed; results are sealed per lookup batch. Relayed
batches of blinded elements are never kept. Requests hold metadata and counts in the clear.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime

from sqlalchemy import (
    Connection,
    Dialect,
    Engine,
    LargeBinary,
    PrimaryKeyConstraint,
    Table,
    TypeDecorator,
    UniqueConstraint,
    event,
    false,
    text,
)
from sqlmodel import AutoString, Column, Field, SQLModel, create_engine

from gateway import schema
from gateway.request_plan import RequestPlan


class ConnectorEpoch(SQLModel, table=True):
    """One OPRF key epoch of one connector, with its public key."""

    __tablename__ = "connector_epochs"
    __table_args__ = (UniqueConstraint("connector", "epoch"),)

    id: int | None = Field(default=None, primary_key=True)
    connector: str = Field(index=True)
    epoch: int
    public_key: bytes
    active: bool = False
    activated_at: datetime | None = None


class Publication(SQLModel, table=True):
    """One capability's token set for one epoch, uploaded in chunks, then committed."""

    __tablename__ = "publications"

    id: str = Field(primary_key=True)
    connector: str = Field(index=True)
    capability: str = Field(index=True)
    title: str
    tier: int
    epoch: int
    token_count: int
    digest: str
    received: int = 0
    chunks: int = 0
    committed: bool = False
    created_at: datetime
    committed_at: datetime | None = None
    # When the current version was committed: `committed_at`, or the last delta's apply.
    updated_at: datetime | None = None
    lookup_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # sealed; keys the digests
    # The token set's version: 1 when committed, one more per delta applied (`gateway.index_deltas`).
    version: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    # A delta: the committed publication it changes; it adds `token_count` tokens (`digest`)
    # and removes `removed_count` (`removed_digest`), all at once when committed.
    base_id: str | None = None
    removed_count: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    removed_digest: str | None = None
    removed_received: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    removed_chunks: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class IndexDigest(SQLModel, table=True):
    """One published token, known only by HMAC-SHA256 under its publication's lookup key (16 bytes),
    in the publication's token set from version `since` until (not including) `until`.
    On PostgreSQL partitioned by publication (`gateway.digest_partitions`), its key holding
    `until` too, so a lookup reads the key alone (an index-only scan), never the rows."""

    __tablename__ = "index_digests"
    __table_args__ = (
        PrimaryKeyConstraint("publication_id", "digest", "since", postgresql_include=["until"]),
        {"postgresql_partition_by": "LIST (publication_id)"},
    )

    publication_id: str = Field(primary_key=True, foreign_key="publications.id")
    digest: bytes = Field(sa_column=Column(LargeBinary(16), primary_key=True))
    since: int = Field(default=1, primary_key=True, sa_column_kwargs={"server_default": "1"})
    until: int | None = None


class IndexRemoval(SQLModel, table=True):
    """A token an uncommitted delta removes from its base, by its digest under the base's key."""

    __tablename__ = "index_removals"

    publication_id: str = Field(primary_key=True, foreign_key="publications.id")  # the delta
    digest: bytes = Field(sa_column=Column(LargeBinary(16), primary_key=True))


class IndexChunk(SQLModel, table=True):
    """One uploaded chunk of a publication's tokens (`kind` added, or removed by a delta),
    sealed: what the commit's digest check reads."""

    __tablename__ = "index_chunks"

    publication_id: str = Field(primary_key=True, foreign_key="publications.id")
    kind: str = Field(default="added", primary_key=True, sa_column_kwargs={"server_default": "added"})
    number: int = Field(primary_key=True)
    sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class PlanColumn(TypeDecorator[RequestPlan]):
    """A `RequestPlan` kept as its JSON text: parsed as the row is read, serialised as it is written."""

    impl = AutoString  # the column's type is unchanged: existing databases load as they are
    cache_ok = True

    def process_bind_param(self, value: RequestPlan | None, dialect: Dialect) -> str | None:
        return None if value is None else value.to_json()

    def process_result_value(self, value: str | None, dialect: Dialect) -> RequestPlan | None:
        return None if value is None else RequestPlan.from_json(value)


class MatchRequest(SQLModel, table=True):
    """A run of one supervision model over n subjects, from creation to result."""

    __tablename__ = "match_requests"

    id: str = Field(primary_key=True)
    model: str
    requester: str = Field(index=True)
    org: str
    purpose: str
    legal_basis: str
    scope: str = ""
    subject_count: int
    subjects_digest: str | None = None  # the list's SHA-256, as the requester's client states it
    status: str
    plan: RequestPlan = Field(sa_column=Column("plan", PlanColumn(), nullable=False))  # gateway.request_plan
    rows_looked_up: int = 0
    clues: int = Field(default=0, sa_column_kwargs={"server_default": "0"})  # found by the lookups so far
    created_at: datetime
    completed_at: datetime | None = None
    results_deleted_at: datetime | None = None  # set when retention deleted the sealed results


class Approval(SQLModel, table=True):
    """A request that waits for a department head: why, from which organisation, until when."""

    __tablename__ = "approvals"

    request_id: str = Field(primary_key=True, foreign_key="match_requests.id")
    approver_org: str = Field(index=True)
    reasons: str  # comma-separated reason codes: cross_region, batch_over_limit, tier3_capability
    status: str  # pending, approved, rejected, expired, cancelled (by the requester)
    requested_at: datetime
    expires_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None
    valid_until: datetime | None = None  # an approved request must start before this


class AnomalyTriage(SQLModel, table=True):
    """What an auditor made of an anomaly flag (`gateway.audit_review`): the latest word on it.
    Every change is also an `anomaly.triage` entry of the audit log."""

    __tablename__ = "anomaly_triage"

    key: str = Field(primary_key=True)  # the flag's key: a digest of its rule, actor, time and entries
    state: str  # acknowledged, escalated, dismissed
    note: str
    by: str
    at: datetime


class QuotaUsage(SQLModel, table=True):
    """What one user has spent in one quota window ("day:2026-11-21", "minute:2026-11-21T09:30")."""

    __tablename__ = "quota_usage"

    user: str = Field(primary_key=True)
    window: str = Field(primary_key=True)
    used: int = 0


class EvaluationCount(SQLModel, table=True):
    """Per request and connector: rows in batch slots (reserved) and rows in evaluated slots.

    The row is also the lock a slot claim takes first (`gateway.request_store`), so concurrent
    batches of one connector are checked against each other's slots one at a time.
    """

    __tablename__ = "evaluation_counts"

    request_id: str = Field(primary_key=True, foreign_key="match_requests.id")
    connector: str = Field(primary_key=True)
    reserved: int = 0
    evaluated: int = 0


class BatchSlot(SQLModel, table=True):
    """One batch slot (`gateway.slots`): rows first_row … first_row+count−1 at one connector.

    `attempts` counts the evaluations of the slot the requester obtained or is obtaining (an
    attempt whose evaluation never reached it is given back); `proof_failures` the attempts
    whose proofs it reported as failing, the last one `reported_attempt`, at
    `last_proof_failure_at`.
    """

    __tablename__ = "evaluation_slots"

    request_id: str = Field(primary_key=True, foreign_key="match_requests.id")
    connector: str = Field(primary_key=True)
    first_row: int = Field(primary_key=True)
    count: int
    attempts: int = 0
    status: str  # xiezhi.wire.SlotState
    proof_failures: int = 0
    reported_attempt: int = 0
    last_proof_failure_at: datetime | None = Field(default=None, index=True)


class ResultBatch(SQLModel, table=True):
    """The flags of one lookup batch, sealed: rows first_row … first_row + rows − 1.

    The sealed value also holds a digest of the batch's tokens, so a repeated lookup of the
    same rows is answered from here and a different one refused (`gateway.vault`)."""

    __tablename__ = "result_batches"

    request_id: str = Field(primary_key=True, foreign_key="match_requests.id")
    first_row: int = Field(primary_key=True)
    rows: int
    sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Alarm(SQLModel, table=True):
    """Something an operator must act on (a witness refusing the log's checkpoints). While one
    is open, the gateway's readiness check fails; raising and resolving it are audited."""

    __tablename__ = "alarms"

    id: str = Field(primary_key=True)
    kind: str = Field(index=True)
    source: str  # what raised it: a witness's name
    reason: str  # a reason code
    message: str  # what happened, in counts and sizes only
    raised_at: datetime
    last_at: datetime
    repeats: int = 1
    resolved_at: datetime | None = Field(default=None, index=True)
    resolved_by: str | None = None
    resolution: str | None = None


class GatewaySecret(SQLModel, table=True):
    """A secret every gateway instance shares, sealed (AES-256-GCM under a data key the KEK
    wraps): the database alone does not reveal it (`gateway.shared_secrets`)."""

    __tablename__ = "gateway_secrets"

    name: str = Field(primary_key=True)
    sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime


class TicketKey(SQLModel, table=True):
    """A relay-ticket signing key (Ed25519), shared by every gateway instance: its public half
    in the clear (served as the JWK Set), its private half sealed (`gateway.ticket_keys`)."""

    __tablename__ = "ticket_keys"

    kid: str = Field(primary_key=True)  # the RFC 7638 thumbprint of the public key
    public_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime
    superseded_at: datetime | None = None


def serialise_changes(connection: Connection, table: Table) -> None:
    """Hold `table`'s change lock until the transaction ends, across every gateway instance on
    the database: a transaction-scoped advisory lock on PostgreSQL; on SQLite the database's
    write lock, which a transaction's first write takes even when it changes no row. Call it
    first in the transaction; a check-then-write after it sees what the previous holder wrote."""
    if connection.dialect.name == "postgresql":
        lock_id = zlib.crc32(f"xiezhi:{table.name}".encode())
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
    else:
        key = next(iter(table.primary_key.columns))
        connection.execute(table.update().where(false()).values({key.name: key}))


def make_engine(database_url: str, *, migrate_empty: bool = False) -> Engine:
    """The engine of a database at this release's schema revision; SQLite gets WAL and foreign keys.

    Tables come only from the migrations (`gateway.schema`): a database at another revision
    is refused (`SchemaOutdated`, naming `xiezhi gateway migrate`); an empty one is migrated
    here only with `migrate_empty` (development; production never)."""
    engine = create_engine(database_url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        schema.check(engine, migrate_empty=migrate_empty)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def aware(moment: datetime) -> datetime:
    """`moment` with its zone: SQLite hands datetimes back without one, and every time is stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
