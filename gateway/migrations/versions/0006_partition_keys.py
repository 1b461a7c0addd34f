"""PostgreSQL: each digest partition keyed on (digest, since) with `until` included, without
the publication id, which is the same in every row of a partition and was 40% of each key
entry; a lookup reads its publication's partition by name (`gateway.digest_partitions`).
SQLite is unchanged.

The parent's primary key is dropped (a partitioned table's key must hold the partition
column) and each existing partition gets the smaller key; partitions made from now on get it
from `xiezhi_open_digest_partition`. Building the keys takes time in proportion to the
digests stored.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

# As in 0005, with the partition's own key made with it (once: the function may be called
# again for a partition that exists).
_OPEN = """
CREATE OR REPLACE FUNCTION xiezhi_open_digest_partition(publication text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    name text := 'd_' || md5(publication);
BEGIN
    IF to_regclass(format('index_partitions.%I', name)) IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE format('CREATE TABLE index_partitions.%I PARTITION OF public.index_digests FOR VALUES IN (%L)',
                   name, publication);
    EXECUTE format('ALTER TABLE index_partitions.%I ADD PRIMARY KEY (digest, since) INCLUDE (until)', name);
END $$;
REVOKE ALL ON FUNCTION xiezhi_open_digest_partition(text) FROM PUBLIC;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE index_digests DROP CONSTRAINT index_digests_pkey")
    partitions = op.get_bind().exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'public.index_digests'::regclass"
    )
    for (name,) in partitions.fetchall():
        op.execute(f'ALTER TABLE index_partitions."{name}" ADD PRIMARY KEY (digest, since) INCLUDE (until)')
    op.execute(_OPEN)


def downgrade() -> None:
    raise NotImplementedError("revision 0006 is not reversible: restore the database from a backup")
