"""The connector operator's commands: `xiezhi connector serve|publish|rotate|retire-epoch`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import (
    GatewayUrl,
    InsecureHttp,
    TelemetryOption,
    TlsCa,
    TlsCert,
    TlsKey,
    fail,
    setup_logging,
    telemetry_settings,
    tls_files,
)
from xiezhi.errors import XiezhiError

if TYPE_CHECKING:
    from connectors.runner import PublishReport
    from xiezhi.tls import TLSFiles

connector_app = typer.Typer(
    help="An agency's connector: build and publish indexes, serve evaluation.", no_args_is_help=True
)

KeyDir = Annotated[Path, typer.Option(help="Folder of this connector's epoch keys")]
ConfigFile = Annotated[Path, typer.Option(help="Connector config (YAML), e.g. deploy/connectors/court.yaml")]
ConnectorToken = Annotated[Path, typer.Option(help="File holding the connector's bearer token")]
DatabaseUrl = Annotated[str | None, typer.Option(help="Override the config's database URL")]


@connector_app.command("serve")
def connector_serve(
    connector: Annotated[str, typer.Option(help="Connector id, e.g. court")],
    key_dir: KeyDir,
    ticket_jwks: Annotated[
        Path | None, typer.Option(help="The gateway's ticket keys: a copy of its JWK Set (JSON file)")
    ] = None,
    ticket_jwks_url: Annotated[
        str | None,
        typer.Option(help="… or the gateway's https://…/.well-known/jwks.json, fetched over mutual TLS"),
    ] = None,
    host: str = "127.0.0.1",
    port: int = 8100,
    log_file: Annotated[Path | None, typer.Option()] = None,
    witness_key: Annotated[
        Path | None, typer.Option(help="This connector's witness key, to cosign the gateway's audit checkpoints")
    ] = None,
    log_key: Annotated[
        str | None, typer.Option(help="The gateway audit log's verifier key (or a file holding it)")
    ] = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_ca: TlsCa = None,
    insecure_http: InsecureHttp = False,
    telemetry: TelemetryOption = "none",
) -> None:
    """Serve OPRF evaluation for ticketed batches (to the gateway only, over mutual TLS), and
    witness the gateway's audit log."""
    import uvicorn

    from connectors.service import ConnectorSettings, create_connector_app
    from xiezhi.tls import ServerTLS, uvicorn_tls, warn_plain_http

    setup_logging(log_file, f"xiezhi-connector-{connector}")
    if (witness_key is None) != (log_key is None):
        raise typer.BadParameter("--witness-key and --log-key go together")
    if (ticket_jwks is None) == (ticket_jwks_url is None):
        raise typer.BadParameter("give one of --ticket-jwks and --ticket-jwks-url (the gateway's ticket keys)")
    tls = tls_files(tls_cert, tls_key, tls_ca, insecure_http)
    server = ServerTLS.serving(tls) if tls else None
    settings = ConnectorSettings(
        connector=connector,
        key_dir=key_dir,
        ticket_jwks=ticket_jwks,
        ticket_jwks_url=ticket_jwks_url,
        witness_key=witness_key,
        log_key=log_key,
        tls=server,
        insecure_http=insecure_http,
        telemetry=telemetry_settings(telemetry),
    )
    if server is None:
        warn_plain_http(f"connector {connector}")
    options = uvicorn_tls(server) if server else {}
    application = create_connector_app(settings)
    application.state.telemetry.bridge_logging()  # its log records go out with its traces, redacted
    uvicorn.run(application, host=host, port=port, log_config=None, **options)


@connector_app.command("publish")
def connector_publish(
    config: ConfigFile,
    key_dir: KeyDir,
    gateway: GatewayUrl,
    token_file: ConnectorToken,
    database_url: DatabaseUrl = None,
    rotate: Annotated[bool, typer.Option(help="Start a new key epoch first")] = False,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_ca: TlsCa = None,
    insecure_http: InsecureHttp = False,
) -> None:
    """Build every capability index from the agency database and publish it (mutual TLS with
    this connector's certificate)."""
    tls = tls_files(tls_cert, tls_key, tls_ca, insecure_http)
    report = _build_and_publish(config, key_dir, gateway, token_file, database_url, rotate, tls, insecure_http)
    for line in report.lines():
        typer.echo(line)


@connector_app.command("rotate")
def connector_rotate(
    config: ConfigFile,
    key_dir: KeyDir,
    gateway: GatewayUrl,
    token_file: ConnectorToken,
    database_url: DatabaseUrl = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_ca: TlsCa = None,
    insecure_http: InsecureHttp = False,
) -> None:
    """Start a new OPRF key epoch: new key, every index rebuilt under it, published beside the
    old epoch's and activated. Requests already running finish on the old epoch; retire its
    key later with `connector retire-epoch`."""
    from connectors.keys import KeyStore

    before = KeyStore(key_dir).epochs()
    tls = tls_files(tls_cert, tls_key, tls_ca, insecure_http)
    report = _build_and_publish(config, key_dir, gateway, token_file, database_url, True, tls, insecure_http)
    old = str(before[-1]) if before else "none"
    typer.echo(f"{report.built.connector}: epoch {old} → {report.built.epoch} (published and active)")
    for line in report.lines():
        typer.echo(line)


@connector_app.command("retire-epoch")
def connector_retire_epoch(
    key_dir: KeyDir,
    epoch: Annotated[int, typer.Option(min=1, help="The old epoch whose key to delete")],
) -> None:
    """Delete an old epoch's OPRF key for good; the connector then refuses tickets for it.

    Retire an epoch only once the gateway holds no running request pinned to it (the
    gateway drops an epoch's indexes when no such request is left). The newest epoch is refused.
    """
    from connectors.keys import KeyStore

    try:
        KeyStore(key_dir).retire(epoch)
    except XiezhiError as exc:
        raise fail(exc) from None
    typer.echo(f"epoch {epoch} retired: its key is deleted and its tickets are refused")


def _build_and_publish(
    config: Path,
    key_dir: Path,
    gateway: str,
    token_file: Path,
    database_url: str | None,
    rotate: bool,
    tls: TLSFiles | None,
    insecure_http: bool,
) -> PublishReport:
    from connectors.runner import build_and_publish

    try:
        return build_and_publish(
            config,
            key_dir,
            gateway,
            token_file.read_text().strip(),
            database_url=database_url,
            rotate=rotate,
            show_progress=True,
            tls=tls,
            insecure_http=insecure_http,
        )
    except XiezhiError as exc:
        raise fail(exc) from None
