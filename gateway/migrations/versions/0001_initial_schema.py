"""The baseline: the schema of the release before migrations, every table the gateway kept,
created as that release's `create_all` did, and the audit log's append-only triggers and tail.

A database that release created without migrations holds exactly this schema; `gateway.schema`
adopts it (stamps this revision) instead of running it.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

from audit_log.store import install_append_only_on

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "alarms",
        sa.Column("id", AutoString(), nullable=False),
        sa.Column("kind", AutoString(), nullable=False),
        sa.Column("source", AutoString(), nullable=False),
        sa.Column("reason", AutoString(), nullable=False),
        sa.Column("message", AutoString(), nullable=False),
        sa.Column("raised_at", UTCDateTime(), nullable=False),
        sa.Column("last_at", UTCDateTime(), nullable=False),
        sa.Column("repeats", sa.Integer(), nullable=False),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.Column("resolved_by", AutoString(), nullable=True),
        sa.Column("resolution", AutoString(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_alarms_kind"), "alarms", ["kind"], unique=False)
    op.create_index(op.f("ix_alarms_resolved_at"), "alarms", ["resolved_at"], unique=False)
    op.create_table(
        "audit_checkpoints",
        sa.Column("size", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("note", AutoString(), nullable=False),
        sa.Column("issued_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("size"),
    )
    op.create_table(
        "audit_entries",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("kind", AutoString(), nullable=False),
        sa.Column("actor", AutoString(), nullable=False),
        sa.Column("org", AutoString(), nullable=True),
        sa.Column("request_id", AutoString(), nullable=True),
        sa.Column("model", AutoString(), nullable=True),
        sa.Column("connector", AutoString(), nullable=True),
        sa.Column("outcome", AutoString(), nullable=False),
        sa.Column("purpose", AutoString(), nullable=True),
        sa.Column("entry", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index(op.f("ix_audit_entries_actor"), "audit_entries", ["actor"], unique=False)
    op.create_index(op.f("ix_audit_entries_connector"), "audit_entries", ["connector"], unique=False)
    op.create_index(op.f("ix_audit_entries_kind"), "audit_entries", ["kind"], unique=False)
    op.create_index(op.f("ix_audit_entries_model"), "audit_entries", ["model"], unique=False)
    op.create_index(op.f("ix_audit_entries_org"), "audit_entries", ["org"], unique=False)
    op.create_index(op.f("ix_audit_entries_outcome"), "audit_entries", ["outcome"], unique=False)
    op.create_index(op.f("ix_audit_entries_purpose"), "audit_entries", ["purpose"], unique=False)
    op.create_index(op.f("ix_audit_entries_recorded_at"), "audit_entries", ["recorded_at"], unique=False)
    op.create_index(op.f("ix_audit_entries_request_id"), "audit_entries", ["request_id"], unique=False)
    op.create_table(
        "audit_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx"),
    )
    op.create_table(
        "audit_tail",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("frontier", sa.LargeBinary(), nullable=False),
        sa.Column("last_leaf", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "connector_epochs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connector", AutoString(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("activated_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("connector", "epoch"),
    )
    op.create_index(op.f("ix_connector_epochs_connector"), "connector_epochs", ["connector"], unique=False)
    op.create_table(
        "match_requests",
        sa.Column("id", AutoString(), nullable=False),
        sa.Column("model", AutoString(), nullable=False),
        sa.Column("requester", AutoString(), nullable=False),
        sa.Column("org", AutoString(), nullable=False),
        sa.Column("purpose", AutoString(), nullable=False),
        sa.Column("legal_basis", AutoString(), nullable=False),
        sa.Column("scope", AutoString(), nullable=False),
        sa.Column("subject_count", sa.Integer(), nullable=False),
        sa.Column("status", AutoString(), nullable=False),
        sa.Column("plan", AutoString(), nullable=False),  # gateway.db.PlanColumn: JSON text
        sa.Column("rows_looked_up", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.Column("results_deleted_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_match_requests_requester"), "match_requests", ["requester"], unique=False)
    op.create_table(
        "organisations",
        sa.Column("code", AutoString(), nullable=False),
        sa.Column("name", AutoString(), nullable=False),
        sa.Column("parent", AutoString(), nullable=True),
        sa.PrimaryKeyConstraint("code"),
    )
    op.create_table(
        "policy_revisions",
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("version", AutoString(), nullable=False),
        sa.Column("change", AutoString(), nullable=False),
        sa.Column("actor", AutoString(), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("revision"),
    )
    op.create_table(
        "publications",
        sa.Column("id", AutoString(), nullable=False),
        sa.Column("connector", AutoString(), nullable=False),
        sa.Column("capability", AutoString(), nullable=False),
        sa.Column("title", AutoString(), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=False),
        sa.Column("digest", AutoString(), nullable=False),
        sa.Column("received", sa.Integer(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("committed", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("committed_at", UTCDateTime(), nullable=True),
        sa.Column("lookup_key", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_publications_capability"), "publications", ["capability"], unique=False)
    op.create_index(op.f("ix_publications_connector"), "publications", ["connector"], unique=False)
    op.create_table(
        "quota_usage",
        sa.Column("user", AutoString(), nullable=False),
        sa.Column("window", AutoString(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("user", "window"),
    )
    op.create_table(
        "sealing_data_keys",
        sa.Column("id", AutoString(), nullable=False),
        sa.Column("kek_id", AutoString(), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("retired", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_sealing_data_keys_kek_id"), "sealing_data_keys", ["kek_id"], unique=False)
    op.create_table(
        "token_sightings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=8), nullable=False),
        sa.Column("capability", AutoString(), nullable=False),
        sa.Column("connector", AutoString(), nullable=False),
        sa.Column("request_id", AutoString(), nullable=False),
        sa.Column("actor", AutoString(), nullable=False),
        sa.Column("org", AutoString(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_token_sightings_at"), "token_sightings", ["at"], unique=False)
    op.create_index(op.f("ix_token_sightings_digest"), "token_sightings", ["digest"], unique=False)
    op.create_index(op.f("ix_token_sightings_request_id"), "token_sightings", ["request_id"], unique=False)
    op.create_table(
        "approvals",
        sa.Column("request_id", AutoString(), nullable=False),
        sa.Column("approver_org", AutoString(), nullable=False),
        sa.Column("reasons", AutoString(), nullable=False),
        sa.Column("status", AutoString(), nullable=False),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("decided_by", AutoString(), nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("decision_reason", AutoString(), nullable=True),
        sa.Column("valid_until", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["match_requests.id"],
        ),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_index(op.f("ix_approvals_approver_org"), "approvals", ["approver_org"], unique=False)
    op.create_table(
        "audit_cosignatures",
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("witness", AutoString(), nullable=False),
        sa.Column("line", AutoString(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["size"],
            ["audit_checkpoints.size"],
        ),
        sa.PrimaryKeyConstraint("size", "witness"),
    )
    op.create_table(
        "evaluation_counts",
        sa.Column("request_id", AutoString(), nullable=False),
        sa.Column("connector", AutoString(), nullable=False),
        sa.Column("reserved", sa.Integer(), nullable=False),
        sa.Column("evaluated", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["match_requests.id"],
        ),
        sa.PrimaryKeyConstraint("request_id", "connector"),
    )
    op.create_table(
        "evaluation_slots",
        sa.Column("request_id", AutoString(), nullable=False),
        sa.Column("connector", AutoString(), nullable=False),
        sa.Column("first_row", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status", AutoString(), nullable=False),
        sa.Column("proof_failures", sa.Integer(), nullable=False),
        sa.Column("reported_attempt", sa.Integer(), nullable=False),
        sa.Column("last_proof_failure_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["match_requests.id"],
        ),
        sa.PrimaryKeyConstraint("request_id", "connector", "first_row"),
    )
    op.create_index(
        op.f("ix_evaluation_slots_last_proof_failure_at"), "evaluation_slots", ["last_proof_failure_at"], unique=False
    )
    op.create_table(
        "index_chunks",
        sa.Column("publication_id", AutoString(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["publication_id"],
            ["publications.id"],
        ),
        sa.PrimaryKeyConstraint("publication_id", "number"),
    )
    op.create_table(
        "index_digests",
        sa.Column("publication_id", AutoString(), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["publication_id"],
            ["publications.id"],
        ),
        sa.PrimaryKeyConstraint("publication_id", "digest"),
    )
    op.create_table(
        "result_batches",
        sa.Column("request_id", AutoString(), nullable=False),
        sa.Column("first_row", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["match_requests.id"],
        ),
        sa.PrimaryKeyConstraint("request_id", "first_row"),
    )
    op.create_table(
        "casbin_rule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ptype", sa.String(length=255), nullable=True),
        sa.Column("v0", sa.String(length=255), nullable=True),
        sa.Column("v1", sa.String(length=255), nullable=True),
        sa.Column("v2", sa.String(length=255), nullable=True),
        sa.Column("v3", sa.String(length=255), nullable=True),
        sa.Column("v4", sa.String(length=255), nullable=True),
        sa.Column("v5", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    # One definition of the triggers and the tail row: the audit log's own (audit_log.store).
    install_append_only_on(op.get_bind())


def downgrade() -> None:
    # The audit log is never dropped by a migration.
    raise NotImplementedError("the first revision cannot be downgraded: it would drop the audit log")
