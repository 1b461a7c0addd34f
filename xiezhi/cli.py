"""The `xiezhi` command line: match, demo, and running each service on its own."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from xiezhi.errors import XiezhiError

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
app.add_typer(gateway_app, name="gateway")
app.add_typer(connector_app, name="connector")
app.add_typer(token_app, name="token")

DEFAULT_LEGAL_BASIS = "《人民检察院民事诉讼监督规则》"


def _fail(exc: XiezhiError) -> typer.Exit:
    # Plain text, unwrapped: messages are grepped from logs and may hold brackets.
    typer.echo(f"error ({exc.code}): {exc.public_message}", err=True)
    return typer.Exit(2)


def _logging(log_file: Path | None) -> None:
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    logging.basicConfig(level=logging.INFO, handlers=[handler], format="%(asctime)s %(levelname)s %(name)s %(message)s")


@app.command()
def match(
    gateway: Annotated[str, typer.Option(help="Gateway base URL")],
    model: Annotated[str, typer.Option(help="Supervision model id, e.g. housing_fund")],
    subjects: Annotated[Path, typer.Option(help="Subject list (.csv or .xlsx) with 案号, 姓名/名称, 证件号码")],
    purpose: Annotated[str, typer.Option(help="Case number (案号) or special-action id this run serves")],
    out: Annotated[Path, typer.Option(help="Clue report to write (.csv or .xlsx)")],
    legal_basis: Annotated[str, typer.Option(help="Legal basis of the request")] = DEFAULT_LEGAL_BASIS,
    token_file: Annotated[
        Path | None, typer.Option(help="File holding the caller's bearer token (default: $XIEZHI_TOKEN)")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=5000)] = 2000,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
) -> None:
    """Run a supervision model over a subject list and write the clue report."""
    from xiezhi.client.job import match_file
    from xiezhi.client.protocol import MatchSpec

    token = token_file.read_text().strip() if token_file else os.environ.get("XIEZHI_TOKEN", "")
    if not token:
        typer.echo("error: no bearer token: pass --token-file or set XIEZHI_TOKEN", err=True)
        raise typer.Exit(2)
    try:
        summary = match_file(
            gateway, token, MatchSpec(model, purpose, legal_basis, batch_size), subjects, out, show_progress=progress
        )
    except XiezhiError as exc:
        raise _fail(exc) from None
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
    """Run the gateway."""
    import uvicorn

    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    _logging(log_file)
    uvicorn.run(create_app(GatewaySettings.from_file(config)), host=host, port=port, log_config=None)


@connector_app.command("serve")
def connector_serve(
    connector: Annotated[str, typer.Option(help="Connector id, e.g. court")],
    key_dir: Annotated[Path, typer.Option(help="Folder of this connector's epoch keys")],
    ticket_key: Annotated[Path, typer.Option(help="The gateway's ticket public key (PEM)")],
    host: str = "127.0.0.1",
    port: int = 8100,
    log_file: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Serve OPRF evaluation for ticketed batches."""
    import uvicorn

    from connectors.service import ConnectorSettings, create_connector_app

    _logging(log_file)
    settings = ConnectorSettings(connector=connector, key_dir=key_dir, ticket_public_key=ticket_key)
    uvicorn.run(create_connector_app(settings), host=host, port=port, log_config=None)


@connector_app.command("publish")
def connector_publish(
    config: Annotated[Path, typer.Option(help="Connector config (YAML), e.g. connectors/court.yaml")],
    key_dir: Annotated[Path, typer.Option(help="Folder of this connector's epoch keys")],
    gateway: Annotated[str, typer.Option(help="Gateway base URL")],
    token_file: Annotated[Path, typer.Option(help="File holding the connector's bearer token")],
    database_url: Annotated[str | None, typer.Option(help="Override the config's database URL")] = None,
    rotate: Annotated[bool, typer.Option(help="Start a new key epoch first")] = False,
) -> None:
    """Build every capability index from the agency database and publish it."""
    from connectors.runner import build_and_publish

    try:
        report = build_and_publish(
            config,
            key_dir,
            gateway,
            token_file.read_text().strip(),
            database_url=database_url,
            rotate=rotate,
            show_progress=True,
        )
    except XiezhiError as exc:
        raise _fail(exc) from None
    for line in report.lines():
        typer.echo(line)


@token_app.command("issue")
def token_issue(
    key: Annotated[Path, typer.Option(help="Development identity-provider private key")],
    subject: Annotated[str, typer.Option(help="User or service id")],
    role: Annotated[list[str], typer.Option(help="Role; repeat for several")],
    org: Annotated[str | None, typer.Option(help="Organisation region code, e.g. 330803")] = None,
    connector: Annotated[str | None, typer.Option(help="Connector id, for connector identities")] = None,
    ttl: int = 3600,
) -> None:
    """Print a signed caller token from the development identity provider."""
    from xiezhi.devkit import issue_token

    typer.echo(issue_token(key, subject=subject, roles=role, org=org, connector=connector, ttl_seconds=ttl))


if __name__ == "__main__":
    app()
