"""The capability type and the request plan: typed in code, stored as the JSON text it always was."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlmodel import Session

from gateway.db import MatchRequest, make_engine
from gateway.request_plan import EMPTY_PLAN, PinnedConnector, RequestPlan
from xiezhi.errors import InvalidInput
from xiezhi.wire import Capability, ConnectorPlan

# The text a gateway wrote before plans were typed: json.dumps of connector → entry.
STORED = (
    '{"court": {"epoch": 2, "public_key": "' + "ab" * 32 + '", "publications": '
    '{"court.winning_plaintiff_unpaid": "p-1", "court.multiple_terminated": "p-2"}}, '
    '"tax": {"epoch": 1, "public_key": "' + "cd" * 32 + '", "publications": {"tax.refund_due": "p-3"}}}'
)
WINNING = Capability("court.winning_plaintiff_unpaid")


def test_a_capability_knows_its_connector_and_is_its_id() -> None:
    assert WINNING.connector == "court"
    assert Capability("civil_affairs.spouse").connector == "civil_affairs"
    assert (
        WINNING == "court.winning_plaintiff_unpaid" and {WINNING: 1}[Capability("court.winning_plaintiff_unpaid")] == 1
    )
    assert {"court.winning_plaintiff_unpaid": 1}[WINNING] == 1  # hashes as its id
    assert type(WINNING.connector) is str


@pytest.mark.parametrize("bad", ["court", "Court.x", "court.x\n", ".x", "court.x.y", "", "court x.y"])
def test_a_malformed_capability_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        Capability(bad)
    assert refused.value.code == "invalid_capability"
    assert not bad or bad not in refused.value.public_message


def test_the_stored_text_loads_and_is_written_back_byte_for_byte() -> None:
    plan = RequestPlan.from_json(STORED)
    assert plan.to_json() == STORED
    assert plan.connectors() == ("court", "tax")
    assert plan.publication(WINNING) == "p-1"
    assert plan.publication(Capability("tax.refund_due")) == "p-3"
    assert plan.publication_ids() == {"p-1", "p-2", "p-3"}
    court = plan.pinned("court")
    assert court is not None and court.epoch == 2 and court.public_key == bytes([0xAB]) * 32
    assert all(type(c) is Capability for c in court.publications)
    assert plan.pinned("land") is None
    with pytest.raises(KeyError):
        plan.publication(Capability("land.owner"))
    assert EMPTY_PLAN.to_json() == "{}" and EMPTY_PLAN.connectors() == () and EMPTY_PLAN.views() == ()


def test_the_plan_is_frozen_and_refuses_what_it_does_not_know() -> None:
    plan = RequestPlan.from_json(STORED)
    court = plan.pinned("court")
    assert court is not None
    with pytest.raises(ValidationError):
        court.epoch = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        RequestPlan.from_json('{"court": {"epoch": 1, "public_key": "00", "publications": {}, "extra": 1}}')
    with pytest.raises(ValidationError):
        RequestPlan.from_json('{"court": {"epoch": 1, "public_key": "00", "publications": {"Court.x": "p"}}}')


def test_the_requester_sees_each_connector_by_name_with_sorted_capabilities() -> None:
    assert RequestPlan.from_json(STORED).views() == (
        ConnectorPlan(
            connector="court",
            epoch=2,
            public_key=bytes([0xAB]) * 32,
            capabilities=("court.multiple_terminated", "court.winning_plaintiff_unpaid"),
        ),
        ConnectorPlan(connector="tax", epoch=1, public_key=bytes([0xCD]) * 32, capabilities=("tax.refund_due",)),
    )


def test_the_column_reads_and_writes_the_same_text(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'gateway.sqlite'}", migrate_empty=True)
    now = datetime.now(UTC)
    plan = RequestPlan({"court": PinnedConnector(epoch=1, public_key=bytes(32), publications={WINNING: "p-1"})})
    with Session(engine) as session:
        session.add(
            MatchRequest(
                id="typed",
                model="m",
                requester="u",
                org="330803",
                purpose="p",
                legal_basis="b",
                subject_count=1,
                created_at=now,
                status="evaluating",
                plan=plan,
            )
        )
        session.commit()
    with engine.begin() as connection:  # a row as an older gateway wrote it
        connection.execute(
            text(
                "INSERT INTO match_requests (id, model, requester, org, purpose, legal_basis, scope, subject_count,"
                " status, plan, rows_looked_up, created_at) VALUES ('legacy', 'm', 'u', '330803', 'p', 'b', '', 1,"
                " 'evaluating', :plan, 0, :now)"
            ),
            {"plan": STORED, "now": now.replace(tzinfo=None)},
        )
        raw = connection.execute(text("SELECT plan FROM match_requests WHERE id = 'typed'")).scalar_one()
    assert (
        raw == '{"court": {"epoch": 1, "public_key": "' + "00" * 32 + '", "publications": {"' + WINNING + '": "p-1"}}}'
    )
    with Session(engine) as session:
        typed, legacy = session.get(MatchRequest, "typed"), session.get(MatchRequest, "legacy")
        assert typed is not None and legacy is not None
        assert typed.plan == plan and legacy.plan == RequestPlan.from_json(STORED)
    engine.dispose()
