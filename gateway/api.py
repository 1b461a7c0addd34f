"""HTTP routes of the gateway. Routes parse, authenticate and delegate; nothing more.

Each route gets the service it delegates to as a typed dependency over the one
`GatewayServices` the lifespan built (`gateway_services`): a request is admitted by
`Admission` and run step by step by the `Pipeline`.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from gateway.admission import Admission
from gateway.approvals import Approvals
from gateway.auth import Principal
from gateway.key_admin import KeyAdmin
from gateway.orgs import Organisation
from gateway.pipeline import Pipeline
from gateway.policy_admin import PolicyAdmin
from gateway.publishing import Publishing
from gateway.services import GatewayServices
from gateway.system import SystemView
from gateway.workspace import MAX_LISTED
from xiezhi.errors import InvalidInput, Unauthenticated
from xiezhi.problems import responses
from xiezhi.tls import peer_names
from xiezhi.wire import (
    MAX_COUNT,
    TOKEN_BYTES,
    UUID_PATTERN,
    ApprovalDecision,
    ApprovalView,
    CreateMatchRequest,
    EpochView,
    EvaluationBatch,
    EvaluationFailure,
    EvaluationResult,
    EvaluationSlot,
    KeyRotation,
    KeyStatus,
    LookupBatch,
    LookupResult,
    MatchRequestView,
    MatchResult,
    OrgCreate,
    OrgRename,
    OrgView,
    PolicyUpdate,
    PolicyView,
    PublicationView,
    RequestSummary,
    StartPublication,
    SystemStatus,
    WorkspaceView,
)

router = APIRouter()
CHUNK = {"type": "string", "format": "binary", "description": "16-byte tokens, concatenated"}
JWK_SET = "application/jwk-set+json"
JWKS_SCHEMA = {
    "type": "object",
    "required": ["keys"],
    "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
}
# Path parameters are checked for their shape before anything reads or records them: the
# ids the gateway hands out are UUIDs, connectors are identifiers, organisations region codes.
RequestId = Annotated[str, Path(pattern=UUID_PATTERN, description="a request's id, as its creation answered")]
PublicationId = Annotated[str, Path(pattern=UUID_PATTERN, description="a publication's id, as its start answered")]
# A connector id (xiezhi.wire.IDENTIFIER_PATTERN) without a run of 15 digits: nothing shaped
# like an ID number reaches the audit log, so such a path is refused here, not by the log.
CONNECTOR_PATTERN = r"^[a-z][a-z_]*(?:[0-9]{1,14}[a-z_]+)*[0-9]{0,14}$"
Connector = Annotated[
    str, Path(pattern=CONNECTOR_PATTERN, max_length=64, description="a connector's id, e.g. housing_fund")
]
RegionCode = Annotated[str, Path(pattern=r"^[0-9]{6}$", description="an organisation's 6-digit region code")]


def gateway_services(app: FastAPI) -> GatewayServices:
    """The services `create_app`'s lifespan built for `app` (only while it runs)."""
    services = getattr(app.state, "services", None)
    if not isinstance(services, GatewayServices):
        raise RuntimeError("the gateway's services exist only while its lifespan runs")
    return services


def _services(request: Request) -> GatewayServices:
    return gateway_services(request.app)


Services = Annotated[GatewayServices, Depends(_services)]


def _principal(request: Request, services: Services) -> Principal:
    """The caller, from its bearer token, held to the client certificate it came over; every
    refusal is an authentication entry in the audit log. (The OpenAPI document describes the
    token as the `bearerAuth` security scheme, gateway.openapi, not as a header parameter.)"""
    authorization = request.headers.get("authorization")
    try:
        principal = services.authenticator.authenticate(authorization)
    except Unauthenticated as exc:
        services.sign_ins.refused(exc.code)
        raise
    certificate = peer_names(request.scope)
    try:
        services.channels.check(principal, certificate)
    except Unauthenticated as exc:
        services.sign_ins.refused(exc.code, principal, certificate)
        raise
    services.sign_ins.accepted(principal, authorization or "")
    services.policy.refresh()  # pick up a policy another instance changed
    return principal


def _admission(services: Services) -> Admission:
    return services.admission


def _pipeline(services: Services) -> Pipeline:
    return services.pipeline


def _publishing(services: Services) -> Publishing:
    return services.publishing


def _approvals(services: Services) -> Approvals:
    return services.approvals


def _policy(services: Services) -> PolicyAdmin:
    return services.policy


def _system(services: Services) -> SystemView:
    return services.system


def _keys(services: Services) -> KeyAdmin:
    return services.keys


Caller = Annotated[Principal, Depends(_principal)]
Admitting = Annotated[Admission, Depends(_admission)]
Running = Annotated[Pipeline, Depends(_pipeline)]
Publisher = Annotated[Publishing, Depends(_publishing)]
Approvers = Annotated[Approvals, Depends(_approvals)]
Policies = Annotated[PolicyAdmin, Depends(_policy)]
System = Annotated[SystemView, Depends(_system)]
Keys = Annotated[KeyAdmin, Depends(_keys)]


@router.get("/healthz", tags=["service"])
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/.well-known/jwks.json",
    tags=["service"],
    response_class=Response,  # the document names its one media type, below
    responses={200: {"description": "the ticket keys' JWK Set", "content": {JWK_SET: {"schema": JWKS_SCHEMA}}}},
)
def ticket_jwks(services: Services) -> JSONResponse:
    """The public keys that verify relay tickets (RFC 7517 JWK Set), for the connectors.

    No caller token: it holds public keys only. It is still served over the gateway's
    mutual TLS, so only holders of a certificate from the deployment's CA reach it.
    """
    return JSONResponse(services.ticket_keys.jwks(), media_type=JWK_SET, headers={"cache-control": "no-cache"})


@router.get("/v1/system/status", tags=["service"], responses=responses(401, 403, 503))
def system_status(caller: Caller, system: System) -> SystemStatus:
    return system.status(caller)


@router.get("/v1/keys", tags=["keys"], responses=responses(401, 403, 503))
def key_status(caller: Caller, keys: Keys) -> KeyStatus:
    """Ids and counts of the keys sealing stored data (security administrator)."""
    return keys.status(caller)


@router.post("/v1/keys/rotate", tags=["keys"], responses=responses(400, 401, 403, 409, 503))
def rotate_keys(caller: Caller, keys: Keys, body: KeyRotation) -> KeyStatus:
    """Rotate the key-encryption key and/or the data key; rewrapping follows in the background."""
    return keys.rotate(caller, body)


@router.get("/v1/models", tags=["models"], responses=responses(401, 503))
def list_models(_: Caller, services: Services) -> list[dict[str, object]]:
    return [
        {"id": m.id, "title": m.title, "subjects": m.subjects.value, "looks_up": m.looks_up, "reveals": m.reveals}
        for m in services.catalog
    ]


@router.post(
    "/v1/requests",
    status_code=201,
    tags=["requests"],
    responses=responses(400, 401, 403, 404, 409, 429, 503),  # 409 approval_required: recorded, waiting
)
def create_request(body: CreateMatchRequest, caller: Caller, admission: Admitting) -> MatchRequestView:
    return admission.create(caller, body)


@router.get("/v1/requests", tags=["requests"], responses=responses(400, 401, 503))
def list_requests(
    caller: Caller, services: Services, limit: Annotated[int, Query(ge=1, le=MAX_LISTED)] = 50
) -> list[RequestSummary]:
    """The caller's own requests, newest first: status, progress, clues found, whether the
    result can still be read. Metadata and counts only."""
    return services.workspace.requests(caller, limit)


@router.get("/v1/me", tags=["requests"], responses=responses(401, 503))
def my_workspace(caller: Caller, services: Services) -> WorkspaceView:
    """Who the caller is, their quota today, and each model with what it looks up (Chinese
    titles and tiers) and whether the policy lets the caller run it."""
    return services.workspace.view(caller)


@router.get("/v1/requests/{request_id}", tags=["requests"], responses=responses(400, 401, 403, 404, 503))
def get_request(request_id: RequestId, caller: Caller, admission: Admitting) -> MatchRequestView:
    return admission.view(caller, request_id)


@router.post(
    "/v1/requests/{request_id}/evaluations/{connector}",
    tags=["requests"],
    responses=responses(400, 401, 403, 404, 409, 422, 502, 503),
)
def evaluate(
    request_id: RequestId, connector: Connector, body: EvaluationBatch, caller: Caller, pipeline: Running
) -> EvaluationResult:
    return pipeline.evaluate(caller, request_id, connector, body)


@router.post(
    "/v1/requests/{request_id}/evaluations/{connector}/failures",
    tags=["requests"],
    responses=responses(400, 401, 403, 404, 409, 503),
)
def report_failure(
    request_id: RequestId, connector: Connector, body: EvaluationFailure, caller: Caller, pipeline: Running
) -> EvaluationSlot:
    """Report that an evaluation of one batch slot did not verify (its proof failed): audited
    against the connector, counted in the system status; the slot then takes another attempt."""
    return pipeline.report_failure(caller, request_id, connector, body)


@router.post("/v1/requests/{request_id}/cancel", tags=["requests"], responses=responses(400, 401, 403, 404, 409, 503))
def cancel(request_id: RequestId, caller: Caller, pipeline: Running) -> MatchRequestView:
    """Cancel one's own request that waits for approval or runs; the quota of its rows never
    looked up goes back. A cancelled request evaluates and looks up nothing more."""
    return pipeline.cancel(caller, request_id)


@router.post("/v1/requests/{request_id}/lookups", tags=["requests"], responses=responses(400, 401, 403, 404, 409, 503))
def lookup(request_id: RequestId, body: LookupBatch, caller: Caller, pipeline: Running) -> LookupResult:
    return pipeline.lookup(caller, request_id, body)


@router.get(
    "/v1/requests/{request_id}/result", tags=["requests"], responses=responses(400, 401, 403, 404, 409, 410, 503)
)
def result(request_id: RequestId, caller: Caller, pipeline: Running) -> MatchResult:
    return pipeline.result(caller, request_id)


@router.post(
    "/v1/connectors/{connector}/publications",
    status_code=201,
    tags=["indexes"],
    responses=responses(400, 401, 403, 404, 409, 503),
)
def start_publication(
    connector: Connector, body: StartPublication, caller: Caller, publishing: Publisher
) -> PublicationView:
    return publishing.start(caller, connector, body)


@router.put(
    "/v1/connectors/{connector}/publications/{publication_id}/chunks/{number}",
    tags=["indexes"],
    responses=responses(400, 401, 403, 404, 409, 503),
    openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {"schema": CHUNK}}}},
)
async def put_chunk(
    connector: Connector,
    publication_id: PublicationId,
    number: Annotated[int, Path(ge=0, le=MAX_COUNT)],
    request: Request,
    caller: Caller,
    publishing: Publisher,
) -> PublicationView:
    data = await _chunk_body(request, publishing.max_chunk_tokens)
    return publishing.chunk(caller, connector, publication_id, number, data)


async def _chunk_body(request: Request, max_tokens: int) -> bytes:
    """A chunk's bytes, refused before they are read when they are not octets or too many."""
    if request.headers.get("content-type") != "application/octet-stream":
        raise InvalidInput("a chunk is sent as application/octet-stream", code="bad_content_type")
    cap = max_tokens * TOKEN_BYTES
    declared = request.headers.get("content-length", "")
    if not re.fullmatch(r"[0-9]{1,12}", declared) or int(declared) > cap:
        raise InvalidInput(f"a chunk needs a content-length of at most {cap} bytes", code="chunk_too_large")
    data = await request.body()
    if len(data) > cap:
        raise InvalidInput(f"a chunk holds at most {cap} bytes", code="chunk_too_large")
    return data


@router.get(
    "/v1/connectors/{connector}/publications/{publication_id}",
    tags=["indexes"],
    responses=responses(400, 401, 403, 404, 503),
)
def get_publication(
    connector: Connector, publication_id: PublicationId, caller: Caller, publishing: Publisher
) -> PublicationView:
    """One of the connector's publications: counts, whether committed, its version."""
    return publishing.view(caller, connector, publication_id)


@router.put(
    "/v1/connectors/{connector}/publications/{publication_id}/removals/{number}",
    tags=["indexes"],
    responses=responses(400, 401, 403, 404, 409, 503),
    openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {"schema": CHUNK}}}},
)
async def put_removals(
    connector: Connector,
    publication_id: PublicationId,
    number: Annotated[int, Path(ge=0, le=MAX_COUNT)],
    request: Request,
    caller: Caller,
    publishing: Publisher,
) -> PublicationView:
    """A chunk of the tokens a delta removes from its base (`base` at its start), in order."""
    data = await _chunk_body(request, publishing.max_chunk_tokens)
    return publishing.chunk(caller, connector, publication_id, number, data, kind="removed")


@router.post(
    "/v1/connectors/{connector}/publications/{publication_id}/commit",
    tags=["indexes"],
    responses=responses(400, 401, 403, 404, 409, 503),
)
def commit_publication(
    connector: Connector, publication_id: PublicationId, caller: Caller, publishing: Publisher
) -> PublicationView:
    return publishing.commit(caller, connector, publication_id)


@router.post(
    "/v1/connectors/{connector}/epochs/{epoch}/activate",
    tags=["indexes"],
    responses=responses(400, 401, 403, 404, 409, 503),
)
def activate_epoch(
    connector: Connector, epoch: Annotated[int, Path(ge=1, le=MAX_COUNT)], caller: Caller, publishing: Publisher
) -> EpochView:
    return publishing.activate(caller, connector, epoch)


# ---- approvals ---------------------------------------------------------------------------


@router.get("/v1/approvals", tags=["approvals"], responses=responses(400, 401, 403, 503))
def list_approvals(caller: Caller, approvals: Approvers, status: str = "pending") -> list[ApprovalView]:
    return approvals.list(caller, status)


@router.get("/v1/approvals/{request_id}", tags=["approvals"], responses=responses(400, 401, 403, 404, 503))
def get_approval(request_id: RequestId, caller: Caller, approvals: Approvers) -> ApprovalView:
    return approvals.get(caller, request_id)


@router.post(
    "/v1/approvals/{request_id}/approve", tags=["approvals"], responses=responses(400, 401, 403, 404, 409, 503)
)
def approve(request_id: RequestId, body: ApprovalDecision, caller: Caller, approvals: Approvers) -> ApprovalView:
    return approvals.approve(caller, request_id, body.reason)


@router.post("/v1/approvals/{request_id}/reject", tags=["approvals"], responses=responses(400, 401, 403, 404, 409, 503))
def reject(request_id: RequestId, body: ApprovalDecision, caller: Caller, approvals: Approvers) -> ApprovalView:
    return approvals.reject(caller, request_id, body.reason)


# ---- policy and organisations ------------------------------------------------------------


@router.get("/v1/policy", tags=["policy"], responses=responses(401, 403, 503))
def get_policy(caller: Caller, policy: Policies) -> PolicyView:
    return policy.view(caller)


@router.put("/v1/policy", tags=["policy"], responses=responses(400, 401, 403, 409, 503))
def put_policy(body: PolicyUpdate, caller: Caller, policy: Policies) -> PolicyView:
    return policy.replace_rules(caller, body.policy)


@router.post("/v1/policy/reload", tags=["policy"], responses=responses(400, 401, 403, 409, 503))
def reload_policy(caller: Caller, policy: Policies) -> PolicyView:
    return policy.reload(caller)


@router.get("/v1/orgs", tags=["policy"], responses=responses(401, 503))
def list_orgs(_: Caller, policy: Policies) -> list[OrgView]:
    return policy.orgs()


@router.post("/v1/orgs", status_code=201, tags=["policy"], responses=responses(400, 401, 403, 404, 409, 503))
def add_org(body: OrgCreate, caller: Caller, policy: Policies) -> list[OrgView]:
    return policy.add_org(caller, Organisation(body.code, body.name, body.parent))


@router.patch("/v1/orgs/{code}", tags=["policy"], responses=responses(400, 401, 403, 404, 409, 503))
def rename_org(code: RegionCode, body: OrgRename, caller: Caller, policy: Policies) -> list[OrgView]:
    return policy.rename_org(caller, code, body.name)


@router.delete("/v1/orgs/{code}", tags=["policy"], responses=responses(400, 401, 403, 404, 409, 503))
def remove_org(code: RegionCode, caller: Caller, policy: Policies) -> list[OrgView]:
    return policy.remove_org(caller, code)
