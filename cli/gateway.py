"""The gateway operator's commands: `xiezhi gateway serve`, and the key files on the gateway's
host (`xiezhi keys init`, `xiezhi keys rotate-tickets`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli import common
from cli.common import GatewayUrl, TokenFile, calling, error, fail, pairs, required, setup_logging
from xiezhi.errors import XiezhiError

if TYPE_CHECKING:
    from gateway.setup import Environment

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

    setup_logging(log_file, "xiezhi-gateway")
    settings = GatewaySettings.from_file(config)
    if settings.tls is None:
        warn_plain_http("the gateway")
    options = uvicorn_tls(settings.tls) if settings.tls else {}
    application = create_app(settings)
    application.state.telemetry.bridge_logging()  # its log records go out with its traces, redacted
    uvicorn.run(application, host=host, port=port, log_config=None, **options)


# The development mapping of client certificates to roles (`--client` replaces it).
DEFAULT_CLIENTS = (
    "requester=prosecutor,assistant,dept_head",
    "auditor=security_auditor",
    "admin=security_admin,system_admin",
)


@gateway_app.command("init")
def gateway_init(
    config: Annotated[Path | None, typer.Option(help="The settings file to write (YAML); never overwritten")] = None,
    keys: Annotated[
        Path | None,
        typer.Option(help="Folder for the keyring and audit log key (files never overwritten)"),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="The gateway's database, e.g. postgresql+psycopg://… or sqlite:///…")
    ] = None,
    connector: Annotated[list[str] | None, typer.Option(help="NAME=https://… of a connector; repeat")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="The gateway's certificate (PEM)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Its private key (PEM)")] = None,
    tls_ca: Annotated[Path | None, typer.Option(help="The CA of the connectors' and clients' certificates")] = None,
    identity_key: Annotated[
        list[str] | None,
        typer.Option(help="KID=PEM public key of the identity provider; repeat (development: made if none)"),
    ] = None,
    issuer: Annotated[str | None, typer.Option(help="iss the callers' tokens carry")] = None,
    audience: Annotated[str | None, typer.Option(help="aud the callers' tokens carry")] = None,
    policy_dir: Annotated[Path, typer.Option(help="Casbin model, rules, organisations, limits")] = Path("policies"),
    models_dir: Annotated[Path | None, typer.Option(help="Supervision models (default: <policy-dir>/models)")] = None,
    client: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=ROLE,ROLE: the roles a client system's certificate carries; repeat "
            "(default: requester, auditor and admin as in development)"
        ),
    ] = None,
    environment: Annotated[str, typer.Option(help="production or development")] = "production",
    log_name: Annotated[str | None, typer.Option(help="The audit log's name (its checkpoints' origin)")] = None,
    publish_dir: Annotated[
        Path | None,
        typer.Option(help="A folder outside the database where every checkpoint is also written (audit.publish_dir)"),
    ] = None,
) -> None:
    """Write a gateway's settings file and create the keys it needs: the local keyring (KEK),
    the ticket signing keys, the audit log's note key (its verifier key beside it, .vkey).
    A required flag left out is asked for on a terminal. Refuses to overwrite any file."""
    from datetime import UTC, datetime

    from gateway.setup import GatewayKeys, GatewaySetup, init_gateway
    from xiezhi.tls import TLSFiles

    if environment not in ("production", "development"):
        raise error("--environment is production or development")
    env: Environment = "production" if environment == "production" else "development"
    connectors = pairs(connector or _ask_many("connector NAME=URL"), "--connector")
    if not connectors:
        raise error("--connector is required (NAME=https://…)")
    setup = GatewaySetup(
        config=Path(required(str(config) if config else None, "--config", "settings file to write")),
        keys=GatewayKeys(Path(required(str(keys) if keys else None, "--keys", "folder for the gateway's keys"))),
        database_url=required(database_url, "--database-url", "database URL"),
        connectors=connectors,
        tls=TLSFiles(
            cert=Path(required(str(tls_cert) if tls_cert else None, "--tls-cert", "gateway certificate (PEM)")),
            key=Path(required(str(tls_key) if tls_key else None, "--tls-key", "its private key (PEM)")),
            ca=Path(required(str(tls_ca) if tls_ca else None, "--tls-ca", "CA of the other parties (PEM)")),
        ),
        issuer=required(issuer, "--issuer", "identity provider's issuer (iss)"),
        audience=required(audience, "--audience", "audience of callers' tokens (aud)"),
        identity_keys={kid: Path(p) for kid, p in pairs(_identity_keys(identity_key, env), "--identity-key").items()},
        policy_dir=policy_dir,
        models_dir=models_dir or policy_dir / "models",
        clients=_clients(client or list(DEFAULT_CLIENTS)),
        environment=env,
        publish_dir=publish_dir,
        **({"log_name": log_name} if log_name else {}),
    )
    try:
        settings = init_gateway(setup, datetime.now(UTC))
    except XiezhiError as exc:
        raise fail(exc) from None
    typer.echo(f"settings        {setup.config} ({settings.environment})")
    typer.echo(f"keyring         {setup.keys.keyring}")
    typer.echo(f"audit log key   {setup.keys.audit_key}  (verifier key: {setup.keys.audit_vkey})")
    if not identity_key and env == "development":
        typer.echo(f"identity key    {setup.keys.idp_key}  (development identity provider, kid dev-idp-1)")
    typer.echo("next: add each connector's witness with `xiezhi gateway add-witness`")


@gateway_app.command("add-witness")
def gateway_add_witness(
    config: SettingsFile,
    connector: Annotated[
        str, typer.Option(help="The connector whose witness this is (among the settings' connectors)")
    ],
    vkey: Annotated[str, typer.Option(help="Its cosignature/v1 verifier key, or a file holding it (witness.vkey)")],
) -> None:
    """Trust a connector's witness: its verifier key goes into the settings' audit.witnesses,
    and the gateway asks it to cosign every checkpoint."""
    from gateway.setup import add_witness

    try:
        settings = add_witness(config, connector, vkey)
    except XiezhiError as exc:
        raise fail(exc) from None
    typer.echo(f"{connector}: witness added; {len(settings.audit.witnesses)} witness(es) in {config}")


def _ask_many(prompt: str) -> list[str]:
    """Values asked for one by one on a terminal (an empty answer ends); none without one."""
    answers: list[str] = []
    while common.interactive():
        answer: str = typer.prompt(f"{prompt} (empty to finish)", default="", show_default=False)
        if not answer.strip():
            break
        answers.append(answer.strip())
    return answers


def _identity_keys(given: list[str] | None, environment: str) -> list[str]:
    if given or environment == "development":
        return given or []
    answers = _ask_many("identity-provider key KID=PEM")
    if not answers:
        raise error("--identity-key is required in production (KID=PEM)")
    return answers


def _clients(values: list[str]) -> dict[str, tuple[str, ...]]:
    return {
        name: tuple(r.strip() for r in roles.split(",") if r.strip())
        for name, roles in pairs(values, "--client").items()
    }


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
    """Make a new relay-ticket signing key current (every running gateway signs with it within
    a second), keep the previous ones published, and prune keys superseded more than twice the
    ticket lifetime ago. The keys are in the gateway's database; this needs its settings and
    key provider. Prints the new key's id (its public RFC 7638 thumbprint)."""
    from datetime import UTC, datetime, timedelta

    from gateway.app import stored_ticket_keys
    from gateway.settings import GatewaySettings

    try:
        settings = GatewaySettings.from_file(config)
        keys, engine = stored_ticket_keys(settings)
        try:
            now = datetime.now(UTC)
            previous = keys.kids()[:1]
            kid = keys.rotate(now)
            pruned = keys.prune(now - timedelta(seconds=2 * settings.limits.ticket_ttl_seconds))
        finally:
            engine.dispose()
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
