"""Transport security: the development PKI, mutual TLS between gateway and connectors with
pinned identities, and plain HTTP refused unless the development flag says otherwise.

Every server here is a real uvicorn server on loopback speaking TLS with certificates from
`xiezhi pki init`; every refusal is the real handshake or the real application check.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from fastapi import FastAPI, Request
from pydantic import ValidationError

from devkit.pki import init_pki
from gateway.links import ConnectorLinks
from gateway.settings import GatewaySettings
from requester.gateway_client import GatewayClient
from tests.stack import HTTP, LoopbackServer, Stack, channel, run_cli, session_pki
from xiezhi.errors import InvalidInput
from xiezhi.tls import ServerTLS, client_context, connector_identity, gateway_identity, peer_names


@pytest.mark.integration
def test_pki_init_makes_a_ca_and_certificates_that_name_their_holders(tmp_path: Path) -> None:
    done = run_cli("pki", "init", "--out", str(tmp_path / "pki"), "--client", "qz-procuratorate", timeout=120)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "pki"
    ca = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    expected = {
        folder / "gateway.pem": (gateway_identity(), True),
        folder / "connectors" / "housing_fund.pem": ("housing-fund.connector.xiezhi.internal", True),
        folder / "clients" / "qz-procuratorate.pem": ("qz-procuratorate.client.xiezhi.internal", False),
    }
    for path, (identity, server) in expected.items():
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
        certificate.verify_directly_issued_by(ca)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert identity in names.get_values_for_type(x509.DNSName)
        usages = set(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        assert (ExtendedKeyUsageOID.SERVER_AUTH in usages) is server and ExtendedKeyUsageOID.CLIENT_AUTH in usages
        assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        key = path.with_suffix(".key")
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    again = run_cli("pki", "init", "--out", str(folder), timeout=120)
    assert again.returncode == 2 and "already there" in again.stderr  # never overwrites a CA


@pytest.mark.integration
def test_a_certificate_from_another_ca_is_not_trusted(tmp_path: Path) -> None:
    stranger = init_pki(tmp_path / "other", ["court"], [], datetime.now(UTC))
    app = FastAPI()
    server = LoopbackServer(app, ServerTLS.serving(stranger.connector("court"))).start()
    try:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            channel(session_pki().gateway()).get(server.url)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def impostor() -> Any:
    """A server presenting the tax connector's certificate, reporting its caller's names."""
    app = FastAPI()

    @app.get("/healthz")
    def who(request: Request) -> dict[str, list[str]]:
        return {"names": peer_names(request.scope)}

    server = LoopbackServer(app, ServerTLS.serving(session_pki().connector("tax"))).start()
    yield server
    server.stop()


@pytest.mark.integration
def test_the_gateway_pins_each_connector_to_its_own_certificate(impostor: LoopbackServer) -> None:
    gateway = session_pki().gateway()
    tls = ServerTLS.serving(gateway)
    # The tax connector's certificate at the address the gateway has for the court: refused.
    links = ConnectorLinks({"court": impostor.url, "tax": impostor.url}, tls, timeout_seconds=60)
    try:
        with pytest.raises(httpx.ConnectError, match=r"not valid for 'court\.connector\.xiezhi\.internal'"):
            links.client("court").get(f"{links.url('court')}/healthz", extensions=links.extensions("court"))
        answer = links.client("tax").get(f"{links.url('tax')}/healthz", extensions=links.extensions("tax"))
        assert answer.json() == {"names": [gateway_identity(), "localhost"]}  # and it saw the gateway's certificate
    finally:
        links.close()


def test_a_connector_token_counts_only_with_that_connectors_certificate(stack: Stack) -> None:
    pki = session_pki()
    token = stack.connector_token("court")
    url = f"{stack.gateway_url}/v1/connectors/court/publications"
    body = {"epoch": 1, "public_key": "AA==", "capability": {"id": "x", "title": "x", "tier": 1}}
    headers = {"authorization": f"Bearer {token}"}
    for files in (pki.connector("tax"), pki.client("requester"), pki.gateway()):
        refused = channel(files).post(url, json=body, headers=headers)
        assert refused.status_code == 401 and refused.json()["code"] == "certificate_mismatch", files.cert
    own = channel(pki.connector("court")).post(url, json=body, headers=headers)
    assert own.json().get("code") != "certificate_mismatch"  # past the channel check (the body is refused)
    refusals = HTTP.get(
        f"{stack.gateway_url}/v1/audit/entries",
        params={"kind": "authentication", "outcome": "certificate_mismatch"},
        headers={"authorization": f"Bearer {stack.user_token(['security_auditor'], org='330000')}"},
    )
    assert len(refusals.json()["entries"]) >= 3  # each refusal is in the audit log


def test_no_client_certificate_no_connection(stack: Stack) -> None:
    pki = session_pki()
    for url in (stack.gateway_url, stack.connector_urls["court"]):
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/healthz", verify=client_context(pki.ca))
    assert HTTP.get(f"{stack.gateway_url}/healthz").status_code == 200


def test_plain_http_is_refused_without_the_development_flag(tmp_path: Path, stack: Stack) -> None:
    settings = yaml.safe_load(stack.dev.gateway_config.read_text(encoding="utf-8"))
    plain = {key: value for key, value in settings.items() if key != "tls"}
    with pytest.raises(ValidationError, match="insecure_http"):
        GatewaySettings.model_validate(plain)
    with pytest.raises(ValidationError, match="plain-HTTP URLs"):
        GatewaySettings.model_validate({**settings, "connectors": {"court": "http://127.0.0.1:1"}})
    with pytest.raises(ValidationError, match="refused in production"):
        GatewaySettings.model_validate({**plain, "insecure_http": True, "environment": "production"})
    assert GatewaySettings.model_validate({**plain, "insecure_http": True}).tls is None
    with pytest.raises(InvalidInput, match="plain HTTP") as refused:
        GatewayClient("http://127.0.0.1:1", "token", insecure_http=False)
    assert refused.value.code == "plain_http_refused"

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    serve = ["connector", "serve", "--connector", "court", "--key-dir", str(tmp_path), "--ticket-jwks", "x.json"]
    done = run_cli(*serve, env=env, timeout=120)
    assert done.returncode == 2 and "--insecure-http" in done.stderr
    token = tmp_path / "token"
    token.write_text("t")
    matched = run_cli(
        "approvals", "list", "--gateway", "http://127.0.0.1:1", "--token-file", str(token), env=env, timeout=120
    )
    assert matched.returncode == 2 and "plain_http_refused" in matched.stderr
    loud = run_cli(
        "approvals", "list", "--gateway", "http://127.0.0.1:1", "--token-file", str(token),
        env={**env, "XIEZHI_INSECURE_HTTP": "1"}, timeout=120)  # fmt: skip
    assert "INSECURE" in loud.stderr and "gateway_unreachable" in loud.stderr  # warned, then tried


@pytest.mark.integration
def test_certificates_expire(tmp_path: Path) -> None:
    """A certificate past its validity is refused by the handshake (the PKI's dates are real)."""
    old = init_pki(tmp_path / "old", ["court"], [], datetime.now(UTC) - timedelta(days=400), days=30)
    app = FastAPI()
    server = LoopbackServer(app, ServerTLS.serving(old.connector("court"))).start()
    try:
        context = client_context(old.ca, old.gateway())
        with httpx.Client(verify=context) as client, pytest.raises(httpx.ConnectError, match="expired"):
            client.get(server.url, extensions={"sni_hostname": connector_identity("court")})
    finally:
        server.stop()


def test_client_tls_from_the_environment_is_all_or_nothing(tmp_path: Path) -> None:
    from xiezhi.tls import client_tls_from_env

    files = session_pki().client("requester")
    complete = {"XIEZHI_TLS_CERT": str(files.cert), "XIEZHI_TLS_KEY": str(files.key), "XIEZHI_TLS_CA": str(files.ca)}
    assert client_tls_from_env(complete) == files
    assert client_tls_from_env({}) is None
    with pytest.raises(InvalidInput, match="set XIEZHI_TLS_CA as well"):
        client_tls_from_env({k: v for k, v in complete.items() if k != "XIEZHI_TLS_CA"})
    with pytest.raises(InvalidInput, match="no file at XIEZHI_TLS_KEY"):
        client_tls_from_env({**complete, "XIEZHI_TLS_KEY": str(tmp_path / "absent.key")})
