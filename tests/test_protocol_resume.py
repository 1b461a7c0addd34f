"""The client's resumed run (requester/protocol.py), against an in-memory gateway.

The stand-in keeps batch slots by the gateway's own rule (gateway/slots.py), evaluates with a
real OPRF key and proof, and checks every lookup's tokens against the tokens the rows really
have; so a resumed run that evaluated the wrong rows, skipped the wrong ones or sent tokens
of one row for another fails here.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway import slots
from requester.gateway_client import GatewayClient
from requester.protocol import MatchSpec, run_match
from xiezhi import errors, oprf
from xiezhi.crypto import derive_token
from xiezhi.wire import (
    ConnectorPlan,
    ConnectorProgress,
    EvaluationBatch,
    EvaluationFailure,
    EvaluationResult,
    EvaluationSlot,
    LookupBatch,
    LookupResult,
    MatchRequestView,
    MatchResult,
    RequestStatus,
    RowFlags,
    SlotState,
)

CAPABILITY = "court.x"
INPUTS = [b"xiezhi:v1:test:%02d" % i for i in range(10)]
HITS = {1, 4, 6, 9}  # the rows the index holds


class MemoryGateway(GatewayClient):
    """A gateway for one request over INPUTS at one connector; `fail_lookup` raises at that lookup."""

    def __init__(self, fail_lookup: int | None = None) -> None:  # no HTTP client: nothing goes out
        self.key = oprf.generate_key_pair(oprf.Mode.VOPRF)
        outputs = oprf.evaluate_batch(self.key.sk, INPUTS, oprf.Mode.VOPRF)
        self.tokens = [derive_token(o, CAPABILITY) for o in outputs]
        self.slots: list[slots.Slot] = []
        self.flags: dict[int, bool] = {}
        self.evaluated: list[tuple[int, int, int]] = []  # first row, count, attempt
        self.looked_up: list[tuple[int, int]] = []  # first row, rows
        self.fail_lookup = fail_lookup

    def view(self, request_id: str) -> MatchRequestView:
        plan = ConnectorPlan(connector="court", epoch=1, public_key=self.key.pk, capabilities=(CAPABILITY,))
        progress = ConnectorProgress(
            connector="court",
            slots=tuple(
                EvaluationSlot(first_row=s.first_row, count=s.count, attempts=s.attempts, state=s.state)
                for s in sorted(self.slots, key=lambda s: s.first_row)
            ),
        )
        return MatchRequestView(
            request_id=request_id,
            model="m",
            status=RequestStatus.EVALUATING,
            subject_count=len(INPUTS),
            scope="330803",
            reveals=(CAPABILITY,),
            connectors=(plan,),
            created_at=datetime(2026, 6, 1, tzinfo=UTC),
            evaluations=(progress,),
            rows_looked_up=len(self.flags),
            max_batch_attempts=3,
        )

    def evaluate(self, request_id: str, connector: str, batch: EvaluationBatch) -> EvaluationResult:
        count = len(batch.blinded_elements)
        claim = slots.claim(
            self.slots, batch.first_row, count, subject_count=10, rows_looked_up=len(self.flags), max_attempts=3
        )
        self.slots = [s for s in self.slots if s.first_row != claim.first_row]
        self.slots.append(slots.Slot(claim.first_row, count, claim.attempt, SlotState.EVALUATED))
        self.evaluated.append((claim.first_row, count, claim.attempt))
        answer = oprf.blind_evaluate(self.key.sk, batch.blinded_elements, oprf.Mode.VOPRF)
        assert answer.proof is not None
        return EvaluationResult(epoch=1, evaluated_elements=answer.evaluated_elements, proof=answer.proof)

    def report_failure(self, request_id: str, connector: str, failure: EvaluationFailure) -> EvaluationSlot:
        raise AssertionError("no proof fails here")

    def lookup(self, request_id: str, batch: LookupBatch) -> LookupResult:
        if len(self.looked_up) == self.fail_lookup:
            raise errors.Unavailable("gateway unreachable (ConnectError)", code="gateway_unreachable")
        first, tokens = batch.first_row, batch.tokens[CAPABILITY]
        assert first == len(self.flags), "rows in order, each once"
        assert tokens == self.tokens[first : first + len(tokens)], "each row's own tokens"
        self.looked_up.append((first, len(tokens)))
        rows = [
            RowFlags(row=first + i, clue=first + i in HITS, flags={CAPABILITY: first + i in HITS})
            for i in range(len(tokens))
        ]
        self.flags.update({r.row: r.clue for r in rows})
        return LookupResult(rows=rows)

    def result(self, request_id: str) -> MatchResult:
        rows = [RowFlags(row=r, clue=c, flags={CAPABILITY: c}) for r, c in sorted(self.flags.items())]
        return MatchResult(request_id=request_id, model="m", reveals=(CAPABILITY,), rows=rows)


def _run(gateway: MemoryGateway, batch_size: int) -> MatchResult:
    spec = MatchSpec("m", "p", "b", batch_size=batch_size, request_id="r-1")
    return run_match(gateway, spec, INPUTS, workers=1)


def test_a_run_stopped_in_its_lookups_resumes_from_the_first_row_not_looked_up() -> None:
    gateway = MemoryGateway(fail_lookup=1)
    with pytest.raises(errors.Unavailable) as stopped:
        _run(gateway, batch_size=4)
    assert stopped.value.extensions["request_id"] == "r-1"
    assert gateway.evaluated == [(0, 4, 1), (4, 4, 1), (8, 2, 1)] and gateway.looked_up == [(0, 4)]
    gateway.fail_lookup = None
    result = _run(gateway, batch_size=3)
    # Slot 0–3 was looked up: never evaluated again; the others keep their boundaries.
    assert gateway.evaluated[3:] == [(4, 4, 2), (8, 2, 2)]
    assert gateway.looked_up[1:] == [(4, 3), (7, 3)]
    assert [r.clue for r in result.rows] == [i in HITS for i in range(10)]


def test_a_resumed_run_starting_inside_a_slot_skips_the_rows_looked_up() -> None:
    gateway = MemoryGateway()
    gateway.slots = [slots.Slot(0, 5, 1, SlotState.EVALUATED), slots.Slot(5, 5, 1, SlotState.EVALUATED)]
    gateway.flags = {0: False, 1: True, 2: False}  # rows 0–2 looked up by an earlier run
    result = _run(gateway, batch_size=4)
    assert gateway.evaluated == [(0, 5, 2), (5, 5, 2)]
    assert gateway.looked_up == [(3, 4), (7, 3)]  # tokens of rows 3 onwards, checked row by row
    assert [r.clue for r in result.rows] == [i in HITS for i in range(10)]


def test_a_finished_request_resumes_to_its_result_without_evaluating() -> None:
    gateway = MemoryGateway()
    _run(gateway, batch_size=10)
    assert gateway.evaluated == [(0, 10, 1)]
    result = _run(gateway, batch_size=10)
    assert gateway.evaluated == [(0, 10, 1)] and len(gateway.looked_up) == 1
    assert [r.clue for r in result.rows] == [i in HITS for i in range(10)]
