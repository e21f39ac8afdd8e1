"""Live progress: Server-Sent Events (`/api/v1/jobs/{job_id}/events`) and a WebSocket (`/ws/jobs/{job_id}`)
push every change of a job, then its final state, and close. Browsers, which cannot set X-API-Key on
either, get a short-lived token for one job instead (`/api/v1/jobs/{job_id}/events-token`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request, WebSocket
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.websockets import WebSocketDisconnect

from serve_app.api.access import find_job
from serve_app.api.events_token import issue_events_token, read_events_token
from serve_app.api.job_states import is_final, job_states, with_keepalive
from serve_app.api.services import OwnerDep, Services, ServicesDep, SettingsDep, get_owner_for_key
from serve_app.domain.errors import StemscribeError, Unauthorized

router = APIRouter(tags=["events"])
# WebSockets live outside /api/v1 and OpenAPI, which has no way to describe them.
websocket_router = APIRouter()

# An SSE comment line: EventSource clients ignore it; proxies see a live connection.
KEEPALIVE = b": keep-alive\n\n"


class EventsToken(BaseModel):
    token: str
    expires_in: int


async def _owner(services: Services, job_id: str, key: str | None, token: str | None) -> str | None:
    if token:
        return read_events_token(services.settings.events_token_secret.get_secret_value(), token, job_id)
    return await get_owner_for_key(services, key)


@router.post("/jobs/{job_id}/events-token", response_model=EventsToken,
             summary="A short-lived token that stands in for X-API-Key on the events routes")  # fmt: skip
async def events_token(job_id: str, services: ServicesDep, settings: SettingsDep, owner: OwnerDep) -> EventsToken:
    await find_job(services, job_id, owner)
    ttl = settings.events_token_seconds
    token = issue_events_token(settings.events_token_secret.get_secret_value(), job_id, owner, ttl)
    return EventsToken(token=token, expires_in=ttl)


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse,
            summary="Server-Sent Events: every change of the job, then its final state")  # fmt: skip
async def events(
    request: Request, job_id: str, services: ServicesDep, settings: SettingsDep,
    token: Annotated[str | None, Query()] = None,
) -> StreamingResponse:  # fmt: skip
    owner = await _owner(services, job_id, request.headers.get("x-api-key"), token)
    await find_job(services, job_id, owner)  # 401/404/410 before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        # FastAPI's own SSE pings every 15 s, a private constant; this interval is a setting.
        async for state in with_keepalive(job_states(services, job_id, owner), settings.events_keepalive_seconds):
            if state is None:
                yield KEEPALIVE
                continue
            kind = "final" if is_final(state) else "state"
            yield f"event: {kind}\ndata: {json.dumps(state)}\n\n".encode()

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


@websocket_router.websocket("/ws/jobs/{job_id}")
async def websocket_events(websocket: WebSocket, job_id: str, token: str | None = None) -> None:
    services: Services = websocket.app.state.services
    try:
        owner = await _owner(services, job_id, websocket.headers.get("x-api-key"), token)
        await find_job(services, job_id, owner)
    except StemscribeError as exc:
        # Close codes 4000+ are the application's: 4401 unauthorized, 4404 no such job (or gone).
        await websocket.close(code=4401 if isinstance(exc, Unauthorized) else 4404, reason=exc.message)
        return
    await websocket.accept()
    try:
        async for state in job_states(services, job_id, owner):
            await websocket.send_json({"event": "final" if is_final(state) else "state", **state})
        await websocket.close()
    except WebSocketDisconnect:
        pass


