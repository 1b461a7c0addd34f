"""Batch slots, lookup batches and cancellation in the database (gateway/request_store.py), on SQLite.

The counters per connector always equal what the slots hold; concurrent claims never reserve
overlapping rows; an attempt whose evaluation never reached the requester is given back; a
proof failure is counted once per attempt; a lookup batch is stored with its tokens' digest;
a cancel ends the request once and says which rows go back to the quota.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from audit_log import AuditLog
from gateway.db import BatchSlot, EvaluationCount, MatchRequest, make_engine
from gateway.keyring import LocalKeyring
from gateway.recorder import Recorder
from gateway.request_plan import RequestPlan
from gateway.request_store import RequestStore, proof_failures
from gateway.sealing import MemoryDataKeys, Sealer
from gateway.slots import Claim
from gateway.vault import Vault
from xiezhi.errors import Conflict
from xiezhi.wire import RequestStatus, RowFlags, SlotState

AT = datetime(2026, 6, 1, 9, 30, tzinfo=UTC)
PLAN = RequestPlan.model_validate(
    {c: {"epoch": 1, "public_key": "ab" * 32, "publications": {f"{c}.x": f"p-{c}"}} for c in ("court", "tax")}
)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """SQLite in `make check`; PostgreSQL as well in `make test` (where a driver's rowcount once misled it)."""
    engine = make_engine(database_url, migrate_empty=True)
    yield engine
    engine.dispose()


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    keyring = LocalKeyring.create(tmp_path / "keyring.json", AT)
    return Vault(Sealer(keyring, MemoryDataKeys(), lambda: AT))


@pytest.fixture
def store(engine: Engine, vault: Vault) -> RequestStore:
    return RequestStore(engine, vault, Recorder(AuditLog(engine), lambda: AT), lambda: AT)


def _request(store: RequestStore, subjects: int = 10, request_id: str = "r-1") -> MatchRequest:
    request = MatchRequest(
        id=request_id,
        model="m",
        requester="prosecutor-330803-01",
        org="330803",
        purpose="p",
        legal_basis="b",
        subject_count=subjects,
        status=RequestStatus.EVALUATING.value,
        plan=PLAN,
        created_at=AT,
    )
    with store.session() as session:
        store.insert(session, request)
        session.commit()
        session.refresh(request)
    return request


def _state(engine: Engine, connector: str = "court") -> tuple[list[tuple[int, int, int, str]], tuple[int, int]]:
    """The connector's slots (first row, count, attempts, status) and its counters (reserved, evaluated)."""
    with Session(engine) as session:
        slots = session.exec(
            select(BatchSlot).where(BatchSlot.connector == connector).order_by(BatchSlot.first_row)  # type: ignore[arg-type]
        ).all()
        counts = session.exec(select(EvaluationCount).where(EvaluationCount.connector == connector)).one()
        return [(s.first_row, s.count, s.attempts, s.status) for s in slots], (counts.reserved, counts.evaluated)


def _evaluated(store: RequestStore, claim: Claim, connector: str = "court") -> None:
    with store.session() as session:
        store.slot_evaluated(session, "r-1", connector, claim)
        session.commit()


def test_counters_follow_the_slots_through_claims_answers_and_failures(store: RequestStore, engine: Engine) -> None:
    request = _request(store)
    first = store.claim_slot(request, "court", 0, 4, max_attempts=3)
    assert first == Claim(0, 4, 1)
    assert _state(engine) == ([(0, 4, 1, "reserved")], (4, 0))
    _evaluated(store, first)
    assert _state(engine) == ([(0, 4, 1, "evaluated")], (4, 4))
    second = store.claim_slot(request, "court", 0, 4, max_attempts=3)
    assert second == Claim(0, 4, 2)
    _evaluated(store, second)  # evaluated again: the rows count once
    assert _state(engine) == ([(0, 4, 2, "evaluated")], (4, 4))
    with store.session() as session:
        failed = store.proof_failed(session, "r-1", "court", 0, 4)
        assert failed is not None and failed.proof_failures == 1 and failed.reported_attempt == 2
        session.commit()
    assert _state(engine) == ([(0, 4, 2, "proof_failed")], (4, 0))  # its rows wait for another attempt
    with store.session() as session:
        assert store.proof_failed(session, "r-1", "court", 0, 4) is None  # the same report again counts once
    third = store.claim_slot(request, "court", 0, 4, max_attempts=3)
    _evaluated(store, third)
    assert _state(engine) == ([(0, 4, 3, "evaluated")], (4, 4))
    with pytest.raises(Conflict) as refused:
        store.claim_slot(request, "court", 0, 4, max_attempts=3)
    assert refused.value.code == "attempts_exhausted"
    assert _state(engine, "tax") == ([], (0, 0))  # the other connector's slots are its own
    with store.session() as session:
        summary = proof_failures(session)
    assert list(summary) == ["court"] and summary["court"].count == 1 and summary["court"].last_at == AT


def test_an_attempt_that_never_reached_the_requester_is_given_back(store: RequestStore, engine: Engine) -> None:
    request = _request(store)
    first = store.claim_slot(request, "court", 0, 4, max_attempts=3)
    store.release_slot("r-1", "court", first)
    assert _state(engine) == ([], (0, 0))  # the slot and its reservation are gone
    assert store.claim_slot(request, "court", 0, 5, max_attempts=3) == Claim(0, 5, 1)  # so other rows may take it
    _evaluated(store, Claim(0, 5, 1))
    again = store.claim_slot(request, "court", 0, 5, max_attempts=3)
    store.release_slot("r-1", "court", again)
    assert _state(engine) == ([(0, 5, 1, "evaluated")], (5, 5))  # an evaluated slot stays


def test_a_failure_is_reported_again_after_an_attempt_lost_on_the_way(store: RequestStore, engine: Engine) -> None:
    request = _request(store)
    _evaluated(store, store.claim_slot(request, "court", 0, 4, max_attempts=3))
    with store.session() as session:
        assert store.proof_failed(session, "r-1", "court", 0, 4) is not None
        session.commit()
    lost = store.claim_slot(request, "court", 0, 4, max_attempts=3)
    store.release_slot("r-1", "court", lost)  # the relay failed: the attempt is given back
    assert _state(engine) == ([(0, 4, 1, "proof_failed")], (4, 0))
    answered = store.claim_slot(request, "court", 0, 4, max_attempts=3)
    assert answered == Claim(0, 4, 2)
    _evaluated(store, answered)
    with store.session() as session:
        again = store.proof_failed(session, "r-1", "court", 0, 4)
        assert again is not None and again.proof_failures == 2 and again.reported_attempt == 2
        session.commit()


def test_only_an_evaluated_slot_with_exactly_those_rows_can_fail_its_proof(store: RequestStore) -> None:
    request = _request(store)
    store.claim_slot(request, "court", 0, 4, max_attempts=3)
    for first_row, count in ((0, 4), (0, 3), (4, 4)):  # reserved, another count, no slot
        with store.session() as session, pytest.raises(Conflict) as refused:
            store.proof_failed(session, "r-1", "court", first_row, count)
        assert refused.value.code == "unknown_slot"


def test_concurrent_claims_never_reserve_the_same_row_twice(store: RequestStore, engine: Engine) -> None:
    request = _request(store, subjects=12)

    def claim(first_row: int) -> str:
        try:
            store.claim_slot(request, "court", first_row, 3, max_attempts=3)
        except Conflict as exc:
            return exc.code
        return "ok"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(claim, range(10)))
    slots, (reserved, _) = _state(engine)
    rows = [row for first, count, _, _ in slots for row in range(first, first + count)]
    assert len(rows) == len(set(rows)) and reserved == len(rows)
    assert outcomes.count("ok") == len(slots) >= 1
    assert set(outcomes) <= {"ok", "slot_overlaps"}


def test_a_lookup_batch_is_stored_once_with_its_tokens_digest(store: RequestStore, vault: Vault) -> None:
    request = _request(store, subjects=2)
    rows = [RowFlags(row=0, clue=True, flags={"court.x": True}), RowFlags(row=1, clue=False, flags={"court.x": False})]
    with store.session() as session:
        request = session.get(MatchRequest, "r-1") or request
        assert store.store_results(session, request, rows, b"d" * 32)
        session.commit()
    with store.session() as session:
        stored = store.stored_batch(session, "r-1", 0)
        assert stored is not None and stored.rows == rows and stored.tokens_digest == b"d" * 32
        again = session.get(MatchRequest, "r-1")
        assert again is not None and again.status == RequestStatus.COMPLETED.value and again.rows_looked_up == 2
        assert not store.store_results(session, again, rows, b"e" * 32)  # the rows are stored already
        assert store.stored_batch(session, "r-1", 1) is None
    # A batch sealed before digests were kept (a bare list of rows) opens with none.
    legacy = vault.sealer.seal(json.dumps([[True, {"court.x": True}]]).encode(), _result_context("r-1", 5))
    opened = vault.open_batch("r-1", 5, legacy)
    assert opened.tokens_digest is None and opened.rows == [RowFlags(row=5, clue=True, flags={"court.x": True})]


def _result_context(request_id: str, first_row: int) -> dict[str, str]:
    return {"table": "result_batches", "request": request_id, "first_row": str(first_row)}


def test_a_cancel_ends_the_request_once_and_refuses_further_evaluation(store: RequestStore) -> None:
    request = _request(store)
    with store.session() as session:
        loaded = session.get(MatchRequest, "r-1")
        assert loaded is not None
        loaded.rows_looked_up = 3
        session.add(loaded)
        session.commit()
        assert store.cancel(session, loaded) == 7  # the rows whose flags were never returned
        session.commit()
        assert store.cancel(session, loaded) is None  # cancelled already
    with pytest.raises(Conflict) as refused:
        store.claim_slot(request, "court", 0, 4, max_attempts=3)
    assert refused.value.code == "request_cancelled"
    done = _request(store, request_id="r-2")
    with store.session() as session:
        loaded = session.get(MatchRequest, "r-2")
        assert loaded is not None
        loaded.status = RequestStatus.COMPLETED.value
        session.add(loaded)
        session.commit()
        with pytest.raises(Conflict) as ended:
            store.cancel(session, loaded)
    assert ended.value.code == "not_cancellable" and done.id == "r-2"


def test_slot_states_are_the_wire_states() -> None:
    assert {s.value for s in SlotState} == {"reserved", "evaluated", "proof_failed"}
