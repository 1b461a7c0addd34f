"""The tamper-evident audit trail: typed events, canonical entries, an RFC 9162 Merkle tree,
signed checkpoints with witness cosignatures, proofs, and a verifier.

Entries hold metadata and counts only — never an ID number, token, name or key.
"""

from audit_log.entries import AuditEvent, EventKind, canonical_entry
from audit_log.merkle import leaf_hash
from audit_log.store import AuditCheckpoint, AuditCosignature, AuditLog, AuditRecord
from audit_log.writer import AuditUnavailable, AuditWriter, CheckpointSigner

__all__ = [
    "AuditCheckpoint",
    "AuditCosignature",
    "AuditEvent",
    "AuditLog",
    "AuditRecord",
    "AuditUnavailable",
    "AuditWriter",
    "CheckpointSigner",
    "EventKind",
    "canonical_entry",
    "leaf_hash",
]
