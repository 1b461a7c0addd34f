"""How the gateway reaches each connector: one HTTP client per connector, over mutual TLS.

The gateway presents its own certificate and pins each connector's name: a call meant for
the court connector completes its handshake only with the court's certificate, so a
connector (or anyone) holding another certificate from the same CA cannot stand in for it.
With the development flag `insecure_http` the links are plain HTTP, and say so at start.
"""

from __future__ import annotations

from typing import Any

import httpx

from xiezhi.tls import ServerTLS, check_scheme, connector_identity, pinned, verification


class ConnectorLinks:
    def __init__(
        self,
        urls: dict[str, str],
        tls: ServerTLS | None,
        *,
        timeout_seconds: float,
        insecure_http: bool = False,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        for name, url in urls.items():
            check_scheme(url, insecure_http, f"connector {name}")
        self._urls = {name: url.rstrip("/") for name, url in urls.items()}
        verify = verification(tls)
        self._pins = {name: pinned(connector_identity(name, tls.domain)) if tls else {} for name in urls}
        self._clients = {
            name: httpx.Client(timeout=timeout_seconds, verify=verify, transport=transport) for name in urls
        }

    def known(self, connector: str) -> bool:
        return connector in self._urls

    def url(self, connector: str) -> str:
        return self._urls[connector]

    def client(self, connector: str) -> httpx.Client:
        return self._clients[connector]

    def extensions(self, connector: str) -> dict[str, Any]:
        """Per-request extensions: the connector's pinned name as the TLS server name."""
        return self._pins[connector]

    def alive(self, connector: str, timeout_seconds: float) -> bool:
        """Whether the connector answers its /healthz over the pinned link within the timeout."""
        try:
            answer = self._clients[connector].get(
                f"{self._urls[connector]}/healthz", extensions=self._pins[connector], timeout=timeout_seconds
            )
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
