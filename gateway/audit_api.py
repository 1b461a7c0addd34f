"""HTTP routes of the audit log itself: keys, checkpoints, proofs, verification, export."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from gateway.api import Caller, Services
from gateway.audit_proofs import AuditProofs
from gateway.review_filters import MAX_POSITION
from xiezhi.problems import responses
from xiezhi.wire import CheckpointView, ConsistencyProofView, InclusionProofView, LogKeyView, VerificationView

router = APIRouter(prefix="/v1/audit", tags=["audit log"])
READS = responses(401, 403, 503)  # what every read of the log can answer besides its result
LOOKS_UP = responses(400, 401, 403, 404, 503)  # … and one that names a size or position


def _proofs(services: Services) -> AuditProofs:
    return services.audit_proofs


Proofs = Annotated[AuditProofs, Depends(_proofs)]
Size = Annotated[
    int | None, Query(ge=0, le=MAX_POSITION, description="a checkpointed tree size; the latest by default")
]
Position = Annotated[int, Query(ge=0, le=MAX_POSITION)]


@router.get("/log-key", responses=READS)
def log_key(caller: Caller, proofs: Proofs) -> LogKeyView:
    return proofs.log_key(caller)


@router.get("/checkpoints", responses=LOOKS_UP)
def checkpoints(
    caller: Caller,
    proofs: Proofs,
    since: Position = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[CheckpointView]:
    return proofs.checkpoints(caller, since, limit)


@router.get("/checkpoint", responses=LOOKS_UP)
def checkpoint(caller: Caller, proofs: Proofs, size: Size = None) -> CheckpointView:
    return proofs.checkpoint(caller, size)


@router.get("/proofs/inclusion", responses=LOOKS_UP)
def inclusion(caller: Caller, proofs: Proofs, seq: Position, size: Size = None) -> InclusionProofView:
    return proofs.inclusion(caller, seq, size)


@router.get("/proofs/consistency", responses=LOOKS_UP)
def consistency(caller: Caller, proofs: Proofs, first: Position, second: Position) -> ConsistencyProofView:
    return proofs.consistency(caller, first, second)


@router.get("/verification", responses=READS)
def verification(caller: Caller, proofs: Proofs) -> VerificationView:
    return proofs.verification(caller)


@router.get(
    "/export/entries.jsonl",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/jsonl": {}}, "description": "canonical entries, one per line"},
        **LOOKS_UP,
    },
)
def export_entries(caller: Caller, proofs: Proofs, size: Size = None) -> StreamingResponse:
    """Entries 0…size−1, one canonical entry per line; pair with /checkpoints to verify offline."""
    count, lines = proofs.export_entries(caller, size)
    return StreamingResponse(lines, media_type="application/jsonl", headers={"x-xiezhi-tree-size": str(count)})
