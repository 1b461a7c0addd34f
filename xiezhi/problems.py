"""Render every error as an RFC 9457 problem detail, in one place, for gateway and connectors.

Validation errors name the fields that failed and why, never the values sent: a body
could carry something that must not be echoed or logged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from xiezhi.errors import Extension, XiezhiError
from xiezhi.wire import Problem

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("xiezhi.problems")


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


def install(app: FastAPI) -> None:
    @app.exception_handler(XiezhiError)
    async def _xiezhi(_: Request, exc: XiezhiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        resets_at = exc.extensions.get("resets_at")
        if exc.status == 429 and isinstance(resets_at, datetime):
            wait = math.ceil((resets_at - datetime.now(UTC)).total_seconds())
            headers["Retry-After"] = str(max(wait, 1))
        return problem(exc.status, type(exc).__name__, exc.public_message, exc.code, headers, exc.extensions)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()[:10]
        )
        return problem(400, "InvalidInput", f"request body failed validation: {fields}", "invalid_body")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, "HTTPError", str(exc.detail), f"http_{exc.status_code}")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # The type only: an exception message could quote data.
        log.error("unexpected %s", type(exc).__name__)
        return problem(500, "InternalError", "internal error", "internal_error")
