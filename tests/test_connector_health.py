"""Each connector's health as the gateway sees it (`gateway.connector_health`): reachability
from the links' `/healthz` within one deadline, the active epoch, the index's age on the
given clock. In process: the links answer through httpx's MockTransport, the database is
SQLite; the stack tests (tests/test_system_status.py) cover the real connectors over TLS."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from gateway.connector_health import ConnectorProbe, index_age_seconds
from gateway.db import ConnectorEpoch, make_engine
from gateway.links import ConnectorLinks

AT = datetime(2026, 6, 1, 9, 30, tzinfo=UTC)
URLS = {"court": "http://court.test", "tax": "http://tax.test", "housing_fund": "http://housing.test"}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path}/gateway.sqlite", migrate_empty=True)
    with Session(engine) as session:
        session.add(ConnectorEpoch(connector="court", epoch=3, public_key=b"k", active=True, activated_at=AT))
        session.add(ConnectorEpoch(connector="court", epoch=2, public_key=b"k", active=False, activated_at=AT))
        session.add(ConnectorEpoch(connector="tax", epoch=1, public_key=b"k", active=True, activated_at=AT))
        session.commit()
    yield engine
    engine.dispose()


def _links(handler: httpx.MockTransport) -> ConnectorLinks:
    return ConnectorLinks(URLS, None, timeout_seconds=5.0, insecure_http=True, transport=handler)


def test_index_age_is_whole_seconds_on_the_given_clock_and_never_negative() -> None:
    assert index_age_seconds(None, AT) is None
    assert index_age_seconds(AT, AT + timedelta(hours=2, seconds=5.9)) == 7205
    assert index_age_seconds(AT.replace(tzinfo=None), AT + timedelta(seconds=30)) == 30  # stored without a zone: UTC
    assert index_age_seconds(AT, AT - timedelta(minutes=1)) == 0  # a clock set back


def test_each_connector_reachable_or_not_with_its_epoch_and_index_age(engine: Engine) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "tax.test":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200 if request.url.host == "court.test" else 503, json={"status": "ok"})

    links = _links(httpx.MockTransport(answer))
    now = AT + timedelta(minutes=90)
    health = ConnectorProbe(engine, links, URLS, lambda: now).check()
    assert list(health) == ["court", "housing_fund", "tax"]
    court, housing, tax = health["court"], health["housing_fund"], health["tax"]
    assert (court.reachable, court.epoch, court.index_activated_at, court.index_age_seconds) == (True, 3, AT, 5400)
    assert (tax.reachable, tax.epoch, tax.index_age_seconds) == (False, 1, 5400)
    # Answering, but not 200: not reachable; no epoch activated yet: no index, no age.
    assert (housing.reachable, housing.epoch, housing.index_activated_at, housing.index_age_seconds) == (
        False,
        None,
        None,
        None,
    )


def test_a_connector_that_hangs_counts_as_unreachable_within_the_deadline(engine: Engine) -> None:
    release = threading.Event()

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "court.test":
            release.wait(30)  # hangs past the probe's deadline (a mock transport ignores timeouts)
        return httpx.Response(200)

    links = _links(httpx.MockTransport(answer))
    probe = ConnectorProbe(engine, links, URLS, lambda: AT, timeout_seconds=0.2)
    try:
        health = probe.check()
        # Answered while the court's call still hangs: had the probe waited for it, the call
        # would have returned 200 (after 30 s) and the court would read as reachable.
        assert not release.is_set()
    finally:
        release.set()
    assert {name: h.reachable for name, h in health.items()} == {"court": False, "housing_fund": True, "tax": True}


def test_no_connector_configured_is_an_empty_report(engine: Engine) -> None:
    links = _links(httpx.MockTransport(lambda request: httpx.Response(200)))
    assert ConnectorProbe(engine, links, [], lambda: AT).check() == {}
