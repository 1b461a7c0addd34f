"""Append-only audit storage: entries, Merkle nodes, checkpoints and cosignatures.

Four log tables refuse UPDATE and DELETE at the database (triggers on SQLite and
PostgreSQL), so neither a bug nor an operator with SQL access can quietly rewrite history:
`audit_entries` (one row per leaf, its canonical entry and leaf hash, plus copies of the
searchable fields), `audit_nodes` (every complete subtree whose height is a multiple of 8,
so a proof reads at most 128 hashes per level it needs), `audit_checkpoints` (signed tree
heads) and `audit_cosignatures` (witness cosignatures on them).

One small mutable row, `audit_tail`, holds the tree size, the compact range and the last
leaf hash. Every append locks it first, so appends are serialised across threads, processes
and gateway instances, leaf indices stay contiguous and commit in order, and a checkpoint
taken from the tail covers exactly the committed prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, LargeBinary, Table, func, insert, inspect, select, text
from sqlmodel import Column, Field, Session, SQLModel

from audit_log.entries import GENESIS, AuditEvent, canonical_entry
from audit_log.merkle import CompactRange, consistency_proof, inclusion_proof, leaf_hash

STRIDE = 8  # `audit_nodes` keeps subtrees of height 8, 16, 24, …


class AuditRecord(SQLModel, table=True):
    __tablename__ = "audit_entries"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    recorded_at: datetime = Field(index=True)
    kind: str = Field(index=True)
    actor: str = Field(index=True)
    org: str | None = Field(default=None, index=True)
    request_id: str | None = Field(default=None, index=True)
    model: str | None = Field(default=None, index=True)
    connector: str | None = Field(default=None, index=True)
    outcome: str = Field(index=True)
    purpose: str | None = Field(default=None, index=True)
    entry: bytes
    leaf_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))


class AuditNode(SQLModel, table=True):
    __tablename__ = "audit_nodes"

    level: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    idx: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))


class AuditCheckpoint(SQLModel, table=True):
    """A signed tree head: the C2SP checkpoint note, signed by the gateway's log key."""

    __tablename__ = "audit_checkpoints"

    size: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    root: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    note: str
    issued_at: datetime


class AuditCosignature(SQLModel, table=True):
    """A witness's cosignature/v1 line on one checkpoint."""

    __tablename__ = "audit_cosignatures"

    size: int = Field(primary_key=True, foreign_key="audit_checkpoints.size")
    witness: str = Field(primary_key=True)
    line: str
    received_at: datetime


class AuditTail(SQLModel, table=True):
    __tablename__ = "audit_tail"

    id: int = Field(default=1, primary_key=True)
    size: int = 0
    frontier: bytes = b""
    last_leaf: bytes = GENESIS


LOG_TABLES = ("audit_entries", "audit_nodes", "audit_checkpoints", "audit_cosignatures")
# Each log table's primary key: an insert that names a stored key is a rewrite, not an append.
_KEYS = {
    "audit_entries": ("seq",),
    "audit_nodes": ("level", "idx"),
    "audit_checkpoints": ("size",),
    "audit_cosignatures": ("size", "witness"),
}


def _triggers(dialect: str) -> list[str]:
    if dialect == "sqlite":
        return [
            *(
                f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                "BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END"
                for table in LOG_TABLES
                for verb in ("UPDATE", "DELETE")
            ),
            # NOTE: `INSERT OR REPLACE` (and `REPLACE INTO`) deletes the stored row without
            # firing a DELETE trigger (SQLite fires them for REPLACE only under
            # recursive_triggers). An insert that names a key already stored is refused
            # before the conflict is ever resolved.
            *(
                f"CREATE TRIGGER IF NOT EXISTS {table}_no_replace BEFORE INSERT ON {table} "
                f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {_same_key(table)}) "
                "BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END"
                for table in LOG_TABLES
            ),
        ]
    if dialect == "postgresql":
        return [
            "CREATE OR REPLACE FUNCTION audit_log_refuse() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION 'audit log is append-only'; END $$ LANGUAGE plpgsql",
            *(
                f"CREATE OR REPLACE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE "
                f"ON {table} FOR EACH ROW EXECUTE FUNCTION audit_log_refuse()"
                for table in LOG_TABLES
            ),
            *(
                f"CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE "
                f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse()"
                for table in LOG_TABLES
            ),
        ]
    raise RuntimeError(f"no append-only triggers for dialect {dialect}")


def _same_key(table: str) -> str:
    return " AND ".join(f"{column} = NEW.{column}" for column in _KEYS[table])


def install_append_only(engine: Engine) -> None:
    """Create the log tables if needed, the triggers that refuse UPDATE and DELETE, and the tail.

    For a log on a bare database (the audit log's own tests, a verifier's scratch copy); the
    gateway's database gets the same through its migrations (`gateway.migrations`), and the
    gateway's application role may not run this DDL."""
    tables = [SQLModel.metadata.tables[name] for name in (*LOG_TABLES, "audit_tail")]
    SQLModel.metadata.create_all(engine, tables=tables)
    with engine.begin() as connection:
        install_append_only_on(connection)


def install_append_only_on(connection: Connection) -> None:
    """On existing log tables, within the caller's transaction: the append-only triggers
    (created if missing, or replaced by the same definition) and the tail row if missing."""
    for statement in _triggers(connection.dialect.name):
        connection.execute(text(statement))
    if connection.execute(select(AuditTail.size)).first() is None:  # type: ignore[call-overload]
        connection.execute(insert(AuditTail).values(id=1, size=0, frontier=b"", last_leaf=GENESIS))


@dataclass(frozen=True)
class Tail:
    size: int
    tree: CompactRange
    last_leaf: bytes


_TAIL = AuditTail.__table__  # type: ignore[attr-defined]
_ENTRIES = AuditRecord.__table__  # type: ignore[attr-defined]
_NODES = AuditNode.__table__  # type: ignore[attr-defined]


def lock_tail(connection: Connection) -> Tail:
    """Take the append lock (held until the transaction ends) and read the tail."""
    if connection.dialect.name == "postgresql":
        row = connection.execute(select(_TAIL).where(_TAIL.c.id == 1).with_for_update()).one()
    else:
        # SQLite: the first write of a transaction takes the database's write lock.
        connection.execute(_TAIL.update().where(_TAIL.c.id == 1).values(size=_TAIL.c.size))
        row = connection.execute(select(_TAIL).where(_TAIL.c.id == 1)).one()
    return Tail(row.size, CompactRange.from_bytes(row.size, row.frontier), row.last_leaf)


def append_events(
    connection: Connection, events: Sequence[AuditEvent], payloads: Sequence[dict[str, object]] | None = None
) -> list[int]:
    """Append `events` in order within the caller's transaction; returns their leaf indices.

    `payloads` are the events' screened payloads when the caller already has them."""
    if payloads is None:
        payloads = [event.payload() for event in events]  # screen before taking the lock
    tail = lock_tail(connection)
    tree, prev = tail.tree, tail.last_leaf
    rows, nodes = [], []

    def keep(level: int, index: int, node: bytes) -> None:
        if level % STRIDE == 0:
            nodes.append((level, index, node))

    recorded_at = _bind(connection, _ENTRIES.c.recorded_at)
    for event, payload in zip(events, payloads, strict=True):
        seq = tree.size
        entry = canonical_entry(payload, seq, prev)
        prev = leaf_hash(entry)
        tree.append(prev, keep)
        rows.append(
            (seq, recorded_at(event.at), event.kind.value, event.actor, event.org, event.request_id, event.model,
             event.connector, event.outcome, event.purpose, entry, prev)
        )  # fmt: skip
    if rows:
        connection.exec_driver_sql(_insert_sql(connection, _ENTRIES, _ENTRY_COLUMNS), rows)
    if nodes:
        connection.exec_driver_sql(_insert_sql(connection, _NODES, ("level", "idx", "hash")), nodes)
    connection.execute(
        _TAIL.update().where(_TAIL.c.id == 1).values(size=tree.size, frontier=tree.to_bytes(), last_leaf=prev)
    )
    return list(range(tail.size, tree.size))


_ENTRY_COLUMNS = ("seq", "recorded_at", "kind", "actor", "org", "request_id", "model", "connector", "outcome",
                  "purpose", "entry", "leaf_hash")  # fmt: skip


def _insert_sql(connection: Connection, table: Table, columns: Sequence[str]) -> str:
    """A driver-level INSERT of `columns` (appends skip the statement compiler: the log's rows
    are plain tuples, written in bulk)."""
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"


def _bind(connection: Connection, column: Column[Any]) -> Callable[[Any], Any]:
    """The conversion the statement compiler would apply to a value of `column` on this
    dialect (for `recorded_at`: to UTC, and on SQLite to text)."""
    process = column.type.dialect_impl(connection.dialect).bind_processor(connection.dialect)
    return process if process is not None else _same


def _same(value: Any) -> Any:
    return value


class DatabaseNodes:
    """A NodeSource over the stored tree: leaf hashes and every STRIDE-th level of nodes."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def node(self, level: int, index: int) -> bytes:
        base = level - level % STRIDE
        if base == level:
            return self._stored(level, index)
        start, count = index << (level - base), 1 << (level - base)
        if base == 0:
            query = (
                select(_ENTRIES.c.leaf_hash)
                .where(_ENTRIES.c.seq >= start, _ENTRIES.c.seq < start + count)
                .order_by(_ENTRIES.c.seq)
            )
        else:
            query = (
                select(_NODES.c.hash)
                .where(_NODES.c.level == base, _NODES.c.idx >= start, _NODES.c.idx < start + count)
                .order_by(_NODES.c.idx)
            )
        hashes = list(self._connection.execute(query).scalars())
        if len(hashes) != count:
            raise LookupError(f"the log holds no complete subtree at level {level}, index {index}")
        tree = CompactRange()
        tree.extend(hashes)
        return tree.root()

    def _stored(self, level: int, index: int) -> bytes:
        if level == 0:
            query = select(_ENTRIES.c.leaf_hash).where(_ENTRIES.c.seq == index)
        else:
            query = select(_NODES.c.hash).where(_NODES.c.level == level, _NODES.c.idx == index)
        found = self._connection.execute(query).scalar()
        if found is None:
            raise LookupError(f"the log holds no subtree at level {level}, index {index}")
        return bytes(found)


def _bytes(value: object) -> bytes:
    """A stored value as bytes, whatever type a tampered row now holds (SQLite lets a text
    value replace a blob): the verifier must report the change, not crash on it."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if value is None:
        return b""
    return str(value).encode("utf-8", "surrogateescape")


class AuditLog:
    """The log in one database: appends within a caller's transaction or on their own, reads, proofs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._durable: Callable[[AuditEvent], int] | None = None
        install_append_only(engine)

    @classmethod
    def existing(cls, engine: Engine) -> AuditLog:
        """Open a log without creating or changing anything: a verifier reading a copy, or the
        gateway on a database its migrations made (its role may not create triggers)."""
        if not inspect(engine).has_table("audit_entries"):
            raise LookupError("the database holds no audit log (no audit_entries table)")
        log = cls.__new__(cls)
        log.engine, log._durable = engine, None
        return log

    def batch_through(self, durable: Callable[[AuditEvent], int] | None) -> None:
        """Route `append_now` through `durable` (an AuditWriter's append), or back to direct commits."""
        self._durable = durable

    def append(self, session: Session, audit_event: AuditEvent) -> int:
        """Append `audit_event` in `session`'s transaction; it is durable when the session commits."""
        return append_events(session.connection(), [audit_event])[0]

    def append_now(self, audit_event: AuditEvent) -> int:
        """Append and commit, on its own or batched with others; returns once it is durable."""
        if self._durable is not None:
            return self._durable(audit_event)
        return self.append_many([audit_event])[0]

    def append_many(self, events: Sequence[AuditEvent]) -> list[int]:
        with self.engine.begin() as connection:
            return append_events(connection, events)

    # ---- reading ------------------------------------------------------------------------

    def size(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(select(_TAIL.c.size).where(_TAIL.c.id == 1)).scalar_one())

    def count(self) -> int:
        """How many entries the table holds (the tail's size says how many it should)."""
        with self.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(_ENTRIES)).scalar_one())

    def tail(self) -> Tail:
        with self.engine.connect() as connection:
            row = connection.execute(select(_TAIL).where(_TAIL.c.id == 1)).one()
            return Tail(row.size, CompactRange.from_bytes(row.size, row.frontier), row.last_leaf)

    def entries(self, request_id: str | None = None) -> list[AuditRecord]:
        with Session(self.engine) as session:
            query = select(AuditRecord).order_by(AuditRecord.seq)  # type: ignore[arg-type]
            if request_id is not None:
                query = query.where(AuditRecord.request_id == request_id)  # type: ignore[arg-type]
            return list(session.exec(query).scalars())  # type: ignore[call-overload]

    def entry(self, seq: int) -> AuditRecord | None:
        with Session(self.engine) as session:
            return session.get(AuditRecord, seq)

    def raw_entries(self, start: int, end: int, batch: int = 20_000) -> Iterator[tuple[int, bytes, bytes]]:
        """(seq, entry, stored leaf hash) for seq in [start, end), in order, `batch` rows a read."""
        while start < end:
            rows = self.raw_block(start, min(end, start + batch))
            if not rows:
                return
            yield from rows
            start = rows[-1][0] + 1

    def raw_block(self, start: int, end: int) -> list[tuple[int, bytes, bytes]]:
        """Rows (seq, entry, leaf hash) [start, end) in one fetch (the verifier's fast path)."""
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        query = f"SELECT seq, entry, leaf_hash FROM audit_entries WHERE seq >= {mark} AND seq < {mark} ORDER BY seq"
        with self.engine.connect() as connection:
            cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(query, (start, end))
                return [(seq, _bytes(entry), _bytes(leaf)) for seq, entry, leaf in cursor.fetchall()]
            finally:
                cursor.close()

    def export_rows(self, start: int, end: int) -> Iterator[tuple[int, bytes, bytes, str | None]]:
        """(seq, entry, leaf hash, org) for seq in [start, end), in order."""
        with self.engine.connect() as connection:
            result = connection.execution_options(stream_results=True).execute(
                select(_ENTRIES.c.seq, _ENTRIES.c.entry, _ENTRIES.c.leaf_hash, _ENTRIES.c.org)
                .where(_ENTRIES.c.seq >= start, _ENTRIES.c.seq < end)
                .order_by(_ENTRIES.c.seq)
            )
            for rows in result.partitions(10_000):
                for row in rows:
                    yield row[0], _bytes(row[1]), _bytes(row[2]), row[3]

    def checkpoints(self) -> list[AuditCheckpoint]:
        with Session(self.engine) as session:
            query = select(AuditCheckpoint).order_by(AuditCheckpoint.size)  # type: ignore[arg-type]
            return list(session.exec(query).scalars())  # type: ignore[call-overload]

    def checkpoints_since(self, moment: datetime) -> int:
        """How many checkpoints were issued after `moment`."""
        table = AuditCheckpoint.__table__  # type: ignore[attr-defined]
        with self.engine.connect() as connection:
            return int(
                connection.execute(
                    select(func.count()).select_from(table).where(table.c.issued_at > moment)
                ).scalar_one()
            )

    def latest_size(self, connection: Connection | None = None) -> int | None:
        """The size of the latest checkpoint, None before the first."""
        table = AuditCheckpoint.__table__  # type: ignore[attr-defined]
        query = select(table.c.size).order_by(table.c.size.desc()).limit(1)
        if connection is not None:
            return connection.execute(query).scalar()
        with self.engine.connect() as own:
            return own.execute(query).scalar()

    def checkpoint(self, size: int | None = None) -> AuditCheckpoint | None:
        """The checkpoint at `size`, or the latest one."""
        with Session(self.engine) as session:
            if size is not None:
                return session.get(AuditCheckpoint, size)
            query = select(AuditCheckpoint).order_by(AuditCheckpoint.size.desc()).limit(1)  # type: ignore[attr-defined]
            return session.exec(query).scalars().first()  # type: ignore[call-overload, no-any-return]

    def cosignatures(self, size: int | None = None) -> list[AuditCosignature]:
        with Session(self.engine) as session:
            query = select(AuditCosignature).order_by(AuditCosignature.size, AuditCosignature.witness)  # type: ignore[arg-type]
            if size is not None:
                query = query.where(AuditCosignature.size == size)  # type: ignore[arg-type]
            return list(session.exec(query).scalars())  # type: ignore[call-overload]

    def add_checkpoint(self, connection: Connection, size: int, root: bytes, note: str, at: datetime) -> None:
        connection.execute(insert(AuditCheckpoint.__table__).values(size=size, root=root, note=note, issued_at=at))  # type: ignore[attr-defined]

    def add_cosignature(self, size: int, witness: str, line: str, at: datetime) -> bool:
        """Keep a witness's cosignature; False if that witness's cosignature is already kept."""
        table = AuditCosignature.__table__  # type: ignore[attr-defined]
        with self.engine.begin() as connection:
            exists = connection.execute(
                select(table.c.size).where(table.c.size == size, table.c.witness == witness)
            ).first()
            if exists is not None:
                return False
            connection.execute(insert(table).values(size=size, witness=witness, line=line, received_at=at))
            return True

    # ---- proofs -----------------------------------------------------------------------------

    def inclusion_proof(self, seq: int, size: int) -> list[bytes]:
        with self.engine.connect() as connection:
            return inclusion_proof(DatabaseNodes(connection), seq, size)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        with self.engine.connect() as connection:
            return consistency_proof(DatabaseNodes(connection), first, second)


__all__ = [
    "AuditCheckpoint",
    "AuditCosignature",
    "AuditLog",
    "AuditNode",
    "AuditRecord",
    "AuditTail",
    "DatabaseNodes",
    "append_events",
    "install_append_only",
    "install_append_only_on",
    "lock_tail",
]
