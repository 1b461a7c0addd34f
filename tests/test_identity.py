"""Identity bound end to end, over real mutual TLS to the running gateway.

- A token's roles count only over the certificate of a system that carries them (the
  gateway's `clients` setting; a connector's certificate carries `connector` alone): a
  prosecutor's match over the auditor system's certificate, or an auditor's token over a
  connector's, is refused (401 certificate_role_mismatch), and the refusal is in the log
  under the token's own subject, with the certificate's names.
- A request belongs to a user of one organisation: the same user id in another organisation
  finds neither the request nor its result (404, as for a request that does not exist), and
  each attempt is a `not_owner` decision in the log.
- Every forged or malformed bearer token is a 401 with a reason code and an authentication
  refusal in the log (the reported case: an ES256 token under the identity provider's
  Ed25519 key id answered 500 and left no trace).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from devkit.environment import DEV_AUDIENCE, DEV_ISSUER, DEV_KID
from requester.job import match_file
from requester.protocol import MatchSpec
from tests.agreement import subjects_file
from tests.stack import HTTP, LEGAL_BASIS, PURPOSE, Stack, channel, session_pki
from xiezhi.crypto import public_path
from xiezhi.supervision import ModelCatalog
from xiezhi.tls import TLSFiles, client_identity, connector_identity, gateway_identity

pytestmark = pytest.mark.integration

UNKNOWN = "00000000-0000-4000-8000-000000000000"
BODY = {"model": "housing_fund", "subject_count": 2, "purpose": PURPOSE, "legal_basis": LEGAL_BASIS}


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _refusals(stack: Stack, **query: str) -> list[dict[str, Any]]:
    """Refused sign-ins in the audit log, newest first, read by an auditor over the auditor's system."""
    auditor = stack.user_token(["security_auditor"], subject="auditor-330000-01", org="330000")
    page = HTTP.get(
        f"{stack.gateway_url}/v1/audit/entries",
        params={"kind": "authentication", "decision": "deny", "limit": "1000", **query},
        headers=_bearer(auditor),
    )
    assert page.status_code == 200, page.text
    entries: list[dict[str, Any]] = page.json()["entries"]
    return entries


def _mismatch(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "certificate_role_mismatch"


# ---- roles held to the client certificate ------------------------------------------------


def test_a_prosecutors_token_counts_only_over_the_requester_systems_certificate(stack: Stack) -> None:
    pki = session_pki()
    subject = "prosecutor-330803-07"
    token = stack.user_token(["prosecutor"], subject=subject)
    elsewhere: dict[str, TLSFiles] = {
        client_identity("auditor"): pki.client("auditor"),
        client_identity("admin"): pki.client("admin"),
        connector_identity("court"): pki.connector("court"),
        gateway_identity(): pki.gateway(),
    }
    for files in elsewhere.values():
        _mismatch(channel(files).post(f"{stack.gateway_url}/v1/requests", json=BODY, headers=_bearer(token)))
        _mismatch(channel(files).get(f"{stack.gateway_url}/v1/models", headers=_bearer(token)))
    own = channel(pki.client("requester")).post(f"{stack.gateway_url}/v1/requests", json=BODY, headers=_bearer(token))
    assert own.status_code == 201, own.text
    refused = [e for e in _refusals(stack, user=subject) if e["detail"]["reason"] == "certificate_role_mismatch"]
    # Each refusal names who tried, with which roles, over which certificate.
    assert Counter(e["detail"]["certificate"].split(",")[0] for e in refused) == Counter(
        {name: 2 for name in elsewhere}
    )
    assert all(e["org"] == "330803" and e["detail"]["roles"] == "prosecutor" for e in refused)


def test_an_auditors_token_over_a_connectors_certificate_reads_nothing(stack: Stack) -> None:
    pki = session_pki()
    subject = "auditor-330000-07"
    token = stack.user_token(["security_auditor"], subject=subject, org="330000")
    url = f"{stack.gateway_url}/v1/audit/entries"
    for files in (pki.connector("court"), pki.connector("tax"), pki.client("requester"), pki.client("admin")):
        _mismatch(channel(files).get(url, headers=_bearer(token)))
        _mismatch(channel(files).get(f"{stack.gateway_url}/v1/audit/export/entries.jsonl", headers=_bearer(token)))
    assert channel(pki.client("auditor")).get(url, headers=_bearer(token)).status_code == 200
    refused = _refusals(stack, user=subject)
    assert len([e for e in refused if e["detail"]["reason"] == "certificate_role_mismatch"]) == 8


def test_a_connectors_certificate_carries_the_connector_role_alone(stack: Stack) -> None:
    """Connectors' tokens keep working over their own certificates; nothing else does there."""
    court = session_pki().connector("court")
    url = f"{stack.gateway_url}/v1/connectors/court/epochs/1/activate"
    assert channel(court).post(url, headers=_bearer(stack.connector_token("court"))).status_code != 401
    admin = stack.user_token(["system_admin"], subject="sysadmin-330000-07", org="330000")
    _mismatch(channel(court).get(f"{stack.gateway_url}/v1/system/status", headers=_bearer(admin)))


# ---- ownership: a user of one organisation -----------------------------------------------


def test_the_same_user_id_in_another_organisation_finds_nothing(stack: Stack, generated: Path, tmp_path: Path) -> None:
    subject = "prosecutor-shared-01"  # an id the identity provider could issue in two organisations
    owner = stack.user_token(["prosecutor"], subject=subject, org="330803")
    model = ModelCatalog.load(stack.dev.models_dir).get("housing_fund")
    summary = match_file(
        stack.gateway_url,
        owner,
        MatchSpec(model.id, PURPOSE, LEGAL_BASIS, batch_size=50),
        subjects_file(generated, model),
        tmp_path / "report.csv",
        show_progress=False,
        workers=1,
        on_pending=stack.approver(),
    )
    rid = str(summary.request_id)
    assert HTTP.get(f"{stack.gateway_url}/v1/requests/{rid}/result", headers=_bearer(owner)).status_code == 200
    missing = HTTP.get(f"{stack.gateway_url}/v1/requests/{UNKNOWN}/result", headers=_bearer(owner)).json()
    for org in ("330800", "330802"):  # the owner's city above it, a district beside it
        intruder = _bearer(stack.user_token(["prosecutor"], subject=subject, org=org))
        answers = [
            HTTP.get(f"{stack.gateway_url}/v1/requests/{rid}", headers=intruder),
            HTTP.get(f"{stack.gateway_url}/v1/requests/{rid}/result", headers=intruder),
            HTTP.post(
                f"{stack.gateway_url}/v1/requests/{rid}/lookups",
                json={"first_row": 0, "tokens": {"housing_fund.balance_positive": ["A" * 22 + "=="]}},
                headers=intruder,
            ),
        ]
        for answer in answers:
            assert answer.status_code == 404, answer.text
            assert {k: answer.json()[k] for k in ("code", "detail")} == {k: missing[k] for k in ("code", "detail")}
    auditor = stack.user_token(["security_auditor"], subject="auditor-330000-01", org="330000")
    denied = HTTP.get(
        f"{stack.gateway_url}/v1/audit/entries",
        params={"request_id": rid, "kind": "decision", "decision": "deny"},
        headers=_bearer(auditor),
    ).json()["entries"]
    not_owner = [e for e in denied if e["detail"].get("reason") == "not_owner"]
    assert Counter(e["org"] for e in not_owner) == {"330800": 3, "330802": 3}
    assert {e["actor"] for e in not_owner} == {subject}


# ---- every bad token: 401, and a refusal in the log --------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims() -> dict[str, object]:
    now = int(time.time())
    return {"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": "mallory-330803-01", "org": "330803",
            "roles": ["prosecutor"], "clearance": 3, "iat": now, "exp": now + 600}  # fmt: skip


def _unsigned(header: dict[str, object], key: bytes | None = None) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims()).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing_input}.{_b64(signature)}"


def test_every_forged_or_malformed_token_is_401_and_recorded(stack: Stack) -> None:
    idp_public = public_path(stack.dev.idp_key).read_bytes()
    forged = {
        # The reported 500: ES256 by another key, under the identity provider's Ed25519 key id.
        "es256_under_eddsa_kid": (
            jwt.encode(_claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": DEV_KID}),
            "token_invalid",
        ),
        "alg_none": (_unsigned({"alg": "none", "kid": DEV_KID}), "token_invalid"),
        "hs256_public_key_as_secret": (_unsigned({"alg": "HS256", "kid": DEV_KID}, idp_public), "token_invalid"),
        "kid_not_a_string": (_unsigned({"alg": "EdDSA", "kid": 1}), "token_malformed"),
        "kid_unknown": (_unsigned({"alg": "EdDSA", "kid": "someone-else"}), "token_unknown_key"),
        "not_a_jwt": ("x.y", "token_malformed"),
        "huge": ("e" * 12_000, "token_malformed"),
    }
    before = Counter(e["detail"]["reason"] for e in _refusals(stack, user="anonymous"))
    for name, (token, code) in forged.items():
        response = HTTP.post(f"{stack.gateway_url}/v1/requests", json=BODY, headers=_bearer(token))
        assert response.status_code == 401, (name, response.text)
        assert response.json()["code"] == code and response.headers["www-authenticate"] == "Bearer", name
    basic = HTTP.get(f"{stack.gateway_url}/v1/models", headers={"authorization": "Basic bWFsbG9yeTpwdw=="})
    assert basic.status_code == 401 and basic.json()["code"] == "token_malformed"
    after = Counter(e["detail"]["reason"] for e in _refusals(stack, user="anonymous"))
    expected = Counter(code for _, code in forged.values()) + Counter({"token_malformed": 1})
    assert after - before == expected  # one refusal entry per refused token, with its reason


def test_a_header_past_the_servers_limit_is_refused_before_the_gateway(stack: Stack) -> None:
    """uvicorn refuses a request whose headers pass its limit before any route runs: a client
    error, never a 5xx (the gateway sees nothing to record)."""
    token = "e" * 200_000
    try:
        response = HTTP.get(f"{stack.gateway_url}/v1/models", headers=_bearer(token))
    except httpx.RemoteProtocolError:  # the server closed the connection on the oversized head
        return
    assert 400 <= response.status_code < 500
