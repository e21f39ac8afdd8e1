"""Live progress: Server-Sent Events and a WebSocket push every change of a job's status, stage and
progress, then its final state, and close. A late client first gets the current state. Both read the
database (the source of truth), so they work from any ingress replica."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, WebSocket
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.websockets import WebSocketDisconnect

from serve_app.api.access import find_job, issue_events_token, read_events_token
from serve_app.api.errors import PROBLEM_RESPONSES
from serve_app.api.services import OwnerDep, Services, ServicesDep, get_owner_for_key
from serve_app.domain.errors import StemscribeError, Unauthorized
from serve_app.domain.jobs import JobStatus

_POLL_SECONDS = 0.25


class EventsToken(BaseModel):
    token: str
    expires_in: int


async def _owner(services: Services, job_id: str, key: str | None, token: str | None) -> str | None:
    if token:
        return read_events_token(services.settings.events_token_secret.get_secret_value(), token, job_id)
    return await get_owner_for_key(services, key)


def _state(row: Any) -> dict[str, Any]:
    return {"job_id": row.id, "status": row.status, "stage": row.stage, "progress": row.progress, "error": row.error}


async def job_states(services: Services, job_id: str, owner: str | None) -> AsyncIterator[dict[str, Any]]:
    """Each distinct state of the job, from the current one to the final one."""
    last = None
    while True:
        state = _state(await find_job(services, job_id, owner))
        if state != last:
            last = state
            yield state
        if JobStatus(state["status"]).is_final:
            return
        await asyncio.sleep(_POLL_SECONDS)


def build_events_router() -> APIRouter:
    router = APIRouter(responses=PROBLEM_RESPONSES)

    @router.post("/api/v1/jobs/{job_id}/events-token", response_model=EventsToken,
                 summary="A short-lived token that stands in for X-API-Key on the events routes")  # fmt: skip
    async def events_token(job_id: str, services: ServicesDep, owner: OwnerDep) -> EventsToken:
        await find_job(services, job_id, owner)
        ttl = services.settings.events_token_seconds
        secret = services.settings.events_token_secret.get_secret_value()
        return EventsToken(token=issue_events_token(secret, job_id, owner, ttl), expires_in=ttl)

    @router.get("/api/v1/jobs/{job_id}/events", response_class=StreamingResponse,
                summary="Server-Sent Events: every change of the job, then its final state")  # fmt: skip
    async def events(
        request: Request, job_id: str, services: ServicesDep, token: Annotated[str | None, Query()] = None
    ) -> StreamingResponse:
        owner = await _owner(services, job_id, request.headers.get("x-api-key"), token)
        await find_job(services, job_id, owner)  # 401/404/410 before the stream starts

        async def stream() -> AsyncIterator[bytes]:
            async for state in job_states(services, job_id, owner):
                kind = "final" if JobStatus(state["status"]).is_final else "state"
                yield f"event: {kind}\ndata: {json.dumps(state)}\n\n".encode()

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    @router.websocket("/ws/jobs/{job_id}")
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
                await websocket.send_json({"event": "final" if JobStatus(state["status"]).is_final else "state", **state})
            await websocket.close()
        except WebSocketDisconnect:
            pass

    return router
