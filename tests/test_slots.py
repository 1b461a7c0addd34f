"""Batch slots, the rule (gateway/slots.py) and the client's side of it (requester/protocol.py):
a first evaluation reserves its rows, the same slot may be evaluated again a bounded number
of times, and anything else is refused with its reason code; a resumed run keeps the
gateway's slot boundaries and evaluates only batches still holding rows to look up."""

from __future__ import annotations

import pytest

from gateway.slots import Claim, Slot, claim
from requester.protocol import layout, still_needed
from xiezhi.errors import Conflict
from xiezhi.wire import EvaluationSlot, SlotState

EVALUATED = SlotState.EVALUATED
# One connector's slots of a request over 10 subjects: rows 0–3 evaluated once, rows 4–5 twice.
SLOTS = (Slot(0, 4, 1, EVALUATED), Slot(4, 2, 2, SlotState.PROOF_FAILED))


def _claim(first_row: int | None, count: int, *, looked_up: int = 0, attempts: int = 3) -> Claim:
    return claim(SLOTS, first_row, count, subject_count=10, rows_looked_up=looked_up, max_attempts=attempts)


def test_a_new_slot_is_a_first_attempt_that_reserves_its_rows() -> None:
    assert _claim(6, 4) == Claim(6, 4, 1) and _claim(6, 4).new
    assert claim((), 0, 10, subject_count=10, rows_looked_up=0, max_attempts=1) == Claim(0, 10, 1)


def test_the_same_slot_again_is_the_next_attempt_under_the_same_reservation() -> None:
    again = _claim(0, 4)
    assert again == Claim(0, 4, 2) and not again.new
    assert _claim(4, 2) == Claim(4, 2, 3)  # a slot whose proof failed takes another attempt too


def test_attempts_are_bounded() -> None:
    with pytest.raises(Conflict) as refused:
        _claim(4, 2, attempts=2)
    assert refused.value.code == "attempts_exhausted"
    assert _claim(0, 4, attempts=2).attempt == 2


@pytest.mark.parametrize(
    ("first_row", "count", "code"),
    [
        (0, 3, "slot_mismatch"),  # a slot starts there with another count
        (0, 5, "slot_mismatch"),
        (2, 2, "slot_overlaps"),  # inside the first slot
        (3, 3, "slot_overlaps"),  # across two slots
        (5, 3, "slot_overlaps"),  # starts inside the second
        (6, 5, "subject_count_exceeded"),  # beyond the last subject
        (10, 1, "subject_count_exceeded"),
    ],
)
def test_anything_else_is_refused_with_its_reason(first_row: int, count: int, code: str) -> None:
    with pytest.raises(Conflict) as refused:
        _claim(first_row, count)
    assert refused.value.code == code


def test_a_slot_whose_rows_were_all_looked_up_is_never_evaluated_again() -> None:
    with pytest.raises(Conflict) as refused:
        _claim(0, 4, looked_up=4)
    assert refused.value.code == "rows_already_looked_up"
    assert _claim(4, 2, looked_up=5).attempt == 3  # one of its rows still waits for its lookup


def test_a_batch_without_first_row_takes_the_slot_after_the_last() -> None:
    assert _claim(None, 4) == Claim(6, 4, 1)
    with pytest.raises(Conflict) as refused:
        _claim(None, 5)
    assert refused.value.code == "subject_count_exceeded"


def _slot(first_row: int, count: int) -> EvaluationSlot:
    return EvaluationSlot(first_row=first_row, count=count, attempts=1, state=EVALUATED)


def test_a_resumed_run_keeps_the_gateways_boundaries_and_fills_the_gaps() -> None:
    assert layout((), 10, 4) == [(0, 4), (4, 4), (8, 2)]
    # Slots of 3 rows at 0 and 6 exist; the run now uses batches of 4.
    assert layout((_slot(6, 3), _slot(0, 3)), 11, 4) == [(0, 3), (3, 3), (6, 3), (9, 2)]
    assert layout((_slot(0, 10),), 10, 4) == [(0, 10)]


def test_a_resumed_run_evaluates_only_batches_with_rows_left_to_look_up() -> None:
    batches = [(0, 3), (3, 3), (6, 3), (9, 2)]
    assert still_needed(batches, 0) == batches
    assert still_needed(batches, 4) == [(3, 3), (6, 3), (9, 2)]
    assert still_needed(batches, 6) == [(6, 3), (9, 2)]
    assert still_needed(batches, 11) == []
