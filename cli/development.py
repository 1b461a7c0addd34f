"""Development commands, backed by `devkit`: `xiezhi demo`, `xiezhi pki init|add`, `xiezhi token issue`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import error, fail
from xiezhi.errors import XiezhiError

token_app = typer.Typer(help="Development identity provider: sign caller tokens.", no_args_is_help=True)
pki_app = typer.Typer(help="Development PKI: a CA and certificates for mutual TLS.", no_args_is_help=True)


def demo(
    seed: Annotated[int, typer.Option(help="Seed for the generated data")] = 7,
    workdir: Annotated[Path, typer.Option(help="Folder for data, services' state, logs and reports")] = Path(
        "demo-run"
    ),
    data: Annotated[
        Path | None,
        typer.Option(
            help="Use agencies/<connector>.sqlite (one per connector of the roster), subjects.csv and "
            "applicants.csv from this folder instead of generating"
        ),
    ] = None,
    debtors: Annotated[int, typer.Option(help="How many 终本 debtors to generate")] = 1200,
    roster: Annotated[
        Path | None, typer.Option(help="Folder of connector configurations (default: deploy/connectors)")
    ] = None,
    policies: Annotated[
        Path | None,
        typer.Option(help="Policy folder: rules, tiers, limits, and the models to run in models/ (default: policies)"),
    ] = None,
) -> None:
    """Generate data, start the gateway and the roster's connectors on loopback, run every model."""
    from devkit.demo.run import run_demo

    try:
        run_demo(workdir=workdir, seed=seed, data=data, debtors=debtors, roster=roster, policies=policies)
    except XiezhiError as exc:
        raise fail(exc) from None


@pki_app.command("init")
def pki_init(
    out: Annotated[Path, typer.Option(help="Folder for the CA and the certificates (must not hold a CA yet)")],
    connector: Annotated[
        list[str] | None, typer.Option(help="Connector id; repeat (default: every connector of the roster)")
    ] = None,
    client: Annotated[list[str] | None, typer.Option(help="Client system name; repeat")] = None,
    days: Annotated[int, typer.Option(min=1, help="Validity of every certificate")] = 365,
) -> None:
    """Create a development CA and certificates for the gateway, the connectors and clients."""
    from datetime import UTC, datetime

    from devkit.environment import DEV_CLIENTS, load_roster
    from devkit.pki import init_pki
    from xiezhi.tls import client_identity, connector_identity, gateway_identity

    try:
        connectors = connector or load_roster().names()
    except XiezhiError as exc:
        raise fail(exc) from None
    clients = client or list(DEV_CLIENTS)
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


@pki_app.command("add")
def pki_add(
    pki: Annotated[Path, typer.Option(help="The development PKI's folder (`xiezhi pki init`)")],
    connector: Annotated[str | None, typer.Option(help="A connector id: its server and client certificate")] = None,
    client: Annotated[str | None, typer.Option(help="A client system's name: its client certificate")] = None,
    days: Annotated[int, typer.Option(min=1, help="Validity of the certificate")] = 365,
) -> None:
    """Issue one more party's certificate from the development CA (an agency or a client
    system joining). Refuses a party that already has a certificate."""
    from datetime import UTC, datetime

    from devkit.pki import DevPki, add_party
    from xiezhi.tls import client_identity, connector_identity

    if (connector is None) == (client is None):
        raise error("give one of --connector and --client")
    dev = DevPki(pki)
    if not dev.ca.is_file() or not (pki / "ca.key").is_file():
        raise error(f"{pki} holds no development CA (ca.pem, ca.key); run `xiezhi pki init` first")
    kind, name = ("connector", connector) if connector is not None else ("client", client or "")
    files = dev.connector(name) if kind == "connector" else dev.client(name)
    for path in (files.cert, files.key):
        if path.exists():
            raise error(f"{path} exists; a certificate is never overwritten")
    files.cert.parent.mkdir(parents=True, exist_ok=True)
    add_party(dev, "connector" if kind == "connector" else "client", name, datetime.now(UTC), days=days)
    identity = connector_identity(name) if kind == "connector" else client_identity(name)
    typer.echo(f"{kind:<16}{files.cert}  ({identity})")


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
    from devkit.environment import issue_token

    token = issue_token(
        key, subject=subject, roles=role, org=org, connector=connector, clearance=clearance, ttl_seconds=ttl
    )
    typer.echo(token)
