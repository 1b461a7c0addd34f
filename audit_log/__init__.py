"""The audit trail: typed events, canonical entries, append-only storage.

Entries hold metadata and counts only — never an ID number, token, name or key.
"""

from audit_log.entries import AuditEvent, EventKind, canonical_entry, leaf_hash
from audit_log.store import AuditLog, AuditRecord

__all__ = ["AuditEvent", "AuditLog", "AuditRecord", "EventKind", "canonical_entry", "leaf_hash"]
