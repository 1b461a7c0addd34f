"""TLS for every link, mutual between the gateway and the connectors, with pinned identities.

Each party is named by one DNS name in its certificate (`devkit.pki` issues them for
development; production configures its own): the gateway `gateway.<domain>`, a connector
`<id>.connector.<domain>`, a requester system `<name>.client.<domain>`.

- A caller pins the party it calls: it sends that party's name as the TLS server name
  (`pinned(...)`, httpx's `sni_hostname`), so the handshake fails, before one byte of the
  request is sent, unless the certificate names exactly that party. The gateway calling the
  court connector accepts only the court's certificate, not the tax connector's.
- A server that requires client certificates refuses a caller without one at the handshake;
  the application then sees the verified certificate's names (`peer_names(scope)`) and
  checks that the caller is who it claims to be: the connectors accept only the gateway, the
  gateway's connector endpoints only the connector the token names.

uvicorn does not pass the peer certificate to the application, so `TLSH11Protocol` adds the
ASGI TLS extension (asgi.readthedocs.io/en/latest/specs/tls.html) to each request's scope,
with the verified certificate's DNS names under `client_cert_dns_names` as well.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from uvicorn.protocols.http.h11_impl import H11Protocol

from xiezhi.errors import InvalidInput

TRUST_DOMAIN = "xiezhi.internal"
ClientCertificates = Literal["required", "optional"]

log = logging.getLogger(__name__)


def gateway_identity(domain: str = TRUST_DOMAIN) -> str:
    return f"gateway.{domain}"


def connector_identity(connector: str, domain: str = TRUST_DOMAIN) -> str:
    # DNS names allow no underscore: housing_fund is housing-fund.connector.<domain>.
    return f"{connector.replace('_', '-')}.connector.{domain}"


def client_identity(name: str, domain: str = TRUST_DOMAIN) -> str:
    return f"{name.replace('_', '-')}.client.{domain}"


class TLSFiles(BaseModel):
    """A party's certificate and key, and the CA bundle it trusts for the other side."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cert: Path
    key: Path
    ca: Path

    def missing(self) -> list[str]:
        """Which of cert, key and ca name no file (settings refuse to start with any)."""
        return [name for name in ("cert", "key", "ca") if not getattr(self, name).is_file()]


class ServerTLS(TLSFiles):
    """A service's TLS settings: its files, whether callers must present certificates, and the
    trust domain the parties' names end in."""

    client_certificates: ClientCertificates = "required"
    domain: str = TRUST_DOMAIN

    @classmethod
    def serving(cls, files: TLSFiles) -> ServerTLS:
        """`files` served with the defaults: client certificates required, the default domain."""
        return cls(cert=files.cert, key=files.key, ca=files.ca)


def check_scheme(url: str, insecure_http: bool, what: str) -> None:
    """Refuse an http:// URL unless the development flag allows it (then warn, loudly)."""
    if url.startswith("https://"):
        return
    if not url.startswith("http://"):
        raise InvalidInput(f"{what} URL must start with https://", code="plain_http_refused")
    if not insecure_http:
        raise InvalidInput(
            f"{what} URL is plain HTTP; use https:// (or the development flag insecure_http)", code="plain_http_refused"
        )
    warn_plain_http(what)


def client_tls_from_env(environ: Mapping[str, str] | None = None) -> TLSFiles | None:
    """A command-line caller's certificate, key and CA from $XIEZHI_TLS_CERT, $XIEZHI_TLS_KEY
    and $XIEZHI_TLS_CA (all three, or none)."""
    env = os.environ if environ is None else environ
    given = {name: env.get(f"XIEZHI_TLS_{name.upper()}") for name in ("cert", "key", "ca")}
    if not any(given.values()):
        return None
    missing = [f"XIEZHI_TLS_{name.upper()}" for name, value in given.items() if not value]
    if missing:
        raise InvalidInput(f"set {', '.join(missing)} as well (client TLS needs a certificate, its key and a CA)")
    files = TLSFiles(cert=Path(given["cert"] or ""), key=Path(given["key"] or ""), ca=Path(given["ca"] or ""))
    if files.missing():
        raise InvalidInput(f"no file at {', '.join(f'XIEZHI_TLS_{name.upper()}' for name in files.missing())}")
    return files


def insecure_http_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """The development flag for command-line callers: XIEZHI_INSECURE_HTTP=1."""
    env = os.environ if environ is None else environ
    return env.get("XIEZHI_INSECURE_HTTP", "") in ("1", "true", "yes")


def server_context(tls: ServerTLS) -> ssl.SSLContext:
    """TLS 1.2+ server context presenting `tls.cert`, verifying clients against `tls.ca`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert, tls.key)
    context.load_verify_locations(cafile=tls.ca)
    context.verify_mode = ssl.CERT_REQUIRED if tls.client_certificates == "required" else ssl.CERT_OPTIONAL
    return context


def client_context(ca: Path | None, files: TLSFiles | None = None) -> ssl.SSLContext:
    """TLS 1.2+ client context trusting `ca` (the system's CAs if None), presenting
    `files.cert` when given (mutual TLS)."""
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if files is not None:
        context.load_cert_chain(files.cert, files.key)
    return context


def verification(files: TLSFiles | None) -> ssl.SSLContext | bool:
    """httpx's `verify` for a caller: mutual TLS with `files`, or the system's CAs without them."""
    return client_context(files.ca, files) if files is not None else True


def pinned(identity: str) -> dict[str, Any]:
    """httpx request extensions that make the handshake accept only `identity`'s certificate."""
    return {"sni_hostname": identity}


def peer_names(scope: Mapping[str, Any]) -> list[str]:
    """The DNS names of the client certificate verified on this request's connection; [] if none."""
    tls = scope.get("extensions", {}).get("tls")
    if not isinstance(tls, dict):
        return []
    return list(tls.get("client_cert_dns_names", []))


class TLSH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, adding the ASGI TLS extension to every request's scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        tls = _tls_extension(transport.get_extra_info("ssl_object"))
        if tls is None:
            return
        app = self.app

        async def with_tls(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})["tls"] = tls
            await app(scope, receive, send)

        self.app = with_tls


def _tls_extension(ssl_object: ssl.SSLObject | None) -> dict[str, Any] | None:
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    verified = ssl_object.getpeercert() if der else None
    alt_names: tuple[tuple[str, str], ...] = verified.get("subjectAltName", ()) if verified else ()  # type: ignore[assignment]
    names = [value for kind, value in alt_names if kind == "DNS"]
    cipher = ssl_object.cipher()
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": ssl_object.version(),
        "cipher_suite": cipher[0] if cipher else None,
        "client_cert_dns_names": names,
    }


def uvicorn_tls(tls: ServerTLS) -> dict[str, Any]:
    """uvicorn.Config keyword arguments serving HTTPS with `tls` and the TLS extension."""
    context = server_context(tls)
    return {"ssl_context_factory": lambda _config, _default: context, "http": TLSH11Protocol}


def warn_plain_http(service: str) -> None:
    """Say loudly, on every start, that a service runs without TLS."""
    message = (
        f"INSECURE: {service} serves plain HTTP (development flag insecure_http). Subject lists, tokens and "
        "results cross the network unencrypted and unauthenticated. Never use this outside a test machine."
    )
    log.warning(message)
    print(f"\n*** {message} ***\n", file=sys.stderr, flush=True)
