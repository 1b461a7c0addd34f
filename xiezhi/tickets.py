"""Relay tickets: the gateway's signed permission for one evaluation batch.

A ticket is an EdDSA JWT the gateway signs for exactly one batch it relays to one
connector. It names the request, the requester's organisation, the connector (as
audience), the epoch, the element count and a digest of the batch, and lives for seconds.
The connector checks all of it before it evaluates anything.

The JWT header names the signing key (`kid`, its RFC 7638 thumbprint, see `xiezhi.jwks`), so
the gateway can rotate keys while tickets signed by the previous key are still in flight.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import jwt

from xiezhi.crypto import SigningKey, VerifyKey
from xiezhi.errors import Unauthenticated

ALGORITHM = "EdDSA"
MAX_KID_LENGTH = 128

# kid → the verification key, or None for a key the verifier does not know (it may refresh first).
KeyLookup = Callable[[str], VerifyKey | None]


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
    kid: str,
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
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})


def verify_ticket(
    ticket: str, keys: Mapping[str, VerifyKey] | KeyLookup, *, issuer: str, connector: str, now: datetime
) -> TicketClaims:
    """Check the key, signature, issuer, audience and expiry at `now`; raise Unauthenticated if any fails.

    `keys` finds the verification key by the header's kid. A ticket without a kid is
    `ticket_invalid`; one whose kid `keys` does not know is `ticket_key_unknown`. Expiry is
    checked against the given `now` rather than the library's clock so the check is
    testable; the count and digest are the caller's to compare with the batch.
    """
    kid = _kid(ticket)
    key = keys.get(kid) if isinstance(keys, Mapping) else keys(kid)
    if key is None:
        raise Unauthenticated("relay ticket is signed by a key this connector does not know", code="ticket_key_unknown")
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


def _kid(ticket: str) -> str:
    try:
        header = jwt.get_unverified_header(ticket)
    except jwt.PyJWTError:
        raise Unauthenticated("relay ticket is not valid", code="ticket_invalid") from None
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
        raise Unauthenticated("relay ticket names no signing key (kid)", code="ticket_invalid")
    return kid
