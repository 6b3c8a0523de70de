"""Interactive API docs served from local files: Swagger UI at /docs and ReDoc at /redoc work without internet.

FastAPI's default pages load their JavaScript from a CDN, which a beamline network often cannot reach. The assets
come from the `fastapi-offline` package (its static folder: swagger-ui-bundle.js, swagger-ui.css,
redoc.standalone.js); only those files are used, mounted under /docs-assets.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"


def assets_dir() -> Path:
    """Folder of the Swagger UI / ReDoc files (from the fastapi-offline package)."""
    import fastapi_offline

    folder = Path(fastapi_offline.__file__).parent / "static"
    if not (folder / "swagger-ui-bundle.js").is_file():
        raise RuntimeError(f"Swagger UI assets missing in {folder}; reinstall fastapi-offline")
    return folder


def install_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Add /docs, /redoc and the OAuth2 redirect page, all loading their assets from this server.

    The app must be created with docs_url=None and redoc_url=None (so FastAPI's CDN pages are not registered).
    """
    app.mount(ASSETS, StaticFiles(directory=assets_dir()), name="docs-assets")
    title = app.title
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2 = docs_url + "/oauth2-redirect"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui():
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{title} - Swagger UI",
                                   swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS}/favicon.png", oauth2_redirect_url=oauth2)

    @app.get(oauth2, include_in_schema=False)
    async def swagger_ui_redirect():
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    async def redoc():
        return get_redoc_html(openapi_url=openapi_url, title=f"{title} - ReDoc",
                              redoc_js_url=f"{ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{ASSETS}/favicon.png", with_google_fonts=False)
