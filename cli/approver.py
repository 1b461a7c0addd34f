"""The department head's commands: `xiezhi approvals list|approve|reject`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import GatewayUrl, TokenFile, calling

approvals_app = typer.Typer(help="Department heads: list, approve and reject waiting requests.", no_args_is_help=True)

RequestId = Annotated[str, typer.Argument(help="The waiting request's id")]


@approvals_app.command("list")
def approvals_list(
    gateway: GatewayUrl,
    status: Annotated[str, typer.Option(help="pending, approved, rejected or expired")] = "pending",
    token_file: TokenFile = None,
) -> None:
    """List the requests you may decide, with why each needs approval."""
    from rich.console import Console
    from rich.table import Table

    with calling(gateway, token_file) as client:
        views = client.approvals(status)
    table = Table(title=f"Approvals ({status})")
    for column in ("request", "model", "requester", "org", "scope", "subjects", "purpose", "reasons", "expires"):
        table.add_column(column)
    for v in views:
        table.add_row(
            v.request_id, v.model, v.requester, v.org, v.scope, str(v.subject_count), v.purpose,
            ", ".join(v.reasons), v.expires_at.isoformat(timespec="minutes"),
        )  # fmt: skip
    Console(width=200).print(table)


@approvals_app.command("approve")
def approvals_approve(
    request_id: RequestId,
    gateway: GatewayUrl,
    reason: Annotated[str, typer.Option(help="Why you approve (recorded in the audit log)")],
    token_file: TokenFile = None,
) -> None:
    """Approve a waiting request (not your own)."""
    _decide(gateway, request_id, reason, token_file, approve=True)


@approvals_app.command("reject")
def approvals_reject(
    request_id: RequestId,
    gateway: GatewayUrl,
    reason: Annotated[str, typer.Option(help="Why you reject (recorded in the audit log)")],
    token_file: TokenFile = None,
) -> None:
    """Reject a waiting request."""
    _decide(gateway, request_id, reason, token_file, approve=False)


def _decide(gateway: str, request_id: str, reason: str, token_file: Path | None, *, approve: bool) -> None:
    with calling(gateway, token_file) as client:
        view = client.decide(request_id, approve=approve, reason=reason)
    typer.echo(f"{view.request_id}: {view.status} by {view.decided_by}")
