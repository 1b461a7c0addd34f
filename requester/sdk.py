"""The procuratorate system's entry point: run a supervision model over subjects held in
memory and get a result per subject back.

    from requester.sdk import Subject, match_subjects
    from requester.protocol import MatchSpec

    outcome = match_subjects(
        "https://gateway.example:8443", token,
        MatchSpec("housing_fund", purpose="（2025）浙0803执监15号", legal_basis="…"),
        [Subject("11010519491231002X", case_no="（2023）浙0803执1号"), Subject("110105194912310021")],
        tls=TLSFiles(cert, key, ca),
        on_progress=lambda done, total: ...,
        on_pending=lambda request_id: ...,   # return once a department head approved it
    )
    for result in outcome.results:          # one per subject, in the order given
        result.checked, result.clue, result.flags, result.reason

Every ID is normalised and validated here (`xiezhi.ids`) as the CLI does; one that fails is
returned unchecked with its reason, never sent and never reported as 否. Nothing
identifying leaves this process: the gateway gets blinded elements and tokens and answers
with flags by position. A request that needs approval raises `ApprovalRequired` (its id in
`extensions["request_id"]`) unless `on_pending` is given; a run that stopped is continued
by passing that id as `MatchSpec.request_id` with the same subjects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from requester.gateway_client import GatewayClient
from requester.protocol import MatchSpec, OnPending, run_match
from xiezhi.errors import InvalidIdentifier
from xiezhi.ids import IdType, SubjectId, normalise_subject_id
from xiezhi.tls import TLSFiles
from xiezhi.wire import ResultAbout

# Called with (subjects done, total) as the run advances; the total counts each connector's
# evaluations and the lookups, so it is known only once the request runs.
OnProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class Subject:
    """One subject to check: an ID as written (any spelling the domain allows), and what the
    caller wants carried to its result."""

    id: str = field(repr=False)
    case_no: str = ""
    id_type: IdType | None = None  # None: detected from the value


@dataclass(frozen=True)
class SubjectResult:
    index: int  # the subject's position in the list given
    case_no: str
    checked: bool  # False: its ID failed validation and was not sent
    clue: bool | None  # None when not checked
    flags: dict[str, bool]  # per revealed capability; empty when not checked
    reason: str | None = None  # why it was not checked (Chinese, as the report says it)
    code: str | None = None  # the stable reason code


@dataclass(frozen=True)
class MatchOutcome:
    request_id: str | None  # None: no subject was valid, no request was made
    model: str
    reveals: tuple[str, ...]
    results: list[SubjectResult]
    about: ResultAbout | None  # who ran it, why, approved by whom, each capability's title and data as of

    @property
    def clues(self) -> int:
        return sum(bool(result.clue) for result in self.results)


def match_subjects(
    gateway_url: str,
    token: str,
    spec: MatchSpec,
    subjects: Sequence[Subject | str],
    *,
    tls: TLSFiles | None = None,
    on_progress: OnProgress | None = None,
    on_pending: OnPending | None = None,
    workers: int | None = None,
) -> MatchOutcome:
    """Run `spec.model` over `subjects` (IDs or `Subject`s); one result per subject, in order.
    Raises what `requester.protocol.run_match` raises (XiezhiError subclasses)."""
    given = [s if isinstance(s, Subject) else Subject(s) for s in subjects]
    valid: list[tuple[int, SubjectId]] = []
    unchecked: dict[int, InvalidIdentifier] = {}
    for index, subject in enumerate(given):
        try:
            valid.append((index, normalise_subject_id(subject.id, id_type=subject.id_type)))
        except InvalidIdentifier as failure:
            unchecked[index] = failure
    if not valid:
        results = [_unchecked(i, s, unchecked[i]) for i, s in enumerate(given)]
        return MatchOutcome(None, spec.model, (), results, None)
    progress = _Progress(on_progress)
    client = GatewayClient(gateway_url, token, tls=tls)
    try:
        result = run_match(
            client, spec, [subject.oprf_input() for _, subject in valid],
            on_total=progress.total, advance=progress.advance, workers=workers, on_pending=on_pending,
        )  # fmt: skip
    finally:
        client.close()
    flags = {valid[row.row][0]: row for row in result.rows}
    results = [
        _unchecked(i, s, unchecked[i])
        if i in unchecked
        else SubjectResult(i, s.case_no, True, flags[i].clue, dict(flags[i].flags))
        for i, s in enumerate(given)
    ]
    return MatchOutcome(result.request_id, result.model, tuple(result.reveals), results, result.about)


def _unchecked(index: int, subject: Subject, failure: InvalidIdentifier) -> SubjectResult:
    return SubjectResult(index, subject.case_no, False, None, {}, failure.public_message, failure.code)


class _Progress:
    def __init__(self, report: OnProgress | None) -> None:
        self._report = report or (lambda _done, _total: None)
        self._done = self._total = 0

    def total(self, total: int) -> None:
        self._total = total
        self._report(self._done, total)

    def advance(self, count: int) -> None:
        self._done += count
        self._report(self._done, self._total)
