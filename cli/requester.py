"""The requester's commands: `xiezhi match` runs a supervision model over a subject list;
`xiezhi requests show|cancel` shows how far one of your requests got, or cancels it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import GatewayUrl, TelemetryOption, TokenFile, bearer_token, calling, fail, telemetry_settings
from xiezhi.errors import ApprovalRequired, XiezhiError

DEFAULT_LEGAL_BASIS = "《人民检察院民事诉讼监督规则》第一百零四条"
WAITING = 3  # exit status of `match` when the request waits for approval

requests_app = typer.Typer(help="Your match requests: how far one got, or cancel it.", no_args_is_help=True)
RequestIdOption = Annotated[str, typer.Option(help="The request's id (as `xiezhi match` printed it)")]


def match(
    gateway: GatewayUrl,
    model: Annotated[str, typer.Option(help="Supervision model id, e.g. housing_fund")],
    subjects: Annotated[
        Path, typer.Option(help="Subject list (.csv or .xlsx) with 案号, 姓名/名称, 证件号码 (证件类型 optional)")
    ],
    purpose: Annotated[str, typer.Option(help="Case number (案号) or special-action id this run serves")],
    out: Annotated[
        Path, typer.Option(help="Clue report to write (.csv or .xlsx); an earlier one is renamed .previous-<time>")
    ],
    legal_basis: Annotated[str, typer.Option(help="Legal basis of the request")] = DEFAULT_LEGAL_BASIS,
    scope: Annotated[
        str | None, typer.Option(help="Region code whose data the run reaches (default: your organisation)")
    ] = None,
    request_id: Annotated[
        str | None,
        typer.Option(
            help="Resume this request (after its approval, or after a run that stopped) instead of creating one"
        ),
    ] = None,
    token_file: TokenFile = None,
    batch_size: Annotated[int, typer.Option(min=1, max=5000)] = 2000,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
    telemetry: TelemetryOption = "none",
) -> None:
    """Run a supervision model over a subject list and write the clue report.

    A run that needs a department head's approval exits with status 3 and prints the
    request id; once approved, run the same command again with --request-id. A run that
    stops half way (a connector or the gateway failing) says its request id too: run the
    same command again with --request-id to continue it, or cancel it with `xiezhi requests
    cancel`. An earlier report at --out (and its errors file) is renamed to
    <name>.previous-<time>.<ext> first, and the new one is written only when the run succeeds.
    """
    from requester.job import match_file
    from requester.protocol import MatchSpec
    from xiezhi.telemetry import Telemetry

    token = bearer_token(token_file)
    spec = MatchSpec(model, purpose, legal_basis, batch_size, scope=scope, request_id=request_id)
    traces = Telemetry(telemetry_settings(telemetry), "xiezhi-requester")
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
        failed = exc.extensions.get("request_id")
        # A proof failure's message says this already; a cancelled request has nothing to continue.
        if failed and exc.code not in ("proof_failed", "request_cancelled"):
            typer.echo(
                f"request {failed} stopped; continue it with the same command and --request-id {failed}, "
                f"or cancel it: xiezhi requests cancel --request-id {failed}",
                err=True,
            )
        raise fail(exc) from None
    finally:
        traces.shutdown()
    typer.echo(
        f"{summary.model}: {summary.rows} rows checked, {summary.clues} clues, "
        f"{summary.invalid_rows} invalid rows → {summary.report} (errors: {summary.errors})"
    )


@requests_app.command("show")
def requests_show(gateway: GatewayUrl, request_id: RequestIdOption, token_file: TokenFile = None) -> None:
    """How far one of your requests got: its status, each connector's evaluated batches, rows looked up."""
    with calling(gateway, token_file) as client:
        view = client.view(request_id)
    typer.echo(f"{view.request_id}: {view.model}, {view.status.value}, {view.subject_count} subjects")
    for progress in view.evaluations:
        evaluated = sum(s.count for s in progress.slots if s.state.value == "evaluated")
        failed = [s for s in progress.slots if s.state.value == "proof_failed"]
        note = f", {len(failed)} batches whose proofs failed" if failed else ""
        typer.echo(f"  {progress.connector}: {evaluated} of {view.subject_count} rows evaluated{note}")
    typer.echo(f"  looked up: {view.rows_looked_up} of {view.subject_count} rows")


@requests_app.command("cancel")
def requests_cancel(gateway: GatewayUrl, request_id: RequestIdOption, token_file: TokenFile = None) -> None:
    """Cancel one of your requests that waits for approval or stopped half way. The subjects whose
    flags were never returned go back to your daily quota; the request does nothing more."""
    with calling(gateway, token_file) as client:
        view = client.cancel(request_id)
    back = view.subject_count - view.rows_looked_up
    typer.echo(f"{view.request_id}: {view.status.value}; {back} subjects back to the quota of the day it was made")
