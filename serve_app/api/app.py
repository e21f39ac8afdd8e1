"""The FastAPI application of one ingress replica: routes, error mapping, the web page and the ASGI
middleware (key check and size limit on uploads, CORS)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from serve_app.api.access import RequireApiKey
from serve_app.api.errors import install_error_handlers
from serve_app.api.limits import UploadSizeLimit
from serve_app.api.routes import api_router, websocket_router
from serve_app.api.services import Services
from serve_app.web import install_web

UPLOAD_PATH = "/api/v1/transcribe"
# Multipart boundaries and the small form fields ride on top of the file itself.
_MULTIPART_ALLOWANCE = 64 * 1024


def create_api(services: Services) -> FastAPI:
    settings = services.settings
    api = FastAPI(title="stemscribe", version="0.1.0", description="Songs in; stems, multi-track MIDI and notes out.")
    api.state.services = services
    install_error_handlers(api, settings.retry_after_seconds)
    api.include_router(api_router)
    api.include_router(websocket_router)
    # The page at `/` and its files under `/web/`: public, and only a client of the routes above.
    install_web(api)
    api.add_middleware(
        UploadSizeLimit,
        path_suffix=UPLOAD_PATH,
        max_body_bytes=settings.max_upload_bytes + _MULTIPART_ALLOWANCE,
        max_upload_megabytes=settings.max_upload_megabytes,
    )
    # Outside the size limit: an upload without a valid key is refused before a byte of its body is read.
    api.add_middleware(RequireApiKey, path_suffix=UPLOAD_PATH, services=services)
    # Added last, so outermost: even an early 401 or 413 carries the CORS headers a browser needs to read it.
    if settings.cors_origin_list:
        api.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Idempotency-Key", "Content-Type"],
            expose_headers=["Location", "Retry-After"],
        )
    return api
