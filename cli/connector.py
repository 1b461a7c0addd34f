"""The connector operator's commands: `xiezhi connector init|serve|publish|rotate|retire-epoch`."""

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
    from connectors.service import ConnectorSettings
    from xiezhi.tls import TLSFiles

connector_app = typer.Typer(
    help="An agency's connector: build and publish indexes, serve evaluation.", no_args_is_help=True
)

KeyDir = Annotated[Path, typer.Option(help="Folder of this connector's epoch keys")]
ConfigFile = Annotated[Path, typer.Option(help="Connector config (YAML), e.g. deploy/connectors/court.yaml")]
ConnectorToken = Annotated[Path, typer.Option(help="File holding the connector's bearer token")]
DatabaseUrl = Annotated[str | None, typer.Option(help="Override the config's database URL")]
RayAddress = Annotated[
    str | None,
    typer.Option(
        envvar="XIEZHI_RAY_ADDRESS",
        help="Evaluate on this Ray cluster (`auto`, `ray://head:10001` or `head:6379`) instead of this machine's "
        "processes; needs the `ray` extra",
    ),
]
StateDir = Annotated[
    Path | None,
    typer.Option(
        help="Folder of the build's state (what was published, so the next build publishes deltas and a "
        "stopped build resumes); default: <key-dir>/build"
    ),
]


@connector_app.command("serve")
def connector_serve(
    config: Annotated[
        Path | None, typer.Option(help="This connector's settings file (`xiezhi connector init`) instead of the flags")
    ] = None,
    connector: Annotated[str | None, typer.Option(help="Connector id, e.g. court")] = None,
    key_dir: Annotated[Path | None, typer.Option(help="Folder of this connector's epoch keys")] = None,
    ticket_jwks: Annotated[
        Path | None, typer.Option(help="The gateway's ticket keys: a copy of its JWK Set (JSON file)")
    ] = None,
    ticket_jwks_url: Annotated[
        str | None,
        typer.Option(help="… or the gateway's https://…/.well-known/jwks.json, fetched over mutual TLS"),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1, or the file's)")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8100, or the file's)")] = None,
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
    witness the gateway's audit log. Takes its settings from --config, or from the flags;
    --host and --port override the file's."""
    import uvicorn

    from connectors.service import create_connector_app
    from xiezhi.tls import uvicorn_tls, warn_plain_http

    if config is not None:
        flags = (connector, key_dir, ticket_jwks, ticket_jwks_url, witness_key, log_key, tls_cert, tls_key, tls_ca)
        if any(flag is not None for flag in flags) or insecure_http:
            raise typer.BadParameter(
                "give --config or the connector's flags, not both (--host and --port may override)"
            )
        settings, file_host, file_port = _from_file(config, telemetry)
    else:
        settings = _from_flags(
            connector, key_dir, ticket_jwks, ticket_jwks_url, witness_key, log_key,
            tls_files(tls_cert, tls_key, tls_ca, insecure_http), insecure_http, telemetry,
        )  # fmt: skip
        file_host, file_port = "127.0.0.1", 8100
    setup_logging(log_file, f"xiezhi-connector-{settings.connector}")
    if settings.tls is None:
        warn_plain_http(f"connector {settings.connector}")
    options = uvicorn_tls(settings.tls) if settings.tls else {}
    application = create_connector_app(settings)
    application.state.telemetry.bridge_logging()  # its log records go out with its traces, redacted
    uvicorn.run(application, host=host or file_host, port=port or file_port, log_config=None, **options)


@connector_app.command("init")
def connector_init(
    connector: Annotated[str, typer.Option(help="Connector id, e.g. court")],
    config: Annotated[Path, typer.Option(help="The settings file to write (YAML); never overwritten")],
    key_dir: Annotated[Path, typer.Option(help="Folder for its OPRF keys and its witness key")],
    ticket_jwks_url: Annotated[str, typer.Option(help="The gateway's https://…/.well-known/jwks.json")],
    log_key: Annotated[str, typer.Option(help="The gateway audit log's verifier key, or its file (audit-log.vkey)")],
    tls_cert: Annotated[Path, typer.Option(help="This connector's certificate (PEM)")],
    tls_key: Annotated[Path, typer.Option(help="Its private key (PEM)")],
    tls_ca: Annotated[Path, typer.Option(help="The CA that issued the gateway's certificate (PEM)")],
    host: Annotated[str, typer.Option(help="Address it will listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port it will listen on")] = 8100,
    domain: Annotated[str, typer.Option(help="Trust domain (the parties' names end in it)")] = "xiezhi.internal",
) -> None:
    """Create a connector's OPRF key (epoch 1), its witness key and its settings file; prints
    the witness's verifier key for `xiezhi gateway add-witness`. Refuses to overwrite any file."""
    from connectors.setup import init_connector, witness_name
    from xiezhi.tls import TLSFiles

    try:
        vkey = init_connector(
            config,
            connector=connector,
            key_dir=key_dir,
            ticket_jwks_url=ticket_jwks_url,
            log_key=log_key,
            tls=TLSFiles(cert=tls_cert, key=tls_key, ca=tls_ca),
            host=host,
            port=port,
            domain=domain,
        )
    except XiezhiError as exc:
        raise fail(exc) from None
    typer.echo(f"settings        {config}")
    typer.echo(f"OPRF key        {key_dir / 'epoch-0001.key'} (epoch 1)")
    typer.echo(f"witness key     {key_dir / 'witness.key'} ({witness_name(connector, domain)})")
    typer.echo(f"witness verifier key (for `xiezhi gateway add-witness --connector {connector} --vkey …`):")
    typer.echo(vkey)


def _from_file(config: Path, telemetry: str) -> tuple[ConnectorSettings, str, int]:
    from dataclasses import replace

    from connectors.setup import ConnectorFile

    try:
        loaded = ConnectorFile.load(config)
    except XiezhiError as exc:
        raise fail(exc) from None
    settings = loaded.settings()
    if telemetry != "none":
        settings = replace(settings, telemetry=telemetry_settings(telemetry))
    return settings, loaded.host, loaded.port


def _from_flags(
    connector: str | None,
    key_dir: Path | None,
    ticket_jwks: Path | None,
    ticket_jwks_url: str | None,
    witness_key: Path | None,
    log_key: str | None,
    tls: TLSFiles | None,
    insecure_http: bool,
    telemetry: str,
) -> ConnectorSettings:
    from connectors.service import ConnectorSettings
    from xiezhi.tls import ServerTLS

    if connector is None or key_dir is None:
        raise typer.BadParameter("give --config, or --connector and --key-dir")
    if (witness_key is None) != (log_key is None):
        raise typer.BadParameter("--witness-key and --log-key go together")
    if (ticket_jwks is None) == (ticket_jwks_url is None):
        raise typer.BadParameter("give one of --ticket-jwks and --ticket-jwks-url (the gateway's ticket keys)")
    return ConnectorSettings(
        connector=connector,
        key_dir=key_dir,
        ticket_jwks=ticket_jwks,
        ticket_jwks_url=ticket_jwks_url,
        witness_key=witness_key,
        log_key=log_key,
        tls=ServerTLS.serving(tls) if tls else None,
        insecure_http=insecure_http,
        telemetry=telemetry_settings(telemetry),
    )


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
    state_dir: StateDir = None,
    ray_address: RayAddress = None,
) -> None:
    """Build every capability index from the agency database and bring the gateway's up to
    date (mutual TLS with this connector's certificate): the whole sets the first time in an
    epoch, then deltas of what changed. A build that stopped (killed, the gateway away) is
    resumed by running the same command again. With --ray-address (or XIEZHI_RAY_ADDRESS) the
    evaluation runs as tasks on the agency's Ray cluster."""
    tls = tls_files(tls_cert, tls_key, tls_ca, insecure_http)
    report = _build_and_publish(
        config, key_dir, gateway, token_file, database_url, rotate, tls, insecure_http, state_dir, ray_address
    )
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
    ray_address: RayAddress = None,
) -> None:
    """Start a new OPRF key epoch: new key, every index rebuilt under it, published beside the
    old epoch's and activated. Requests already running finish on the old epoch; retire its
    key later with `connector retire-epoch`."""
    from connectors.keys import KeyStore

    before = KeyStore(key_dir).epochs()
    tls = tls_files(tls_cert, tls_key, tls_ca, insecure_http)
    report = _build_and_publish(
        config, key_dir, gateway, token_file, database_url, True, tls, insecure_http, None, ray_address
    )
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
    # The epoch's build state is keyed from the key just deleted: of no use any more.
    for state in (key_dir / "build").glob(f"*-epoch-{epoch:04d}.sqlite*"):
        state.unlink()
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
    state_dir: Path | None,
    ray_address: str | None,
) -> PublishReport:
    from connectors.engines import RayEngine
    from connectors.runner import build_and_publish

    try:
        engine = RayEngine(ray_address) if ray_address else None
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
                state_dir=state_dir,
                engine=engine,
            )
        finally:
            if engine is not None:
                engine.close()
    except XiezhiError as exc:
        raise fail(exc) from None
