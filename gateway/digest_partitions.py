"""Where a publication's keyed digests are stored, and how they go in bulk.

On PostgreSQL `index_digests` is partitioned by publication (LIST on `publication_id`,
revision 0005): each publication, and each delta, has its own partition in the schema
`index_partitions`, created when it starts and dropped with it, so dropping an old epoch's
index is a `DROP TABLE` of a few files, not a delete of millions of rows, and a lookup reads
only its publication's B-tree.

Why this layout (measured with `bench/index_store.py`): a lookup costs one B-tree descent
per digest whatever the layout (one B-tree over every publication is at most a level
deeper), so lookups do not decide it; dropping does. Dropping a 10-million-token
publication's partition took 0.6–1.7 s, deleting the same rows from a plain table keyed as
before 7–15 s (three runs on a shared machine), and the delete leaves dead rows for vacuum
in a table every lookup reads. A fixed number of hash partitions would still drop a
publication row by row.

The application's role runs no DDL (`gateway.schema`): it creates and drops partitions only
through two functions the migration role owns (`SECURITY DEFINER`, fixed `search_path`),
which it may execute. They take a publication id and nothing else: the partition's name is
derived from the id (`d_` and the id's MD5 in hex), the id is bound as a literal, so neither
can name another table. Both take `index_digests`' exclusive lock until the transaction
ends (PostgreSQL requires it to change a table's partitions): lookups wait for the
publishing transaction's commit, a few milliseconds.

On SQLite (development) the table is plain; dropping a publication deletes its rows.

Each partition is keyed on (digest, since), including `until` (revision 0006): the
publication id, the same in every row, stays out of the key, which is then about half the
size, so more of it stays in memory at national scale. A lookup therefore reads the
partition by its name: through the parent, the publication id would be a condition the key
cannot answer, and every match would read its row. The application's role may read the
partitions (`gateway.schema.grant_application_role`).

A lookup asks for a batch's digests in one statement: on PostgreSQL as one array
(`digest = ANY(…)`), which the server sorts and looks up digest by digest in the B-tree,
where a list of thousands of placeholders costs more to send and plan than to look up. The
array goes as the text of a `bytea[]` literal of hex digests: psycopg's own array dumper
escapes every byte through a regular expression, which cost more than the lookup itself. On
SQLite the digests go as `IN` lists of `_SQLITE_IN` values, under its limit on parameters.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import and_, delete, or_, text
from sqlalchemy.exc import ProgrammingError
from sqlmodel import Session, col, select

from gateway.db import IndexDigest
from gateway.schema import PARTITION_FUNCTIONS
from xiezhi.errors import Unavailable

OPEN_FUNCTION, DROP_FUNCTION = PARTITION_FUNCTIONS
_SQLITE_IN = 500
_UNDEFINED_TABLE = "42P01"


def open_partition(session: Session, publication_id: str) -> None:
    """Make room for `publication_id`'s digests (PostgreSQL: its partition). Idempotent."""
    if _partitioned(session):
        session.execute(text(f"SELECT {OPEN_FUNCTION}(:publication)"), {"publication": publication_id})


def drop_digests(session: Session, publication_id: str) -> None:
    """Remove every digest of `publication_id` (PostgreSQL: drop its partition)."""
    if _partitioned(session):
        session.execute(text(f"SELECT {DROP_FUNCTION}(:publication)"), {"publication": publication_id})
    else:
        session.execute(delete(IndexDigest).where(col(IndexDigest.publication_id) == publication_id))


def _partitioned(session: Session) -> bool:
    return session.connection().dialect.name == "postgresql"


def held_digests(session: Session, publication_id: str, version: int, digests: list[bytes]) -> set[bytes]:
    """Which of `digests` version `version` of the publication's set holds. Raises Unavailable
    if the publication's digests were dropped meanwhile."""
    if _partitioned(session):
        literal = "{" + ",".join(f'"\\\\x{digest.hex()}"' for digest in digests) + "}"
        table = f"index_partitions.{partition_name(publication_id)}"  # hex: nothing to quote
        query = text(
            f"SELECT digest FROM {table} WHERE digest = ANY(CAST(:d AS bytea[]))"
            " AND since <= :v AND (until IS NULL OR until > :v)"
        )
        try:
            return {bytes(d) for d in session.execute(query, {"d": literal, "v": version}).scalars()}
        except ProgrammingError as exc:
            if getattr(exc.orig, "sqlstate", None) == _UNDEFINED_TABLE:
                raise Unavailable("a pinned index has been withdrawn", code="index_unavailable") from None
            raise
    found: set[bytes] = set()
    live = and_(
        col(IndexDigest.since) <= version, or_(col(IndexDigest.until).is_(None), col(IndexDigest.until) > version)
    )
    for first in range(0, len(digests), _SQLITE_IN):
        part = digests[first : first + _SQLITE_IN]
        where = and_(col(IndexDigest.publication_id) == publication_id, col(IndexDigest.digest).in_(part), live)
        found.update(bytes(d) for d in session.exec(select(IndexDigest.digest).where(where)))
    return found


def partition_name(publication_id: str) -> str:
    """The table of `publication_id`'s digests in the schema `index_partitions` (as the
    partition functions name it: `d_` and the MD5 of the id, in hex)."""
    return "d_" + hashlib.md5(publication_id.encode("utf-8")).hexdigest()
