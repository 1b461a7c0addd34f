"""Batch slots: which rows of a request a connector evaluates in which batch, and how often.

A slot is rows first_row … first_row+count−1 of one request at one connector. The first
evaluation of a slot reserves it against the request's subject count: the slots of a
connector never overlap and lie within [0, subject_count), so together they hold at most
subject_count rows. The same slot may be evaluated again — after an answer lost on the way,
a proof that did not verify, a run resumed by a client that lost its tokens — under the same
reservation, up to `max_attempts` evaluations in all. Anything else is refused with its
reason code.

Why a bound at all: every evaluation hands the requester OPRF outputs for inputs of its own
choosing, and nothing stops a re-evaluation from carrying other inputs than the first. So a
request obtains at most subject_count × max_attempts evaluations per connector, and the audit
log names each attempt by number. A slot whose rows were all looked up is never evaluated
again: no lookup can use it any more.

Pure decision code: `gateway.request_store` reads the slots under a lock and applies the verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xiezhi.errors import Conflict
from xiezhi.wire import SlotState


@dataclass(frozen=True)
class Slot:
    first_row: int
    count: int
    attempts: int
    state: SlotState

    @property
    def end(self) -> int:
        """One past the slot's last row."""
        return self.first_row + self.count


@dataclass(frozen=True)
class Claim:
    """A verdict: evaluate rows first_row … first_row+count−1 as attempt `attempt` of its slot."""

    first_row: int
    count: int
    attempt: int

    @property
    def new(self) -> bool:
        """The slot's first attempt: it reserves `count` rows."""
        return self.attempt == 1


def claim(
    slots: Sequence[Slot],
    first_row: int | None,
    count: int,
    *,
    subject_count: int,
    rows_looked_up: int,
    max_attempts: int,
) -> Claim:
    """The attempt an evaluation of `count` rows from `first_row` would be, given a connector's `slots`.

    `first_row` None takes the slot after the last one (a client from before batch slots).
    Raises Conflict: `slot_mismatch` (a slot starts there with another count),
    `rows_already_looked_up`, `attempts_exhausted`, `subject_count_exceeded` (beyond the
    request's rows) or `slot_overlaps` (rows of another slot).
    """
    if first_row is None:
        first_row = max((s.end for s in slots), default=0)
    existing = next((s for s in slots if s.first_row == first_row), None)
    if existing is not None:
        return _again(existing, count, rows_looked_up, max_attempts)
    if first_row + count > subject_count:
        raise Conflict(
            f"rows {first_row}–{first_row + count - 1} go beyond the request's {subject_count} subjects",
            code="subject_count_exceeded",
        )
    if any(s.first_row < first_row + count and first_row < s.end for s in slots):
        raise Conflict("the batch overlaps another batch slot of this connector", code="slot_overlaps")
    return Claim(first_row, count, 1)


def _again(slot: Slot, count: int, rows_looked_up: int, max_attempts: int) -> Claim:
    """Another attempt at an existing slot, if it may have one."""
    if slot.count != count:
        raise Conflict(
            f"the batch slot at row {slot.first_row} holds {slot.count} rows, not {count}", code="slot_mismatch"
        )
    if slot.end <= rows_looked_up:
        raise Conflict("every row of this batch slot was looked up already", code="rows_already_looked_up")
    if slot.attempts >= max_attempts:
        raise Conflict(
            f"this batch slot was evaluated {slot.attempts} times, the most allowed", code="attempts_exhausted"
        )
    return Claim(slot.first_row, slot.count, slot.attempts + 1)


__all__ = ["Claim", "Slot", "claim"]
