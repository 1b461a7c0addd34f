"""OpenTelemetry for every party: traces from client to gateway to connector, metrics, logs.

Each service builds one `Telemetry` from its `TelemetrySettings` (`providers`) and makes
it active while it handles a request (`ActiveTelemetry`, an ASGI middleware) or runs a
job (`Telemetry.activate`). Code below the API then records through the helpers here —
`span`, `traced`, `annotate`, `count_decision`, `record_batch`, `count_matches`,
`count_clues`, `observe_lookup` — which do nothing when no telemetry is active. Only this
package imports OpenTelemetry.

Calls between parties carry W3C trace context (`trace_headers()` on the way out; FastAPI
extracts `traceparent` on the way in). Only trace context crosses: baggage is neither
read nor sent.

Every exporter sits behind `xiezhi.redaction` (`export`): span and metric attributes pass
an allowlist, names and log text a scan for IDs, tokens, keys and names.

Spans: `client.match`, `<METHOD> <route>` (client and FastAPI server spans),
`gateway.create`, `gateway.evaluate`, `gateway.lookup`, `authz.decide`, `relay.evaluate`,
`audit.append`, `connector.evaluate`. Metrics: `xiezhi.requests`, `xiezhi.decisions`,
`xiezhi.operation.duration`, `xiezhi.batch.size`, `xiezhi.matches`, `xiezhi.clues`, `xiezhi.alarms`, and
FastAPI's `http.server.request.duration`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, ParamSpec, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from xiezhi.errors import XiezhiError
from xiezhi.redaction import Scalar
from xiezhi.telemetry.providers import ACTIVE, Telemetry, TelemetrySettings

__all__ = [
    "ActiveTelemetry",
    "Telemetry",
    "TelemetrySettings",
    "annotate",
    "count_alarm",
    "count_clues",
    "count_decision",
    "count_matches",
    "observe_lookup",
    "record_batch",
    "span",
    "trace_headers",
    "traced",
]

P = ParamSpec("P")
R = TypeVar("R")
Attributes = Mapping[str, Scalar]
_KINDS = {"internal": SpanKind.INTERNAL, "client": SpanKind.CLIENT, "server": SpanKind.SERVER}
_PROPAGATOR = TraceContextTextMapPropagator()


class ActiveTelemetry:
    """ASGI middleware: `telemetry` is the active one while each request is handled (and in
    the worker threads FastAPI runs sync routes in, which copy the context)."""

    def __init__(self, app: Any, telemetry: Telemetry) -> None:
        self.app = app
        self._telemetry = telemetry if telemetry.enabled else None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        token = ACTIVE.set(self._telemetry)
        try:
            await self.app(scope, receive, send)
        finally:
            ACTIVE.reset(token)


def _outcome(exc: BaseException) -> str:
    return exc.code if isinstance(exc, XiezhiError) else "error"


@contextmanager
def span(
    name: str,
    attributes: Attributes | None = None,
    *,
    kind: Literal["internal", "client", "server"] = "internal",
    counted: bool = False,
) -> Iterator[None]:
    """A span named `name` (a constant, never data) around the block, child of the current
    one; it records the block's duration and, if `counted`, counts it in `xiezhi.requests`.
    A failure sets `error.type` (the exception's class) and `xiezhi.outcome` (its reason code),
    never its message."""
    telemetry = ACTIVE.get()
    if telemetry is None:
        yield
        return
    started, outcome = time.perf_counter(), "ok"
    with telemetry.tracer.start_as_current_span(
        name, kind=_KINDS[kind], attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield
        except Exception as exc:
            outcome = _outcome(exc)
            current.set_attributes({"error.type": type(exc).__qualname__, "xiezhi.outcome": outcome})
            if not isinstance(exc, XiezhiError) or exc.status >= 500:
                current.set_status(StatusCode.ERROR)
            raise
        finally:
            telemetry.ended(name, outcome, time.perf_counter() - started, counted)


def traced(name: str, *, counted: bool = False) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: the function runs inside `span(name)`."""

    def wrap(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with span(name, counted=counted):
                return function(*args, **kwargs)

        return run

    return wrap


def annotate(attributes: Attributes) -> None:
    """Add `attributes` to the current span (they still pass the allowlist on export)."""
    if ACTIVE.get() is not None:
        trace.get_current_span().set_attributes(attributes)


def trace_headers() -> dict[str, str]:
    """`traceparent` (and `tracestate`) of the current span, for an outgoing call."""
    carrier: dict[str, str] = {}
    if ACTIVE.get() is not None:
        _PROPAGATOR.inject(carrier)
    return carrier


def count_decision(action: str, object_kind: str, outcome: str, reason: str) -> None:
    telemetry = ACTIVE.get()
    if telemetry is not None:
        labels = {"xiezhi.action": action, "xiezhi.object_kind": object_kind, "xiezhi.outcome": outcome}
        telemetry.instruments.decisions.add(1, {**labels, "xiezhi.reason": reason})


def record_batch(operation: str, size: int) -> None:
    telemetry = ACTIVE.get()
    if telemetry is not None:
        telemetry.instruments.batch.record(size, {"xiezhi.operation": operation})


def count_matches(capability: str, found: int) -> None:
    telemetry = ACTIVE.get()
    if telemetry is not None:
        telemetry.instruments.matches.add(found, {"xiezhi.capability": capability})


def count_alarm(kind: str, source: str) -> None:
    telemetry = ACTIVE.get()
    if telemetry is not None:
        telemetry.instruments.alarms.add(1, {"xiezhi.alarm": kind, "xiezhi.connector": source})


def count_clues(model: str, clues: int) -> None:
    telemetry = ACTIVE.get()
    if telemetry is not None:
        telemetry.instruments.clues.add(clues, {"xiezhi.model": model})


def observe_lookup(model: str, rows: int, clues: int, matches: Mapping[str, int]) -> None:
    """One lookup batch, in counts only: rows, clues, and tokens found per capability."""
    if ACTIVE.get() is None:
        return
    annotate({"xiezhi.model": model, "xiezhi.rows": rows, "xiezhi.clues": clues})
    record_batch("gateway.lookup", rows)
    count_clues(model, clues)
    for capability, found in matches.items():
        count_matches(capability, found)
