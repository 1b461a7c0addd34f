"""`publications.updated_at`: when a token set's current version was committed (its first
commit, or the last delta applied), which a request pins as its data's as-of time and the
clue report states per agency. Existing committed sets take their commit time.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import UTCDateTime

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("publications") as batch:
        batch.add_column(sa.Column("updated_at", UTCDateTime(), nullable=True))
    op.execute("UPDATE publications SET updated_at = committed_at")


def downgrade() -> None:
    raise NotImplementedError("revision 0007 is not reversible: restore the database from a backup")
