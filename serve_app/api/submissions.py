"""An upload becomes a job: admission, storage, the tracker's `submit`, and Idempotency-Key replays."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid

from fastapi import UploadFile

from serve_app.api.services import Services
from serve_app.api.uploads import display_name, store_upload
from serve_app.domain.db import AdmissionLimits
from serve_app.domain.errors import (
    IdempotencyKeyReused,
    ServiceUnavailable,
    StemscribeError,
    WebhookRefused,
    unwrap,
)
from serve_app.domain.jobs import JobOptions, JobStatus
from serve_app.domain.storage import JobKeys
from serve_app.domain.webhooks import check_target

logger = logging.getLogger(__name__)


async def submit(
    services: Services, owner: str | None, file: UploadFile, options: JobOptions, idempotency_key: str | None
) -> tuple[str, JobStatus]:
    """The id and status of the job that answers the upload: a new queued job, or, for an Idempotency-Key
    used before with the same upload and options, that first job as it stands now (it may have finished)."""
    if options.webhook_url is not None:
        if services.settings.webhook_secret is None:
            raise WebhookRefused("Webhooks are off on this server (no STEMSCRIBE_WEBHOOK_SECRET).")
        await asyncio.to_thread(check_target, options.webhook_url, services.settings.webhook_allow_private)
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
    if accepted_id == job_id:
        return job_id, JobStatus.QUEUED
    # The key was used before: that job is the answer, if it was the same request.
    await asyncio.to_thread(services.storage.delete_prefix, JobKeys(job_id).prefix)
    first = await asyncio.to_thread(services.repo.get, accepted_id)
    if first is None or first.owner != owner or first.request_hash != request_hash:
        raise IdempotencyKeyReused("This Idempotency-Key was used for a different upload or options; use a new key.")
    return first.id, JobStatus(first.status)


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
