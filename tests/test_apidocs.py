"""The API docs pages work on a closed network: `/docs` (Swagger UI) and `/redoc` (ReDoc) load
their scripts from the installation (xiezhi.apidocs: the pinned swagger-ui-bundle and
fastapi-offline packages), never from a CDN — on the gateway and on a connector."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from connectors.service import ConnectorSettings, create_connector_app
from devkit.environment import init_dev
from gateway.app import create_app
from gateway.settings import GatewaySettings
from xiezhi import apidocs
from xiezhi.jwks import TicketKeys


@pytest.fixture(scope="module")
def gateway_app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    root = tmp_path_factory.mktemp("apidocs")
    dev = init_dev(root, connectors={}, database_url=f"sqlite:///{root / 'gateway.sqlite'}")
    return create_app(GatewaySettings.from_file(dev.gateway_config))


def _referenced(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"""url:\s*["']([^"']+)["']""", html)


def _check(client: TestClient) -> None:
    urls: list[str] = []
    for path in ("/docs", "/redoc"):
        page = client.get(path)
        assert page.status_code == 200
        found = _referenced(page.text)
        assert found, page.text
        for url in found:
            assert url.startswith("/"), f"{path} references {url}, not a local asset"
            assert not url.startswith("//"), url
            assert client.get(url).status_code == 200, url
        assert "cdn" not in page.text.lower() and "fonts.googleapis" not in page.text
        urls += found
    assert set(apidocs.asset_urls()) <= set(urls)
    assert client.get(f"{apidocs.ASSETS}/../settings.yaml").status_code == 404
    assert client.get(f"{apidocs.ASSETS}/index.html").status_code == 404  # only the listed files


def test_gateway_docs_are_served_from_the_installation(gateway_app: FastAPI) -> None:
    # Without entering the lifespan: /docs and its assets need no database.
    client = TestClient(gateway_app)
    _check(client)
    js = client.get(f"{apidocs.ASSETS}/swagger-ui-bundle.js")
    assert js.headers["content-type"].startswith("text/javascript")
    assert len(js.content) > 100_000
    assert "/docs" not in gateway_app.openapi()["paths"]


def test_connector_docs_are_served_from_the_installation(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    tickets = TicketKeys(tmp_path / "ticket-keys")
    tickets.ensure(datetime.now(UTC))
    jwks.write_text(json.dumps(tickets.jwks()), encoding="utf-8")
    settings = ConnectorSettings(connector="court", key_dir=tmp_path / "keys", insecure_http=True, ticket_jwks=jwks)
    _check(TestClient(create_connector_app(settings)))
