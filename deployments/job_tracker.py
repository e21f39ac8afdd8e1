"""The job tracker: the `JobTracker` deployment of the application, one replica. It takes jobs from
the database (the queue), runs at most N at once through the pipeline (of which at most M need Demucs,
so a job that needs none never waits in the queue behind separations), and is the one place where a
job's state changes:

    submit            -> queued (a new row)
    cancel            queued -> canceled; running: flagged, the attempt stops at its next checkpoint
    _claim            queued / lease run out -> running, attempt n + 1 (or failed: attempts used up)
    _Attempt.report   stage, progress, stage times (progress from the model replicas arrives here)
    _finish           running -> succeeded / failed / canceled
    _failed           an internal error: the lease is given back for a retry after a pause
    stop              a redeploy or shutdown: every running attempt's lease is given back at once

Every write an attempt makes is fenced by its attempt number, so a tracker that lost a job (its lease
ran out, or it was replaced) can never overwrite the attempt that took over. Its files are fenced too:
every stage writes attempt-scoped temporaries and publishes them only while the attempt holds the lease
(`serve_app.domain.job_files`); an attempt that finds it lost the lease ends quietly (`LeaseLost`). The
model replicas only read job rows (to hear of a cancel or a handover); they never write them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from deployments import metrics
from serve_app.domain.api_keys import ApiKeys
from serve_app.domain.cached_pipeline import CachedPipeline
from serve_app.domain.db import AdmissionLimits, JobRepository, JobRow, utcnow
from serve_app.domain.errors import (
    BadInput,
    JobCanceled,
    ModelUnavailable,
    ServiceUnavailable,
    StemscribeError,
    unwrap,
)
from serve_app.domain.job_files import LeaseLost
from serve_app.domain.jobs import JobOptions, JobStatus, SeparationMode, Stage, advance, overall_progress
from serve_app.domain.outbox import Outbox
from serve_app.domain.pipeline import JobPipeline, SeparationHandle, TranscriptionHandle
from serve_app.domain.storage import JobKeys, storage_from_settings
from serve_app.logs import bind_job, configure_logging
from serve_app.settings import Settings

logger = logging.getLogger(__name__)

# Where progress reports go: the replicas find the tracker by this deployment name.
TRACKER_DEPLOYMENT = "JobTracker"
# The reason on a job whose attempt a stopping tracker gave back (a redeploy, `serve shutdown`).
HANDED_OVER = "Handed over to a new job tracker."

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
    ended_by: BaseException | None = None  # what ended the attempt, for metrics

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
                await self.tracker.notify(self.options, "job.progress", {
                    "job_id": self.job_id, "status": "running", "stage": stage.value, "progress": self.progress,
                })  # fmt: skip
        if fields or self.progress - self.written >= _WRITE_STEP:
            self.written = self.progress
            await self._write(progress=self.progress, **fields)

    def close_stage(self) -> None:
        if self.stage is not None:
            self.stage_seconds[self.stage.value] = round(time.monotonic() - self.stage_started, 3)
            metrics.stage_finished(self.stage, self.stage_seconds[self.stage.value], self.options)

    async def checkpoint(self) -> None:
        if self.lost or await asyncio.to_thread(self.tracker.repo.cancel_requested, self.job_id):
            raise JobCanceled("Canceled by the client.")

    async def stems_separated(self, stems: list[str]) -> None:
        await self._write(stems=stems)


class JobTracker:
    """The application's one runner of jobs (the `JobTracker` deployment wraps it; tests use it bare).

    Nothing here touches the database before `start()`: the schema is brought up to date in the
    background, so the application deploys, and says why it is not ready, while the database is away."""

    def __init__(
        self, settings: Settings, separation: SeparationHandle, transcription: TranscriptionHandle
    ) -> None:
        self.settings = settings
        configure_logging(settings)
        self.repo = JobRepository(settings.database_url.get_secret_value())  # lazy: connects on first use
        self.storage = storage_from_settings(settings)
        self.pipeline = JobPipeline(self.storage, separation, transcription, self.repo)
        self.cached = CachedPipeline(self.pipeline, self.repo, settings, on_lookup=metrics.cache_lookup)
        self.owner = f"tracker-{uuid.uuid4().hex[:12]}"
        secret = settings.webhook_secret
        self.webhooks = (
            None if secret is None else Outbox(
                self.repo, secret.get_secret_value(), settings.webhook_retry_seconds, settings.webhook_timeout_seconds,
                settings.webhook_allow_private,
            )
        )  # fmt: skip
        self._attempts: dict[str, _Attempt] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._express: set[str] = set()  # jobs served from the result cache without a slot (`_serve_cached`)
        self._probes: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._schema_task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._schema_ready = asyncio.Event()
        self._schema_error: str | None = "not checked yet"
        self._stopping = False

    async def start(self) -> None:
        """Start the schema, claim and cleanup loops (once)."""
        if self._loops:
            return
        self._wake = asyncio.Event()
        # The schema task ends once the schema is current; the other two run as long as the tracker.
        self._schema_task = asyncio.create_task(self.prepare_database())
        self._loops = [asyncio.create_task(self._claim_loop()), asyncio.create_task(self._cleanup_loop())]
        self._loops += [asyncio.create_task(self._webhook_loop())] if self.webhooks is not None else []
        logger.info("job tracker %s started with %d slots", self.owner, self.settings.max_concurrent_jobs)

    async def stop(self) -> None:
        """Hand the jobs over: stop claiming, stop the running attempts and give their leases back at once,
        so the tracker that replaces this one (a redeploy) resumes them from their finished stages. A lease
        that cannot be given back (database away) runs out instead, with the same result."""
        self._stopping = True
        for loop in [*self._loops, self._schema_task, *self._probes]:
            if loop is not None:
                loop.cancel()
        attempts = list(self._attempts.values())
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for attempt in attempts:
            try:
                await asyncio.to_thread(
                    self.repo.release, attempt.job_id, attempt.number, HANDED_OVER, 0.0
                )
                logger.info("job %s: attempt %d handed over", attempt.job_id, attempt.number)
            except Exception:
                logger.warning("job %s: lease not given back; it runs out instead", attempt.job_id)
        logger.info("job tracker %s stopped", self.owner)

    async def status(self) -> dict[str, Any]:
        """For /health: ready once the schema is current and the loops run."""
        broken = [loop for loop in self._loops if loop.done()]
        if self._stopping:
            state, error = "stopping", None
        elif broken:
            state, error = "failed", "a job tracker loop stopped"
        elif not self._schema_ready.is_set():
            state, error = "waiting for the database", self._schema_error
        else:
            state, error = "ready", None
        return {
            "state": state, "error": error, "slots": self.settings.max_concurrent_jobs, "running": len(self._tasks),
            "separation_slots": self.settings.max_concurrent_separations, "separating": self._separating(),
        }  # fmt: skip

    def healthy(self) -> bool:
        """False when a loop died unexpectedly: Serve should replace this replica."""
        return self._stopping or all(not loop.done() for loop in self._loops)

    async def _webhook_loop(self) -> None:
        assert self.webhooks is not None
        await self._schema_ready.wait()  # the outbox table may not exist before the first migration
        await self.webhooks.run()

    async def prepare_database(self) -> None:
        """Upgrade the schema and seed the configured API keys, retrying until the database answers."""
        delay = 1.0
        while True:
            try:
                await asyncio.to_thread(upgrade_schema, self.repo)
                await asyncio.to_thread(
                    ApiKeys(self.repo).seed, self.settings.seeded_api_keys, self.settings.seeded_operator_keys
                )
            except Exception as exc:
                self._schema_error = database_error(exc)
                logger.warning("job tracker waits for the database: %s", self._schema_error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._schema_error = None
            self._schema_ready.set()
            self._poke()
            logger.info("database schema is current")
            return

    async def submit(self, job: dict[str, Any]) -> str:
        """Admit a queued job (limits checked in the same step); with an idempotency key already used,
        the existing job's id."""
        if not self._schema_ready.is_set():
            raise ServiceUnavailable(f"The job database is not ready ({self._schema_error}); try again shortly.")
        now = utcnow()
        row = JobRow(
            **job, status=JobStatus.QUEUED.value, stage=Stage.QUEUED.value, progress=0.0,
            results=[], stage_seconds={}, created_at=now, updated_at=now, attempts=0, cancel_requested=False,
        )  # fmt: skip
        accepted = await asyncio.to_thread(self.repo.admit, row, AdmissionLimits.from_settings(self.settings))
        if accepted != row.id:
            return accepted
        self._poke()
        bind_job(row.id)
        metrics.job_submitted(row.options)
        logger.info("job %s queued", row.id)
        probe = asyncio.create_task(self._serve_cached(row))
        self._probes.add(probe)
        probe.add_done_callback(self._probes.discard)
        return row.id

    async def _serve_cached(self, row: JobRow) -> None:
        """A job whose result a finished job holds needs no model: it is taken at once, beside the slots,
        instead of waiting in the queue behind computations. Anything else waits for the claim loop."""
        try:
            options = JobOptions.model_validate(row.options)
            if self._stopping or not await self.cached.ready_result(row, options):
                return
            if not await asyncio.to_thread(self.repo.claim, row.id, 0, self.owner, self.settings.lease_seconds):
                return  # the claim loop took it first
        except Exception:  # the claim loop takes the job up instead
            logger.warning("job %s: not served from the cache at once", row.id, exc_info=True)
            return
        if self._stopping:  # claimed while the tracker began to stop: the next one serves it
            await asyncio.to_thread(self.repo.release, row.id, 1, HANDED_OVER, 0.0)
            return
        self._start(_Attempt(self, row.id, options, 1, None, 0.0), express=True)

    async def cancel(self, job_id: str) -> None:
        await asyncio.to_thread(self.repo.cancel, job_id)
        row = await asyncio.to_thread(self.repo.get, job_id)
        if row is not None and row.status == JobStatus.CANCELED and row.attempts == 0:
            # Canceled while queued: no attempt will report it, so tell its webhook here.
            metrics.job_failed("canceled", row.options)
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
        await self._schema_ready.wait()
        while not self._stopping:
            try:
                await self._claim()
            except Exception:  # the database may be away; try again on the next round
                logger.warning("job tracker could not claim jobs", exc_info=True)
            await metrics.sample_queue(self.repo, len(self._tasks))
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

    def _separating(self) -> int:
        """Running attempts (in slots) whose job needs Demucs."""
        return sum(
            1 for job_id, attempt in self._attempts.items()
            if job_id not in self._express and attempt.options.separation == SeparationMode.DEMUCS
        )  # fmt: skip

    async def _claim(self) -> None:
        free = self.settings.max_concurrent_jobs - (len(self._tasks) - len(self._express))
        if free <= 0 or self._stopping:
            return
        # Demucs jobs take at most max_concurrent_separations of the slots: one Separation replica runs one
        # song at a time, so more would only hold slots while they wait for it. Where the pool may fill
        # this round, the rest of the queue may go past a Demucs job that waits for it, so look at all of
        # the queue (at most max_queue_depth queued, plus leases that ran out).
        separations = self.settings.max_concurrent_separations - self._separating()
        limit = free + len(self._tasks) + (self.settings.max_queue_depth if separations < free else 0)
        rows = await asyncio.to_thread(self.repo.claimable, utcnow(), limit)
        if not [row for row in rows if row.id not in self._tasks] or not await self._pipeline_available():
            return
        for row in rows:
            if free <= 0 or self._stopping:
                break
            if row.id in self._tasks:
                continue
            if row.attempts >= self.settings.max_attempts:
                message = (
                    f"The job failed {row.attempts} times and was given up; last error: "
                    f"{row.last_error or 'its worker stopped answering'}"
                )
                await asyncio.to_thread(self.repo.fail_exhausted, row.id, row.attempts, message)
                metrics.job_failed("internal", row.options)
                logger.warning("job %s: %s", row.id, message)
                continue
            options = JobOptions.model_validate(row.options)
            needs_demucs = options.separation == SeparationMode.DEMUCS
            if needs_demucs and separations <= 0:
                continue  # stays queued, first in line for the next separation slot
            if not await asyncio.to_thread(
                self.repo.claim, row.id, row.attempts, self.owner, self.settings.lease_seconds
            ):
                continue  # another tracker took it
            self._start(_Attempt(self, row.id, options, row.attempts + 1, row.stems, row.progress,
                                 stage_seconds=dict(row.stage_seconds or {})))  # fmt: skip
            free -= 1
            separations -= needs_demucs

    def _start(self, attempt: _Attempt, express: bool = False) -> None:
        self._attempts[attempt.job_id] = attempt
        if express:
            self._express.add(attempt.job_id)
        self._tasks[attempt.job_id] = asyncio.create_task(self._run(attempt, attempt.options))

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
        bind_job(job_id)
        logger.info("job %s: attempt %d (%s)", job_id, attempt.number, options.separation.value)
        heartbeat = asyncio.create_task(self._heartbeat(attempt))
        try:
            output = await self.cached.run(job_id, options, attempt)
            await self._finish(
                attempt, JobStatus.SUCCEEDED, stage=Stage.DONE.value, progress=100.0,
                results=output.results, analysis=output.analysis, cache_hit=output.cache_hit,
            )  # fmt: skip
            logger.info("job %s succeeded%s", job_id, " (cache hit)" if output.cache_hit else "")
        except Exception as exc:
            try:
                await self._failed(attempt, exc)
            except Exception:
                # Nothing could be recorded (database away?): the lease runs out and the job is taken up again.
                logger.warning("job %s: could not record the end of attempt %d", job_id, attempt.number, exc_info=True)
        finally:
            heartbeat.cancel()
            await self._remove_temporaries(attempt)
            self._tasks.pop(job_id, None)
            self._attempts.pop(job_id, None)
            self._express.discard(job_id)
            self._poke()

    async def _remove_temporaries(self, attempt: _Attempt) -> None:
        """What the attempt's writers left unpublished (a replica that died mid-write, say); once the job
        succeeded, every earlier attempt's leftovers too, since no attempt publishes any more."""
        keys = JobKeys(attempt.job_id)
        try:
            await asyncio.to_thread(self.storage.delete_prefix, keys.attempt_temporaries(attempt.number))
            row = await asyncio.to_thread(self.repo.get, attempt.job_id)
            if row is not None and row.status == JobStatus.SUCCEEDED:
                await asyncio.to_thread(self.storage.delete_prefix, keys.temporaries)
        except Exception:  # storage or database away: the files are the job's and go with it, on delete or expiry
            logger.warning("job %s: temporaries of attempt %d not removed", attempt.job_id, attempt.number)

    async def _finish(self, attempt: _Attempt, status: JobStatus, **fields: Any) -> None:
        attempt.close_stage()
        done = await asyncio.to_thread(
            self.repo.finish, attempt.job_id, attempt.number, status, stage_seconds=attempt.stage_seconds, **fields
        )
        if not done:
            logger.info("job %s: attempt %d was superseded; its result is dropped", attempt.job_id, attempt.number)
            return
        metrics.job_ended(status, attempt.options, attempt.ended_by)
        await self._notify_final(attempt.job_id, attempt.options)

    async def notify(self, options: JobOptions, event_type: str, data: dict[str, Any]) -> None:
        if self.webhooks is not None and options.webhook_url:
            await self.webhooks.enqueue(options.webhook_url, event_type, data)

    async def _notify_final(self, job_id: str, options: JobOptions) -> None:
        if not options.webhook_url:
            return
        row = await asyncio.to_thread(self.repo.get, job_id)
        if row is not None:
            await self.notify(options, f"job.{row.status}", {
                "job_id": row.id, "status": row.status, "stage": row.stage, "progress": row.progress,
                "error": row.error, "results": row.results if row.status == JobStatus.SUCCEEDED else [],
            })  # fmt: skip

    async def _failed(self, attempt: _Attempt, exc: BaseException) -> None:
        job_id, cause = attempt.job_id, unwrap(exc)
        attempt.ended_by = exc
        stage = (attempt.stage or Stage.DECODING).value
        if isinstance(cause, LeaseLost):
            # Taken over, handed back or run out: another attempt owns the job (or will), so this one
            # records nothing, unless the job was canceled, which this attempt still has to say.
            attempt.lost = True
            logger.info("job %s: attempt %d lost its lease while %s", job_id, attempt.number, stage)
        elif not isinstance(cause, JobCanceled) and await asyncio.to_thread(self.repo.cancel_requested, job_id):
            # An error after a cancel or delete (the delete took the files the stage was reading) is the
            # cancel's doing: the job ends canceled rather than being retried.
            cause = JobCanceled("Canceled by the client.")
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
        metrics.attempt_released(attempt.options)

    async def _cleanup_loop(self) -> None:
        """Retention: uploads and results of jobs finished longer ago than the retention time go."""
        await self._schema_ready.wait()
        while True:
            try:
                cutoff = utcnow() - timedelta(seconds=self.settings.retention_seconds)
                for job_id in await asyncio.to_thread(self.repo.expirable, cutoff):
                    await asyncio.to_thread(self.storage.delete_prefix, JobKeys(job_id).prefix)
                    await asyncio.to_thread(self.repo.mark_expired, job_id)
                    logger.info("job %s expired; its files were removed", job_id)
                # Keys whose last holder was deleted or expired.
                await asyncio.to_thread(self.cached.cache.sweep)
            except Exception:
                logger.warning("retention cleanup failed", exc_info=True)
            await asyncio.sleep(self.settings.cleanup_interval_seconds)


class JobTrackerDeployment(JobTracker):
    """The `JobTracker` Serve deployment (one replica): upgraded with the application, gone with it.

    A new version's replica starts its loops at once; the old one, on Serve's graceful shutdown, hands
    its running jobs over (`stop`). Progress arrives as `report` calls from the model replicas."""

    async def __init__(  # type: ignore[misc]
        self, settings: Settings, separation: SeparationHandle, transcription: TranscriptionHandle
    ) -> None:
        super().__init__(settings, separation, transcription)
        await self.start()

    async def check_health(self) -> None:
        if not self.healthy():
            raise RuntimeError("a job tracker loop stopped; this replica must be replaced")

    async def __del__(self) -> None:
        await self.stop()


# The advisory lock every stemscribe process takes around Alembic's upgrade on PostgreSQL.
_SCHEMA_LOCK = 0x5715C21BE


def upgrade_schema(repo: JobRepository) -> None:
    """Alembic's upgrade to head, once however many processes start together: on PostgreSQL under an
    advisory lock (the second waits, then finds nothing to do); SQLite is one machine's file and
    serialises writers itself."""
    if repo.engine.dialect.name != "postgresql":
        repo.migrate()
        return
    with repo.engine.connect() as lock:
        lock.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _SCHEMA_LOCK})
        try:
            repo.migrate()
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _SCHEMA_LOCK})


def database_error(exc: BaseException) -> str:
    """The database's own complaint, in one line (the driver's message, not a stack trace)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, SQLAlchemyError) and cause.__cause__ is not None:
        cause = cause.__cause__
    original = getattr(cause, "orig", None) or cause or exc
    lines = str(original).strip().splitlines()
    return lines[0] if lines else type(original).__name__
