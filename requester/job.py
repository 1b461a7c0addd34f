"""One match job: subject file in, clue report and errors file out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from requester.gateway_client import GatewayClient
from requester.protocol import MatchSpec, OnPending, run_match
from requester.report import ReportRow, write_errors, write_report
from requester.subjects import read_subjects
from xiezhi.errors import InvalidInput
from xiezhi.tls import TLSFiles


@dataclass(frozen=True)
class MatchSummary:
    model: str
    subjects: Path
    request_id: str | None
    rows: int
    invalid_rows: int
    clues: int
    report: Path
    errors: Path


def match_file(
    gateway_url: str,
    token: str,
    spec: MatchSpec,
    subjects: Path,
    out: Path,
    *,
    show_progress: bool = True,
    workers: int | None = None,
    on_pending: OnPending | None = None,
    tls: TLSFiles | None = None,
) -> MatchSummary:
    """Validate `subjects`, run `spec` over the valid rows, write `out` and `<out>.errors.csv`.

    Raises InvalidInput if the file holds no valid row (nothing to ask), after writing the
    errors file so the user sees why.
    """
    valid, rejected = read_subjects(subjects)
    errors = write_errors(out, rejected)
    if not valid:
        raise InvalidInput(f"{subjects.name}: no valid row to match; see {errors.name}")
    client = GatewayClient(gateway_url, token, tls=tls)
    try:
        with _progress(show_progress, spec.model) as (on_total, advance):
            result = run_match(
                client,
                spec,
                [row.subject.oprf_input() for row in valid],
                on_total=on_total,
                advance=advance,
                workers=workers,
                on_pending=on_pending,
            )
    finally:
        client.close()
    report_rows = [
        ReportRow(row.row, row.case_no, flags.clue, flags.flags)
        for row, flags in zip(valid, sorted(result.rows, key=lambda r: r.row), strict=True)
    ]
    write_report(out, report_rows, result.reveals)
    return MatchSummary(
        spec.model,
        subjects,
        result.request_id,
        len(valid),
        len(rejected),
        sum(r.clue for r in report_rows),
        out,
        errors,
    )


class _progress:
    """A rich progress bar, or nothing when disabled."""

    def __init__(self, enabled: bool, label: str) -> None:
        self._progress = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            disable=not enabled,
            transient=True,
        )
        self._task = self._progress.add_task(label, total=None)

    def __enter__(self):  # type: ignore[no-untyped-def]
        self._progress.start()
        return (
            lambda total: self._progress.update(self._task, total=total),
            lambda n: self._progress.advance(self._task, n),
        )

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()
