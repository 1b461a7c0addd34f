"""The requester's command: `xiezhi match` runs a supervision model over a subject list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import GatewayUrl, TelemetryOption, TokenFile, bearer_token, fail, telemetry_settings
from xiezhi.errors import ApprovalRequired, XiezhiError

DEFAULT_LEGAL_BASIS = "《人民检察院民事诉讼监督规则》第一百零四条"
WAITING = 3  # exit status of `match` when the request waits for approval


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
        str | None, typer.Option(help="Resume this request (after its approval) instead of creating one")
    ] = None,
    token_file: TokenFile = None,
    batch_size: Annotated[int, typer.Option(min=1, max=5000)] = 2000,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
    telemetry: TelemetryOption = "none",
) -> None:
    """Run a supervision model over a subject list and write the clue report.

    A run that needs a department head's approval exits with status 3 and prints the
    request id; once approved, run the same command again with --request-id. An earlier
    report at --out (and its errors file) is renamed to <name>.previous-<time>.<ext> first,
    and the new one is written only when the run succeeds.
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
        raise fail(exc) from None
    finally:
        traces.shutdown()
    typer.echo(
        f"{summary.model}: {summary.rows} rows checked, {summary.clues} clues, "
        f"{summary.invalid_rows} invalid rows → {summary.report} (errors: {summary.errors})"
    )
