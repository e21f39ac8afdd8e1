"""/api/v1/jobs: list, show, cancel and delete a caller's jobs."""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from serve_app.api.access import find_job
from serve_app.api.schemas import JobList, JobView, MusicAnalysis, ResultLink
from serve_app.api.services import OwnerDep, ServicesDep, SettingsDep, call_tracker
from serve_app.domain.db import JobRow, as_utc
from serve_app.domain.errors import InvalidCursor
from serve_app.domain.jobs import JobStatus
from serve_app.domain.storage import JobKeys

router = APIRouter(tags=["jobs"])


def _encode_cursor(row: JobRow) -> str:
    created = as_utc(row.created_at)
    assert created is not None
    return base64.urlsafe_b64encode(f"{created.isoformat()}|{row.id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(created), job_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("The cursor is not one this service handed out.") from exc


def job_view(request: Request, row: JobRow) -> JobView:
    links = [
        ResultLink(name=name, url=str(request.url_for("get_result", job_id=row.id, name=name)))
        for name in (row.results if row.status == JobStatus.SUCCEEDED and row.expired_at is None else [])
    ]
    return JobView(
        job_id=row.id, status=JobStatus(row.status), stage=row.stage, progress=row.progress,
        options=row.options, upload_name=row.upload_name, duration_seconds=row.duration_seconds,
        created_at=as_utc(row.created_at), updated_at=as_utc(row.updated_at), started_at=as_utc(row.started_at),
        finished_at=as_utc(row.finished_at), error=row.error, stage_seconds=row.stage_seconds or {},
        attempts=row.attempts, expired_at=as_utc(row.expired_at), results=links, cache_hit=bool(row.cache_hit),
        analysis=MusicAnalysis.model_validate(row.analysis) if row.analysis and links else None,
    )  # fmt: skip


@router.get("/jobs", response_model=JobList, summary="Jobs, newest first, a page at a time")
async def list_jobs(
    request: Request,
    services: ServicesDep,
    owner: OwnerDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> JobList:
    after = _decode_cursor(cursor) if cursor else None
    rows = await asyncio.to_thread(services.repo.page, owner, status.value if status else None, limit + 1, after)
    more = len(rows) > limit
    rows = rows[:limit]
    return JobList(jobs=[job_view(request, row) for row in rows], next_cursor=_encode_cursor(rows[-1]) if more else None)


@router.get("/jobs/{job_id}", response_model=JobView, summary="A job's status, progress and results")
async def get_job(
    request: Request, response: Response, job_id: str, services: ServicesDep, settings: SettingsDep, owner: OwnerDep
) -> JobView:
    row = await find_job(services, job_id, owner)
    if not JobStatus(row.status).is_final:
        response.headers["Retry-After"] = str(settings.retry_after_seconds)
    return job_view(request, row)


@router.post("/jobs/{job_id}/cancel", response_model=JobView, summary="Cancel a queued or running job")
async def cancel_job(request: Request, job_id: str, services: ServicesDep, owner: OwnerDep) -> JobView:
    row = await find_job(services, job_id, owner)
    if not JobStatus(row.status).is_final:
        await call_tracker(services.tracker.cancel.remote(job_id))
        row = await find_job(services, job_id, owner)
    return job_view(request, row)


@router.delete("/jobs/{job_id}", status_code=204, summary="Cancel if needed, then delete the upload and results")
async def delete_job(job_id: str, services: ServicesDep, owner: OwnerDep) -> Response:
    row = await find_job(services, job_id, owner)
    if not JobStatus(row.status).is_final:
        await call_tracker(services.tracker.cancel.remote(job_id))
    # Files first: if storage is away the client gets 503 and can retry, rather than a 410 for a
    # job whose files were never removed.
    await asyncio.to_thread(services.storage.delete_prefix, JobKeys(job_id).prefix)
    await asyncio.to_thread(services.repo.mark_deleted, job_id)
    return Response(status_code=204)
