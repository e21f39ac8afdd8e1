"""The job tracker: a named Ray actor that queues jobs, runs at most N at once through the
pipeline, and mirrors every transition and progress change into the database."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

from serve_app.domain.db import JobRepository, JobRow, utcnow
from serve_app.domain.errors import BadInput, ModelUnavailable, StemscribeError, unwrap
from serve_app.domain.jobs import JobStatus, Stage, advance, check_transition, overall_progress
from serve_app.domain.options import JobOptions
from serve_app.domain.pipeline import JobPipeline, SeparationHandle, TranscriptionHandle
from serve_app.domain.storage import storage_from_settings
from serve_app.settings import Settings

logger = logging.getLogger(__name__)

# Progress is written when it moved at least this much, so per-chunk reports do not flood the database.
_WRITE_STEP = 1.0


def _user_error(exc: BaseException) -> StemscribeError | None:
    """The errors whose message is for the user; anything else is an internal error."""
    cause = unwrap(exc)
    return cause if isinstance(cause, (BadInput, ModelUnavailable)) else None


class JobTracker:
    def __init__(
        self, settings: Settings, separation: SeparationHandle, transcription: TranscriptionHandle
    ) -> None:
        self.settings = settings
        self.repo = JobRepository(settings.database_url)
        self.repo.migrate()
        self.pipeline = JobPipeline(storage_from_settings(settings), separation, transcription, self.report_stage)
        self._status: dict[str, JobStatus] = {}
        self._progress: dict[str, float] = {}
        self._written: dict[str, float] = {}
        self._stage: dict[str, tuple[Stage, float]] = {}
        self._stage_seconds: dict[str, dict[str, float]] = {}
        self._queue: asyncio.Queue[str] | None = None
        self._workers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start the workers once; jobs left unfinished by an earlier tracker are queued again."""
        if self._queue is not None:
            return
        self._queue = asyncio.Queue()
        for row in await asyncio.to_thread(self.repo.unfinished):
            self._status[row.id] = JobStatus(row.status)
            self._progress[row.id] = row.progress
            self._queue.put_nowait(row.id)
        self._workers = [asyncio.create_task(self._work()) for _ in range(self.settings.max_concurrent_jobs)]
        logger.info("job tracker started with %d slots", self.settings.max_concurrent_jobs)

    async def ping(self) -> bool:
        return True

    async def submit(self, job: dict[str, Any]) -> None:
        await self.start()
        now = utcnow()
        row = JobRow(
            **job, status=JobStatus.QUEUED.value, stage=Stage.QUEUED.value, progress=0.0,
            results=[], stage_seconds={}, created_at=now, updated_at=now,
        )  # fmt: skip
        await asyncio.to_thread(self.repo.insert, row)
        self._status[row.id] = JobStatus.QUEUED
        self._progress[row.id] = 0.0
        assert self._queue is not None
        self._queue.put_nowait(row.id)
        logger.info("job %s queued (%d waiting)", row.id, self._queue.qsize())

    async def report(self, job_id: str, stage: str, fraction: float) -> None:
        """Progress from a replica, fire-and-forget."""
        await self.report_stage(job_id, Stage(stage), fraction)

    async def report_stage(self, job_id: str, stage: Stage, fraction: float) -> None:
        if self._status.get(job_id) is not JobStatus.RUNNING:
            return
        fields: dict[str, Any] = {}
        current = self._stage.get(job_id)
        if current is None or current[0] is not stage:
            if current is not None and stage.order < current[0].order:
                return  # a late report from a stage that is already over
            self._close_stage(job_id)
            self._stage[job_id] = (stage, time.monotonic())
            fields["stage"] = stage.value
            fields["stage_seconds"] = dict(self._stage_seconds.get(job_id, {}))
        progress = advance(self._progress.get(job_id, 0.0), overall_progress(stage, fraction))
        self._progress[job_id] = progress
        if fields or progress - self._written.get(job_id, 0.0) >= _WRITE_STEP:
            fields["progress"] = progress
            self._written[job_id] = progress
            await asyncio.to_thread(self.repo.update, job_id, **fields)

    def _close_stage(self, job_id: str) -> None:
        current = self._stage.get(job_id)
        if current is not None:
            stage, started = current
            self._stage_seconds.setdefault(job_id, {})[stage.value] = round(time.monotonic() - started, 3)

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            job_id = await self._queue.get()
            try:
                await self._run(job_id)
            except Exception:
                logger.exception("job %s: tracker error", job_id)
            finally:
                for table in (self._stage, self._written):
                    table.pop(job_id, None)

    async def _transition(self, job_id: str, status: JobStatus, **fields: Any) -> None:
        check_transition(self._status[job_id], status)
        await asyncio.to_thread(self.repo.update, job_id, status=status.value, **fields)
        self._status[job_id] = status

    async def _run(self, job_id: str) -> None:
        row = await asyncio.to_thread(self.repo.get, job_id)
        if row is None or JobStatus(row.status).is_final:
            return
        options = JobOptions.model_validate(row.options)
        if self._status[job_id] is JobStatus.QUEUED:
            await self._transition(job_id, JobStatus.RUNNING, started_at=utcnow())
        logger.info("job %s running (%s)", job_id, options.separation.value)
        try:
            results = await self.pipeline.run(job_id, options)
        except Exception as exc:
            error = _user_error(exc)
            stage = self._stage.get(job_id, (Stage.DECODING, 0.0))[0]
            if error is None:
                logger.error("job %s failed while %s", job_id, stage.value, exc_info=exc)
                message = f"Internal error while {stage.value}; the job could not be completed."
            else:
                logger.info("job %s failed: %s", job_id, error.message)
                message = error.message
            self._close_stage(job_id)
            await self._transition(
                job_id, JobStatus.FAILED, error=message, finished_at=utcnow(),
                stage_seconds=self._stage_seconds.pop(job_id, {}),
            )  # fmt: skip
            return
        self._close_stage(job_id)
        self._progress[job_id] = 100.0
        await self._transition(
            job_id, JobStatus.SUCCEEDED, stage=Stage.DONE.value, progress=100.0, results=results,
            finished_at=utcnow(), stage_seconds=self._stage_seconds.pop(job_id, {}),
        )  # fmt: skip
        logger.info("job %s succeeded", job_id)


def get_or_create_tracker(
    settings: Settings, separation: SeparationHandle, transcription: TranscriptionHandle
) -> ray.actor.ActorHandle:
    """The one tracker of this application, created by whichever ingress replica asks first."""
    actor_cls = ray.remote(JobTracker)
    return actor_cls.options(  # type: ignore[attr-defined]
        name=settings.tracker_actor_name,
        namespace=settings.ray_namespace,
        get_if_exists=True,
        num_cpus=0,
        max_concurrency=1000,
    ).remote(settings, separation, transcription)
