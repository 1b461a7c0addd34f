"""Setting a gateway up: its settings file and the keys it needs (`xiezhi gateway init`), and a
connector's witness key added to the settings (`xiezhi gateway add-witness`).

`init_gateway` writes, and never overwrites (any file already there is refused before one
byte is written):

    <keys>/keyring.json                 the local keyring, one key-encryption key (0600)
    <keys>/audit-log.key, .vkey         the audit log's note key (0600) and its verifier key
    <keys>/idp.key, idp.pub             development only, when no identity-provider key is given
    <config>                            the settings (YAML), every path in it absolute

The relay-ticket signing keys are not files: the gateway makes the first one in its database
at its first start (`gateway.ticket_keys`).

The settings written load with `GatewaySettings.from_file`; `settings_document` is the one
place their shape is built (the development environment builds its settings with it too).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import yaml

from audit_log.note import COSIGNATURE_V1, NoteError, ensure_signer, read_verifier
from gateway.keyring import LocalKeyring
from gateway.settings import GatewaySettings
from xiezhi.crypto import generate_signing_key, public_path
from xiezhi.errors import Conflict, InvalidInput, NotFound
from xiezhi.tls import TRUST_DOMAIN, TLSFiles

Environment = Literal["production", "development"]
DEV_IDENTITY_KID = "dev-idp-1"


@dataclass(frozen=True)
class GatewayKeys:
    """Where a gateway's key files are, under one folder."""

    folder: Path

    @property
    def keyring(self) -> Path:
        return self.folder / "keyring.json"

    @property
    def audit_key(self) -> Path:
        return self.folder / "audit-log.key"

    @property
    def audit_vkey(self) -> Path:
        return self.audit_key.with_suffix(".vkey")

    @property
    def idp_key(self) -> Path:
        return self.folder / "idp.key"


@dataclass(frozen=True)
class GatewaySetup:
    """What `xiezhi gateway init` was told (flags or prompts)."""

    config: Path
    keys: GatewayKeys
    database_url: str
    connectors: Mapping[str, str]
    tls: TLSFiles
    issuer: str
    audience: str
    policy_dir: Path
    models_dir: Path
    clients: Mapping[str, tuple[str, ...]]
    identity_keys: Mapping[str, Path] = field(default_factory=dict)
    environment: Environment = "production"
    log_name: str = f"{TRUST_DOMAIN}/audit"
    publish_dir: Path | None = None  # where checkpoints are also written (audit.publish_dir)


def settings_document(
    *,
    environment: Environment,
    database_url: str,
    issuer: str,
    audience: str,
    identity_keys: Mapping[str, Path],
    keys: GatewayKeys,
    connectors: Mapping[str, str],
    policy_dir: Path,
    models_dir: Path,
    clients: Mapping[str, tuple[str, ...]],
    tls: TLSFiles | None,
    audit: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """The gateway settings as a YAML-ready mapping, every path absolute. Without `tls` the
    gateway runs on plain HTTP under the development flag `insecure_http`."""
    document: dict[str, object] = {
        "environment": environment,
        "database_url": database_url,
        "issuer": issuer,
        "audience": audience,
        "identity_keys": {kid: str(path.resolve()) for kid, path in identity_keys.items()},
        "connectors": dict(connectors),
        "policy_dir": str(policy_dir.resolve()),
        "models_dir": str(models_dir.resolve()),
        "audit": {"signing_key": str(keys.audit_key.resolve()), "witnesses": {}, **(audit or {})},
        "keys": {"provider": "local", "keyring": str(keys.keyring.resolve())},
        "clients": {name: list(roles) for name, roles in clients.items()},
    }
    if tls is not None:
        document["tls"] = {name: str(getattr(tls, name).resolve()) for name in ("cert", "key", "ca")}
    else:
        document["insecure_http"] = True
    return document


def write_settings(path: Path, document: Mapping[str, object]) -> None:
    """Write `document` as YAML to `path`, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(dict(document), allow_unicode=True, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)


def init_gateway(setup: GatewaySetup, now: datetime) -> GatewaySettings:
    """Create the keys and write the settings file; returns the settings as they load.

    Raises Conflict naming the first file that already exists (nothing is written then),
    InvalidInput for settings that would not load (the file is then removed again).
    """
    keys = setup.keys
    identity_keys = dict(setup.identity_keys)
    make_idp = not identity_keys
    if make_idp and setup.environment == "production":
        raise InvalidInput("production needs the identity provider's public key(s): kid=PEM", code="no_identity_key")
    targets = [setup.config, keys.keyring, keys.audit_key, keys.audit_vkey]
    if make_idp:
        targets += [keys.idp_key, public_path(keys.idp_key)]
    _refuse_existing(targets)
    _check_inputs(setup, identity_keys)
    keys.folder.mkdir(parents=True, exist_ok=True)
    LocalKeyring.create(keys.keyring, now)
    ensure_signer(keys.audit_key, setup.log_name)
    if make_idp:
        generate_signing_key(keys.idp_key)
        identity_keys = {DEV_IDENTITY_KID: public_path(keys.idp_key)}
    document = settings_document(
        environment=setup.environment,
        database_url=setup.database_url,
        issuer=setup.issuer,
        audience=setup.audience,
        identity_keys=identity_keys,
        keys=keys,
        connectors=setup.connectors,
        policy_dir=setup.policy_dir,
        models_dir=setup.models_dir,
        clients=setup.clients,
        tls=setup.tls,
        audit={"publish_dir": str(setup.publish_dir.resolve())} if setup.publish_dir else None,
    )
    write_settings(setup.config, document)
    return _loaded(setup.config)


def add_witness(config: Path, connector: str, vkey: str) -> GatewaySettings:
    """Trust `connector`'s witness by its cosignature/v1 verifier key `vkey` (inline or a file)
    in the settings at `config`, rewritten in place. Raises NotFound for a connector the
    settings do not name, InvalidInput for a key that is not a cosignature/v1 key."""
    raw = _raw(config)
    connectors = raw.get("connectors")
    if not isinstance(connectors, dict) or connector not in connectors:
        raise NotFound(f"{config}: no connector {connector!r} in connectors", code="unknown_connector")
    try:
        verifier = read_verifier(vkey)
    except NoteError as exc:
        raise InvalidInput(f"--vkey: {exc}", code="bad_witness_key") from None
    if verifier.kind != COSIGNATURE_V1:
        raise InvalidInput("--vkey is not a cosignature/v1 (type 4) verifier key", code="bad_witness_key")
    audit = raw.get("audit")
    if not isinstance(audit, dict):
        raise InvalidInput(f"{config}: no audit section", code="bad_settings")
    audit["witnesses"] = {**(audit.get("witnesses") or {}), connector: str(verifier)}
    # Checked on a copy beside the file first: the file is replaced only by settings that load.
    candidate = config.with_name(config.name + ".new")
    write_settings(candidate, raw)
    settings = _loaded(candidate)
    os.replace(candidate, config)
    return settings


def _refuse_existing(paths: list[Path]) -> None:
    for path in paths:
        if path.exists():
            raise Conflict(f"{path} exists; set-up never overwrites a file (remove it to start again)", code="exists")


def _check_inputs(setup: GatewaySetup, identity_keys: Mapping[str, Path]) -> None:
    for kid, path in identity_keys.items():
        if not path.is_file():
            raise InvalidInput(f"identity key {kid}: no file at {path}", code="missing_file")
    missing = setup.tls.missing()
    if missing:
        raise InvalidInput(f"no file for --tls-{', --tls-'.join(missing)}", code="missing_file")
    if not setup.policy_dir.is_dir():
        raise InvalidInput(f"policy dir {setup.policy_dir} is not a folder", code="missing_file")


def _raw(config: Path) -> dict[str, object]:
    try:
        raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    except OSError as exc:
        raise NotFound(f"cannot read {config}: {exc.strerror}", code="no_settings") from None
    if not isinstance(raw, dict):
        raise InvalidInput(f"{config}: settings file must hold a mapping", code="bad_settings")
    return raw


def _loaded(path: Path) -> GatewaySettings:
    from pydantic import ValidationError

    try:
        return GatewaySettings.from_file(path)
    except ValidationError as exc:
        path.unlink(missing_ok=True)
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"the settings would not load: {problems}", code="bad_settings") from None
