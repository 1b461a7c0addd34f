"""The `xiezhi` command line: match, demo, and running each service on its own."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from xiezhi.audit_cli import audit_app
from xiezhi.errors import ApprovalRequired, XiezhiError

if TYPE_CHECKING:
    from connectors.runner import PublishReport
    from xiezhi.client.gateway_client import GatewayClient
    from xiezhi.telemetry import TelemetrySettings
    from xiezhi.tls import TLSFiles
    from xiezhi.wire import KeyStatus

app = typer.Typer(
    help="Xiezhi (獬豸): privacy-preserving data-sharing gateway for enforcement supervision.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
gateway_app = typer.Typer(help="The gateway service.", no_args_is_help=True)
connector_app = typer.Typer(
    help="An agency's connector: build and publish indexes, serve evaluation.", no_args_is_help=True
)
token_app = typer.Typer(help="Development identity provider: sign caller tokens.", no_args_is_help=True)
approvals_app = typer.Typer(help="Department heads: list, approve and reject waiting requests.", no_args_is_help=True)
policy_app = typer.Typer(help="The authorization policy: test it, push it to a gateway.", no_args_is_help=True)
pki_app = typer.Typer(help="Development PKI: a CA and certificates for mutual TLS.", no_args_is_help=True)
keys_app = typer.Typer(
    help="The gateway's keys: those sealing its stored data (init, status, rotate) and its ticket signing keys.",
    no_args_is_help=True,
)
app.add_typer(gateway_app, name="gateway")
app.add_typer(connector_app, name="connector")
app.add_typer(token_app, name="token")
app.add_typer(approvals_app, name="approvals")
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")
app.add_typer(pki_app, name="pki")
app.add_typer(keys_app, name="keys")

DEFAULT_LEGAL_BASIS = "《人民检察院民事诉讼监督规则》第一百零四条"
WAITING = 3  # exit status of `match` when the request waits for approval
TlsCert = Annotated[Path | None, typer.Option(help="This party's certificate (PEM)")]
TlsKey = Annotated[Path | None, typer.Option(help="Its private key (PEM)")]
TlsCa = Annotated[Path | None, typer.Option(help="The CA that issued the other parties' certificates (PEM)")]
InsecureHttp = Annotated[
    bool, typer.Option("--insecure-http", help="Development only: plain HTTP, no TLS (warned loudly)")
]
TokenFile = Annotated[Path | None, typer.Option(help="File holding the caller's bearer token (default: $XIEZHI_TOKEN)")]
TelemetryOption = Annotated[
    str, typer.Option(help="Where traces, metrics and logs go: none, console, otlp[:URL] or file:PATH")
]


def _telemetry(spec: str) -> TelemetrySettings:
    from xiezhi.telemetry import TelemetrySettings

    try:
        return TelemetrySettings.parse(spec)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _fail(exc: XiezhiError) -> typer.Exit:
    # Plain text, unwrapped: messages are grepped from logs and may hold brackets.
    typer.echo(f"error ({exc.code}): {exc.public_message}", err=True)
    return typer.Exit(2)


def _token(token_file: Path | None) -> str:
    token = token_file.read_text().strip() if token_file else os.environ.get("XIEZHI_TOKEN", "")
    if not token:
        typer.echo("error: no bearer token: pass --token-file or set XIEZHI_TOKEN", err=True)
        raise typer.Exit(2)
    return token


def _gateway_client(gateway: str, token_file: Path | None) -> GatewayClient:
    """A client for `gateway` over TLS with $XIEZHI_TLS_* (plain HTTP only with $XIEZHI_INSECURE_HTTP)."""
    from xiezhi.client.gateway_client import GatewayClient

    try:
        return GatewayClient(gateway, _token(token_file))
    except XiezhiError as exc:
        raise _fail(exc) from None


def _logging(log_file: Path | None) -> None:
    from xiezhi.redaction import RedactingFilter

    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())  # messages scrubbed, tracebacks reduced to the exception's type
    logging.basicConfig(level=logging.INFO, handlers=[handler], format="%(asctime)s %(levelname)s %(name)s %(message)s")


@app.command()
def match(
    gateway: Annotated[str, typer.Option(help="Gateway base URL")],
    model: Annotated[str, typer.Option(help="Supervision model id, e.g. housing_fund")],
    subjects: Annotated[Path, typer.Option(help="Subject list (.csv or .xlsx) with 案号, 姓名/名称, 证件号码")],
    purpose: Annotated[str, typer.Option(help="Case number (案号) or special-action id this run serves")],
    out: Annotated[Path, typer.Option(help="Clue report to write (.csv or .xlsx)")],
    legal_basis: Annotated[str, typer.Option(help="Legal basis of the request")] = DEFAULT_LEGAL_BASIS,
    scope: Annotated[
        str | None, typer.Option(help="Region code whose data the run reaches (default: your organisation)")
    ] = None,
    request_id: Annotated[
        str | None, typer.Option(help="Resume this request (after its approval) instead of creating one")
    ] = None,
    token_file: TokenFile = None,
    batch_size: Annotated[int, typer.Option(min=1, max=5000)] = 2000,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
    telemetry: TelemetryOption = "none",
) -> None:
    """Run a supervision model over a subject list and write the clue report.

    A run that needs a department head's approval exits with status 3 and prints the
    request id; once approved, run the same command again with --request-id.
    """
    from xiezhi.client.job import match_file
    from xiezhi.client.protocol import MatchSpec
    from xiezhi.telemetry import Telemetry

    token = _token(token_file)
    spec = MatchSpec(model, purpose, legal_basis, batch_size, scope=scope, request_id=request_id)
    traces = Telemetry(_telemetry(telemetry), "xiezhi-requester")
    try:
        with traces.activate():
            summary = match_file(gateway, token, spec, subjects, out, show_progress=progress)
    except ApprovalRequired as exc:
        reasons = ", ".join(exc.extensions.get("reasons") or ())  # type: ignore[arg-type]
        typer.echo(
            f"waiting for approval: request {exc.extensions.get('request_id')} needs a department head of "
            f"{exc.extensions.get('approver_org')} ({reasons}); once approved, rerun with "
            f"--request-id {exc.extensions.get('request_id')}",
            err=True,
        )
        raise typer.Exit(WAITING) from None
    except XiezhiError as exc:
        raise _fail(exc) from None
    finally:
        traces.shutdown()
    typer.echo(
        f"{summary.model}: {summary.rows} rows matched, {summary.clues} clues, "
        f"{summary.invalid_rows} invalid rows → {summary.report} (errors: {summary.errors})"
    )


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Seed for the generated data")] = 7,
    workdir: Annotated[Path, typer.Option(help="Folder for data, services' state, logs and reports")] = Path(
        "demo-run"
    ),
    data: Annotated[
        Path | None,
        typer.Option(
            help="Use agencies/*.sqlite, subjects.csv and applicants.csv from this folder instead of generating"
        ),
    ] = None,
    debtors: Annotated[int, typer.Option(help="How many 终本 debtors to generate")] = 1200,
) -> None:
    """Generate data, start the gateway and four connectors on loopback, run every model."""
    from xiezhi.demo.run import run_demo

    try:
        run_demo(workdir=workdir, seed=seed, data=data, debtors=debtors)
    except XiezhiError as exc:
        raise _fail(exc) from None


@gateway_app.command("serve")
def gateway_serve(
    config: Annotated[Path, typer.Option(help="Gateway settings (YAML)")],
    host: str = "127.0.0.1",
    port: int = 8000,
    log_file: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Run the gateway: HTTPS with the settings' `tls`, or plain HTTP under `insecure_http`."""
    import uvicorn

    from gateway.app import create_app
    from gateway.settings import GatewaySettings
    from xiezhi.tls import uvicorn_tls, warn_plain_http

    _logging(log_file)
    settings = GatewaySettings.from_file(config)
    if settings.tls is None:
        warn_plain_http("the gateway")
    options = uvicorn_tls(settings.tls) if settings.tls else {}
    application = create_app(settings)
    application.state.telemetry.bridge_logging()  # its log records go out with its traces, redacted
    uvicorn.run(application, host=host, port=port, log_config=None, **options)


@connector_app.command("serve")
def connector_serve(
    connector: Annotated[str, typer.Option(help="Connector id, e.g. court")],
    key_dir: Annotated[Path, typer.Option(help="Folder of this connector's epoch keys")],
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

    _logging(log_file)
    if (witness_key is None) != (log_key is None):
        raise typer.BadParameter("--witness-key and --log-key go together")
    if (ticket_jwks is None) == (ticket_jwks_url is None):
        raise typer.BadParameter("give one of --ticket-jwks and --ticket-jwks-url (the gateway's ticket keys)")
    tls = _tls_files(tls_cert, tls_key, tls_ca, insecure_http)
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
        telemetry=_telemetry(telemetry),
    )
    if server is None:
        warn_plain_http(f"connector {connector}")
    options = uvicorn_tls(server) if server else {}
    application = create_connector_app(settings)
    application.state.telemetry.bridge_logging()  # its log records go out with its traces, redacted
    uvicorn.run(application, host=host, port=port, log_config=None, **options)


def _tls_files(cert: Path | None, key: Path | None, ca: Path | None, insecure_http: bool) -> TLSFiles | None:
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


@connector_app.command("publish")
def connector_publish(
    config: Annotated[Path, typer.Option(help="Connector config (YAML), e.g. connectors/court.yaml")],
    key_dir: Annotated[Path, typer.Option(help="Folder of this connector's epoch keys")],
    gateway: Annotated[str, typer.Option(help="Gateway base URL")],
    token_file: Annotated[Path, typer.Option(help="File holding the connector's bearer token")],
    database_url: Annotated[str | None, typer.Option(help="Override the config's database URL")] = None,
    rotate: Annotated[bool, typer.Option(help="Start a new key epoch first")] = False,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_ca: TlsCa = None,
    insecure_http: InsecureHttp = False,
) -> None:
    """Build every capability index from the agency database and publish it (mutual TLS with
    this connector's certificate)."""
    report = _build_and_publish(
        config,
        key_dir,
        gateway,
        token_file,
        database_url,
        rotate,
        _tls_files(tls_cert, tls_key, tls_ca, insecure_http),
        insecure_http,
    )
    for line in report.lines():
        typer.echo(line)


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
        raise _fail(exc) from None


@connector_app.command("rotate")
def connector_rotate(
    config: Annotated[Path, typer.Option(help="Connector config (YAML), e.g. connectors/court.yaml")],
    key_dir: Annotated[Path, typer.Option(help="Folder of this connector's epoch keys")],
    gateway: Annotated[str, typer.Option(help="Gateway base URL")],
    token_file: Annotated[Path, typer.Option(help="File holding the connector's bearer token")],
    database_url: Annotated[str | None, typer.Option(help="Override the config's database URL")] = None,
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
    tls = _tls_files(tls_cert, tls_key, tls_ca, insecure_http)
    report = _build_and_publish(config, key_dir, gateway, token_file, database_url, True, tls, insecure_http)
    old = str(before[-1]) if before else "none"
    typer.echo(f"{report.built.connector}: epoch {old} → {report.built.epoch} (published and active)")
    for line in report.lines():
        typer.echo(line)


@connector_app.command("retire-epoch")
def connector_retire_epoch(
    key_dir: Annotated[Path, typer.Option(help="Folder of this connector's epoch keys")],
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
        raise _fail(exc) from None
    typer.echo(f"epoch {epoch} retired: its key is deleted and its tickets are refused")


@keys_app.command("rotate-tickets")
def keys_rotate_tickets(config: Annotated[Path, typer.Option(help="Gateway settings (YAML)")]) -> None:
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
        raise _fail(exc) from None
    typer.echo(f"ticket key {kid} is current (was {previous[0] if previous else 'none'})")
    for old in pruned:
        typer.echo(f"pruned ticket key {old}")


@pki_app.command("init")
def pki_init(
    out: Annotated[Path, typer.Option(help="Folder for the CA and the certificates (must not hold a CA yet)")],
    connector: Annotated[list[str] | None, typer.Option(help="Connector id; repeat (default: the four)")] = None,
    client: Annotated[list[str] | None, typer.Option(help="Client system name; repeat")] = None,
    days: Annotated[int, typer.Option(min=1, help="Validity of every certificate")] = 365,
) -> None:
    """Create a development CA and certificates for the gateway, the connectors and clients."""
    from datetime import UTC, datetime

    from xiezhi.devkit import DEV_CLIENTS, DEV_CONNECTORS
    from xiezhi.pki import init_pki
    from xiezhi.tls import client_identity, connector_identity, gateway_identity

    connectors, clients = connector or list(DEV_CONNECTORS), client or list(DEV_CLIENTS)
    try:
        pki = init_pki(out, connectors, clients, datetime.now(UTC), days=days)
    except FileExistsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"CA              {pki.ca}")
    typer.echo(f"gateway         {pki.gateway().cert}  ({gateway_identity()})")
    for name in connectors:
        typer.echo(f"connector       {pki.connector(name).cert}  ({connector_identity(name)})")
    for name in clients:
        typer.echo(f"client          {pki.client(name).cert}  ({client_identity(name)})")
    typer.echo("private keys (.key) are readable by their owner only; production uses its own CA")


@token_app.command("issue")
def token_issue(
    key: Annotated[Path, typer.Option(help="Development identity-provider private key")],
    subject: Annotated[str, typer.Option(help="User or service id")],
    role: Annotated[list[str], typer.Option(help="Role; repeat for several")],
    org: Annotated[str | None, typer.Option(help="Organisation region code, e.g. 330803")] = None,
    connector: Annotated[str | None, typer.Option(help="Connector id, for connector identities")] = None,
    clearance: Annotated[int | None, typer.Option(min=0, max=3, help="Clearance 0–3 (tiers it covers)")] = None,
    ttl: int = 3600,
) -> None:
    """Print a signed caller token from the development identity provider."""
    from xiezhi.devkit import issue_token

    token = issue_token(
        key, subject=subject, roles=role, org=org, connector=connector, clearance=clearance, ttl_seconds=ttl
    )
    typer.echo(token)


@approvals_app.command("list")
def approvals_list(
    gateway: Annotated[str, typer.Option(help="Gateway base URL")],
    status: Annotated[str, typer.Option(help="pending, approved, rejected or expired")] = "pending",
    token_file: TokenFile = None,
) -> None:
    """List the requests you may decide, with why each needs approval."""
    from rich.console import Console
    from rich.table import Table

    client = _gateway_client(gateway, token_file)
    try:
        views = client.approvals(status)
    except XiezhiError as exc:
        raise _fail(exc) from None
    finally:
        client.close()
    table = Table(title=f"Approvals ({status})")
    for column in ("request", "model", "requester", "org", "scope", "subjects", "purpose", "reasons", "expires"):
        table.add_column(column)
    for v in views:
        table.add_row(
            v.request_id, v.model, v.requester, v.org, v.scope, str(v.subject_count), v.purpose,
            ", ".join(v.reasons), v.expires_at.isoformat(timespec="minutes"),
        )  # fmt: skip
    Console(width=200).print(table)


def _decide(gateway: str, request_id: str, reason: str, token_file: Path | None, *, approve: bool) -> None:

    client = _gateway_client(gateway, token_file)
    try:
        view = client.decide(request_id, approve=approve, reason=reason)
    except XiezhiError as exc:
        raise _fail(exc) from None
    finally:
        client.close()
    typer.echo(f"{view.request_id}: {view.status} by {view.decided_by}")


@approvals_app.command("approve")
def approvals_approve(
    request_id: Annotated[str, typer.Argument(help="The waiting request's id")],
    gateway: Annotated[str, typer.Option(help="Gateway base URL")],
    reason: Annotated[str, typer.Option(help="Why you approve (recorded in the audit log)")],
    token_file: TokenFile = None,
) -> None:
    """Approve a waiting request (not your own)."""
    _decide(gateway, request_id, reason, token_file, approve=True)


@approvals_app.command("reject")
def approvals_reject(
    request_id: Annotated[str, typer.Argument(help="The waiting request's id")],
    gateway: Annotated[str, typer.Option(help="Gateway base URL")],
    reason: Annotated[str, typer.Option(help="Why you reject (recorded in the audit log)")],
    token_file: TokenFile = None,
) -> None:
    """Reject a waiting request."""
    _decide(gateway, request_id, reason, token_file, approve=False)


@policy_app.command("test")
def policy_test(
    policy_dir: Annotated[Path, typer.Option(help="Policy folder (model.conf, policy.csv, orgs.yaml, …)")] = Path(
        "policies"
    ),
    tables: Annotated[Path | None, typer.Option(help="Decision tables folder (default: <policy-dir>/tests)")] = None,
    models_dir: Annotated[Path | None, typer.Option(help="Supervision models (default: <policy-dir>/models)")] = None,
    plain: Annotated[bool, typer.Option(help="Decide with pycasbin's plain enforcer, not the fast path")] = False,
) -> None:
    """Run the decision tables against the policy; exit 1 if any row fails."""
    from rich.console import Console
    from rich.table import Table

    from gateway.authz import Authorizer, load_policy_dir
    from gateway.authz.tables import run_tables
    from xiezhi.supervision import ModelCatalog

    try:
        authorizer = Authorizer(load_policy_dir(policy_dir), fast=not plain)
        catalog = ModelCatalog.load(models_dir or policy_dir / "models")
        results = run_tables(authorizer, catalog, tables or policy_dir / "tests")
    except XiezhiError as exc:
        raise _fail(exc) from None
    failures = [r for r in results if not r.passed]
    console = Console(width=200)
    if failures:
        table = Table(title="Failing rows")
        for column in ("table", "case", "expected", "got", "deciding rule"):
            table.add_column(column)
        for r in failures:
            table.add_row(r.table, r.case, r.expected, r.got, r.decision.rule)
        console.print(table)
    tables_run = len({r.table for r in results})
    console.print(
        f"{len(results) - len(failures)}/{len(results)} rows pass in {tables_run} tables; "
        f"policy version {authorizer.policy.version} ({'plain' if plain else 'fast'} enforcer)"
    )
    if failures:
        raise typer.Exit(1)


@policy_app.command("push")
def policy_push(
    gateway: Annotated[str, typer.Option(help="Gateway base URL")],
    policy_file: Annotated[Path, typer.Option(help="Rules in Casbin CSV form")] = Path("policies/policy.csv"),
    token_file: TokenFile = None,
) -> None:
    """Replace the gateway's rules (security admin); the gateway runs its decision tables first."""

    client = _gateway_client(gateway, token_file)
    try:
        view = client.push_policy(policy_file.read_text(encoding="utf-8"))
    except XiezhiError as exc:
        raise _fail(exc) from None
    finally:
        client.close()
    typer.echo(f"policy version {view.version} (revision {view.revision}) in force")


@keys_app.command("init")
def keys_init(
    keyring: Annotated[Path, typer.Option(help="Where to write the local keyring file (0600); never overwritten")],
) -> None:
    """Create a local keyring with one key-encryption key (development and CI; production uses a KMS)."""
    from datetime import UTC, datetime

    from xiezhi.keyring import LocalKeyring

    try:
        created = LocalKeyring.create(keyring, datetime.now(UTC))
    except XiezhiError as exc:
        raise _fail(exc) from None
    typer.echo(f"keyring {keyring} created; key-encryption key {created.current_kek_id()}")


@keys_app.command("status")
def keys_status(
    gateway: Annotated[str, typer.Option(help="Gateway base URL")],
    token_file: TokenFile = None,
) -> None:
    """Show the ids of the keys sealing the gateway's data and how many data keys await rewrapping."""
    client = _gateway_client(gateway, token_file)
    try:
        status = client.key_status()
    except XiezhiError as exc:
        raise _fail(exc) from None
    finally:
        client.close()
    _print_keys(status)


@keys_app.command("rotate")
def keys_rotate(
    gateway: Annotated[str, typer.Option(help="Gateway base URL")],
    kek: Annotated[bool, typer.Option(help="Rotate the key-encryption key")] = True,
    data_key: Annotated[bool, typer.Option(help="Start a new data key for new seals")] = True,
    token_file: TokenFile = None,
) -> None:
    """Rotate the gateway's keys while it serves (security admin); rewrapping follows in the background."""
    from xiezhi.wire import KeyRotation

    client = _gateway_client(gateway, token_file)
    try:
        status = client.rotate_keys(KeyRotation(kek=kek, data_key=data_key))
    except XiezhiError as exc:
        raise _fail(exc) from None
    finally:
        client.close()
    _print_keys(status)


def _print_keys(status: KeyStatus) -> None:
    typer.echo(f"key-encryption key {status.kek} ({status.provider}; {len(status.keks)} held)")
    typer.echo(f"data key {status.data_key or '(none yet)'}; {status.data_keys} stored")
    typer.echo(f"{status.awaiting_rewrap} data keys await rewrapping under {status.kek}")


if __name__ == "__main__":
    app()
