"""Index deltas: a publication's token set is versioned, each token valid from `since` until
`until`, so a delta (tokens added and removed) applies at once and a running request keeps
the version it pinned (`gateway.index_deltas`).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import warnings

import sqlalchemy as sa
from alembic import op
from sqlalchemy.exc import SAWarning
from sqlmodel.sql.sqltypes import AutoString

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_PUBLICATION_COLUMNS: tuple[sa.Column[object], ...] = (
    sa.Column("version", sa.Integer(), server_default="1", nullable=False),
    sa.Column("base_id", AutoString(), nullable=True),
    sa.Column("removed_count", sa.Integer(), server_default="0", nullable=False),
    sa.Column("removed_digest", AutoString(), nullable=True),
    sa.Column("removed_received", sa.Integer(), server_default="0", nullable=False),
    sa.Column("removed_chunks", sa.Integer(), server_default="0", nullable=False),
)


def upgrade() -> None:
    with op.batch_alter_table("publications") as batch:
        for column in _PUBLICATION_COLUMNS:
            batch.add_column(column)
    _widen_key("index_digests", sa.Column("since", sa.Integer(), server_default="1", nullable=False),
               ["publication_id", "digest", "since"], sa.Column("until", sa.Integer(), nullable=True))  # fmt: skip
    _widen_key("index_chunks", sa.Column("kind", AutoString(), server_default="added", nullable=False),
               ["publication_id", "kind", "number"])  # fmt: skip
    op.create_table(
        "index_removals",
        sa.Column("publication_id", AutoString(), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=16), nullable=False),
        sa.ForeignKeyConstraint(["publication_id"], ["publications.id"]),
        sa.PrimaryKeyConstraint("publication_id", "digest"),
    )


def _widen_key(table: str, key_column: sa.Column[int], key: list[str], *more: sa.Column[int]) -> None:
    """Add `key_column` (and `more`) and make the primary key `key`. SQLite's batch mode
    recreates the table; PostgreSQL alters it in place."""
    postgresql = op.get_bind().dialect.name == "postgresql"
    with warnings.catch_warnings():
        # SQLite's copy is made from the old table's columns, keyed the old way; the new key
        # replaces that one, which SQLAlchemy notes with a warning and then does.
        warnings.filterwarnings("ignore", "Table '_alembic_tmp_.*' specifies columns", SAWarning)
        _alter_key(table, postgresql, key_column, key, *more)


def _alter_key(table: str, postgresql: bool, key_column: sa.Column[int], key: list[str], *more: sa.Column[int]) -> None:
    with op.batch_alter_table(table, recreate="never" if postgresql else "always") as batch:
        batch.add_column(key_column)
        for column in more:
            batch.add_column(column)
        if postgresql:
            batch.drop_constraint(f"{table}_pkey", type_="primary")
        batch.create_primary_key(f"{table}_pkey", key)


def downgrade() -> None:
    raise NotImplementedError("revision 0004 is not reversible: restore the database from a backup")
