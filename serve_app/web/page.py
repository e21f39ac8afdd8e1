"""The web page: static HTML, CSS and ES modules shipped inside the package (no build step).

The page is a client of the documented API like any other: it sends the key the user typed, follows
jobs over the WebSocket with an events token and downloads results through `/api/v1`. Nothing here
reads the database or storage, so the page and its files are public and need no key."""

from __future__ import annotations

import logging
import os
from os import PathLike
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
WEB_PREFIX = "/web"
# The page keeps an API key in the tab: scripts only from here (no inline script, so an injected tag
# cannot run) and no framing. Results may come from another origin (presigned S3 URLs), hence the
# wider media and connect sources; blob: is how a result fetched with the key is played.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "media-src 'self' blob: http: https:", "connect-src 'self' ws: wss: http: https:",
    "object-src 'none'", "base-uri 'self'", "form-action 'self'", "frame-ancestors 'none'",
])  # fmt: skip
_PAGE_HEADERS = {
    # no-cache: a redeploy's page and scripts are picked up on the next load (the browser revalidates).
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def install_web(app: FastAPI) -> None:
    """Serve `index.html` at `/` and the page's files under `/web/`, outside the OpenAPI document."""
    index = STATIC_DIR / "index.html"
    if not index.is_file():
        # A broken install (package data left out) should say so, not answer 404 at `/`.
        raise FileNotFoundError(f"the web page is missing from the package: {index}")

    @app.get("/", include_in_schema=False)
    async def web_page() -> FileResponse:
        return FileResponse(index, media_type="text/html", headers=_PAGE_HEADERS)

    app.mount(WEB_PREFIX, _NoCacheStaticFiles(directory=STATIC_DIR), name="web")
    logger.debug("web page served at / from %s", STATIC_DIR)


class _NoCacheStaticFiles(StaticFiles):
    """StaticFiles whose answers are revalidated (ETag / Last-Modified) instead of cached blindly."""

    def file_response(
        self, full_path: PathLike[str] | str, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response
