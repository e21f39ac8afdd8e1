"""A job's live states for the events routes: every change of its status, stage and progress, then its
final state. A late client first gets the current state. Read from the database (the source of truth),
so they work from any ingress replica."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from serve_app.api.access import find_job
from serve_app.api.services import Services
from serve_app.domain.db import JobRow
from serve_app.domain.jobs import JobStatus

POLL_SECONDS = 0.25
T = TypeVar("T")


def state_of(row: JobRow) -> dict[str, Any]:
    return {"job_id": row.id, "status": row.status, "stage": row.stage, "progress": row.progress, "error": row.error}


def is_final(state: dict[str, Any]) -> bool:
    return JobStatus(state["status"]).is_final


async def job_states(services: Services, job_id: str, owner: str | None) -> AsyncIterator[dict[str, Any]]:
    """Each distinct state of the job, from the current one to the final one."""
    last = None
    while True:
        state = state_of(await find_job(services, job_id, owner))
        if state != last:
            last = state
            yield state
        if is_final(state):
            return
        await asyncio.sleep(POLL_SECONDS)


async def with_keepalive(items: AsyncIterator[T], interval: float) -> AsyncIterator[T | None]:
    """The items, and None whenever `interval` seconds pass without one. The pending item is waited for,
    never cancelled, so a slow source loses nothing."""

    async def following() -> T:
        return await anext(items)

    pending = asyncio.ensure_future(following())
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield None
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            yield item
            pending = asyncio.ensure_future(following())
    finally:
        pending.cancel()
