"""`match_requests.subjects_digest`: the SHA-256 of the subject list a request was made from,
as the requester's client states it, which the approver sees beside the request and the
clue report names, binding the approval to the exact list. Older requests have none.
`match_requests.clues`: the clues its lookups found so far, which the requester's list of
requests shows (older requests count from 0).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("match_requests") as batch:
        batch.add_column(sa.Column("subjects_digest", AutoString(), nullable=True))
        batch.add_column(sa.Column("clues", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    raise NotImplementedError("revision 0008 is not reversible: restore the database from a backup")
