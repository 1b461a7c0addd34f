"""A whole Xiezhi deployment on loopback for tests: real uvicorn servers, real HTTPS, real SQLite.

The gateway and the roster's connectors (deploy/connectors/) run as uvicorn servers on pre-bound loopback sockets
in background threads, over mutual TLS with certificates from one development PKI per test
process (`session_pki`); nothing is mocked between them. Tests talk to them with httpx
(`HTTP`, holding the requester system's certificate) exactly as the requester client, a
connector or an attacker would. The PKI's requester certificate is also put in
$XIEZHI_TLS_CERT/KEY/CA, where the client library and the CLI look for it.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import uvicorn
from fastapi import FastAPI

from connectors.runner import PublishReport, build_and_publish
from connectors.service import ConnectorSettings, create_connector_app
from devkit.environment import (
    REPO_ROOT,
    DevEnvironment,
    dev_client_for,
    ensure_pki,
    init_dev,
    issue_token,
    load_roster,
    witness_key,
)
from devkit.pki import DevPki, add_party
from gateway.app import create_app
from gateway.settings import GatewaySettings
from requester.gateway_client import GatewayClient
from tests.polling import WAIT_SECONDS
from xiezhi.crypto import SigningKey
from xiezhi.telemetry import TelemetrySettings
from xiezhi.tls import ServerTLS, TLSFiles, client_context, uvicorn_tls

ROSTER = load_roster()
CONNECTORS = tuple(ROSTER.names())
ORG = "330803"  # 衢州市衢江区人民检察院
PURPOSE = "（2025）浙0803执监15号"
LEGAL_BASIS = "《人民检察院民事诉讼监督规则》第一百零四条"


class Clock:
    """A clock tests set and move; the gateway and connectors read it for every decision."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@functools.cache
def session_pki() -> DevPki:
    """This test process's development PKI (made once, in a temporary folder)."""
    pki = ensure_pki(Path(tempfile.mkdtemp(prefix="xiezhi-test-pki-")), list(CONNECTORS))
    requester = pki.client("requester")
    os.environ.update(
        XIEZHI_TLS_CERT=str(requester.cert), XIEZHI_TLS_KEY=str(requester.key), XIEZHI_TLS_CA=str(requester.ca)
    )
    return pki


def run_cli(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`xiezhi <args>` in a child process from the repository root; `env` None inherits ours
    (with the session's XIEZHI_TLS_* client certificate once `session_pki()` has run)."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        env=env,
        check=False,
    )


class _Https:
    """httpx's module-level calls over TLS, presenting the certificate of the system that holds
    the token: a connector's token goes out with that connector's certificate (as its system
    would send it), a user's with the certificate of the development client system that
    carries its roles (`devkit.environment.DEV_CLIENT_ROLES`: an auditor's over the auditor
    system's), any other (no token, roles no one system carries) with the requester system's."""

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return channel(self._files(kwargs.get("headers") or {})).request(method, url, **kwargs)

    @staticmethod
    def _files(headers: dict[str, str]) -> TLSFiles:
        token = headers.get("authorization", "").removeprefix("Bearer ")
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            claims = {}
        connector, roles = claims.get("connector"), claims.get("roles")
        pki = session_pki()
        if not isinstance(connector, str):
            return pki.client(client_for(roles if isinstance(roles, list) else []))
        if not pki.connector(connector).cert.exists():  # a connector a test made up
            add_party(pki, "connector", connector, datetime.now(UTC))
        return pki.connector(connector)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)


HTTP = _Https()


def client_for(roles: list[str]) -> str:
    """The development client system a user with `roles` calls from (the requester system when
    no one system carries them all: the gateway then refuses the token)."""
    return dev_client_for(roles) or "requester"


def client_env(name: str) -> dict[str, str]:
    """This process's environment with $XIEZHI_TLS_* set to client system `name`'s certificate,
    for a CLI command run as a user of that system (run_cli's `env`)."""
    files = session_pki().client(name)
    return {**os.environ, "XIEZHI_TLS_CERT": str(files.cert), "XIEZHI_TLS_KEY": str(files.key)}


_CHANNELS: dict[TLSFiles, httpx.Client] = {}


def channel(files: TLSFiles) -> httpx.Client:
    """An HTTPS client presenting `files`' certificate (e.g. the gateway's, to call a connector)."""
    if files not in _CHANNELS:
        _CHANNELS[files] = httpx.Client(verify=client_context(files.ca, files), timeout=60.0)
    return _CHANNELS[files]


def close_channels() -> None:
    """Close the clients' kept-alive connections (a server stops at once only without them)."""
    while _CHANNELS:
        _CHANNELS.popitem()[1].close()


def loopback_socket(port: int = 0) -> socket.socket:
    """A socket bound to a loopback port (default: a free one), so a server's URL is known
    before it starts; a given `port` rebinds one a stopped server used."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, setting `settled` once start-up has finished or failed."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.settled = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.settled.set()


class LoopbackServer:
    """One ASGI app served by uvicorn on 127.0.0.1 in a thread, over TLS when `tls` is given."""

    def __init__(self, app: FastAPI, tls: ServerTLS | None = None, sock: socket.socket | None = None) -> None:
        self.app = app  # its state holds the services the lifespan built
        self._socket = sock or loopback_socket()
        self.port = int(self._socket.getsockname()[1])
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        options = uvicorn_tls(tls) if tls else {}
        config = uvicorn.Config(app, log_config=None, lifespan="on", timeout_graceful_shutdown=5, **options)
        self._server = _Server(config)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._server.settled.set()  # also when the thread fails before start-up

    def start(self) -> LoopbackServer:
        self._thread.start()
        # An event, not polling; the bound only ends a start-up that hangs.
        if not self._server.settled.wait(WAIT_SECONDS) or not self._server.started:
            raise RuntimeError("server did not start")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=WAIT_SECONDS)
        self._socket.close()


@dataclass
class Stack:
    root: Path
    dev: DevEnvironment
    gateway_url: str
    connector_urls: dict[str, str]
    servers: list[LoopbackServer] = field(default_factory=list)
    connector_apps: dict[str, Callable[[], FastAPI]] = field(default_factory=dict)  # a fresh app, as started
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def start_gateway(self) -> LoopbackServer:
        """One more gateway instance on the same settings and database (another port), as a
        second replica behind a load balancer would be; `stop()` stops it with the rest."""
        settings = GatewaySettings.from_file(self.dev.gateway_config)
        server = LoopbackServer(create_app(settings, self.clock), settings.tls).start()
        self.servers.append(server)
        return server

    def stop_server(self, server: LoopbackServer) -> None:
        """Stop one server, as if its process died."""
        server.stop()
        self.servers.remove(server)

    def stop_connector(self, name: str) -> None:
        """Stop connector `name`'s server, as if its process died: its port refuses connections."""
        server = next(s for s in self.servers if s.url == self.connector_urls[name])
        server.stop()
        self.servers.remove(server)

    def start_connector(self, name: str) -> None:
        """Start connector `name` again, a fresh process on the port it had (same keys, same settings)."""
        port = int(self.connector_urls[name].rsplit(":", 1)[1])
        app = self.connector_apps[name]()
        tls = ServerTLS.serving(session_pki().connector(name))
        self.servers.insert(0, LoopbackServer(app, tls, loopback_socket(port)).start())

    def gateway_ticket_key(self) -> tuple[str, SigningKey]:
        """The kid and private key the gateway signs relay tickets with now (read from its database)."""
        with self.dev.ticket_keys() as keys:
            return keys.current()

    def key_dir(self, connector: str) -> Path:
        return self.root / "connectors" / connector / "keys"

    def oprf_keys(self, epoch: int = 1) -> dict[str, bytes]:
        """Every connector's OPRF secret key of `epoch`, read from its key folder (never the gateway's)."""
        return {c: (self.key_dir(c) / f"epoch-{epoch:04d}.key").read_bytes() for c in self.connector_urls}

    def connector_token(self, connector: str) -> str:
        return issue_token(self.dev.idp_key, subject=f"connector:{connector}", roles=["connector"], connector=connector)

    def user_token(
        self,
        roles: list[str],
        subject: str = "prosecutor-330803-01",
        org: str = ORG,
        clearance: int | None = 3,
        **kwargs: object,
    ) -> str:
        options: dict[str, object] = {"subject": subject, "roles": roles, "org": org, "clearance": clearance}
        return issue_token(self.dev.idp_key, **options, **kwargs)  # type: ignore[arg-type]

    def client(self, roles: list[str], **kwargs: object) -> GatewayClient:
        """The gateway's client library for a user with `roles`, over the certificate of the
        client system that carries them."""
        token = self.user_token(roles, **kwargs)  # type: ignore[arg-type]
        return GatewayClient(self.gateway_url, token, tls=session_pki().client(client_for(roles)))

    def approver(self, org: str = ORG, subject: str | None = None) -> Callable[[str], None]:
        """A department head of `org` who approves every waiting request handed to them."""
        token = self.user_token(["dept_head"], subject=subject or f"dept-head-{org}-01", org=org)

        def approve(request_id: str) -> None:
            response = HTTP.post(
                f"{self.gateway_url}/v1/approvals/{request_id}/approve",
                headers={"authorization": f"Bearer {token}"},
                json={"reason": "同意核查"},
            )
            assert response.status_code == 200, response.text

        return approve

    def publish(
        self, data_dir: Path, connectors: tuple[str, ...] = CONNECTORS, *, rotate: bool = False
    ) -> list[PublishReport]:
        """Build and publish each connector's indexes (with `rotate`, under a new key epoch)."""
        return [
            build_and_publish(
                ROSTER.path(c),
                self.key_dir(c),
                self.gateway_url,
                self.connector_token(c),
                database_url=f"sqlite:///{data_dir / 'agencies' / f'{c}.sqlite'}",
                rotate=rotate,
                workers=1,
                tls=session_pki().connector(c),
            )
            for c in connectors
        ]

    def stop(self) -> None:
        close_channels()
        for server in reversed(self.servers):
            server.stop()


def telemetry_file(folder: Path | None, service: str) -> TelemetrySettings:
    """`service`'s telemetry to `<folder>/<service>.jsonl` (and its metrics at /metrics), or
    none without a folder."""
    if folder is None:
        return TelemetrySettings()
    return TelemetrySettings(exporter="file", path=folder / f"{service}.jsonl", prometheus=True)


def start_stack(
    root: Path,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    audit: dict[str, object] | None = None,
    prepare_connector: Callable[[str, FastAPI], None] | None = None,
    telemetry: Path | None = None,
    database_url: str | None = None,
) -> Stack:
    """Start the roster's connectors and a gateway under `root`; the caller must call `stop()`.

    Every connector witnesses the gateway's audit log. `audit` overrides audit settings;
    `prepare_connector(name, app)` may add middleware to a connector's app before it starts.
    With `telemetry`, each service writes its telemetry to `<telemetry>/<service>.jsonl`.
    With `database_url` (a PostgreSQL database its migration already made, as the
    application's role), the gateway keeps its state there instead of `gateway/gateway.sqlite`.
    """
    connectors: dict[str, LoopbackServer] = {}
    apps: dict[str, Callable[[], FastAPI]] = {}
    database_url = database_url or f"sqlite:///{root / 'gateway' / 'gateway.sqlite'}"
    pki = session_pki()
    # Keys first: the connectors need the gateway's log key to start, and its URL, where
    # they fetch its ticket keys (/.well-known/jwks.json) when the first ticket arrives.
    dev = init_dev(root, connectors={}, database_url=database_url, pki=pki)
    gateway_socket = loopback_socket()
    jwks_url = f"https://127.0.0.1:{gateway_socket.getsockname()[1]}/.well-known/jwks.json"
    witnesses = {}
    for name in CONNECTORS:
        key_dir = root / "connectors" / name / "keys"
        witness_path, witnesses[name] = witness_key(key_dir, name)
        settings = ConnectorSettings(
            connector=name,
            key_dir=key_dir,
            ticket_jwks_url=jwks_url,
            witness_key=witness_path,
            log_key=dev.audit_vkey,
            tls=ServerTLS.serving(pki.connector(name)),
            telemetry=telemetry_file(telemetry, name),
        )
        apps[name] = functools.partial(_connector_app, name, settings, clock, prepare_connector)
        connectors[name] = LoopbackServer(apps[name](), settings.tls).start()
    urls = {name: server.url for name, server in connectors.items()}
    dev = init_dev(
        root,
        connectors=urls,
        database_url=database_url,
        witnesses=witnesses,
        audit=audit,
        pki=pki,
        telemetry=telemetry_file(telemetry, "gateway").model_dump(mode="json", exclude_none=True),
    )
    gateway_settings = GatewaySettings.from_file(dev.gateway_config)
    gateway = LoopbackServer(create_app(gateway_settings, clock), gateway_settings.tls, gateway_socket).start()
    return Stack(root, dev, gateway.url, urls, [*connectors.values(), gateway], apps, clock)


def _connector_app(
    name: str,
    settings: ConnectorSettings,
    clock: Callable[[], datetime],
    prepare: Callable[[str, FastAPI], None] | None,
) -> FastAPI:
    app = create_connector_app(settings, clock)
    if prepare is not None:
        prepare(name, app)
    return app
