"""Relay tickets: the gateway's signed permission for one evaluation batch.

A ticket is an EdDSA JWT the gateway signs for exactly one batch it relays to one
connector. It names the request, the requester's organisation, the connector (as
audience), the epoch, the element count and a digest of the batch, and lives for seconds.
The connector checks all of it before it evaluates anything.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import jwt

from xiezhi.crypto import SigningKey, VerifyKey
from xiezhi.errors import Unauthenticated

ALGORITHM = "EdDSA"


@dataclass(frozen=True)
class TicketClaims:
    issuer: str
    connector: str
    request_id: str
    requester_org: str
    epoch: int
    count: int
    digest: str
    ticket_id: str
    expires_at: int


def issue_ticket(
    key: SigningKey,
    *,
    issuer: str,
    connector: str,
    request_id: str,
    requester_org: str,
    epoch: int,
    count: int,
    digest: str,
    now: datetime,
    ttl_seconds: int,
) -> str:
    issued = int(now.timestamp())
    claims = {
        "iss": issuer,
        "aud": f"connector:{connector}",
        "sub": requester_org,
        "rid": request_id,
        "epoch": epoch,
        "cnt": count,
        "dig": digest,
        "jti": str(uuid.uuid4()),
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify_ticket(ticket: str, key: VerifyKey, *, issuer: str, connector: str, now: datetime) -> TicketClaims:
    """Check signature, issuer, audience and expiry at `now`; raise Unauthenticated if any fails.

    Expiry is checked against the given `now` rather than the library's clock so the check
    is testable; the count and digest are the caller's to compare with the batch.
    """
    try:
        claims = jwt.decode(
            ticket,
            key,
            algorithms=[ALGORITHM],
            issuer=issuer,
            audience=f"connector:{connector}",
            options={
                "verify_exp": False,
                "verify_iat": False,
                "require": ["iss", "aud", "sub", "exp", "jti", "rid", "cnt", "dig", "epoch"],
            },
        )
    except jwt.PyJWTError:
        raise Unauthenticated("relay ticket is not valid", code="ticket_invalid") from None
    if int(claims["exp"]) <= int(now.timestamp()):
        raise Unauthenticated("relay ticket has expired", code="ticket_expired")
    return TicketClaims(
        issuer=claims["iss"],
        connector=connector,
        request_id=str(claims["rid"]),
        requester_org=str(claims["sub"]),
        epoch=int(claims["epoch"]),
        count=int(claims["cnt"]),
        digest=str(claims["dig"]),
        ticket_id=str(claims["jti"]),
        expires_at=int(claims["exp"]),
    )
