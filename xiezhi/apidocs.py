"""The API docs page (`/docs`, Swagger UI) served entirely from this installation.

FastAPI's default `/docs` loads Swagger UI's JavaScript and CSS from a CDN, so on a
procuratorate's closed network the page is blank. Here the assets come from the pinned
`swagger-ui-bundle` package and are served under `/docs/assets/`: only the few files the
page needs, from a fixed list (no path is ever joined from input). Apps are built with
`docs_url=None` and call `install(app)`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

DOCS = "/docs"
ASSETS = "/docs/assets"
_FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}


def asset_dir() -> Path:
    """The folder of Swagger UI's files inside the installed swagger-ui-bundle package."""
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


def asset_urls() -> list[str]:
    return [f"{ASSETS}/{name}" for name in _FILES]


def install(app: FastAPI, openapi_url: str = "/openapi.json") -> None:
    """Add `/docs` and its assets as plain routes, outside the OpenAPI document — like FastAPI's own."""
    folder = asset_dir()
    missing = [name for name in _FILES if not (folder / name).is_file()]
    if missing:  # a broken install: say so at start, not as a blank page
        raise RuntimeError(f"swagger-ui-bundle lacks {', '.join(missing)} in {folder}")

    async def docs(_: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} — API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        media_type = _FILES.get(name)
        if media_type is None:
            return Response(status_code=404)
        return FileResponse(
            folder / name,
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
        )

    app.add_route(DOCS, docs, include_in_schema=False)
    app.add_route(ASSETS + "/{name}", asset, include_in_schema=False)
