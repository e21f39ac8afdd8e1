"""Routes under /api/v1. Handlers are short: the work is in the upload, repository and tracker."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, File, Form, Header, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import RedirectResponse, StreamingResponse
from pydantic import ValidationError

from deployments.job_tracker import database_error
from music.presets import MidiOptions, NoteParameters, QuantizeGrid
from serve_app.api.access import RequireApiKey
from serve_app.api.access import find_job as _job
from serve_app.api.errors import PROBLEM_RESPONSES, install_error_handlers
from serve_app.api.events import build_events_router
from serve_app.api.limits import UploadSizeLimit
from serve_app.api.schemas import (
    ComponentHealth,
    Health,
    JobAccepted,
    JobList,
    JobView,
    MusicAnalysis,
    ResultLink,
)  # fmt: skip
from serve_app.api.services import OwnerDep, Services, ServicesDep
from serve_app.api.uploads import display_name, store_upload
from serve_app.domain.db import AdmissionLimits, JobRow, as_utc
from serve_app.domain.errors import (
    IdempotencyKeyReused,
    InvalidCursor,
    JobGone,
    ResultNotFound,
    ResultNotReady,
    ServiceUnavailable,
    StemscribeError,
    WebhookRefused,
    unwrap,
)
from serve_app.domain.jobs import JobOptions, JobStatus, SeparationMode
from serve_app.domain.storage import JobKeys
from serve_app.domain.webhooks import check_target
from serve_app.settings import Settings
from serve_app.web import install_web

logger = logging.getLogger(__name__)

_MEDIA_TYPES = {
    ".mid": "audio/midi", ".wav": "audio/wav", ".json": "application/json",
    # MusicXML's registered type for uncompressed files (the compressed .mxl is application/vnd.recordare.musicxml).
    ".musicxml": "application/vnd.recordare.musicxml+xml",
}  # fmt: skip
# Multipart boundaries and the small form fields ride on top of the file itself.
_MULTIPART_ALLOWANCE = 64 * 1024




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


def _view(request: Request, row: JobRow) -> JobView:
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


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/api/v1", responses=PROBLEM_RESPONSES)

    @router.post(
        "/transcribe",
        status_code=202,
        response_model=JobAccepted,
        summary="Upload a song; answers at once with the job to poll",
    )
    async def transcribe(
        request: Request,
        response: Response,
        services: ServicesDep,
        owner: OwnerDep,
        file: Annotated[UploadFile, File(description="The audio: WAV, FLAC, MP3, Ogg/Opus or M4A/AAC")],
        separation: Annotated[SeparationMode, Form()] = SeparationMode.DEMUCS,
        onset_threshold: Annotated[float | None, Form()] = None,
        frame_threshold: Annotated[float | None, Form()] = None,
        minimum_note_length_ms: Annotated[float | None, Form()] = None,
        minimum_frequency: Annotated[float | None, Form()] = None,
        maximum_frequency: Annotated[float | None, Form()] = None,
        clean_ghost_notes: Annotated[bool, Form(description="Drop short, quiet ghost notes")] = True,
        clean_octave_duplicates: Annotated[
            bool, Form(description="Drop notes that double a louder note's harmonic an octave or twelfth up")
        ] = True,
        quantize_grid: Annotated[
            QuantizeGrid, Form(description="Grid of transcription.quantized.mid; t = triplets")
        ] = QuantizeGrid.SIXTEENTH,
        webhook_url: Annotated[str | None, Form(max_length=2000)] = None,
        webhook_progress: Annotated[bool, Form()] = False,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> JobAccepted:
        try:
            notes = NoteParameters(
                onset_threshold=onset_threshold, frame_threshold=frame_threshold,
                minimum_note_length_ms=minimum_note_length_ms,
                minimum_frequency=minimum_frequency, maximum_frequency=maximum_frequency,
            )  # fmt: skip
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from exc
        if webhook_url is not None:
            if services.settings.webhook_secret is None:
                raise WebhookRefused("Webhooks are off on this server (no STEMSCRIBE_WEBHOOK_SECRET).")
            await asyncio.to_thread(check_target, webhook_url, services.settings.webhook_allow_private)
        midi = MidiOptions(
            clean_ghost_notes=clean_ghost_notes, clean_octave_duplicates=clean_octave_duplicates,
            quantize_grid=quantize_grid,
        )  # fmt: skip
        options = JobOptions(
            separation=separation, notes=notes, midi=midi, webhook_url=webhook_url,
            webhook_progress=webhook_progress,
        )  # fmt: skip
        # Keys are per caller: two clients may pick the same key.
        scoped_key = None if idempotency_key is None else f"{owner or '-'}:{idempotency_key}"
        # An early refusal, before the upload is stored; the tracker's admission is the check that counts.
        limits = AdmissionLimits.from_settings(services.settings)
        await asyncio.to_thread(services.repo.precheck, owner, scoped_key, limits)
        job_id = uuid.uuid4().hex
        upload = await store_upload(file, services, job_id)
        request_hash = hashlib.sha256(upload.sha256.encode() + options.model_dump_json().encode()).hexdigest()
        try:
            accepted_id = await services.tracker.submit.remote(
                {
                    "id": job_id, "options": options.model_dump(mode="json"),
                    "upload_name": display_name(file.filename), "upload_bytes": upload.size,
                    "duration_seconds": upload.info.duration_seconds, "sample_rate": upload.info.sample_rate,
                    "channels": upload.info.channels, "request_hash": request_hash, "owner": owner,
                    "idempotency_key": scoped_key, "audio_sha256": upload.info.samples_sha256,
                }
            )  # fmt: skip
        except Exception as exc:
            cause = unwrap(exc)
            if isinstance(cause, StemscribeError):
                # Refused (a limit, say): no job record, so the stored upload goes too.
                await asyncio.to_thread(services.storage.delete_prefix, JobKeys(job_id).prefix)
                raise cause from exc
            # The tracker died, or its answer was lost, possibly after it recorded the job: removing the
            # upload then would leave a job without its file, which a retry with the same Idempotency-Key
            # returns and which can only fail. The database says whether the job exists.
            accepted_id = await _recorded_or_discarded(services, job_id, exc)
        if accepted_id != job_id:
            # The key was used before: that job is the answer, if it was the same request.
            await asyncio.to_thread(services.storage.delete_prefix, JobKeys(job_id).prefix)
            first = await asyncio.to_thread(services.repo.get, accepted_id)
            if first is None or first.owner != owner or first.request_hash != request_hash:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was used for a different upload or options; use a new key."
                )
        response.headers["Location"] = str(request.url_for("get_job", job_id=accepted_id))
        return JobAccepted(job_id=accepted_id, status=JobStatus.QUEUED)

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
        return JobList(
            jobs=[_view(request, row) for row in rows], next_cursor=_encode_cursor(rows[-1]) if more else None
        )

    @router.get("/jobs/{job_id}", response_model=JobView, summary="A job's status, progress and results")
    async def get_job(
        request: Request, response: Response, job_id: str, services: ServicesDep, owner: OwnerDep
    ) -> JobView:
        row = await _job(services, job_id, owner)
        if not JobStatus(row.status).is_final:
            response.headers["Retry-After"] = str(services.settings.retry_after_seconds)
        return _view(request, row)

    @router.post("/jobs/{job_id}/cancel", response_model=JobView, summary="Cancel a queued or running job")
    async def cancel_job(request: Request, job_id: str, services: ServicesDep, owner: OwnerDep) -> JobView:
        row = await _job(services, job_id, owner)
        if not JobStatus(row.status).is_final:
            await _tracker_call(services.tracker.cancel.remote(job_id))
            row = await _job(services, job_id, owner)
        return _view(request, row)

    @router.delete("/jobs/{job_id}", status_code=204, summary="Cancel if needed, then delete the upload and results")
    async def delete_job(job_id: str, services: ServicesDep, owner: OwnerDep) -> Response:
        row = await _job(services, job_id, owner)
        if not JobStatus(row.status).is_final:
            await _tracker_call(services.tracker.cancel.remote(job_id))
        # Files first: if storage is away the client gets 503 and can retry, rather than a 410 for a
        # job whose files were never removed.
        await asyncio.to_thread(services.storage.delete_prefix, JobKeys(job_id).prefix)
        await asyncio.to_thread(services.repo.mark_deleted, job_id)
        return Response(status_code=204)

    @router.get(
        "/jobs/{job_id}/results/{name:path}",
        summary=(
            "Download one result: transcription.mid, transcription.quantized.mid, transcription.musicxml, notes.json, "
            "midi/<stem>.mid, stems/<stem>.wav"
        ),
        response_class=StreamingResponse,
        responses={
            307: {"description": "Presigned S3 downloads on: fetch the file from the short-lived URL in Location"}
        },
    )
    async def get_result(job_id: str, name: str, services: ServicesDep, owner: OwnerDep) -> Response:
        row = await _job(services, job_id, owner)
        if row.expired_at is not None:
            raise JobGone(f"The results of job {job_id} expired and were removed.")
        if row.status != JobStatus.SUCCEEDED:
            raise ResultNotReady(f"Job {job_id} is {row.status}; results exist once it has succeeded.")
        if name not in row.results:
            raise ResultNotFound(f"Job {job_id} has no result named {name!r}.")
        key = JobKeys(job_id).result(name)
        media_type = _MEDIA_TYPES.get(name[name.rfind(".") :], "application/octet-stream")
        filename = f"{job_id}-{name.replace('/', '-')}"
        storage = services.storage
        # A storage that fails (StorageUnavailable) answers 503; only a file that is truly gone, 404.
        try:
            size = await asyncio.to_thread(storage.size, key)
            url = await asyncio.to_thread(storage.download_url, key, filename, media_type)
            if url is not None:
                # The bytes come from S3 itself, not through the ingress; the URL expires, so no caching.
                return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
            handle = await asyncio.to_thread(storage.open_read, key)
        except FileNotFoundError as exc:
            raise ResultNotFound(f"The file of result {name!r} of job {job_id} is missing from storage.") from exc

        def chunks():  # type: ignore[no-untyped-def]
            with handle:
                while data := handle.read(1024 * 1024):
                    yield data

        return StreamingResponse(
            chunks(),
            media_type=media_type,
            headers={"Content-Length": str(size), "Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @router.get("/health", response_model=Health, summary="Liveness, and readiness of each component")
    async def health(services: ServicesDep) -> Health:
        return await _health(services)

    @router.get(
        "/health/ready",
        response_model=Health,
        responses={503: {"model": Health, "description": "Not ready: the same report"}},
        summary="200 when every component is ready, else 503",
    )
    async def ready(services: ServicesDep, response: Response) -> Health:
        report = await _health(services)
        if not report.ready:
            response.status_code = 503
        return report

    return router


async def _recorded_or_discarded(services: Services, job_id: str, exc: BaseException) -> str:
    """After a failed call to the tracker's `submit`: the job's id if the tracker recorded it before the
    call failed (the upload is kept; the job runs), else the upload is removed and the answer is 503."""
    unreachable = ServiceUnavailable("The job tracker is not reachable; try again shortly.")
    try:
        row = await asyncio.to_thread(services.repo.get, job_id)
    except ServiceUnavailable:
        # Cannot tell: keep the file (a job may own it), and let the client retry.
        logger.warning("job %s: the tracker and the database are away; upload kept", job_id)
        raise unreachable from exc
    if row is None:
        await asyncio.to_thread(services.storage.delete_prefix, JobKeys(job_id).prefix)
        raise unreachable from exc
    logger.warning("job %s: recorded by the tracker before its answer was lost (%s)", job_id, type(exc).__name__)
    return job_id


async def _tracker_call(call: Any) -> Any:
    try:
        return await call
    except Exception as exc:
        cause = unwrap(exc)
        if isinstance(cause, StemscribeError):
            raise cause from exc
        raise ServiceUnavailable("The job tracker is not reachable; try again shortly.") from exc


async def _health(services: Services) -> Health:
    timeout = services.settings.health_timeout_seconds

    async def check(name: str, probe: Any) -> tuple[str, ComponentHealth]:
        try:
            detail = await asyncio.wait_for(probe, timeout)
        except TimeoutError:
            return name, ComponentHealth(ready=False, detail={"error": f"no answer within {timeout:g} s"})
        except StemscribeError as exc:
            return name, ComponentHealth(ready=False, detail={"error": exc.message})
        except Exception as exc:
            return name, ComponentHealth(ready=False, detail={"error": type(exc).__name__})
        detail = detail if isinstance(detail, dict) else {}
        return name, ComponentHealth(ready=detail.get("state", "ready") == "ready", detail=detail)

    async def database() -> dict[str, Any]:
        try:
            await asyncio.to_thread(services.repo.ping)
        except ServiceUnavailable as exc:
            # The driver's own words (refused, unknown host, bad password), not only "unreachable".
            raise ServiceUnavailable(f"{exc.message} ({database_error(exc)})") from exc
        return {"backend": services.repo.engine.dialect.name}

    async def storage() -> dict[str, Any]:
        await asyncio.to_thread(services.storage.ping)
        return {"backend": services.settings.storage_backend}

    async def tracker() -> dict[str, Any]:
        # "ready" once it has brought the schema up to date; "waiting for the database" with the reason before.
        return await services.tracker.status.remote()  # type: ignore[no-any-return]

    results = await asyncio.gather(
        check("database", database()),
        check("storage", storage()),
        check("job_tracker", tracker()),
        check("separation", services.separation.status.remote()),
        check("transcription", services.transcription.status.remote()),
    )
    components = dict(results)
    return Health(live=True, ready=all(c.ready for c in components.values()), components=components)


def create_api(services: Services) -> FastAPI:
    api = FastAPI(
        title="stemscribe",
        version="0.1.0",
        description="Songs in; stems, multi-track MIDI and notes out.",
    )
    api.state.services = services
    install_error_handlers(api, services.settings.retry_after_seconds)
    api.include_router(build_router(services.settings))
    api.include_router(build_events_router())
    # The page at `/` and its files under `/web/`: public, and only a client of the routes above.
    install_web(api)
    api.add_middleware(
        UploadSizeLimit,
        path_suffix="/api/v1/transcribe",
        max_body_bytes=services.settings.max_upload_bytes + _MULTIPART_ALLOWANCE,
        max_upload_megabytes=services.settings.max_upload_megabytes,
    )
    # Outside the size limit: an upload without a valid key is refused before a byte of its body is read.
    api.add_middleware(RequireApiKey, path_suffix="/api/v1/transcribe", services=services)
    # Added last, so outermost: even an early 401 or 413 carries the CORS headers a browser needs to read it.
    if services.settings.cors_origin_list:
        api.add_middleware(
            CORSMiddleware,
            allow_origins=services.settings.cors_origin_list,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Idempotency-Key", "Content-Type"],
            expose_headers=["Location", "Retry-After"],
        )
    return api
