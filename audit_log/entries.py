"""Audit events and their canonical form.

An entry is the RFC 8785 (JCS) canonical JSON of an `AuditEvent`; its Merkle leaf hash is
SHA-256(0x00 || entry) as in RFC 9162. Before an event becomes an entry it is screened:
a value that looks like an identifier (a run of 15 or more digits) or a free-text field
longer than the schema allows is refused, so a caller's mistake cannot put an ID number
into the permanent log.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import rfc8785
from pydantic import BaseModel, ConfigDict, Field

from xiezhi.errors import XiezhiError

_ID_LIKE = re.compile(r"\d{15,}")


class EventKind(StrEnum):
    AUTHENTICATION = "authentication"
    DECISION = "decision"
    REQUEST_CREATED = "request.created"
    REQUEST_REFUSED = "request.refused"
    APPROVAL = "approval"
    POLICY_CHANGE = "policy.change"
    RELAY = "relay"
    LOOKUP = "lookup"
    RESULT_READ = "result.read"
    INDEX_PUBLICATION = "index.publication"
    EPOCH_ACTIVATED = "epoch.activated"


Scalar = str | int | bool | None


class AuditEvent(BaseModel):
    """One thing that happened, with who did it and the counts involved."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: EventKind
    at: datetime
    actor: Annotated[str, Field(max_length=128)]
    org: Annotated[str | None, Field(max_length=32)] = None
    request_id: Annotated[str | None, Field(max_length=64)] = None
    action: Annotated[str, Field(max_length=64)]
    outcome: Annotated[str, Field(max_length=32)]
    detail: dict[str, Scalar] = Field(default_factory=dict)


class UnsafeAuditEntry(XiezhiError):
    """An event carried something that must never enter the log."""

    status = 500
    code = "audit_refused"


def canonical_entry(event: AuditEvent) -> bytes:
    """Return the JCS bytes of `event`; raises UnsafeAuditEntry if it looks identifying."""
    payload = event.model_dump(mode="json")
    for value in _strings(payload):
        if _ID_LIKE.search(value):
            raise UnsafeAuditEntry("audit event refused: a value looks like an identifier")
    return rfc8785.dumps(payload)


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in [key, *_strings(item)]]
    return []
