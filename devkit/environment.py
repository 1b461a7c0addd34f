"""A development identity provider, roster and gateway configuration, for the demo, tests and CI.

Production takes its identity provider's public keys and its own ticket key from
configuration; this module only makes local stand-ins: an Ed25519 identity-provider key
that signs caller JWTs, and a development PKI (`devkit.pki`) for mutual TLS between every party.
The connectors come from the roster in `deploy/connectors/` (`connectors.roster`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jwt

from audit_log.note import ensure_signer
from connectors.roster import Roster
from connectors.setup import ensure_witness_key
from devkit.pki import DevPki, add_party, init_pki
from gateway.app import stored_ticket_keys
from gateway.keyring import LocalKeyring
from gateway.settings import GatewaySettings
from gateway.setup import DEV_IDENTITY_KID, GatewayKeys, settings_document, write_settings
from gateway.ticket_keys import StoredTicketKeys
from xiezhi.crypto import generate_signing_key, load_private_key, public_path

DEV_KID = DEV_IDENTITY_KID
DEV_ISSUER = "xiezhi-dev-idp"
DEV_AUDIENCE = "xiezhi-gateway"
DEV_LOG_ORIGIN = "xiezhi.dev/audit"
REPO_ROOT = Path(__file__).resolve().parent.parent
ROSTER_DIR = REPO_ROOT / "deploy" / "connectors"
# The development PKI's client systems and the roles a token may carry over each one's
# certificate (the gateway's `clients` setting): a procuratorate's requester system, the
# security auditor's, and the administrators'. Connectors' certificates carry `connector`.
DEV_CLIENT_ROLES: dict[str, tuple[str, ...]] = {
    "requester": ("prosecutor", "assistant", "dept_head"),
    "auditor": ("security_auditor",),
    "admin": ("security_admin", "system_admin"),
}
DEV_CLIENTS = tuple(DEV_CLIENT_ROLES)


def dev_client_for(roles: Iterable[str]) -> str | None:
    """The development client system whose certificate carries all of `roles`; None if none does."""
    wanted = set(roles)
    return next((name for name, allowed in DEV_CLIENT_ROLES.items() if wanted <= set(allowed)), None)


def load_roster(folder: Path | None = None) -> Roster:
    """The connectors' configurations in `folder` (default: the repository's deploy/connectors)."""
    return Roster.load(folder or ROSTER_DIR)


def ensure_pki(folder: Path, connectors: list[str]) -> DevPki:
    """The development PKI in `folder`: created (CA, gateway, `connectors`, clients) if absent,
    else given a certificate for each of `connectors` and `DEV_CLIENTS` that has none yet."""
    if not (folder / "ca.pem").exists():
        return init_pki(folder, connectors, DEV_CLIENTS, datetime.now(UTC))
    pki = DevPki(folder)
    for name in connectors:
        if not pki.connector(name).cert.exists():
            add_party(pki, "connector", name, datetime.now(UTC))
    for name in DEV_CLIENTS:
        if not pki.client(name).cert.exists():
            add_party(pki, "client", name, datetime.now(UTC))
    return pki


@dataclass(frozen=True)
class DevEnvironment:
    root: Path
    idp_key: Path
    gateway_config: Path
    models_dir: Path
    audit_key: Path
    pki: DevPki | None = None  # the development PKI, when the services speak mutual TLS

    @contextmanager
    def ticket_keys(self) -> Iterator[StoredTicketKeys]:
        """The gateway's relay-ticket keys, read from its database as `xiezhi keys
        rotate-tickets` reads them (made there if the gateway has not started yet)."""
        keys, engine = stored_ticket_keys(GatewaySettings.from_file(self.gateway_config))
        try:
            yield keys
        finally:
            engine.dispose()

    @property
    def audit_vkey(self) -> str:
        """The verifier key of the gateway's audit log (what auditors and witnesses trust)."""
        return self.audit_key.with_suffix(".vkey").read_text(encoding="utf-8").strip()


def witness_key(key_dir: Path, connector: str) -> tuple[Path, str]:
    """Create (once) a connector's witness key in `key_dir`; returns its path and cosignature verifier key."""
    return ensure_witness_key(key_dir, f"xiezhi.dev/witness/{connector}")


def init_dev(
    root: Path,
    *,
    connectors: dict[str, str],
    database_url: str,
    policy_dir: Path | None = None,
    witnesses: dict[str, str] | None = None,
    audit: dict[str, object] | None = None,
    pki: DevPki | None = None,
    telemetry: dict[str, object] | None = None,
) -> DevEnvironment:
    """Create keys under `root/keys` (once) and write `root/gateway/gateway.yaml`.

    `telemetry` is the gateway's telemetry section (`xiezhi.telemetry.TelemetrySettings`).

    `witnesses` maps connector ids to the cosignature keys the gateway trusts them by;
    `audit` overrides other audit settings (checkpoint intervals, anomaly thresholds).
    With `pki` the gateway serves and calls over mutual TLS with its certificate; without,
    it runs on plain HTTP under the development flag `insecure_http`.
    """
    keys = root / "keys"
    idp_key, audit_key = keys / "idp.key", keys / "audit-log.key"
    if not idp_key.exists():
        generate_signing_key(idp_key)
    ensure_signer(audit_key, DEV_LOG_ORIGIN)
    keyring = keys / "keyring.json"
    if not keyring.exists():
        LocalKeyring.create(keyring, datetime.now(UTC))
    policies = (policy_dir or REPO_ROOT / "policies").resolve()
    config = settings_document(
        environment="development",
        database_url=database_url,
        issuer=DEV_ISSUER,
        audience=DEV_AUDIENCE,
        identity_keys={DEV_KID: public_path(idp_key)},
        keys=GatewayKeys(keys),
        connectors=connectors,
        policy_dir=policies,
        models_dir=policies / "models",
        clients=DEV_CLIENT_ROLES,
        tls=pki.gateway() if pki is not None else None,
        audit={
            "witnesses": witnesses or {},
            # Checkpoints are also written outside the database, for auditors to copy.
            "publish_dir": str((root / "gateway" / "published").resolve()),
            **(audit or {}),
        },
    )
    if telemetry is not None:
        config["telemetry"] = telemetry
    gateway_config = root / "gateway" / "gateway.yaml"
    write_settings(gateway_config, config)
    return DevEnvironment(root, idp_key, gateway_config, policies / "models", audit_key, pki)


def issue_token(
    key_path: Path,
    *,
    subject: str,
    roles: list[str],
    org: str | None = None,
    connector: str | None = None,
    clearance: int | None = None,
    issuer: str = DEV_ISSUER,
    audience: str = DEV_AUDIENCE,
    kid: str = DEV_KID,
    ttl_seconds: int = 3600,
    now: float | None = None,
) -> str:
    """Sign a caller JWT with the development identity provider's key."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "roles": roles,
        "iat": issued,
        "exp": issued + ttl_seconds,
        "jti": str(uuid.uuid4()),
    }
    if org is not None:
        claims["org"] = org
    if connector is not None:
        claims["connector"] = connector
    if clearance is not None:
        claims["clearance"] = clearance
    return jwt.encode(claims, load_private_key(key_path), algorithm="EdDSA", headers={"kid": kid})
