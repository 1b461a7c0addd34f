"""Gateway settings: one frozen object, read once from a YAML file, passed to create_app."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from xiezhi.errors import InvalidInput


class Limits(BaseModel):
    """Safety bounds; requests beyond them are refused, not truncated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_subjects_per_request: Annotated[int, Field(ge=1)] = 200_000
    max_batch: Annotated[int, Field(ge=1)] = 5_000
    max_publication_chunk_tokens: Annotated[int, Field(ge=1)] = 100_000
    connector_timeout_seconds: Annotated[float, Field(gt=0)] = 120.0
    max_connector_response_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    ticket_ttl_seconds: Annotated[int, Field(ge=1, le=600)] = 60


class GatewaySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    environment: Literal["development", "production"] = "development"
    database_url: str
    issuer: str = Field(description="iss expected in caller JWTs")
    audience: str = Field(description="aud expected in caller JWTs")
    identity_keys: dict[str, Path] = Field(description="kid → PEM public key of the identity provider")
    ticket_issuer: str = "xiezhi-gateway"
    ticket_key: Path = Field(description="Ed25519 private key that signs relay tickets")
    connectors: dict[str, HttpUrl] = Field(description="connector id → base URL")
    policy_dir: Path = Field(description="Casbin model, seed rules and organisations, limits, special actions, tests")
    policy_reload_seconds: Annotated[float, Field(ge=0)] = Field(
        default=5.0, description="how often an instance checks the database for a policy another instance changed"
    )
    models_dir: Path
    limits: Limits = Limits()

    @classmethod
    def from_file(cls, path: Path) -> GatewaySettings:
        """Load settings; relative paths are taken relative to the file's folder."""
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise InvalidInput(f"{path}: settings file must hold a mapping")
        base = path.parent
        for field in ("ticket_key", "policy_dir", "models_dir"):
            if field in raw:
                raw[field] = str(base / raw[field])
        if isinstance(raw.get("identity_keys"), dict):
            raw["identity_keys"] = {kid: str(base / p) for kid, p in raw["identity_keys"].items()}
        if isinstance(raw.get("database_url"), str):
            raw["database_url"] = raw["database_url"].replace("{here}", str(base.resolve()))
        return cls.model_validate(raw)
