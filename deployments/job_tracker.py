"""The job tracker: a named, detached Ray actor that takes jobs from the database (the queue),
runs at most N at once through the pipeline, and mirrors every transition and progress change
back into it. Jobs are held by leases that the tracker renews, so a tracker that dies and restarts
(or a second one) picks up where the first left off."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import ray

from serve_app.domain.api_keys import ApiKeys
from serve_app.domain.db import DuplicateIdempotencyKey, JobRepository, JobRow, utcnow
from serve_app.domain.errors import (
    BadInput,
    JobCanceled,
    ModelUnavailable,
    ServiceUnavailable,
    StemscribeError,
    unwrap,
)
from serve_app.domain.jobs import JobStatus, Stage, advance, overall_progress
from serve_app.domain.options import JobOptions
from serve_app.domain.pipeline import JobPipeline, SeparationHandle, TranscriptionHandle
from serve_app.domain.storage import JobKeys, storage_from_settings
from serve_app.domain.webhooks import WebhookSender
from serve_app.settings import Settings

logger = logging.getLogger(__name__)

# Progress is written when it moved at least this much, so per-chunk reports do not flood the database.
_WRITE_STEP = 1.0


def _user_error(exc: BaseException) -> StemscribeError | None:
    """The errors whose message is for the user and that no retry can fix."""
    cause = unwrap(exc)
    return cause if isinstance(cause, (BadInput, ModelUnavailable)) else None


@dataclass
class _Attempt:
    """One attempt at one job; every database write it makes is fenced by `number`."""

    tracker: JobTracker
    job_id: str
    options: JobOptions
    number: int
    known_stems: list[str] | None
    progress: float
    stage: Stage | None = None
    stage_started: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    written: float = 0.0
    lost: bool = False

    async def _write(self, **fields: Any) -> None:
        repo = self.tracker.repo
        try:
            if not await asyncio.to_thread(repo.update_attempt, self.job_id, self.number, **fields):
                self.lost = True  # canceled, or handed to a newer attempt: stop at the next checkpoint
        except ServiceUnavailable:
            # Progress is advisory; the work goes on while the database is away.
            logger.warning("job %s: progress not recorded, the database is away", self.job_id)

    async def report(self, stage: Stage, fraction: float) -> None:
        fields: dict[str, Any] = {}
        if self.stage is not None and stage is not self.stage and stage.order < self.stage.order:
            return  # a late report from a stage that is already over
        self.progress = advance(self.progress, overall_progress(stage, fraction))
        if self.stage is not stage:
            self.close_stage()
            self.stage, self.stage_started = stage, time.monotonic()
            fields.update(stage=stage.value, stage_seconds=dict(self.stage_seconds))
            if self.options.webhook_progress:
                self.tracker.notify(self.options, "job.progress", {
                    "job_id": self.job_id, "status": "running", "stage": stage.value, "progress": self.progress,
                })  # fmt: skip
        if fields or self.progress - self.written >= _WRITE_STEP:
            self.written = self.progress
            await self._write(progress=self.progress, **fields)

    def close_stage(self) -> None:
        if self.stage is not None:
            self.stage_seconds[self.stage.value] = round(time.monotonic() - self.stage_started, 3)

    async def checkpoint(self) -> None:
        if self.lost or await asyncio.to_thread(self.tracker.repo.cancel_requested, self.job_id):
            raise JobCanceled("Canceled by the client.")

    async def stems_separated(self, stems: list[str]) -> None:
        await self._write(stems=stems)


class JobTracker:
    def __init__(
        self, settings: Settings, separation: SeparationHandle, transcription: TranscriptionHandle
    ) -> None:
        self.settings = settings
        self.repo = JobRepository(settings.database_url)
        self.repo.migrate()
        ApiKeys(self.repo).seed(settings.seeded_api_keys)
        self.storage = storage_from_settings(settings)
        self.pipeline = JobPipeline(self.storage, separation, transcription)
        self.owner = f"tracker-{uuid.uuid4().hex[:12]}"
        secret = settings.webhook_secret
        self.webhooks = (
            None if secret is None else WebhookSender(
                secret.get_secret_value(), settings.webhook_retry_seconds, settings.webhook_timeout_seconds,
                settings.webhook_allow_private,
            )
        )  # fmt: skip
        self._attempts: dict[str, _Attempt] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._wake: asyncio.Event | None = None

    async def start(self) -> None:
        """Start the claim and cleanup loops once per (re)started actor; the ingress calls this
        at start and from its health check, so a restarted tracker resumes within seconds."""
        if self._loops:
            return
        self._wake = asyncio.Event()
        self._loops = [asyncio.create_task(self._claim_loop()), asyncio.create_task(self._cleanup_loop())]
        logger.info("job tracker %s started with %d slots", self.owner, self.settings.max_concurrent_jobs)

    async def ping(self) -> bool:
        return True

    async def submit(self, job: dict[str, Any]) -> str:
        """Insert a queued job; with an idempotency key already used, the existing job's id."""
        await self.start()
        now = utcnow()
        row = JobRow(
            **job, status=JobStatus.QUEUED.value, stage=Stage.QUEUED.value, progress=0.0,
            results=[], stage_seconds={}, created_at=now, updated_at=now, attempts=0, cancel_requested=False,
        )  # fmt: skip
        try:
            await asyncio.to_thread(self.repo.insert, row)
        except DuplicateIdempotencyKey:
            existing = await asyncio.to_thread(self.repo.by_idempotency_key, row.idempotency_key or "")
            assert existing is not None
            return existing.id
        self._poke()
        logger.info("job %s queued", row.id)
        return row.id

    async def cancel(self, job_id: str) -> None:
        await asyncio.to_thread(self.repo.cancel, job_id)
        row = await asyncio.to_thread(self.repo.get, job_id)
        if row is not None and row.status == JobStatus.CANCELED and row.attempts == 0:
            # Canceled while queued: no attempt will report it, so tell its webhook here.
            await self._notify_final(job_id, JobOptions.model_validate(row.options))
        self._poke()

    async def report(self, job_id: str, stage: str, fraction: float) -> None:
        """Progress from a replica, fire-and-forget."""
        attempt = self._attempts.get(job_id)
        if attempt is not None:
            await attempt.report(Stage(stage), fraction)

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _claim_loop(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await self._claim()
            except Exception:  # the database may be away; try again on the next round
                logger.warning("job tracker could not claim jobs", exc_info=True)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            except TimeoutError:
                pass

    async def _pipeline_available(self) -> bool:
        """Whether the model deployments answer; while they do not (a redeploy, say), jobs wait in the
        queue instead of spending their attempts."""
        try:
            await asyncio.wait_for(self.pipeline.separation.status.remote(), timeout=5)
            await asyncio.wait_for(self.pipeline.transcription.status.remote(), timeout=5)
        except Exception:
            logger.info("model deployments are not answering; jobs wait")
            return False
        return True

    async def _claim(self) -> None:
        free = self.settings.max_concurrent_jobs - len(self._tasks)
        if free <= 0:
            return
        rows = await asyncio.to_thread(self.repo.claimable, utcnow(), free + len(self._tasks))
        if not [row for row in rows if row.id not in self._tasks] or not await self._pipeline_available():
            return
        for row in rows:
            if free <= 0:
                break
            if row.id in self._tasks:
                continue
            if row.attempts >= self.settings.max_attempts:
                message = (
                    f"The job failed {row.attempts} times and was given up; last error: "
                    f"{row.last_error or 'its worker stopped answering'}"
                )
                await asyncio.to_thread(self.repo.fail_exhausted, row.id, row.attempts, message)
                logger.warning("job %s: %s", row.id, message)
                continue
            if not await asyncio.to_thread(
                self.repo.claim, row.id, row.attempts, self.owner, self.settings.lease_seconds
            ):
                continue  # another tracker took it
            options = JobOptions.model_validate(row.options)
            attempt = _Attempt(self, row.id, options, row.attempts + 1, row.stems, row.progress,
                               stage_seconds=dict(row.stage_seconds or {}))  # fmt: skip
            self._attempts[row.id] = attempt
            self._tasks[row.id] = asyncio.create_task(self._run(attempt, options))
            free -= 1

    async def _heartbeat(self, attempt: _Attempt) -> None:
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                renewed = await asyncio.to_thread(
                    self.repo.renew, attempt.job_id, attempt.number, self.settings.lease_seconds
                )
            except Exception:
                logger.warning("job %s: lease not renewed (database away?)", attempt.job_id)
                continue
            if not renewed:
                attempt.lost = True
                return

    async def _run(self, attempt: _Attempt, options: JobOptions) -> None:
        job_id = attempt.job_id
        logger.info("job %s: attempt %d (%s)", job_id, attempt.number, options.separation.value)
        heartbeat = asyncio.create_task(self._heartbeat(attempt))
        try:
            output = await self.pipeline.run(job_id, options, attempt)
            await self._finish(
                attempt, JobStatus.SUCCEEDED, stage=Stage.DONE.value, progress=100.0,
                results=output.results, analysis=output.analysis,
            )  # fmt: skip
            logger.info("job %s succeeded", job_id)
        except Exception as exc:
            try:
                await self._failed(attempt, exc)
            except Exception:
                # Nothing could be recorded (database away?): the lease runs out and the job is taken up again.
                logger.warning("job %s: could not record the end of attempt %d", job_id, attempt.number, exc_info=True)
        finally:
            heartbeat.cancel()
            self._tasks.pop(job_id, None)
            self._attempts.pop(job_id, None)
            self._poke()

    async def _finish(self, attempt: _Attempt, status: JobStatus, **fields: Any) -> None:
        attempt.close_stage()
        done = await asyncio.to_thread(
            self.repo.finish, attempt.job_id, attempt.number, status, stage_seconds=attempt.stage_seconds, **fields
        )
        if not done:
            logger.info("job %s: attempt %d was superseded; its result is dropped", attempt.job_id, attempt.number)
            return
        await self._notify_final(attempt.job_id, attempt.options)

    def notify(self, options: JobOptions, event_type: str, data: dict[str, Any]) -> None:
        if self.webhooks is not None and options.webhook_url:
            self.webhooks.send(options.webhook_url, event_type, data)

    async def _notify_final(self, job_id: str, options: JobOptions) -> None:
        if not options.webhook_url:
            return
        row = await asyncio.to_thread(self.repo.get, job_id)
        if row is not None:
            self.notify(options, f"job.{row.status}", {
                "job_id": row.id, "status": row.status, "stage": row.stage, "progress": row.progress,
                "error": row.error, "results": row.results if row.status == JobStatus.SUCCEEDED else [],
            })  # fmt: skip

    async def _failed(self, attempt: _Attempt, exc: BaseException) -> None:
        job_id, cause = attempt.job_id, unwrap(exc)
        stage = (attempt.stage or Stage.DECODING).value
        if isinstance(cause, JobCanceled):
            if not attempt.lost or await asyncio.to_thread(self.repo.cancel_requested, job_id):
                await self._finish(attempt, JobStatus.CANCELED, error="Canceled by the client.")
            row = await asyncio.to_thread(self.repo.get, job_id)
            if row is not None and row.deleted_at is not None:
                # Deleted while it ran: files the worker wrote after the delete go too.
                await asyncio.to_thread(self.storage.delete_prefix, JobKeys(job_id).prefix)
            logger.info("job %s stopped while %s", job_id, stage)
            return
        error = _user_error(exc)
        if error is not None:
            logger.info("job %s failed: %s", job_id, error.message)
            await self._finish(attempt, JobStatus.FAILED, error=error.message)
            return
        logger.error("job %s: attempt %d failed while %s", job_id, attempt.number, stage, exc_info=exc)
        message = f"Internal error while {stage} ({type(cause).__name__})."
        backoff = self.settings.retry_backoff_seconds * attempt.number
        await asyncio.to_thread(self.repo.release, job_id, attempt.number, message, backoff)

    async def _cleanup_loop(self) -> None:
        """Retention: uploads and results of jobs finished longer ago than the retention time go."""
        while True:
            try:
                cutoff = utcnow() - timedelta(seconds=self.settings.retention_seconds)
                for job_id in await asyncio.to_thread(self.repo.expirable, cutoff):
                    await asyncio.to_thread(self.storage.delete_prefix, JobKeys(job_id).prefix)
                    await asyncio.to_thread(self.repo.mark_expired, job_id)
                    logger.info("job %s expired; its files were removed", job_id)
            except Exception:
                logger.warning("retention cleanup failed", exc_info=True)
            await asyncio.sleep(self.settings.cleanup_interval_seconds)


def get_or_create_tracker(
    settings: Settings, separation: SeparationHandle, transcription: TranscriptionHandle
) -> ray.actor.ActorHandle:
    """The one tracker of this application. Detached and restarted by Ray when it dies, so it
    outlives any one ingress replica and a redeploy of the application."""
    actor_cls = ray.remote(JobTracker)
    return actor_cls.options(  # type: ignore[attr-defined]
        name=settings.tracker_actor_name,
        namespace=settings.ray_namespace,
        get_if_exists=True,
        lifetime="detached",
        max_restarts=-1,
        max_task_retries=-1,
        num_cpus=0,
        max_concurrency=1000,
    ).remote(settings, separation, transcription)
