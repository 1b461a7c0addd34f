"""Render every error as an RFC 9457 problem detail, in one place, for gateway and connectors.

Validation errors name the fields that failed and why, never the values sent: a body
could carry something that must not be echoed or logged.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from xiezhi.errors import XiezhiError
from xiezhi.wire import Problem

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("xiezhi.problems")


def problem(status: int, title: str, detail: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        Problem(title=title, status=status, detail=detail, code=code).model_dump(),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(XiezhiError)
    async def _xiezhi(_: Request, exc: XiezhiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return problem(exc.status, type(exc).__name__, exc.public_message, exc.code, headers)

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
