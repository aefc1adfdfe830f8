"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from the service itself: no CDN, no request anywhere else.

FastAPI's own pages load both from a CDN, so they stay blank on a machine without internet. The scripts here come
from the `fastapi-offline` package (its ``static`` folder: Swagger UI's and ReDoc's release bundles). ReDoc's
sidebar still asks a third party for its logo; the pages' Content-Security-Policy keeps the browser from sending
that request (ReDoc then leaves the logo out).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS_URL", "CONTENT_SECURITY_POLICY", "add_docs_pages"]

ASSETS_URL = "/docs-assets"
# Inline scripts and styles: both pages start their bundle from an inline <script>; everything else: this origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)


def _assets() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def add_docs_pages(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve Swagger UI at `docs_url` and ReDoc at `redoc_url` from local assets (create `app` with both set to
    None, so that FastAPI's CDN pages are not registered first)."""
    openapi_url = app.openapi_url or "/openapi.json"
    app.mount(ASSETS_URL, StaticFiles(directory=_assets()), name="docs-assets")
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY}

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
        page.headers.update(headers)
        return page

    @app.get(redoc_url, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
        page.headers.update(headers)
        return page
