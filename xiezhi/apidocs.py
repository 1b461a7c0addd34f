"""The API docs pages (`/docs`, Swagger UI; `/redoc`, ReDoc) served entirely from this
installation.

FastAPI's default pages load their JavaScript and CSS from a CDN (ReDoc its fonts from
Google too), so on a procuratorate's closed network they are blank. Here Swagger UI's assets
come from the pinned `swagger-ui-bundle` package and ReDoc's standalone script from the
pinned `fastapi-offline` package's static files, served under `/docs/assets/`: only the few
files the pages need, from a fixed list (no path is ever joined from input); ReDoc is asked
for no web fonts. Apps are built with `docs_url=None, redoc_url=None` and call `install(app)`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

DOCS = "/docs"
REDOC = "/redoc"
ASSETS = "/docs/assets"
_FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
_REDOC_FILES = {"redoc.standalone.js": "text/javascript; charset=utf-8"}


def asset_dir() -> Path:
    """The folder of Swagger UI's files inside the installed swagger-ui-bundle package."""
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


def redoc_dir() -> Path:
    """The folder of ReDoc's standalone script inside the installed fastapi-offline package."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def asset_urls() -> list[str]:
    return [f"{ASSETS}/{name}" for name in (*_FILES, *_REDOC_FILES)]


def install(app: FastAPI, openapi_url: str = "/openapi.json") -> None:
    """Add `/docs` and its assets as plain routes, outside the OpenAPI document — like FastAPI's own."""
    places = {name: asset_dir() for name in _FILES} | {name: redoc_dir() for name in _REDOC_FILES}
    media = _FILES | _REDOC_FILES
    missing = [f"{folder / name}" for name, folder in places.items() if not (folder / name).is_file()]
    if missing:  # a broken install: say so at start, not as a blank page
        raise RuntimeError(f"the API docs' assets are missing: {', '.join(missing)}")

    async def docs(_: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} — API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

    async def redoc(_: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} — API",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon-32x32.png",
            with_google_fonts=False,
        )

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        media_type = media.get(name)
        if media_type is None:
            return Response(status_code=404)
        return FileResponse(
            places[name] / name,
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
        )

    app.add_route(DOCS, docs, include_in_schema=False)
    app.add_route(REDOC, redoc, include_in_schema=False)
    app.add_route(ASSETS + "/{name}", asset, include_in_schema=False)
