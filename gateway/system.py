"""What the system administrator sees: the gateway's health and counts, nothing more.

The system administrator runs the service (三员分立): versions, the policy version in
force, connectors' active epochs, requests per status, the connectors whose evaluations
requesters reported as failing their proofs (how many, the last when), and each connector's
health (whether it answers, its active epoch, its index's age; `gateway.connector_health`) —
no audit entries, no results, no subjects.
"""

from __future__ import annotations

from sqlalchemy import Engine, func
from sqlmodel import Session, select

from gateway.auth import Principal
from gateway.authz import Authorizer
from gateway.connector_health import ConnectorProbe
from gateway.db import ConnectorEpoch, MatchRequest
from gateway.recorder import Recorder
from gateway.request_store import proof_failures
from xiezhi import __version__
from xiezhi.wire import SystemStatus


class SystemView:
    def __init__(self, engine: Engine, authorizer: Authorizer, recorder: Recorder, probe: ConnectorProbe) -> None:
        self._engine = engine
        self._authorizer = authorizer
        self._recorder = recorder
        self._probe = probe

    def status(self, principal: Principal) -> SystemStatus:
        """The status for a system administrator; the connectors are probed in parallel, within
        the probe's deadline. Raises Denied when the policy refuses `system:status`."""
        decision = self._authorizer.decide(principal, "system:status", "read")
        self._recorder.enforce(principal, "system:status", "read", None, decision)
        with Session(self._engine) as session:
            counts = session.exec(select(MatchRequest.status, func.count()).group_by(MatchRequest.status)).all()
            epochs = session.exec(select(ConnectorEpoch).where(ConnectorEpoch.active)).all()
            failures = proof_failures(session)
        connectors = self._probe.check()
        return SystemStatus(
            version=__version__,
            database=self._engine.dialect.name,
            policy_version=self._authorizer.policy.version,
            active_epochs={e.connector: e.epoch for e in epochs},
            requests_by_status={status: count for status, count in counts},
            proof_failures=failures,
            connectors=connectors,
        )
