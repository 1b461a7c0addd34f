"""HTTP routes of the gateway. Routes parse, authenticate and delegate; nothing more.

Each route gets the service it delegates to as a typed dependency over the one
`GatewayServices` the lifespan built (`gateway_services`): a request is admitted by
`Admission` and run step by step by the `Pipeline`.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Request
from fastapi.responses import JSONResponse

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
from xiezhi.errors import InvalidInput, Unauthenticated
from xiezhi.tls import peer_names
from xiezhi.wire import (
    MAX_COUNT,
    TOKEN_BYTES,
    ApprovalDecision,
    ApprovalView,
    CreateMatchRequest,
    EpochView,
    EvaluationBatch,
    EvaluationResult,
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
    StartPublication,
    SystemStatus,
)

router = APIRouter()


def gateway_services(app: FastAPI) -> GatewayServices:
    """The services `create_app`'s lifespan built for `app` (only while it runs)."""
    services = getattr(app.state, "services", None)
    if not isinstance(services, GatewayServices):
        raise RuntimeError("the gateway's services exist only while its lifespan runs")
    return services


def _services(request: Request) -> GatewayServices:
    return gateway_services(request.app)


Services = Annotated[GatewayServices, Depends(_services)]


def _principal(
    request: Request, services: Services, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    """The caller, from its bearer token, held to the client certificate it came over; every
    refusal is an authentication entry in the audit log."""
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


@router.get("/.well-known/jwks.json", tags=["service"], response_class=JSONResponse)
def ticket_jwks(services: Services) -> JSONResponse:
    """The public keys that verify relay tickets (RFC 7517 JWK Set), for the connectors.

    No caller token: it holds public keys only. It is still served over the gateway's
    mutual TLS, so only holders of a certificate from the deployment's CA reach it.
    """
    return JSONResponse(
        services.ticket_keys.jwks(), media_type="application/jwk-set+json", headers={"cache-control": "no-cache"}
    )


@router.get("/v1/system/status", tags=["service"])
def system_status(caller: Caller, system: System) -> SystemStatus:
    return system.status(caller)


@router.get("/v1/keys", tags=["keys"])
def key_status(caller: Caller, keys: Keys) -> KeyStatus:
    """Ids and counts of the keys sealing stored data (security administrator)."""
    return keys.status(caller)


@router.post("/v1/keys/rotate", tags=["keys"])
def rotate_keys(caller: Caller, keys: Keys, body: KeyRotation) -> KeyStatus:
    """Rotate the key-encryption key and/or the data key; rewrapping follows in the background."""
    return keys.rotate(caller, body)


@router.get("/v1/models", tags=["models"])
def list_models(_: Caller, services: Services) -> list[dict[str, object]]:
    return [
        {"id": m.id, "title": m.title, "subjects": m.subjects.value, "looks_up": m.looks_up, "reveals": m.reveals}
        for m in services.catalog
    ]


@router.post(
    "/v1/requests",
    status_code=201,
    tags=["requests"],
    responses={409: {"description": "recorded, and waiting for approval (code approval_required)"}},
)
def create_request(body: CreateMatchRequest, caller: Caller, admission: Admitting) -> MatchRequestView:
    return admission.create(caller, body)


@router.get("/v1/requests/{request_id}", tags=["requests"])
def get_request(request_id: str, caller: Caller, admission: Admitting) -> MatchRequestView:
    return admission.view(caller, request_id)


@router.post("/v1/requests/{request_id}/evaluations/{connector}", tags=["requests"])
def evaluate(
    request_id: str, connector: str, body: EvaluationBatch, caller: Caller, pipeline: Running
) -> EvaluationResult:
    return pipeline.evaluate(caller, request_id, connector, body)


@router.post("/v1/requests/{request_id}/lookups", tags=["requests"])
def lookup(request_id: str, body: LookupBatch, caller: Caller, pipeline: Running) -> LookupResult:
    return pipeline.lookup(caller, request_id, body)


@router.get("/v1/requests/{request_id}/result", tags=["requests"])
def result(request_id: str, caller: Caller, pipeline: Running) -> MatchResult:
    return pipeline.result(caller, request_id)


@router.post("/v1/connectors/{connector}/publications", status_code=201, tags=["indexes"])
def start_publication(connector: str, body: StartPublication, caller: Caller, publishing: Publisher) -> PublicationView:
    return publishing.start(caller, connector, body)


@router.put("/v1/connectors/{connector}/publications/{publication_id}/chunks/{number}", tags=["indexes"])
async def put_chunk(
    connector: str,
    publication_id: str,
    number: Annotated[int, Path(ge=0, le=MAX_COUNT)],
    request: Request,
    caller: Caller,
    publishing: Publisher,
) -> PublicationView:
    if request.headers.get("content-type") != "application/octet-stream":
        raise InvalidInput("a chunk is sent as application/octet-stream", code="bad_content_type")
    cap = publishing.max_chunk_tokens * TOKEN_BYTES
    declared = request.headers.get("content-length", "")
    if not re.fullmatch(r"[0-9]{1,12}", declared) or int(declared) > cap:
        raise InvalidInput(f"a chunk needs a content-length of at most {cap} bytes", code="chunk_too_large")
    data = await request.body()
    if len(data) > cap:
        raise InvalidInput(f"a chunk holds at most {cap} bytes", code="chunk_too_large")
    return publishing.chunk(caller, connector, publication_id, number, data)


@router.post("/v1/connectors/{connector}/publications/{publication_id}/commit", tags=["indexes"])
def commit_publication(connector: str, publication_id: str, caller: Caller, publishing: Publisher) -> PublicationView:
    return publishing.commit(caller, connector, publication_id)


@router.post("/v1/connectors/{connector}/epochs/{epoch}/activate", tags=["indexes"])
def activate_epoch(
    connector: str, epoch: Annotated[int, Path(ge=1, le=MAX_COUNT)], caller: Caller, publishing: Publisher
) -> EpochView:
    return publishing.activate(caller, connector, epoch)


# ---- approvals ---------------------------------------------------------------------------


@router.get("/v1/approvals", tags=["approvals"])
def list_approvals(caller: Caller, approvals: Approvers, status: str = "pending") -> list[ApprovalView]:
    return approvals.list(caller, status)


@router.get("/v1/approvals/{request_id}", tags=["approvals"])
def get_approval(request_id: str, caller: Caller, approvals: Approvers) -> ApprovalView:
    return approvals.get(caller, request_id)


@router.post("/v1/approvals/{request_id}/approve", tags=["approvals"])
def approve(request_id: str, body: ApprovalDecision, caller: Caller, approvals: Approvers) -> ApprovalView:
    return approvals.approve(caller, request_id, body.reason)


@router.post("/v1/approvals/{request_id}/reject", tags=["approvals"])
def reject(request_id: str, body: ApprovalDecision, caller: Caller, approvals: Approvers) -> ApprovalView:
    return approvals.reject(caller, request_id, body.reason)


# ---- policy and organisations ------------------------------------------------------------


@router.get("/v1/policy", tags=["policy"])
def get_policy(caller: Caller, policy: Policies) -> PolicyView:
    return policy.view(caller)


@router.put("/v1/policy", tags=["policy"])
def put_policy(body: PolicyUpdate, caller: Caller, policy: Policies) -> PolicyView:
    return policy.replace_rules(caller, body.policy)


@router.post("/v1/policy/reload", tags=["policy"])
def reload_policy(caller: Caller, policy: Policies) -> PolicyView:
    return policy.reload(caller)


@router.get("/v1/orgs", tags=["policy"])
def list_orgs(_: Caller, policy: Policies) -> list[OrgView]:
    return policy.orgs()


@router.post("/v1/orgs", status_code=201, tags=["policy"])
def add_org(body: OrgCreate, caller: Caller, policy: Policies) -> list[OrgView]:
    return policy.add_org(caller, Organisation(body.code, body.name, body.parent))


@router.patch("/v1/orgs/{code}", tags=["policy"])
def rename_org(code: str, body: OrgRename, caller: Caller, policy: Policies) -> list[OrgView]:
    return policy.rename_org(caller, code, body.name)


@router.delete("/v1/orgs/{code}", tags=["policy"])
def remove_org(code: str, caller: Caller, policy: Policies) -> list[OrgView]:
    return policy.remove_org(caller, code)
