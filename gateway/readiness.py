"""Whether this gateway instance can serve, as a load balancer or an operator asks (`/readyz`).

Ready means: the database answers and holds this release's schema head; the key provider
unwraps (the current key-encryption key is there); every connector answers its `/healthz`
over the pinned mutual-TLS link; and no alarm is open (a witness refusing the audit log's
checkpoint, `gateway.alarms`). The report, ready or not, also gives each connector's health
(`gateway.connector_health`): whether it answered, its active key epoch, when its index was
activated and how many seconds ago, so an operator sees a stale index from outside. Names,
epochs, times and reason codes only.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, text

from gateway import schema
from gateway.alarms import Alarms
from gateway.connector_health import ConnectorProbe
from gateway.sealing import Sealer
from xiezhi.errors import Unavailable
from xiezhi.wire import ConnectorHealth


class Readiness:
    def __init__(self, engine: Engine, probe: ConnectorProbe, sealer: Sealer, alarms: Alarms) -> None:
        self._engine = engine
        self._probe = probe
        self._sealer = sealer
        self._alarms = alarms

    def check(self) -> dict[str, object]:
        """The readiness report; raises Unavailable naming what is not ready (the first reason's
        code), with each connector's health as its `connectors` member once they were probed."""
        problems: list[tuple[str, str]] = []
        _guard(problems, "database_unavailable", "the database does not answer", self._ping_database)
        if not problems:
            _guard(problems, "schema_outdated", "the database is not at this release's schema head", self._schema)
        _guard(problems, "keyring_unavailable", "the key provider has no usable key-encryption key", self._ping_keys)
        connectors: dict[str, ConnectorHealth] = self._probe.check() if not problems else {}
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
            raise Unavailable(
                "; ".join(message for _, message in problems),
                code=problems[0][0],
                extensions={"connectors": connectors} if connectors else None,
            )
        return {
            "status": "ready",
            "connectors": {name: state.model_dump(mode="json") for name, state in connectors.items()},
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


def _guard(problems: list[tuple[str, str]], code: str, message: str, probe: Callable[[], None]) -> None:
    try:
        probe()
    except Exception:  # any failure of the probe is "not ready", said as such; nothing is served from it
        problems.append((code, message))


__all__ = ["Readiness"]
