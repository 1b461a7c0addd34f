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

A lookup asks for a batch's digests in one statement: on PostgreSQL as one array
(`digest = ANY(…)`), which the server sorts and looks up digest by digest in the B-tree,
where a list of thousands of placeholders costs more to send and plan than to look up. The
array goes as the text of a `bytea[]` literal of hex digests: psycopg's own array dumper
escapes every byte through a regular expression, which cost more than the lookup itself. On
SQLite the digests go as `IN` lists of `_SQLITE_IN` values, under its limit on parameters.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import ColumnElement, LargeBinary, String, any_, bindparam, cast, delete, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Session, col

from gateway.db import IndexDigest
from gateway.schema import PARTITION_FUNCTIONS

OPEN_FUNCTION, DROP_FUNCTION = PARTITION_FUNCTIONS
_SQLITE_IN = 500


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


def digest_in(session: Session, digests: list[bytes]) -> Iterator[ColumnElement[bool]]:
    """Conditions that together select the rows whose digest is one of `digests`: one on
    PostgreSQL, one per `_SQLITE_IN` digests on SQLite."""
    if _partitioned(session):
        literal = "{" + ",".join(f'"\\\\x{digest.hex()}"' for digest in digests) + "}"
        yield col(IndexDigest.digest) == any_(cast(bindparam("digests", literal, type_=String), ARRAY(LargeBinary)))
        return
    for first in range(0, len(digests), _SQLITE_IN):
        yield col(IndexDigest.digest).in_(digests[first : first + _SQLITE_IN])
