"""GET /api/v1/jobs/{job_id}/results/{name}: one file of a job that succeeded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from fastapi import APIRouter, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from serve_app.api.access import find_job
from serve_app.api.services import OwnerDep, ServicesDep
from serve_app.domain.errors import JobGone, ResultNotFound, ResultNotReady
from serve_app.domain.jobs import JobStatus
from serve_app.domain.storage import JobKeys

router = APIRouter(tags=["results"])

_MEDIA_TYPES = {
    ".mid": "audio/midi", ".wav": "audio/wav", ".json": "application/json",
    # MusicXML's registered type for uncompressed files (the compressed .mxl is application/vnd.recordare.musicxml).
    ".musicxml": "application/vnd.recordare.musicxml+xml",
}  # fmt: skip
_CHUNK = 1024 * 1024


@router.get(
    "/jobs/{job_id}/results/{name:path}",
    summary=(
        "Download one result: transcription.mid, transcription.quantized.mid, transcription.musicxml, notes.json, "
        "midi/<stem>.mid, stems/<stem>.wav"
    ),
    response_class=StreamingResponse,
    responses={307: {"description": "Presigned S3 downloads on: fetch the file from the short-lived URL in Location"}},
)
async def get_result(job_id: str, name: str, services: ServicesDep, owner: OwnerDep) -> Response:
    row = await find_job(services, job_id, owner)
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

    def chunks() -> Iterator[bytes]:
        with handle:
            while data := handle.read(_CHUNK):
                yield data

    return StreamingResponse(
        chunks(),
        media_type=media_type,
        headers={"Content-Length": str(size), "Content-Disposition": f'attachment; filename="{filename}"'},
    )
