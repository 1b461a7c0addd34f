"""A connector's readiness: its newest OPRF key loads and its witness state reads.

In process (FastAPI's TestClient, no socket), with the development flag for plain HTTP: the
caller checks over mutual TLS are the stack tests' subject, not this one's."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient

from audit_log.note import COSIGNATURE_V1, ensure_signer, generate_signer
from connectors.keys import KeyStore
from connectors.service import ConnectorSettings, create_connector_app
from xiezhi.jwks import TicketKeys


def _settings(tmp_path: Path, *, witness: bool) -> ConnectorSettings:
    jwks = tmp_path / "jwks.json"
    tickets = TicketKeys(tmp_path / "ticket-keys")
    tickets.ensure(datetime.now(UTC))
    jwks.write_text(json.dumps(tickets.jwks()), encoding="utf-8")
    extra: dict[str, object] = {}
    if witness:
        key = tmp_path / "keys" / "witness.key"
        key.parent.mkdir(parents=True, exist_ok=True)
        ensure_signer(key, "xiezhi.test/witness/court", COSIGNATURE_V1)
        extra = {"witness_key": key, "log_key": str(generate_signer("xiezhi.test/audit").verifier())}
    return ConnectorSettings(
        connector="court",
        key_dir=tmp_path / "keys",
        insecure_http=True,
        ticket_jwks=jwks,
        **extra,  # type: ignore[arg-type]
    )


def test_a_connector_without_a_key_is_not_ready_and_one_with_it_is(tmp_path: Path) -> None:
    settings = _settings(tmp_path, witness=False)
    client = TestClient(create_connector_app(settings))
    missing = client.get("/readyz")
    assert missing.status_code == 503 and missing.json()["code"] == "no_key"
    KeyStore(settings.key_dir).ensure()
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {
        "status": "ready",
        "connector": "court",
        "epoch": 1,
        "witnessed_size": None,
    }


def test_a_damaged_witness_state_is_not_ready(tmp_path: Path) -> None:
    settings = _settings(tmp_path, witness=True)
    KeyStore(settings.key_dir).ensure()
    client = TestClient(create_connector_app(settings))
    assert client.get("/readyz").json()["witnessed_size"] == 0  # nothing cosigned yet
    (settings.key_dir / "witness-state.json").write_text("{not json", encoding="utf-8")
    damaged = client.get("/readyz")
    assert damaged.status_code == 503 and damaged.json()["code"] == "witness_state_unreadable"
