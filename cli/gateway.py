"""The gateway operator's commands: `xiezhi gateway serve`, and the key files on the gateway's
host (`xiezhi keys init`, `xiezhi keys rotate-tickets`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import GatewayUrl, TokenFile, calling, fail, setup_logging
from xiezhi.errors import XiezhiError

gateway_app = typer.Typer(help="The gateway service.", no_args_is_help=True)

SettingsFile = Annotated[Path, typer.Option(help="Gateway settings (YAML)")]


@gateway_app.command("serve")
def gateway_serve(
    config: SettingsFile,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_file: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Run the gateway: HTTPS with the settings' `tls`, or plain HTTP under `insecure_http`."""
    import uvicorn

    from gateway.app import create_app
    from gateway.settings import GatewaySettings
    from xiezhi.tls import uvicorn_tls, warn_plain_http

    setup_logging(log_file)
    settings = GatewaySettings.from_file(config)
    if settings.tls is None:
        warn_plain_http("the gateway")
    options = uvicorn_tls(settings.tls) if settings.tls else {}
    application = create_app(settings)
    application.state.telemetry.bridge_logging()  # its log records go out with its traces, redacted
    uvicorn.run(application, host=host, port=port, log_config=None, **options)


def keys_init(
    keyring: Annotated[Path, typer.Option(help="Where to write the local keyring file (0600); never overwritten")],
) -> None:
    """Create a local keyring with one key-encryption key (development and CI; production uses a KMS)."""
    from datetime import UTC, datetime

    from gateway.keyring import LocalKeyring

    try:
        created = LocalKeyring.create(keyring, datetime.now(UTC))
    except XiezhiError as exc:
        raise fail(exc) from None
    typer.echo(f"keyring {keyring} created; key-encryption key {created.current_kek_id()}")


def keys_rotate_tickets(config: SettingsFile) -> None:
    """Make a new relay-ticket signing key current (a running gateway signs with it within a
    second), keep the previous ones published, and prune keys superseded more than twice the
    ticket lifetime ago. Prints the new key's id (its public RFC 7638 thumbprint)."""
    from datetime import UTC, datetime, timedelta

    from gateway.settings import GatewaySettings
    from xiezhi.jwks import TicketKeys

    try:
        settings = GatewaySettings.from_file(config)
        keys = TicketKeys(settings.ticket_keys)
        now = datetime.now(UTC)
        previous = keys.kids()[:1]
        kid = keys.rotate(now)
        pruned = keys.prune(now - timedelta(seconds=2 * settings.limits.ticket_ttl_seconds))
    except XiezhiError as exc:
        raise fail(exc) from None
    typer.echo(f"ticket key {kid} is current (was {previous[0] if previous else 'none'})")
    for old in pruned:
        typer.echo(f"pruned ticket key {old}")


@gateway_app.command("alarms")
def gateway_alarms(
    gateway: GatewayUrl,
    all_alarms: Annotated[bool, typer.Option("--all", help="Also the resolved ones")] = False,
    token_file: TokenFile = None,
) -> None:
    """List the open alarms (a witness refusing the audit log's checkpoint). While one is open,
    /readyz answers 503. Exit status 1 if any is open."""
    with calling(gateway, token_file) as client:
        alarms = client.alarms(include_resolved=all_alarms)
    for alarm in alarms:
        state = f"resolved by {alarm.resolved_by}: {alarm.resolution}" if alarm.resolved_at else "OPEN"
        typer.echo(
            f"{alarm.id}  {alarm.kind} from {alarm.source} [{alarm.reason}] raised {alarm.raised_at:%Y-%m-%d %H:%M:%S}Z"
            f" ×{alarm.repeats}  {state}\n    {alarm.message}"
        )
    if not alarms:
        typer.echo("no open alarms" if not all_alarms else "no alarms")
    raise typer.Exit(1 if any(a.resolved_at is None for a in alarms) else 0)


@gateway_app.command("resolve-alarm")
def gateway_resolve_alarm(
    alarm_id: Annotated[str, typer.Argument(help="The alarm's id (from `xiezhi gateway alarms`)")],
    gateway: GatewayUrl,
    reason: Annotated[str, typer.Option(help="What you did about it (kept in the audit log)")],
    token_file: TokenFile = None,
) -> None:
    """Resolve an alarm once you have acted on it: the readiness check turns healthy again
    when no alarm is open."""
    with calling(gateway, token_file) as client:
        alarm = client.resolve_alarm(alarm_id, reason)
    typer.echo(f"{alarm.id}: resolved by {alarm.resolved_by}")


@gateway_app.command("migrate")
def gateway_migrate(
    config: SettingsFile,
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="XIEZHI_MIGRATION_DATABASE_URL",
            help="The migration role's connection (owner of the tables); default: the settings' "
            "`migration_database_url`, else `database_url`",
        ),
    ] = None,
) -> None:
    """Upgrade the gateway's database to this release's schema (Alembic, gateway/migrations).

    Two roles, two URLs. The migration runs as the owner of the tables: `--database-url` (or
    XIEZHI_MIGRATION_DATABASE_URL), else the settings' `migration_database_url`, else their
    `database_url`. The gateway itself connects with the settings' `database_url`; on
    PostgreSQL, when that is another role, the migration grants it rows only: SELECT, INSERT,
    UPDATE, DELETE on ordinary tables, SELECT and INSERT on the audit log's tables, UPDATE on
    its tail, sequence usage; it owns nothing, so it cannot alter or drop a table or trigger.
    A gateway refuses to start on a database behind this release (production never migrates
    at start). A database of the release before migrations is adopted, its data kept. Safe to
    run again."""
    from gateway import schema
    from gateway.settings import GatewaySettings

    try:
        settings = GatewaySettings.from_file(config)
        url = database_url or settings.migration_database_url or settings.database_url
        done = schema.migrate(url, settings.database_url)
    except XiezhiError as exc:
        raise fail(exc) from None
    granted = f"; role {done.granted} granted rows only" if done.granted else ""
    typer.echo(f"gateway database at revision {done.after} (was {done.before or 'unversioned'}){granted}")
