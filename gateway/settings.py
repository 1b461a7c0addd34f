"""Gateway settings: one frozen object, read once from a YAML file, passed to create_app."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from audit_log.note import NoteError, parse_witnesses
from xiezhi.errors import InvalidInput
from xiezhi.placeholders import refuse_placeholders
from xiezhi.telemetry import TelemetrySettings
from xiezhi.tls import ServerTLS

# The roles a user's token carries; `connector` belongs to connector certificates alone.
UserRole = Literal["prosecutor", "assistant", "dept_head", "security_auditor", "security_admin", "system_admin"]
# What deploy/config/*.example.yaml put where an operator must fill in a value of their own.
ClientName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class Limits(BaseModel):
    """Safety bounds; requests beyond them are refused, not truncated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_subjects_per_request: Annotated[int, Field(ge=1)] = 200_000
    max_batch: Annotated[int, Field(ge=1)] = 5_000
    max_publication_chunk_tokens: Annotated[int, Field(ge=1)] = 100_000
    # One call to a connector (a batch of at most max_batch elements takes it about a second).
    connector_timeout_seconds: Annotated[float, Field(gt=0)] = 15.0
    max_connector_response_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    ticket_ttl_seconds: Annotated[int, Field(ge=1, le=600)] = 60
    # A relay that cannot connect or gets a 5xx is tried again, each time under a fresh ticket,
    # with exponential backoff: at most this many tries within this many seconds.
    connector_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    connector_retry_budget_seconds: Annotated[float, Field(ge=0)] = 10.0
    # How often one batch slot may be evaluated in all (the first time included): retries after
    # a lost answer, a proof that did not verify, a resumed run. Each attempt is audited.
    max_batch_attempts: Annotated[int, Field(ge=1, le=10)] = 3


class WorkingHours(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    start: Annotated[str, Field(pattern=r"^\d{2}:\d{2}$")] = "08:00"
    end: Annotated[str, Field(pattern=r"^\d{2}:\d{2}$")] = "20:00"
    weekdays_only: bool = True


class AnomalyThresholds(BaseModel):
    """When the auditor's console flags a pattern. Times are China Standard Time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    baseline_days: Annotated[int, Field(ge=1)] = 30  # how far back a user's own baseline reaches
    volume_factor: Annotated[float, Field(gt=1)] = 5.0  # a day above factor × the user's median day
    volume_min_subjects: Annotated[int, Field(ge=1)] = 1_000  # … and above this many subjects
    working_hours: WorkingHours = WorkingHours()
    denial_burst_count: Annotated[int, Field(ge=2)] = 5  # this many denials of one user …
    denial_burst_minutes: Annotated[float, Field(gt=0)] = 10.0  # … within this many minutes
    token_repeat_requests: Annotated[int, Field(ge=2)] = 3  # one pseudonymous token in this many requests …
    token_repeat_users: Annotated[int, Field(ge=2)] = 2  # … or looked up by this many users …
    token_repeat_days: Annotated[int, Field(ge=1)] = 30  # … within this many days
    fast_approval_seconds: Annotated[float, Field(ge=0)] = 60.0  # approvals granted faster than this
    flag_exports: bool = True  # every export of audit data is flagged for review


class AuditSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    signing_key: Path = Field(
        description="the log's Ed25519 note key (PRIVATE+KEY+name+id+key); its name is the origin"
    )
    checkpoint_every_entries: Annotated[int, Field(ge=1)] = 256
    checkpoint_every_seconds: Annotated[float, Field(gt=0)] = 10.0
    witnesses: dict[str, str] = Field(
        default_factory=dict, description="connector id → its cosignature/v1 verifier key; it cosigns checkpoints"
    )
    witness_quorum: Annotated[int | None, Field(ge=0)] = Field(
        default=None,
        description="how many witnesses must cosign a checkpoint for `xiezhi audit verify` (default: 1 with witnesses)",
    )
    publish_dir: Path | None = Field(
        default=None,
        description="a folder outside the database where every signed checkpoint is also written "
        "(`checkpoint`: the newest, `checkpoints.jsonl`: all, with cosignatures as they arrive), for auditors to copy",
    )
    max_batch: Annotated[int, Field(ge=1)] = 2_000
    anomalies: AnomalyThresholds = AnomalyThresholds()
    # An auditor's CSV export of more entries than this is refused (export_too_large), not cut short.
    export_max_rows: Annotated[int, Field(ge=1)] = 100_000


class KeySettings(BaseModel):
    """Where the key-encryption keys are: the provider behind `gateway.keyring.KeyProvider`.

    `local` is a keyring file (`xiezhi keys init`) for development and CI; a KMS or HSM
    adapter implements the same interface (see KeyProvider's contract)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: Literal["local"] = "local"
    keyring: Path = Field(description="the local keyring file (mode 0600)")
    rewrap_batch: Annotated[int, Field(ge=1)] = 100  # data keys rewrapped per step after a KEK rotation
    rewrap_every_seconds: Annotated[float, Field(gt=0)] = 60.0  # how often the background rewrap looks


class RetentionSettings(BaseModel):
    """How long sealed results are kept; then they are deleted and the deletion is audited."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    result_days: Annotated[float, Field(gt=0)] = 30.0  # after completion (or creation, if never completed)
    sweep_every_seconds: Annotated[float, Field(gt=0)] = 3600.0


class GatewaySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    environment: Literal["development", "production"] = "development"
    database_url: str = Field(
        description="the application's connection (SQLAlchemy URL); on PostgreSQL a role that owns nothing, "
        "granted rows only by `xiezhi gateway migrate`"
    )
    migration_database_url: str | None = Field(
        default=None,
        description="the migration role's connection (the owner of the tables), used only by "
        "`xiezhi gateway migrate`; none: `database_url`",
    )
    issuer: str = Field(description="iss expected in caller JWTs")
    audience: str = Field(description="aud expected in caller JWTs")
    identity_keys: dict[str, Path] = Field(description="kid → PEM public key of the identity provider")
    ticket_issuer: str = "xiezhi-gateway"
    ticket_keys: Path | None = Field(
        default=None,
        description="an earlier release's folder of relay-ticket keys, imported into the database at the first "
        "start whose database holds none, then no longer read; the keys live in the database (created at first "
        "start, rotated by `xiezhi keys rotate-tickets`), their public set served at /.well-known/jwks.json",
    )
    connectors: dict[str, HttpUrl] = Field(description="connector id → base URL")
    policy_dir: Path = Field(description="Casbin model, seed rules and organisations, limits, special actions, tests")
    policy_reload_seconds: Annotated[float, Field(ge=0)] = Field(
        default=5.0, description="how often an instance checks the database for a policy another instance changed"
    )
    models_dir: Path
    audit: AuditSettings
    keys: KeySettings = Field(description="the key provider that wraps the data keys sealing stored data")
    retention: RetentionSettings = RetentionSettings()
    limits: Limits = Limits()
    telemetry: TelemetrySettings = Field(
        default=TelemetrySettings(), description="where traces, metrics and logs go (none, console, otlp, file)"
    )
    tls: ServerTLS | None = Field(
        default=None, description="the gateway's certificate, key and CA; mutual TLS with the connectors"
    )
    insecure_http: bool = Field(
        default=False, description="development only: serve and call connectors over plain HTTP (warned at start)"
    )
    clients: dict[ClientName, frozenset[UserRole]] = Field(
        default_factory=dict,
        description="client system name → the roles a token may carry over its certificate "
        "(<name>.client.<tls domain>); a certificate not named here carries no role, and a connector's "
        "certificate only the connector role (gateway.auth.ClientChannels)",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_placeholders(cls, data: object) -> object:
        # An example file's `CHANGE-ME` or `<…>` left in place is refused, naming the field
        # (never the value: it may be a secret's place).
        return refuse_placeholders(data)

    @model_validator(mode="after")
    def _key_files_in_production(self) -> GatewaySettings:
        if self.environment != "production":
            return self
        files = {f"identity_keys.{kid}": path for kid, path in self.identity_keys.items()}
        files |= {"audit.signing_key": self.audit.signing_key, "keys.keyring": self.keys.keyring}
        missing = sorted(name for name, path in files.items() if not path.is_file())
        if missing:
            raise ValueError(f"no key file for {', '.join(missing)} (production starts only with its keys)")
        return self

    @model_validator(mode="after")
    def _tls_everywhere(self) -> GatewaySettings:
        if self.insecure_http and self.environment == "production":
            raise ValueError("insecure_http is refused in production")
        if self.tls is None and not self.insecure_http:
            raise ValueError("tls (cert, key, ca) is required; plain HTTP needs insecure_http: true (development)")
        if self.tls is not None and self.tls.missing():
            raise ValueError(f"tls: no file at {', '.join(str(getattr(self.tls, n)) for n in self.tls.missing())}")
        plain = sorted(name for name, url in self.connectors.items() if url.scheme != "https")
        if plain and not self.insecure_http:
            raise ValueError(f"connectors {', '.join(plain)} have plain-HTTP URLs; use https://")
        if self.tls is not None and not any(self.clients.values()):
            raise ValueError(
                "clients: map at least one client certificate to the roles it carries (else no user signs in)"
            )
        return self

    @model_validator(mode="after")
    def _witnesses_are_connectors(self) -> GatewaySettings:
        unknown = sorted(set(self.audit.witnesses) - set(self.connectors))
        if unknown:
            raise ValueError(f"audit.witnesses names {', '.join(unknown)}, not among the connectors")
        try:
            parse_witnesses(self.audit.witnesses)
        except NoteError as exc:
            raise ValueError(f"audit.witnesses: {exc}") from exc
        if (self.audit.witness_quorum or 0) > len(self.audit.witnesses):
            raise ValueError(f"audit.witness_quorum {self.audit.witness_quorum} exceeds the witnesses named")
        return self

    @classmethod
    def from_file(cls, path: Path) -> GatewaySettings:
        """Load settings; relative paths are taken relative to the file's folder."""
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise InvalidInput(f"{path}: settings file must hold a mapping")
        base = path.parent
        if "ticket_key" in raw:
            raise InvalidInput(f"{path}: ticket_key was replaced by ticket_keys, a folder of ticket signing keys")
        for field in ("ticket_keys", "policy_dir", "models_dir"):
            if field in raw:
                raw[field] = str(base / raw[field])
        if isinstance(raw.get("tls"), dict):
            raw["tls"] = {k: str(base / v) if k in ("cert", "key", "ca") else v for k, v in raw["tls"].items()}
        audit = raw.get("audit")
        if isinstance(audit, dict) and "signing_key" in audit:
            audit["signing_key"] = str(base / audit["signing_key"])
        keys = raw.get("keys")
        if isinstance(keys, dict) and "keyring" in keys:
            keys["keyring"] = str(base / keys["keyring"])
        telemetry = raw.get("telemetry")
        if isinstance(telemetry, dict) and isinstance(telemetry.get("path"), str):
            telemetry["path"] = str(base / telemetry["path"])
        if isinstance(raw.get("identity_keys"), dict):
            raw["identity_keys"] = {kid: str(base / p) for kid, p in raw["identity_keys"].items()}
        for url in ("database_url", "migration_database_url"):
            if isinstance(raw.get(url), str):
                raw[url] = raw[url].replace("{here}", str(base.resolve()))
        return cls.model_validate(raw)
