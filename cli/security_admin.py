"""The security administrator's commands: the policy (`xiezhi policy test|push`) and the keys
sealing the gateway's data (`xiezhi keys status|rotate`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import GatewayUrl, TokenFile, calling, fail
from xiezhi.errors import XiezhiError

if TYPE_CHECKING:
    from xiezhi.wire import KeyStatus

policy_app = typer.Typer(help="The authorization policy: test it, push it to a gateway.", no_args_is_help=True)


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
        raise fail(exc) from None
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
    gateway: GatewayUrl,
    policy_file: Annotated[Path, typer.Option(help="Rules in Casbin CSV form")] = Path("policies/policy.csv"),
    token_file: TokenFile = None,
) -> None:
    """Replace the gateway's rules (security admin); the gateway runs its decision tables first."""
    with calling(gateway, token_file) as client:
        view = client.push_policy(policy_file.read_text(encoding="utf-8"))
    typer.echo(f"policy version {view.version} (revision {view.revision}) in force")


def keys_status(gateway: GatewayUrl, token_file: TokenFile = None) -> None:
    """Show the ids of the keys sealing the gateway's data and how many data keys await rewrapping."""
    with calling(gateway, token_file) as client:
        status = client.key_status()
    _print_keys(status)


def keys_rotate(
    gateway: GatewayUrl,
    kek: Annotated[bool, typer.Option(help="Rotate the key-encryption key")] = True,
    data_key: Annotated[bool, typer.Option(help="Start a new data key for new seals")] = True,
    token_file: TokenFile = None,
) -> None:
    """Rotate the gateway's keys while it serves (security admin); rewrapping follows in the background."""
    from xiezhi.wire import KeyRotation

    with calling(gateway, token_file) as client:
        status = client.rotate_keys(KeyRotation(kek=kek, data_key=data_key))
    _print_keys(status)


def _print_keys(status: KeyStatus) -> None:
    typer.echo(f"key-encryption key {status.kek} ({status.provider}; {len(status.keks)} held)")
    typer.echo(f"data key {status.data_key or '(none yet)'}; {status.data_keys} stored")
    typer.echo(f"{status.awaiting_rewrap} data keys await rewrapping under {status.kek}")
