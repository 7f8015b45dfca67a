"""``/docs`` without a network: the Swagger UI page loads its script and stylesheet from this server.

FastAPI's default page pulls them from a CDN, so offline (or behind a strict firewall) ``/docs`` is blank.
The files come from the ``swagger-ui-bundle-v2`` package (a dependency), never from this repository.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: where the Swagger UI distribution is mounted
DOCS_STATIC = "/docs-static"


def swagger_dist() -> Path:
    return Path(str(swagger_ui_bundle.swagger_ui_path))


def add_offline_docs(app: FastAPI, docs_url: str = "/docs") -> None:
    """Serve Swagger UI at ``docs_url`` from local assets; create the app with ``docs_url=None``."""
    app.mount(DOCS_STATIC, StaticFiles(directory=swagger_dist()), name="docs-static")
    redirect_url = docs_url + "/oauth2-redirect"

    @app.get(docs_url, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} · API",
            swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_STATIC}/favicon-32x32.png", oauth2_redirect_url=redirect_url)

    @app.get(redirect_url, include_in_schema=False)
    def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
