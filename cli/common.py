"""What every role's commands share: option types, the bearer token, TLS files, errors, logging.

Nothing here imports a service: each command imports what it runs when it runs, so
`xiezhi --help` and a requester's `xiezhi match` load neither the gateway nor a connector.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from xiezhi.errors import XiezhiError

if TYPE_CHECKING:
    from requester.gateway_client import GatewayClient
    from xiezhi.telemetry import TelemetrySettings
    from xiezhi.tls import TLSFiles

TlsCert = Annotated[Path | None, typer.Option(help="This party's certificate (PEM)")]
TlsKey = Annotated[Path | None, typer.Option(help="Its private key (PEM)")]
TlsCa = Annotated[Path | None, typer.Option(help="The CA that issued the other parties' certificates (PEM)")]
InsecureHttp = Annotated[
    bool, typer.Option("--insecure-http", help="Development only: plain HTTP, no TLS (warned loudly)")
]
TokenFile = Annotated[Path | None, typer.Option(help="File holding the caller's bearer token (default: $XIEZHI_TOKEN)")]
GatewayUrl = Annotated[str, typer.Option(help="Gateway base URL")]
TelemetryOption = Annotated[
    str, typer.Option(help="Where traces, metrics and logs go: none, console, otlp[:URL] or file:PATH")
]


def fail(exc: XiezhiError) -> typer.Exit:
    """Print `exc`'s public message and return the exit (status 2) to raise."""
    # Plain text, unwrapped: messages are grepped from logs and may hold brackets.
    typer.echo(f"error ({exc.code}): {exc.public_message}", err=True)
    return typer.Exit(2)


def error(message: str) -> typer.Exit:
    """Print a usage or input error and return the exit (status 2) to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def telemetry_settings(spec: str) -> TelemetrySettings:
    """The --telemetry option parsed; a bad spec is a usage error."""
    from xiezhi.telemetry import TelemetrySettings

    try:
        return TelemetrySettings.parse(spec)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def bearer_token(token_file: Path | None) -> str:
    """The caller's token from `token_file`, else $XIEZHI_TOKEN; exits 2 when there is none."""
    token = token_file.read_text().strip() if token_file else os.environ.get("XIEZHI_TOKEN", "")
    if not token:
        typer.echo("error: no bearer token: pass --token-file or set XIEZHI_TOKEN", err=True)
        raise typer.Exit(2)
    return token


def gateway_client(gateway: str, token_file: Path | None) -> GatewayClient:
    """A client for `gateway` over TLS with $XIEZHI_TLS_* (plain HTTP only with $XIEZHI_INSECURE_HTTP)."""
    from requester.gateway_client import GatewayClient

    try:
        return GatewayClient(gateway, bearer_token(token_file))
    except XiezhiError as exc:
        raise fail(exc) from None


@contextmanager
def calling(gateway: str, token_file: Path | None) -> Iterator[GatewayClient]:
    """A gateway client for one command: its errors end the command (status 2), and it is closed."""
    client = gateway_client(gateway, token_file)
    try:
        yield client
    except XiezhiError as exc:
        raise fail(exc) from None
    finally:
        client.close()


def setup_logging(log_file: Path | None, service: str = "xiezhi") -> None:
    """A service's log to `log_file` (else stderr), every record passing the redaction filter;
    as text, or as JSON lines when $XIEZHI_LOG_FORMAT is `json` (for a log collector)."""
    from xiezhi.logs import formatter
    from xiezhi.redaction import RedactingFilter

    try:
        chosen = formatter(os.environ.get("XIEZHI_LOG_FORMAT", "text"), service)
    except ValueError as exc:
        raise error(f"XIEZHI_LOG_FORMAT: {exc}") from None
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())  # messages scrubbed, tracebacks reduced to the exception's type
    handler.setFormatter(chosen)
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def tls_files(cert: Path | None, key: Path | None, ca: Path | None, insecure_http: bool) -> TLSFiles | None:
    """The --tls-* options (all three, else $XIEZHI_TLS_*), or None under --insecure-http."""
    from xiezhi.tls import TLSFiles, client_tls_from_env

    given = [cert, key, ca]
    if any(given) and not all(given):
        raise typer.BadParameter("--tls-cert, --tls-key and --tls-ca go together")
    files = TLSFiles(cert=cert, key=key, ca=ca) if cert and key and ca else client_tls_from_env()
    if files is None and not insecure_http:
        raise typer.BadParameter("give --tls-cert, --tls-key and --tls-ca (or $XIEZHI_TLS_*), or --insecure-http")
    if files is not None and files.missing():
        raise typer.BadParameter(f"no file for --tls-{', --tls-'.join(files.missing())}")
    return files


def interactive() -> bool:
    """Whether a missing value may be asked for: stdin is a terminal."""
    return sys.stdin.isatty()


def required(value: str | None, flag: str, prompt: str) -> str:
    """`value`, else asked for on a terminal; without one, a usage error naming `flag`."""
    if value:
        return value
    if interactive():
        answer: str = typer.prompt(prompt)
        if answer.strip():
            return answer.strip()
    raise error(f"{flag} is required")


def pairs(values: list[str], flag: str) -> dict[str, str]:
    """`NAME=VALUE` options (repeated) as a mapping; a malformed or repeated name is a usage error."""
    result: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name.strip() or not rest.strip():
            raise error(f"{flag} takes NAME=VALUE")
        if name.strip() in result:
            raise error(f"{flag} names {name.strip()} twice")
        result[name.strip()] = rest.strip()
    return result
