"""What the gateway's lifespan builds once and its routes use: one typed, frozen container.

`gateway.app` builds a `GatewayServices` when the application starts and keeps it as the
application's only piece of state (beside the telemetry it is constructed with);
`gateway.api` hands each route the one service it needs through a typed dependency, so no
route reaches into untyped state by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from audit_log import AuditLog, AuditWriter
from gateway.admission import Admission
from gateway.alarms import Alarms
from gateway.approvals import Approvals
from gateway.audit_proofs import AuditProofs
from gateway.audit_review import AuditReview
from gateway.auth import Authenticator, ClientChannels
from gateway.checkpoint_publication import CheckpointPublication
from gateway.key_admin import KeyAdmin
from gateway.pipeline import Pipeline
from gateway.policy_admin import PolicyAdmin
from gateway.publishing import Publishing
from gateway.readiness import Readiness
from gateway.recorder import SignIns
from gateway.retention import ResultRetention
from gateway.system import SystemView
from gateway.ticket_keys import StoredTicketKeys
from gateway.witnessing import Witnessing
from gateway.workspace import Workspace
from xiezhi.supervision import ModelCatalog
from xiezhi.telemetry import Telemetry


@dataclass(frozen=True)
class GatewayServices:
    """The services of one running gateway, built in `create_app`'s lifespan."""

    authenticator: Authenticator
    sign_ins: SignIns
    channels: ClientChannels  # which roles each client certificate carries (nothing to check without TLS)
    policy: PolicyAdmin
    catalog: ModelCatalog
    ticket_keys: StoredTicketKeys
    admission: Admission
    pipeline: Pipeline
    publishing: Publishing
    approvals: Approvals
    keys: KeyAdmin
    system: SystemView
    review: AuditReview
    audit_proofs: AuditProofs
    audit: AuditLog
    audit_writer: AuditWriter
    witnessing: Witnessing
    publication: CheckpointPublication
    alarms: Alarms
    readiness: Readiness
    telemetry: Telemetry | None  # the service's own providers (its Prometheus metrics), when built by create_app
    retention: ResultRetention
    workspace: Workspace


__all__ = ["GatewayServices"]
