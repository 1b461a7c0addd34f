"""The gateway's calls to connectors, with one place that translates every failure.

Each call has a timeout and a cap on the response size; any transport error, refusal,
oversized or malformed answer becomes a `ConnectorError` naming the connector and never
the batch contents. Each call is a client span (`relay.evaluate`) whose W3C trace context
goes with the request, so the connector's evaluation joins the requester's trace.

A call that could not connect, lost its connection or got a 5xx is tried again (tenacity)
with exponential backoff, within `Limits.connector_attempts` tries and
`connector_retry_budget_seconds`; each try takes a fresh ticket, as the connector refuses a
ticket it has seen. A refusal (4xx), a timeout after the batch was sent or a malformed
answer is not tried again. Trying again is safe: the same blinded elements evaluate to the
same elements, and the requester gets one answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
from pydantic import ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_before_delay
from tenacity import wait_exponential_jitter as backoff

from gateway.authz import AuthorizedRequest
from gateway.links import ConnectorLinks
from gateway.settings import Limits
from xiezhi.errors import ConnectorError, NotFound
from xiezhi.telemetry import record_batch, span, trace_headers
from xiezhi.wire import EvaluationResult, TicketedBatch

log = logging.getLogger("xiezhi.gateway")

# Failures where the connector answered nothing usable and may well answer the next try.
TRANSIENT = frozenset({"connector_unreachable", "connector_unavailable"})


class ConnectorRelay:
    def __init__(self, links: ConnectorLinks, limits: Limits) -> None:
        self._links = links
        self._limits = limits

    def known(self, connector: str) -> bool:
        return self._links.known(connector)

    def evaluate(
        self, permit: AuthorizedRequest, connector: str, ticketed: Callable[[], TicketedBatch]
    ) -> EvaluationResult:
        """Relay one batch of `permit`'s request, ticketed afresh for each try by `ticketed()`;
        return the evaluation or raise ConnectorError.

        Only under `permit`: the type checker then shows that authorization ran first, since
        only `gateway.authz` makes one (the ticket inside names the same request).
        """
        if not self._links.known(connector):
            raise NotFound(f"unknown connector {connector!r}", code="unknown_connector")
        count = 0
        for attempt in self._retrying(connector):
            with attempt:
                batch = ticketed()
                count = len(batch.blinded_elements)
                record_batch("relay.evaluate", count)
                with span("relay.evaluate", {"xiezhi.connector": connector, "xiezhi.batch_size": count}, kind="client"):
                    body = self._post(connector, "/v1/evaluate", batch.model_dump_json().encode())
        try:
            result = EvaluationResult.model_validate_json(body)
        except ValidationError:
            raise ConnectorError(f"connector {connector} answered with a malformed body") from None
        if len(result.evaluated_elements) != count:
            raise ConnectorError(f"connector {connector} answered for the wrong number of elements")
        return result

    def _retrying(self, connector: str) -> Retrying:
        """Tries of one call: transient failures again, with backoff, within the attempts and the budget."""

        def note(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning("connector %s: %s; trying again", connector, getattr(error, "code", "error"))

        return Retrying(
            stop=stop_after_attempt(self._limits.connector_attempts)
            | stop_before_delay(self._limits.connector_retry_budget_seconds),
            wait=backoff(multiplier=0.2, max=2.0, jitter=0.2),
            retry=retry_if_exception(lambda e: isinstance(e, ConnectorError) and e.code in TRANSIENT),
            before_sleep=note,
            reraise=True,
        )

    def _post(self, connector: str, path: str, content: bytes) -> bytes:
        cap = self._limits.max_connector_response_bytes
        url = self._links.url(connector) + path
        headers = {"content-type": "application/json", **trace_headers()}
        try:
            with self._links.client(connector).stream(
                "POST", url, content=content, headers=headers, extensions=self._links.extensions(connector)
            ) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > cap:
                        raise ConnectorError(f"connector {connector} answered with more than {cap} bytes")
                if response.status_code >= 500:
                    raise ConnectorError(
                        f"connector {connector} failed (HTTP {response.status_code})", code="connector_unavailable"
                    )
                if response.status_code != 200:
                    raise ConnectorError(
                        f"connector {connector} refused the batch (HTTP {response.status_code})",
                        code="connector_refused",
                    )
                return bytes(body)
        except httpx.ConnectTimeout:  # nothing was sent
            raise ConnectorError(f"connector {connector} is unreachable", code="connector_unreachable") from None
        except httpx.TimeoutException:
            raise ConnectorError(f"connector {connector} timed out", code="connector_timeout") from None
        except httpx.HTTPError:
            raise ConnectorError(f"connector {connector} is unreachable", code="connector_unreachable") from None
