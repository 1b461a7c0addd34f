"""HTTP routes an operator's monitoring and the log's outside copies use: readiness, the
newest checkpoint, and alarms."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from gateway.alarms import Alarms
from gateway.api import Caller, Services
from xiezhi.errors import NotFound
from xiezhi.problems import responses
from xiezhi.wire import UUID_PATTERN, AlarmResolution, AlarmView

router = APIRouter(tags=["service"])
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


def _alarms(services: Services) -> Alarms:
    return services.alarms


Alarming = Annotated[Alarms, Depends(_alarms)]
AlarmId = Annotated[str, Path(pattern=UUID_PATTERN, description="an alarm's id, as the list of alarms gives it")]


@router.get("/readyz", response_class=JSONResponse, responses=responses(503))
def readyz(services: Services) -> dict[str, object]:
    """Ready to serve: the database answers, the key provider unwraps, every connector answers,
    and no alarm is open. No caller token (probes have none); over mutual TLS like every
    route. 200 gives each connector's health: reachable, active epoch, index activation time
    and index age in seconds; 503 names what is not ready (code: alarm_open,
    database_unavailable, schema_outdated, keyring_unavailable or connector_unreachable) and,
    once the connectors were probed, carries the same `connectors` member."""
    return services.readiness.check()


@router.get(
    "/checkpoint",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "the newest checkpoint, a signed note",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **responses(404, 503),
    },
)
def newest_checkpoint(services: Services) -> PlainTextResponse:
    """The newest checkpoint of the audit log, as a signed note with its cosignatures (the
    form transparency logs publish). No caller token: it holds a size and a root hash only.
    Keep copies of it: `xiezhi audit verify --checkpoints` holds any later log to them."""
    note = services.publication.newest()
    if note is None:
        raise NotFound("no checkpoint has been signed yet", code="not_yet_checkpointed")
    return PlainTextResponse(note, headers={"cache-control": "no-cache"})


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"description": "Prometheus text format", "content": {PROMETHEUS: {"schema": {"type": "string"}}}},
        **responses(404),
    },
)
def metrics(services: Services) -> Response:
    """The gateway's metrics for a Prometheus scraper (telemetry `prometheus: true`), redacted
    like every other signal: counts, durations and reason codes, never an ID, name or token.
    No caller token (a scraper has none); mutual TLS like every route."""
    text = services.telemetry.prometheus_text() if services.telemetry is not None else None
    if text is None:
        raise NotFound("metrics are not served: set telemetry.prometheus", code="metrics_off")
    return Response(text, media_type=PROMETHEUS)


@router.get("/v1/system/alarms", responses=responses(400, 401, 403, 503))
def list_alarms(
    caller: Caller,
    alarms: Alarming,
    include_resolved: Annotated[bool, Query(description="also the resolved ones")] = False,
) -> list[AlarmView]:
    return alarms.list(caller, include_resolved)


@router.post("/v1/system/alarms/{alarm_id}/resolve", responses=responses(400, 401, 403, 404, 409, 503))
def resolve_alarm(alarm_id: AlarmId, body: AlarmResolution, caller: Caller, alarms: Alarming) -> AlarmView:
    return alarms.resolve(caller, alarm_id, body.reason)
