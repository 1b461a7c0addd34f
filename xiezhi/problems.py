"""Render every error as an RFC 9457 problem detail, in one place, for gateway and connectors.

Validation errors name the fields that failed and why, never the values sent: a body
could carry something that must not be echoed or logged.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from xiezhi.errors import Extension, XiezhiError
from xiezhi.wire import Problem

PROBLEM_JSON = "application/problem+json"
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")  # a field or parameter name, not a value
_HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
RETRY_UNAVAILABLE_SECONDS = 5  # Retry-After of a 503: storage, the audit log or a dependency not ready
log = logging.getLogger("xiezhi.problems")


# What each error status means, as the OpenAPI document describes it (xiezhi.errors has the tree).
STATUS_MEANINGS = {
    400: "invalid input: a body, a parameter or a file that fails validation (code names which)",
    401: "no valid bearer token, or one not accepted over this client certificate",
    403: "authenticated, but the policy refuses (code: the reason)",
    404: "no such resource, or one that is not the caller's",
    409: "the resource's state does not allow this (yet): a conflict, or a request waiting for approval",
    410: "deleted on purpose, such as a result past its retention period",
    422: "a blinded element or proof that does not decode or verify",
    429: "a quota is spent; Retry-After says when it resets",
    502: "a connector failed, timed out or answered badly",
    503: "storage is full, the audit log or an index is not ready; nothing was done; retry later",
}


_RETRY_AFTER = {"description": "seconds to wait before trying again", "schema": {"type": "integer", "minimum": 1}}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    429: {"Retry-After": _RETRY_AFTER},
    503: {"Retry-After": _RETRY_AFTER},
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route that answers `statuses` as RFC 9457 problem details, for
    its OpenAPI operation (the document's `Problem` schema is `xiezhi.wire.Problem`)."""
    schema = {"$ref": "#/components/schemas/Problem"}
    declared: dict[int | str, dict[str, Any]] = {}
    for status in sorted(statuses):
        declared[status] = {"description": STATUS_MEANINGS[status], "content": {PROBLEM_JSON: {"schema": schema}}}
        if status in _HEADERS:
            declared[status]["headers"] = _HEADERS[status]
    return declared


def problem(
    status: int,
    title: str,
    detail: str,
    code: str,
    headers: dict[str, str] | None = None,
    extensions: Mapping[str, Extension] | None = None,
) -> JSONResponse:
    # Only the extension members a problem declares leave the service; others (an internal
    # error's key id, say) are for the server's own handling, never the caller.
    members = {k: v for k, v in (extensions or {}).items() if k in Problem.model_fields}
    body = Problem.model_validate({"title": title, "status": status, "detail": detail, "code": code, **members})
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def validation_problem(errors: Sequence[Any]) -> tuple[str, str, str]:
    """Title, detail and code of the 400 answering a request that failed validation.

    A bad body is `invalid_body`; a bad path, query or header parameter is `bad_<name>`, the
    first that failed (as the auditor's search names a bad filter). The detail names every
    failing field (at most ten) and why, never the value sent.
    """
    located = [tuple(_loc_part(part) for part in error.get("loc", ())) for error in errors[:10]]
    fields = "; ".join(
        f"{'.'.join(loc)}: {error.get('msg', 'invalid')}" for loc, error in zip(located, errors, strict=False)
    )
    first = located[0] if located else ("body",)
    if first[0] == "body" or len(first) < 2:
        return "InvalidInput", f"request body failed validation: {fields}", "invalid_body"
    return "InvalidInput", f"request parameter failed validation: {fields}", f"bad_{first[1].lower().replace('-', '_')}"


def render(exc: XiezhiError) -> JSONResponse:
    """`exc` as the problem detail the caller gets, with WWW-Authenticate on a 401 and
    Retry-After on a 429 (until the quota resets) or a 503 (a few seconds)."""
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    resets_at = exc.extensions.get("resets_at")
    if exc.status == 429 and isinstance(resets_at, datetime):
        wait = math.ceil((resets_at - datetime.now(UTC)).total_seconds())
        headers["Retry-After"] = str(max(wait, 1))
    if exc.status == 503:
        headers["Retry-After"] = str(RETRY_UNAVAILABLE_SECONDS)
    return problem(exc.status, type(exc).__name__, exc.public_message, exc.code, headers, exc.extensions)


def internal_error(exc: BaseException) -> JSONResponse:
    """The one answer to an error no one named: 500, the type logged, nothing else said."""
    # The type only: an exception message could quote data.
    log.error("unexpected %s", type(exc).__name__)
    return problem(500, "InternalError", "internal error", "internal_error")


def _loc_part(part: object) -> str:
    """A step of a failing field's location: a field name or a list index as it is, anything
    else (a mapping's key is the caller's own text) as `*`, so the detail never echoes a value."""
    text = str(part)
    return text if isinstance(part, int) or _FIELD.match(text) else "*"


def allowed_methods(request: Request, named: str | None) -> str:
    """Every method served at this request's path, for a 405's `Allow` (RFC 9110 §15.5.6):
    those Starlette `named` (only the first route that matched the path) and those the
    application's OpenAPI document lists there (FastAPI makes one route per method)."""
    methods = {method.strip() for method in (named or "").split(",") if method.strip()}
    for template, item in request.app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\{[^}/]+\}", "[^/]+", template), request.url.path):
            methods |= {method.upper() for method in item if method in _HTTP_METHODS}
    return ", ".join(sorted(methods))


def install(app: FastAPI) -> None:
    @app.exception_handler(XiezhiError)
    async def _xiezhi(_: Request, exc: XiezhiError) -> JSONResponse:
        return render(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        title, detail, code = validation_problem(exc.errors())
        return problem(400, title, detail, code)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not parse the body at all (not UTF-8, a broken form)
            return problem(400, "InvalidInput", "request body could not be parsed", "invalid_body")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request, headers.get("Allow"))
        return problem(exc.status_code, "HTTPError", str(exc.detail), f"http_{exc.status_code}", headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return internal_error(exc)
