"""`GET /docs` with Swagger UI served by this server (from the `swagger-ui-bundle-v2` package),
not from a CDN: FastAPI's default page loads its script and style from cdn.jsdelivr.net and is
blank offline or behind a firewall. ReDoc, which has no packaged assets, is off."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import Response

DOCS_URL = "/docs"
# the files the page loads, and their content types (paths open without a key: access.OPEN_PATHS)
ASSETS = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8",
          "swagger-ui.css": "text/css; charset=utf-8",
          "favicon-32x32.png": "image/png"}
ASSET_PATHS = frozenset(f"{DOCS_URL}/{name}" for name in ASSETS)


def add_docs_routes(app: FastAPI) -> None:
    """Swagger UI at DOCS_URL, its assets beside it (read once, at start)."""
    from swagger_ui_bundle import swagger_ui_path

    files = {name: (swagger_ui_path / name).read_bytes() for name in ASSETS}

    @app.get(DOCS_URL, include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json",
                                   title=f"{app.title} - docs",
                                   swagger_js_url=f"{DOCS_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_URL}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_URL}/favicon-32x32.png")

    for name, media_type in ASSETS.items():
        def asset(body: bytes = files[name], media_type: str = media_type) -> Response:
            return Response(body, media_type=media_type, headers={"cache-control": "max-age=86400"})

        app.add_api_route(f"{DOCS_URL}/{name}", asset, methods=["GET"], include_in_schema=False)
