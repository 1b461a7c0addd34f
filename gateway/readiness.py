"""Whether this gateway instance can serve, as a load balancer or an operator asks (`/readyz`).

Ready means: the database answers and holds this release's schema head; the key provider
unwraps (the current key-encryption key is there); every connector answers its `/healthz`
over the pinned mutual-TLS link; and no alarm is open (a witness refusing the audit log's
checkpoint, `gateway.alarms`). The report also gives each connector's active key epoch and
when its index was activated, so an operator sees a stale index from outside. Names,
epochs, times and reason codes only.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from gateway import schema
from gateway.alarms import Alarms
from gateway.db import ConnectorEpoch
from gateway.links import ConnectorLinks
from gateway.sealing import Sealer
from xiezhi.errors import Unavailable

PROBE_SECONDS = 3.0  # a connector slower than this to say it is alive counts as unreachable


@dataclass(frozen=True)
class ConnectorState:
    reachable: bool
    epoch: int | None
    index_activated_at: datetime | None


class Readiness:
    def __init__(
        self, engine: Engine, links: ConnectorLinks, connectors: list[str], sealer: Sealer, alarms: Alarms
    ) -> None:
        self._engine = engine
        self._links = links
        self._connectors = connectors
        self._sealer = sealer
        self._alarms = alarms

    def check(self) -> dict[str, object]:
        """The readiness report; raises Unavailable naming what is not ready (the first reason's code)."""
        problems: list[tuple[str, str]] = []
        _guard(problems, "database_unavailable", "the database does not answer", self._ping_database)
        if not problems:
            _guard(problems, "schema_outdated", "the database is not at this release's schema head", self._schema)
        _guard(problems, "keyring_unavailable", "the key provider has no usable key-encryption key", self._ping_keys)
        connectors = self._connector_states() if not problems else {}
        down = sorted(name for name, state in connectors.items() if not state.reachable)
        if down:
            problems.append(("connector_unreachable", f"connectors not answering: {', '.join(down)}"))
        reachable = not problems or problems[0][0] != "database_unavailable"
        open_alarms = self._alarms.open_alarms() if reachable else []
        if open_alarms:
            names = ", ".join(f"{a.kind} from {a.source}" for a in open_alarms)
            problems.insert(
                0,
                (
                    "alarm_open",
                    f"{len(open_alarms)} open alarm(s): {names}; an operator must act and resolve them",
                ),
            )
        if problems:
            raise Unavailable("; ".join(message for _, message in problems), code=problems[0][0])
        return {
            "status": "ready",
            "connectors": {
                name: {
                    "reachable": state.reachable,
                    "epoch": state.epoch,
                    "index_activated_at": state.index_activated_at.isoformat() if state.index_activated_at else None,
                }
                for name, state in connectors.items()
            },
        }

    def _ping_database(self) -> None:
        with self._engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def _schema(self) -> None:
        # Another instance of a newer release may have migrated the database past this one.
        if schema.current(self._engine) != schema.head():
            raise LookupError("schema not at head")

    def _ping_keys(self) -> None:
        self._sealer.provider.current_kek_id()

    def _connector_states(self) -> dict[str, ConnectorState]:
        with Session(self._engine) as session:
            active = {e.connector: e for e in session.exec(select(ConnectorEpoch).where(col(ConnectorEpoch.active)))}
        with ThreadPoolExecutor(max_workers=max(1, len(self._connectors))) as pool:
            reachable = dict(zip(self._connectors, pool.map(self._alive, self._connectors), strict=True))
        return {
            name: ConnectorState(
                reachable[name],
                active[name].epoch if name in active else None,
                active[name].activated_at if name in active else None,
            )
            for name in self._connectors
        }

    def _alive(self, name: str) -> bool:
        return self._links.alive(name, PROBE_SECONDS)


def _guard(problems: list[tuple[str, str]], code: str, message: str, probe: Callable[[], None]) -> None:
    try:
        probe()
    except Exception:  # any failure of the probe is "not ready", said as such; nothing is served from it
        problems.append((code, message))


__all__ = ["ConnectorState", "Readiness"]
