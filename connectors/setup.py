"""Setting a connector up (`xiezhi connector init`) and its settings file (`xiezhi connector
serve --config`).

`init_connector` creates, and never overwrites:

    <key_dir>/epoch-0001.key            the OPRF key of epoch 1 (`connectors.keys.KeyStore`, 0600)
    <key_dir>/witness.key, .vkey        its witness key (cosignature/v1) and verifier key, which
                                        the gateway's operator adds with `xiezhi gateway add-witness`
    <config>                            the settings file (YAML): what `connector serve` takes as flags

`ConnectorFile` is that file's shape; `ConnectorFile.load(path).settings()` is what the
service runs with. Relative paths in it are taken relative to the file's folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from audit_log.note import COSIGNATURE_V1, NoteError, ensure_signer, read_verifier
from connectors.keys import KeyStore
from connectors.service import ConnectorSettings
from xiezhi.errors import Conflict, InvalidInput
from xiezhi.placeholders import refuse_placeholders
from xiezhi.telemetry import TelemetrySettings
from xiezhi.tls import TRUST_DOMAIN, ServerTLS, TLSFiles


class ConnectorFile(BaseModel):
    """A connector's settings file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    connector: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    key_dir: Path = Field(description="this connector's epoch keys (and its witness key)")
    ticket_jwks: Path | None = Field(default=None, description="a copy of the gateway's ticket JWK Set …")
    ticket_jwks_url: str | None = Field(default=None, description="… or its https://…/.well-known/jwks.json")
    witness_key: Path | None = Field(default=None, description="this connector's cosignature key")
    log_key: str | None = Field(default=None, description="the gateway audit log's verifier key (inline)")
    tls: ServerTLS | None = None
    insecure_http: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8100
    telemetry: TelemetrySettings = TelemetrySettings()

    @model_validator(mode="before")
    @classmethod
    def _no_placeholders(cls, data: object) -> object:
        return refuse_placeholders(data)

    @model_validator(mode="after")
    def _complete(self) -> ConnectorFile:
        if (self.witness_key is None) != (self.log_key is None):
            raise ValueError("witness_key and log_key go together")
        if (self.ticket_jwks is None) == (self.ticket_jwks_url is None):
            raise ValueError("give one of ticket_jwks and ticket_jwks_url (the gateway's ticket keys)")
        if self.tls is None and not self.insecure_http:
            raise ValueError("tls (cert, key, ca) is required; plain HTTP needs insecure_http: true (development)")
        if self.tls is not None and self.tls.missing():
            raise ValueError(f"tls: no file for {', '.join(self.tls.missing())}")
        if self.witness_key is not None and not self.witness_key.is_file():
            raise ValueError("witness_key: no such file")
        return self

    @classmethod
    def load(cls, path: Path) -> ConnectorFile:
        """The file at `path`; raises InvalidInput naming the fields that are wrong."""
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror}", code="no_settings") from None
        if not isinstance(raw, dict):
            raise InvalidInput(f"{path}: a connector settings file holds a mapping", code="bad_settings")
        base = path.parent
        for name in ("key_dir", "ticket_jwks", "witness_key"):
            if isinstance(raw.get(name), str):
                raw[name] = str(base / raw[name])
        if isinstance(raw.get("tls"), dict):
            raw["tls"] = {k: str(base / v) if k in ("cert", "key", "ca") else v for k, v in raw["tls"].items()}
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
            raise InvalidInput(f"{path}: {problems}", code="bad_settings") from None

    def settings(self) -> ConnectorSettings:
        return ConnectorSettings(
            connector=self.connector,
            key_dir=self.key_dir,
            ticket_jwks=self.ticket_jwks,
            ticket_jwks_url=self.ticket_jwks_url,
            witness_key=self.witness_key,
            log_key=self.log_key,
            tls=self.tls,
            insecure_http=self.insecure_http,
            telemetry=self.telemetry,
        )


def witness_name(connector: str, domain: str = TRUST_DOMAIN) -> str:
    """The name a connector's witness key signs under: `<domain>/witness/<connector>`."""
    return f"{domain}/witness/{connector}"


def ensure_witness_key(key_dir: Path, name: str) -> tuple[Path, str]:
    """Create (once) a witness key `key_dir/witness.key` under `name`; returns its path and its
    cosignature/v1 verifier key (also written beside it as witness.vkey)."""
    path = key_dir / "witness.key"
    signer = ensure_signer(path, name, COSIGNATURE_V1)
    return path, str(signer.verifier(COSIGNATURE_V1))


def init_connector(
    config: Path,
    *,
    connector: str,
    key_dir: Path,
    ticket_jwks_url: str,
    log_key: str,
    tls: TLSFiles,
    host: str = "127.0.0.1",
    port: int = 8100,
    domain: str = TRUST_DOMAIN,
) -> str:
    """Create the connector's OPRF key (epoch 1) and witness key, and write its settings file.

    Returns the witness's verifier key (for `xiezhi gateway add-witness`). Raises Conflict
    naming a file that already exists (nothing is written then), InvalidInput for a log key
    that is not a verifier key or TLS files that do not exist.
    """
    witness = key_dir / "witness.key"
    for path in (config, key_dir / "epoch-0001.key", witness, witness.with_suffix(".vkey")):
        if path.exists():
            raise Conflict(f"{path} exists; set-up never overwrites a file (remove it to start again)", code="exists")
    if KeyStore(key_dir).epochs() or KeyStore(key_dir).retired():
        raise Conflict(f"{key_dir} already holds OPRF keys", code="exists")
    try:
        log_verifier = str(read_verifier(log_key))
    except NoteError as exc:
        raise InvalidInput(f"--log-key: {exc}", code="bad_log_key") from None
    if tls.missing():
        raise InvalidInput(f"no file for --tls-{', --tls-'.join(tls.missing())}", code="missing_file")
    KeyStore(key_dir).rotate()
    _, vkey = ensure_witness_key(key_dir, witness_name(connector, domain))
    document = {
        "connector": connector,
        "key_dir": str(key_dir.resolve()),
        "ticket_jwks_url": ticket_jwks_url,
        "witness_key": str(witness.resolve()),
        "log_key": log_verifier,
        "tls": {name: str(getattr(tls, name).resolve()) for name in ("cert", "key", "ca")} | {"domain": domain},
        "host": host,
        "port": port,
    }
    config.parent.mkdir(parents=True, exist_ok=True)
    tmp = config.with_name(config.name + ".tmp")
    tmp.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    os.replace(tmp, config)
    ConnectorFile.load(config)  # what was written loads
    return vkey
