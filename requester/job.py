"""One match job: subject file in, clue report and errors file out.

Output handling: an earlier report at `out` and its errors file are set aside first
(requester.report.set_aside_previous); the new ones are written, atomically, only once the
run has an answer. A run that fails therefore leaves no report at `out`. A list with no
valid row leaves only its errors file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from requester.gateway_client import GatewayClient
from requester.protocol import MatchSpec, OnPending, run_match
from requester.report import (
    CHINA_TIME,
    Provenance,
    ReportRow,
    check_report_path,
    errors_path,
    set_aside_previous,
    write_errors,
    write_outputs,
)
from requester.subjects import load_subjects
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
    clock: Callable[[], datetime] | None = None,
) -> MatchSummary:
    """Validate `subjects`, run `spec` over the valid rows, write `out` and `<out>.errors.csv`.

    An earlier report at `out` and its errors file are renamed to
    `<stem>.previous-<time><suffix>` first; both new files are written at the end, so a run
    that fails (here or at the gateway) leaves no report. `clock` (default: now) dates the
    report and the names of set-aside files.

    Raises InvalidInput for an `out` that is no .csv or .xlsx, an unreadable list, or a list
    with no valid row (nothing to ask; its errors file is written so the user sees why).
    """
    now = clock or (lambda: datetime.now(CHINA_TIME))
    check_report_path(out)
    set_aside_previous(out, now())
    listed = load_subjects(subjects)
    valid, rejected = listed.valid, listed.rejected
    if not valid:
        provenance = Provenance(None, spec.model, listed.name, listed.sha256, now(), 0, 0, len(rejected))
        write_errors(out, rejected, provenance)
        raise InvalidInput(f"{subjects.name}: no valid row to match; see {errors_path(out).name}")
    client = GatewayClient(gateway_url, token, tls=tls)
    try:
        with _progress(show_progress, spec.model) as (on_total, advance):
            result = run_match(
                client,
                replace(spec, subjects_digest=spec.subjects_digest or listed.sha256),
                [row.subject.oprf_input() for row in valid],
                on_total=on_total,
                advance=advance,
                workers=workers,
                on_pending=on_pending,
            )
    finally:
        client.close()
    report_rows = [
        ReportRow(row.row, row.case_no, flags.clue, flags.flags, row.name)
        for row, flags in zip(valid, sorted(result.rows, key=lambda r: r.row), strict=True)
    ]
    clues = sum(r.clue for r in report_rows)
    provenance = Provenance(
        result.request_id, spec.model, listed.name, listed.sha256, now(), len(valid), clues, len(rejected),
        result.about,
    )  # fmt: skip
    errors = write_outputs(out, report_rows, result.reveals, rejected, provenance)
    return MatchSummary(spec.model, subjects, result.request_id, len(valid), len(rejected), clues, out, errors)


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
