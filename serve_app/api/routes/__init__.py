"""The routes, one router per resource; `serve_app.api.app` includes them."""

from __future__ import annotations

from fastapi import APIRouter

from serve_app.api.errors import PROBLEM_RESPONSES
from serve_app.api.routes import events, health, jobs, results, uploads

api_router = APIRouter(prefix="/api/v1", responses=PROBLEM_RESPONSES)
for module in (uploads, jobs, results, events, health):
    api_router.include_router(module.router)

websocket_router = events.websocket_router
