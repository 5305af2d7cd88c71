"""Swagger UI at ``/docs``, served from this process (FastAPI's self-hosting recipe), so it works offline.

The assets come from the ``swagger-ui-bundle`` package (the Swagger UI distribution packaged for Python
by the spec-first/connexion maintainers) and are mounted at ``/docs/static``; the page references
nothing outside the service.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS_URL = "/docs"
STATIC_URL = "/docs/static"


def install_docs(app: FastAPI) -> None:
    """Add ``GET /docs`` and its assets to ``app`` (created with ``docs_url=None``)."""
    app.mount(STATIC_URL, StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{STATIC_URL}/swagger-ui-bundle.js", swagger_css_url=f"{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_URL}/favicon-32x32.png",
        )
