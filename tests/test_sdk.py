"""The client library's in-memory entry point (`requester.sdk.match_subjects`) against a real
stack: subjects in every spelling, some invalid, give one result per subject in order,
equal to the plain SQL join; invalid ones come back unchecked with their reason, never 否;
the approval wait and progress are callbacks; a list with no valid subject asks nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from devkit.reference import expected_flags, normalised_key, read_csv
from requester.protocol import MatchSpec
from requester.sdk import MatchOutcome, Subject, match_subjects
from tests.stack import LEGAL_BASIS, PURPOSE, Stack, client_for, session_pki
from xiezhi.errors import ApprovalRequired
from xiezhi.ids import IdType

pytestmark = pytest.mark.integration  # a stack

FULL_WIDTH = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")


def _subjects(generated: Path) -> list[Subject]:
    """The generated list's rows as subjects, every third respelt (lower case, full width, spaced)."""
    rows = read_csv(generated / "subjects.csv")
    header = rows[0]
    case_at, id_at = header.index("案号"), header.index("证件号码")
    subjects = []
    for n, row in enumerate(rows[1:]):
        raw = row[id_at]
        spelt = [raw, raw.lower(), raw.translate(FULL_WIDTH), f" {raw[:6]} {raw[6:]} "][n % 4]
        subjects.append(Subject(spelt, case_no=row[case_at]))
    return subjects


def _run(stack: Stack, spec: MatchSpec, subjects: list[Subject], **options: object) -> MatchOutcome:
    token = stack.user_token(["prosecutor"])
    tls = session_pki().client(client_for(["prosecutor"]))
    return match_subjects(stack.gateway_url, token, spec, subjects, tls=tls, workers=1, **options)  # type: ignore[arg-type]


def test_one_result_per_subject_in_order_equal_to_the_plain_join(stack: Stack, generated: Path) -> None:
    subjects = _subjects(generated)
    seen: list[tuple[int, int]] = []
    outcome = _run(
        stack, MatchSpec("housing_fund", PURPOSE, LEGAL_BASIS, batch_size=50), subjects,
        on_progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert outcome.request_id and [r.index for r in outcome.results] == list(range(len(subjects)))
    flags = expected_flags(generated)
    for subject, result in zip(subjects, outcome.results, strict=True):
        key = normalised_key(subject.id)
        assert result.case_no == subject.case_no
        if key is None:
            assert (result.checked, result.clue, result.flags) == (False, None, {}) and result.reason
            continue
        expected = {c: key in flags[c] for c in outcome.reveals}
        assert result.checked and result.flags == expected and result.clue == any(expected.values())
    assert any(not r.checked for r in outcome.results), "the generated list holds invalid IDs"
    assert outcome.about is not None and outcome.about.model_title == "住房公积金"
    done, total = seen[-1]
    assert done == total > 0 and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_the_approval_wait_is_a_callback(stack: Stack, generated: Path) -> None:
    subjects = _subjects(generated)[:20]
    spec = MatchSpec("spouse_property", PURPOSE, LEGAL_BASIS)  # tier 3: waits for a department head
    with pytest.raises(ApprovalRequired) as waiting:
        _run(stack, spec, subjects)
    assert waiting.value.extensions["request_id"]
    asked: list[str] = []
    approve = stack.approver()

    def pending(request_id: str) -> None:
        asked.append(request_id)
        approve(request_id)

    outcome = _run(stack, spec, subjects, on_pending=pending)
    assert asked == [outcome.request_id] and outcome.about and outcome.about.approved_by


def test_an_id_of_a_declared_type_is_read_as_that_type_and_nothing_valid_asks_nothing(stack: Stack) -> None:
    outcome = _run(
        stack, MatchSpec("housing_fund", PURPOSE, LEGAL_BASIS),
        [Subject("11010519491231002X", id_type=IdType.USCC), Subject("not an id")],
    )  # fmt: skip
    assert outcome.request_id is None and [r.checked for r in outcome.results] == [False, False]
    assert [r.code for r in outcome.results][1] and outcome.clues == 0
