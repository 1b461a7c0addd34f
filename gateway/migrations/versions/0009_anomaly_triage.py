"""`anomaly_triage`: what an auditor made of each anomaly flag (acknowledged, escalated,
dismissed), with their note; every change is also an `anomaly.triage` audit entry.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "anomaly_triage",
        sa.Column("key", AutoString(), nullable=False),
        sa.Column("state", AutoString(), nullable=False),
        sa.Column("note", AutoString(), nullable=False),
        sa.Column("by", AutoString(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    raise NotImplementedError("revision 0009 is not reversible: restore the database from a backup")
