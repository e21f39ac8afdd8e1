"""Who may see a job: the key that made it (the events routes also take a token, `serve_app.api.events_token`)."""

from __future__ import annotations

import asyncio
import re

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app.api.errors import problem
from serve_app.api.services import Services, get_owner_for_key
from serve_app.domain.db import JobRow
from serve_app.domain.errors import JobGone, JobNotFound, ServiceUnavailable, Unauthorized

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


async def find_job(services: Services, job_id: str, owner: str | None) -> JobRow:
    row = await asyncio.to_thread(services.repo.get, job_id) if _JOB_ID.match(job_id) else None
    # Another key's job is answered exactly like a job that does not exist.
    if row is None or row.owner != owner:
        raise JobNotFound(f"There is no job {job_id}.")
    if row.deleted_at is not None:
        raise JobGone(f"Job {job_id} was deleted.")
    return row


class RequireApiKey:
    """Authentication of upload routes before their body is read: FastAPI parses a multipart form
    before a handler (and its key dependency) runs, so without this an unauthenticated client
    could make the server take in a whole upload first. A refusal answers at once, without
    touching `receive`, and asks the client to close the connection (the rest of its body is
    never read). The handler's own key check still runs for requests let through."""

    def __init__(self, app: ASGIApp, path_suffix: str, services: Services) -> None:
        self.app = app
        self.path_suffix = path_suffix
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = self.services.settings
        if scope["type"] != "http" or not settings.auth_required or not scope["path"].endswith(self.path_suffix):
            await self.app(scope, receive, send)
            return
        try:
            await get_owner_for_key(self.services, Headers(scope=scope).get("x-api-key"))
        except Unauthorized as exc:
            response = problem(401, "unauthorized", exc.message, {"Connection": "close"})
        except ServiceUnavailable as exc:
            retry = {"Retry-After": str(settings.retry_after_seconds), "Connection": "close"}
            response = problem(503, "service_unavailable", exc.message, retry)
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
