"""Blind evaluation, one batch at a time: check it, ticket it, relay it under the caller's permit.

The gateway evaluates nothing itself. It refuses elements that are not canonical
ristretto255 encodings (or the identity) here rather than at the connector, signs a
short-lived ticket binding the batch (count and digest) to the permit's request, the
connector and the epoch the request pinned, and relays it (`gateway.relay`, which tries a
transient failure again under a fresh ticket). A relay that fails is audited here, on its
own, with the batch slot and attempt; one that succeeds is audited by `gateway.pipeline`
together with the slot it evaluates.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from audit_log import EventKind
from gateway.authz import AuthorizedRequest
from gateway.recorder import Recorder
from gateway.relay import ConnectorRelay
from gateway.settings import Limits
from gateway.slots import Claim
from gateway.ticket_keys import StoredTicketKeys
from xiezhi import group
from xiezhi.crypto import batch_digest
from xiezhi.errors import Conflict, InvalidInput
from xiezhi.tickets import issue_ticket
from xiezhi.wire import EvaluationBatch, EvaluationResult, TicketedBatch


class BlindEvaluation:
    def __init__(
        self,
        limits: Limits,
        issuer: str,
        relay: ConnectorRelay,
        ticket_keys: StoredTicketKeys,
        recorder: Recorder,
        clock: Callable[[], datetime],
    ) -> None:
        self._limits = limits
        self._issuer = issuer
        self._relay = relay
        self._ticket_keys = ticket_keys
        self._recorder = recorder
        self._clock = clock

    def check(self, batch: EvaluationBatch) -> int:
        """The batch's size, after refusing one too large or holding a malformed element."""
        limit = self._limits.max_batch
        count = len(batch.blinded_elements)
        if count > limit:
            raise InvalidInput(f"a batch holds at most {limit} elements", code="batch_too_large")
        for element in batch.blinded_elements:
            # Refuse non-canonical encodings and the identity here, not at the connector.
            group.deserialize_element(element)
        return count

    def relay(
        self, permit: AuthorizedRequest, org: str, connector: str, epoch: int, batch: EvaluationBatch, claim: Claim
    ) -> EvaluationResult:
        """Relay `batch` (the attempt `claim` at its slot) to `connector` under fresh tickets for
        `epoch`; audit a failure.

        Raises what the relay raises (ConnectorError, NotFound), and Conflict if the
        connector answered under another epoch than the one the request pinned.
        """

        def ticketed() -> TicketedBatch:
            ticket = self._ticket(permit, org, connector, epoch, batch)
            return TicketedBatch(ticket=ticket, blinded_elements=batch.blinded_elements)

        try:
            result = self._relay.evaluate(permit, connector, ticketed)
        except Exception as exc:
            self._recorder.record_alone(
                permit.principal,
                EventKind.RELAY,
                "evaluate",
                "failed",
                permit.request_id,
                connector=connector,
                count=claim.count,
                first_row=claim.first_row,
                attempt=claim.attempt,
                error=getattr(exc, "code", "internal_error"),
            )
            raise
        if result.epoch != epoch:
            raise Conflict(f"connector {connector} evaluated under another epoch", code="epoch_mismatch")
        return result

    def _ticket(self, permit: AuthorizedRequest, org: str, connector: str, epoch: int, batch: EvaluationBatch) -> str:
        kid, key = self._ticket_keys.current()  # re-read within a second of a rotation anywhere
        return issue_ticket(
            key,
            kid=kid,
            issuer=self._issuer,
            connector=connector,
            request_id=permit.request_id,
            requester_org=org or "-",
            epoch=epoch,
            count=len(batch.blinded_elements),
            digest=batch_digest(list(batch.blinded_elements)),
            now=self._clock(),
            ttl_seconds=self._limits.ticket_ttl_seconds,
        )


__all__ = ["BlindEvaluation"]
