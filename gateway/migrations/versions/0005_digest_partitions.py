"""PostgreSQL: `index_digests` partitioned by publication, one partition each in the schema
`index_partitions`, created and dropped through two `SECURITY DEFINER` functions the
application's role may execute (`gateway.digest_partitions`); its key includes `until`, so
lookups read the key alone. SQLite is unchanged.

An existing table is moved with its data: renamed, the partitioned table created, a
partition made for every publication and its rows copied, the old table dropped. The copy
takes time in proportion to the digests stored.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

# The partition's name is derived from the id and the id is bound as a literal (%L), so a
# caller names no table; search_path is fixed so no object of the caller's is resolved.
_FUNCTIONS = """
CREATE FUNCTION xiezhi_open_digest_partition(publication text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('CREATE TABLE IF NOT EXISTS index_partitions.%I '
                   'PARTITION OF public.index_digests FOR VALUES IN (%L)', 'd_' || md5(publication), publication);
END $$;
CREATE FUNCTION xiezhi_drop_digest_partition(publication text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('DROP TABLE IF EXISTS index_partitions.%I', 'd_' || md5(publication));
END $$;
REVOKE ALL ON FUNCTION xiezhi_open_digest_partition(text), xiezhi_drop_digest_partition(text) FROM PUBLIC;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE SCHEMA index_partitions")
    op.execute("ALTER TABLE index_digests RENAME TO index_digests_unpartitioned")
    op.execute("ALTER INDEX index_digests_pkey RENAME TO index_digests_unpartitioned_pkey")
    op.create_table(
        "index_digests",
        sa.Column("publication_id", AutoString(), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=16), nullable=False),
        sa.Column("since", sa.Integer(), server_default="1", nullable=False),
        sa.Column("until", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["publication_id"], ["publications.id"]),
        # `until` in the key too: a lookup is then an index-only scan, never reading the rows.
        sa.PrimaryKeyConstraint("publication_id", "digest", "since", postgresql_include=["until"]),
        postgresql_partition_by="LIST (publication_id)",
    )
    op.execute(_FUNCTIONS)
    op.execute("SELECT xiezhi_open_digest_partition(id) FROM publications")
    op.execute("INSERT INTO index_digests SELECT publication_id, digest, since, until FROM index_digests_unpartitioned")
    op.execute("DROP TABLE index_digests_unpartitioned")


def downgrade() -> None:
    raise NotImplementedError("revision 0005 is not reversible: restore the database from a backup")
