"""Caller authentication: asymmetric JWTs from a trusted identity provider, over the client
certificate of a system that may carry the token's roles.

The identity provider signs with EdDSA (Ed25519) or ES256 and names its key in the `kid`
header; the gateway holds only the public keys, each bound to the one algorithm its type
allows (`xiezhi.crypto.load_verification_key`). Issuer, audience, expiry and subject are
required. The token's claims become a `Principal`: who, which organisation (one), which
roles, which clearance (0–3; absent means none), and for connector service identities,
which connector. The identity provider asserts them; the gateway's policy decides what
they allow, refusing unknown roles, unknown organisations and exclusive role pairs.

`ClientChannels` then holds the token to the mutual-TLS connection it came over: each
client certificate carries only the roles the deployment maps to it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jwt

from xiezhi.crypto import load_verification_key
from xiezhi.errors import Unauthenticated
from xiezhi.tls import client_identity, connector_identity

_ORG = re.compile(r"^\d{6}$")
# What the audit log refuses to hold (audit_log.entries): a caller named like this could never
# be recorded, so its token is refused at the door rather than failing every call.
_ID_LIKE = re.compile(r"\d{15,}")
# A token the identity provider issues is well under 2 KB; anything far larger is refused
# before it is parsed.
MAX_TOKEN_CHARS = 8192
CONNECTOR_ROLE = "connector"


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
        """Return the caller's principal; raise Unauthenticated with a reason code otherwise
        (token_missing, token_malformed, token_unknown_key, token_expired, token_invalid)."""
        token = _bearer(authorization)
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise Unauthenticated("bearer token is malformed", code="token_malformed") from None
        bound = self._keys.get(kid) if isinstance(kid, str) else None
        if bound is None:
            raise Unauthenticated("bearer token is signed by an unknown key", code="token_unknown_key")
        try:
            claims = jwt.decode(
                token,
                bound.key,
                algorithms=[bound.algorithm],  # the key's own algorithm, never the one the header names
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
    if len(authorization) > MAX_TOKEN_CHARS:
        raise Unauthenticated(f"a bearer token has at most {MAX_TOKEN_CHARS} characters", code="token_malformed")
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
    if any(_ID_LIKE.search(str(value)) for value in (claims["sub"], connector or "", *roles)):
        raise Unauthenticated("token claims must not hold anything shaped like an ID number", code="token_invalid")
    clearance = claims.get("clearance", 0)
    if not isinstance(clearance, int) or isinstance(clearance, bool) or not 0 <= clearance <= 3:
        raise Unauthenticated("token claim 'clearance' must be an integer from 0 to 3", code="token_invalid")
    return Principal(
        subject=str(claims["sub"]), org=org, roles=frozenset(roles), connector=connector, clearance=clearance
    )


class ClientChannels:
    """Which roles a token may carry over which client certificate (mutual TLS).

    A deployment maps each client system's certificate to the roles its users hold
    (`GatewaySettings.clients`, client name → roles; the certificate names
    `<name>.client.<domain>`): the procuratorate's requester system to prosecutors,
    assistants and department heads, the audit office's system to security auditors, and so
    on. A connector's certificate carries the `connector` role only, and a connector's token
    counts only over that connector's own certificate. A token whose roles are not all
    allowed for the certificate it came over is refused, so a token leaked to, or replayed
    by, another system is useless there.

    Fail closed: a certificate the mapping does not name (the gateway's own, a client not
    listed) carries no role. Without TLS (`domain` None, development over plain HTTP) there
    is no certificate and nothing to check.
    """

    def __init__(self, domain: str | None, clients: Mapping[str, Collection[str]]) -> None:
        self._domain = domain
        self._clients = (
            {client_identity(name, domain): frozenset(roles) for name, roles in clients.items()} if domain else {}
        )

    def roles_for(self, certificate_names: Sequence[str]) -> frozenset[str]:
        """The roles a certificate with these DNS names may carry (none for an unmapped one)."""
        allowed: set[str] = set()
        for name in certificate_names:
            allowed |= self._clients.get(name, frozenset())
            if self._domain is not None and name.endswith(f".connector.{self._domain}"):
                allowed.add(CONNECTOR_ROLE)
        return frozenset(allowed)

    def check(self, principal: Principal, certificate_names: Sequence[str]) -> None:
        """Raise Unauthenticated unless `principal` may use the connection whose verified client
        certificate has `certificate_names`: certificate_mismatch for a connector's token over
        another certificate, certificate_role_mismatch for roles the certificate does not carry."""
        if self._domain is None:
            return
        own = connector_identity(principal.connector, self._domain) if principal.connector is not None else None
        if own is not None and own not in certificate_names:
            raise Unauthenticated(
                f"connector {principal.connector}'s token needs its own client certificate", code="certificate_mismatch"
            )
        if not principal.roles <= self.roles_for(certificate_names):
            raise Unauthenticated(
                "the token's roles are not accepted over this client certificate", code="certificate_role_mismatch"
            )
