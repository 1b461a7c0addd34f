"""Caller authentication: asymmetric JWTs from a trusted identity provider.

The identity provider signs with EdDSA (Ed25519) or ES256 and names its key in the `kid`
header; the gateway holds only the public keys. Issuer, audience, expiry and subject are
required. The token's claims become a `Principal`: who, which organisation (one), which
roles, which clearance (0–3; absent means none), and for connector service identities,
which connector. The identity provider asserts them; the gateway's policy decides what
they allow, refusing unknown roles, unknown organisations and exclusive role pairs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import jwt

from xiezhi.crypto import load_verification_key
from xiezhi.errors import Unauthenticated
from xiezhi.tls import connector_identity

ALGORITHMS = ["EdDSA", "ES256"]
_ORG = re.compile(r"^\d{6}$")


@dataclass(frozen=True)
class Principal:
    subject: str
    org: str | None
    roles: frozenset[str]
    connector: str | None = None
    clearance: int = 0  # 0 (none) to 3; covers capabilities of its tier and below

    @property
    def is_connector(self) -> bool:
        return "connector" in self.roles


class Authenticator:
    """Verifies bearer tokens against the identity provider's public keys."""

    def __init__(self, keys: dict[str, Path], *, issuer: str, audience: str) -> None:
        if not keys:
            raise ValueError("no identity-provider keys configured: every token would be refused")
        self._keys = {kid: load_verification_key(path) for kid, path in keys.items()}
        self._issuer = issuer
        self._audience = audience

    def authenticate(self, authorization: str | None) -> Principal:
        """Return the caller's principal; raise Unauthenticated with a reason code otherwise."""
        token = _bearer(authorization)
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise Unauthenticated("bearer token is malformed", code="token_malformed") from None
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise Unauthenticated("bearer token is signed by an unknown key", code="token_unknown_key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["iss", "aud", "sub", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("bearer token has expired", code="token_expired") from None
        except jwt.PyJWTError:
            raise Unauthenticated("bearer token is not valid", code="token_invalid") from None
        return _principal(claims)


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("missing bearer token", code="token_missing")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization must be a bearer token", code="token_malformed")
    return token.strip()


def _principal(claims: dict[str, object]) -> Principal:
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise Unauthenticated("token claim 'roles' must be a list of strings", code="token_invalid")
    org = claims.get("org")
    if org is not None and (not isinstance(org, str) or not _ORG.match(org)):
        raise Unauthenticated("token claim 'org' must be a 6-digit region code", code="token_invalid")
    connector = claims.get("connector")
    if connector is not None and not isinstance(connector, str):
        raise Unauthenticated("token claim 'connector' must be a string", code="token_invalid")
    clearance = claims.get("clearance", 0)
    if not isinstance(clearance, int) or isinstance(clearance, bool) or not 0 <= clearance <= 3:
        raise Unauthenticated("token claim 'clearance' must be an integer from 0 to 3", code="token_invalid")
    return Principal(
        subject=str(claims["sub"]), org=org, roles=frozenset(roles), connector=connector, clearance=clearance
    )


def check_channel(principal: Principal, certificate_names: list[str], domain: str | None) -> None:
    """A connector's token counts only over a connection made with that connector's own
    certificate (mutual TLS): a token leaked to, or replayed by, another party is refused.
    Raises Unauthenticated (certificate_mismatch). Without TLS (`domain` None) there is nothing
    to check."""
    if domain is None or principal.connector is None:
        return
    if connector_identity(principal.connector, domain) not in certificate_names:
        raise Unauthenticated(
            f"connector {principal.connector}'s token needs its own client certificate", code="certificate_mismatch"
        )
