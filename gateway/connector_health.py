"""Each connector's health as the gateway sees it: whether it answers, its active key epoch,
and how old its active index is.

Every connector is asked for its `/healthz` at once, over its pinned mutual-TLS link
(`ConnectorLinks.alive`), and the whole probe has one deadline: a connector that has not
answered by then counts as unreachable, so one that hangs holds up neither `/readyz` nor the
system status for longer than the deadline. The index age is the time since the connector's
active epoch was activated (its index published and switched to), measured on the clock the
gateway was given. Connector names, epochs and times only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from gateway.db import ConnectorEpoch
from gateway.links import ConnectorLinks
from xiezhi.wire import ConnectorHealth

PROBE_SECONDS = 3.0  # a connector slower than this to say it is alive counts as unreachable


def index_age_seconds(activated_at: datetime | None, now: datetime) -> int | None:
    """Whole seconds from `activated_at` to `now` (a stored time without a zone is UTC); None
    without an activation. Never negative: a clock set back reads as an index just activated."""
    if activated_at is None:
        return None
    moment = activated_at if activated_at.tzinfo else activated_at.replace(tzinfo=UTC)
    return max(0, int((now - moment).total_seconds()))


def health(reachable: bool, active: ConnectorEpoch | None, now: datetime) -> ConnectorHealth:
    """One connector's health from its probe's answer and its active epoch (None: none yet)."""
    activated_at = active.activated_at if active is not None else None
    if activated_at is not None and activated_at.tzinfo is None:
        activated_at = activated_at.replace(tzinfo=UTC)
    return ConnectorHealth(
        reachable=reachable,
        epoch=active.epoch if active is not None else None,
        index_activated_at=activated_at,
        index_age_seconds=index_age_seconds(activated_at, now),
    )


class ConnectorProbe:
    """Asks every configured connector whether it answers, all at once, within one deadline."""

    def __init__(
        self,
        engine: Engine,
        links: ConnectorLinks,
        connectors: Iterable[str],
        clock: Callable[[], datetime],
        timeout_seconds: float = PROBE_SECONDS,
    ) -> None:
        self._engine = engine
        self._links = links
        self._connectors = sorted(connectors)
        self._clock = clock
        self._timeout = timeout_seconds

    def check(self) -> dict[str, ConnectorHealth]:
        """Each connector's health, by name, in name order; raises what the database raises."""
        with Session(self._engine) as session:
            active = {e.connector: e for e in session.exec(select(ConnectorEpoch).where(col(ConnectorEpoch.active)))}
        reachable = self._reachable()
        now = self._clock()
        return {name: health(reachable[name], active.get(name), now) for name in self._connectors}

    def _reachable(self) -> dict[str, bool]:
        if not self._connectors:
            return {}
        pool = ThreadPoolExecutor(max_workers=len(self._connectors), thread_name_prefix="connector-probe")
        try:
            futures = {name: pool.submit(self._links.alive, name, self._timeout) for name in self._connectors}
            # The per-call timeout bounds each phase of a call; this bounds the whole probe.
            wait(futures.values(), timeout=self._timeout + 0.5)
            return {name: _answered(future) for name, future in futures.items()}
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def _answered(future: Future[bool]) -> bool:
    # Not done by the deadline, or failed in a way the link did not translate: unreachable.
    return future.done() and future.exception() is None and future.result()


__all__ = ["PROBE_SECONDS", "ConnectorProbe", "health", "index_age_seconds"]
