"""Audit events and their canonical form.

An entry is the RFC 8785 (JCS) canonical JSON of an `AuditEvent` plus its place in the log:
`seq`, its leaf index, and `prev`, the base64 leaf hash of the entry before it. Its Merkle
leaf hash is SHA-256(0x00 || entry) as in RFC 9162. The two placement fields let a verifier
name the exact entry that was changed, removed or moved, even when the hashes stored beside
the entries were recomputed. Before an event becomes an entry it is screened:
a value that looks like an identifier (a run of 15 or more digits) or a free-text field
longer than the schema allows is refused, so a caller's mistake cannot put an ID number
into the permanent log.
"""

from __future__ import annotations

import base64
import json
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
    REQUEST_CANCELLED = "request.cancelled"
    APPROVAL = "approval"
    POLICY_CHANGE = "policy.change"
    RELAY = "relay"
    LOOKUP = "lookup"
    RESULT_READ = "result.read"
    RESULT_DELETED = "result.deleted"
    INDEX_PUBLICATION = "index.publication"
    EPOCH_ACTIVATED = "epoch.activated"
    KEY_ROTATION = "key.rotation"
    EXPORT = "audit.export"
    VERIFICATION = "audit.verification"
    ALARM = "alarm"  # raised (a witness refusing the log's checkpoint) or resolved by an operator
    ANOMALY_TRIAGE = "anomaly.triage"  # an auditor marked an anomaly flag acknowledged, escalated or dismissed


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
    model: Annotated[str | None, Field(max_length=64)] = None
    connector: Annotated[str | None, Field(max_length=64)] = None
    purpose: Annotated[str | None, Field(max_length=200)] = None
    detail: dict[str, Scalar] = Field(default_factory=dict)

    def payload(self) -> dict[str, object]:
        """The event as JSON values, screened: raises UnsafeAuditEntry if it looks identifying."""
        payload = self.model_dump(mode="json")
        if _ID_LIKE.search("\n".join(_strings(payload))):
            raise UnsafeAuditEntry("audit event refused: a value looks like an identifier")
        return payload


class UnsafeAuditEntry(XiezhiError):
    """An event carried something that must never enter the log."""

    status = 500
    code = "audit_refused"


GENESIS = bytes(32)  # `prev` of the first entry


def canonical_entry(event: AuditEvent | dict[str, object], seq: int, prev: bytes) -> bytes:
    """The JCS bytes of `event` placed at leaf `seq` after the entry whose leaf hash is `prev`."""
    payload = event.payload() if isinstance(event, AuditEvent) else dict(event)
    payload["seq"] = seq
    payload["prev"] = base64.b64encode(prev).decode()
    if _plain(payload):
        # For ASCII keys and string, safe-integer, boolean and null values, RFC 8785 output is
        # exactly sorted, compact JSON with UTF-8 text (tests compare the two on many entries).
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return rfc8785.dumps(payload)  # type: ignore[arg-type]


_SAFE = 2**53 - 1


def _plain(payload: dict[str, object]) -> bool:
    """True when sorted compact JSON is RFC 8785 for this event payload: its top-level values are
    strings or null by the schema, so only the detail's keys and integers need a look."""
    detail = payload.get("detail")
    if not isinstance(detail, dict):
        return False
    return all(
        isinstance(key, str)
        and key.isascii()
        and (not isinstance(value, int) or isinstance(value, bool) or -_SAFE <= value <= _SAFE)
        for key, value in detail.items()
    )


def _strings(payload: dict[str, object]) -> list[str]:
    """Every string of an event payload: the top-level values, the detail's keys and values."""
    strings = [value for value in payload.values() if isinstance(value, str)]
    detail = payload.get("detail")
    if isinstance(detail, dict):
        strings.extend(detail)
        strings.extend(value for value in detail.values() if isinstance(value, str))
    return strings
