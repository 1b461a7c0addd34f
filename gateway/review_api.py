"""HTTP routes of the security auditor's review: search, entry detail, CSV export, anomalies, console.

Routes parse and delegate to `AuditReview`, which authorizes and records every call. Query
parameters arrive as text and are checked there, after the decision is recorded, so a bad
value is a 400 problem with a code naming the parameter. The console is static files
(HTML, JavaScript, CSS; no build step, nothing from elsewhere) served under `/console/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi import Path as PathParameter
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse

from gateway.api import Caller, Services
from gateway.audit_review import AuditReview
from gateway.review_filters import RawQuery
from xiezhi.errors import NotFound
from xiezhi.problems import responses
from xiezhi.wire import AnomalyTriage, AnomalyView, AuditEntryDetail, AuditEntryPage, TriageView

router = APIRouter()
SEARCHES = responses(400, 401, 403, 503)  # a search: its filters, the caller, the log

CONSOLE = Path(__file__).resolve().parent / "console"
_ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "proof.js": "text/javascript; charset=utf-8",
}
# The console loads nothing but its own files and talks to nothing but this gateway.
_CONSOLE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _review(services: Services) -> AuditReview:
    return services.review


Review = Annotated[AuditReview, Depends(_review)]


def _filters(
    since: str | None = None,
    until: str | None = None,
    user: str | None = None,
    org: str | None = None,
    model: str | None = None,
    connector: str | None = None,
    decision: str | None = None,
    purpose: str | None = None,
    kind: str | None = None,
    request_id: str | None = None,
    seqs: str | None = None,
) -> RawQuery:
    """The search filters as sent; AuditReview checks them (see gateway/review_filters.py)."""
    return {
        "since": since,
        "until": until,
        "user": user,
        "org": org,
        "model": model,
        "connector": connector,
        "decision": decision,
        "purpose": purpose,
        "kind": kind,
        "request_id": request_id,
        "seqs": seqs,
    }


Filters = Annotated[RawQuery, Depends(_filters)]


@router.get("/v1/audit/entries", tags=["audit"], responses=SEARCHES)
def audit_entries(
    caller: Caller, review: Review, filters: Filters, limit: str | None = None, before: str | None = None
) -> AuditEntryPage:
    """Entries newest first, `limit` (default 100, at most 1000) at a time; pass `next_before` as `before`."""
    return review.search(caller, filters, limit, before)


@router.get(
    "/v1/audit/entries.csv",
    tags=["audit"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "UTF-8 with a byte-order mark"}, **SEARCHES},
)
def audit_entries_csv(caller: Caller, review: Review, filters: Filters) -> StreamingResponse:
    """Every matching entry as CSV, newest first; recorded in the log as an `audit.export` entry."""
    export = review.export_csv(caller, filters)
    return StreamingResponse(
        export.chunks,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="audit-entries.csv"', "X-Export-Rows": str(export.rows)},
    )


@router.get("/v1/audit/entries/{seq}", tags=["audit"], responses=responses(400, 401, 403, 404, 503))
def audit_entry(seq: str, caller: Caller, review: Review) -> AuditEntryDetail:
    return review.entry(caller, seq)


@router.get("/v1/audit/policy-changes", tags=["audit"], responses=SEARCHES)
def audit_policy_changes(
    caller: Caller, review: Review, limit: str | None = None, before: str | None = None
) -> AuditEntryPage:
    return review.policy_changes(caller, limit, before)


@router.post("/v1/audit/anomalies/{key}/triage", tags=["audit"], responses=responses(400, 401, 403, 404, 503))
def triage_anomaly(
    key: Annotated[str, PathParameter(pattern=r"^[0-9a-f]{24}$")], body: AnomalyTriage, caller: Caller, review: Review
) -> TriageView:
    """Mark an anomaly flag (by its `key`) acknowledged, escalated or dismissed, with a note.
    标记异常提示为已确认、已上报或已排除，并附说明。The triage is itself audited."""
    return review.triage(caller, key, body)


@router.get("/v1/audit/anomalies", tags=["audit"], responses=SEARCHES)
def audit_anomalies(
    caller: Caller, review: Review, since: str | None = None, until: str | None = None
) -> list[AnomalyView]:
    """Flags raised between `since` and `until` (default: the last 7 days), newest first."""
    return review.anomalies(caller, since, until)


# ---- the console -------------------------------------------------------------------------


@router.get("/console", include_in_schema=False)
def console_root() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=308)


@router.get("/console/", include_in_schema=False)
def console_index() -> FileResponse:
    return console_asset("index.html")


@router.get("/console/{name}", include_in_schema=False)
def console_asset(name: str) -> FileResponse:
    """One of the console's own files; anything else is 404 (no path is ever joined from input)."""
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFound("no such console file", code="not_found")
    return FileResponse(CONSOLE / name, media_type=media_type, headers=_CONSOLE_HEADERS)
