"""A job through the result cache: the same decoded audio, result options and models as a finished
job's get a copy of that job's files instead of a computation.

The key (`serve_app.domain.result_key`) is made when an attempt starts, from the upload's sample hash
(taken by the ingress while it validated the upload), the job's options and what the model deployments
report about the models they run now. The database then decides (`serve_app.domain.result_cache`):
reuse a holder's files, wait for the job computing the same key, or compute. So identical jobs that
arrive together compute once: the first computes, the others wait and then copy its files.

A copy is the job's own: hard links on local storage, server-side copies on S3, staged and published
under the attempt's lease like every other file the attempt writes (`serve_app.domain.job_files`).
Across owners only those files are shared (and the analysis computed from them), never a job record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from serve_app.domain.db import JobRepository, JobRow
from serve_app.domain.job_files import JobFiles
from serve_app.domain.jobs import JobOptions
from serve_app.domain.pipeline import AttemptContext, JobOutput, JobPipeline
from serve_app.domain.result_cache import ResultCache, Reuse, Wait
from serve_app.domain.result_key import library_versions, result_key
from serve_app.domain.storage import JobKeys
from serve_app.settings import Settings

logger = logging.getLogger(__name__)

# How often a job waiting for another's computation of the same key looks again (and hears of a cancel).
WAIT_POLL_SECONDS = 0.5

# Told of every job the cache was asked about: (hit, options); the tracker counts them in its metrics.
LookupListener = Callable[[bool, JobOptions], None]


class CachedPipeline:
    def __init__(
        self, pipeline: JobPipeline, repo: JobRepository, settings: Settings, on_lookup: LookupListener | None = None
    ) -> None:
        self.pipeline = pipeline
        self.repo = repo
        self.cache = ResultCache(repo)
        self.enabled = settings.result_cache
        self.across_owners = settings.result_cache_across_owners
        self.on_lookup = on_lookup or (lambda hit, options: None)

    async def key_for(self, job: JobRow, options: JobOptions) -> str | None:
        """The job's cache key, or None when the job bypasses the cache (cache off, no sample hash: a job
        from before the cache, or the model deployments not answering)."""
        if not self.enabled or job.audio_sha256 is None:
            return None
        try:
            separation, transcription = await asyncio.gather(
                self.pipeline.separation.fingerprint.remote(options.separation.value),
                self.pipeline.transcription.fingerprint.remote(),
            )
        except Exception as exc:  # computing without the cache beats failing the job
            logger.warning("job %s: no model fingerprints (%s); computed without the cache", job.id, exc)
            return None
        # The tracker writes the MIDI, MusicXML and notes.json with these.
        models = {"separation": separation, "transcription": transcription,
                  "packaging": library_versions("pretty_midi", "mido", "music21")}  # fmt: skip
        scope = None if self.across_owners else f"owner:{job.owner}"
        return result_key(job.audio_sha256, options, models, scope)

    async def ready_result(self, job: JobRow, options: JobOptions) -> bool:
        """Whether a finished job holds this job's result now (so serving it takes no model)."""
        key = await self.key_for(job, options)
        return key is not None and await asyncio.to_thread(self.cache.holder, key) is not None

    async def run(self, job_id: str, options: JobOptions, ctx: AttemptContext) -> JobOutput:
        job = await asyncio.to_thread(self.repo.get, job_id)
        key = None if job is None else await self.key_for(job, options)
        if job is None or key is None:
            return await self.pipeline.run(job_id, options, ctx)
        gone: list[str] = []  # holders whose files vanished under the copy
        while True:
            decision = await asyncio.to_thread(self.cache.begin, key, job_id, gone)
            if isinstance(decision, Reuse):
                holder = decision.holder
                try:
                    output = await asyncio.to_thread(self._copy, job_id, holder, ctx.number)
                except FileNotFoundError:
                    # Deleted or expired while it was copied: another holder, or a computation.
                    logger.info("job %s: the files of job %s went while they were copied", job_id, holder.id)
                    await asyncio.to_thread(self.cache.forget, key, holder.id)
                    gone.append(holder.id)
                    continue
                logger.info("job %s: results reused from job %s (key %s)", job_id, holder.id, key[:12])
                self.on_lookup(True, options)
                return output
            if isinstance(decision, Wait):
                await ctx.checkpoint()
                await asyncio.sleep(WAIT_POLL_SECONDS)
                continue
            break
        self.on_lookup(False, options)
        output = await self.pipeline.run(job_id, options, ctx)
        if await self.key_for(job, options) != key:
            # The models changed while it ran: its results may be of either, so they are filed under neither.
            logger.warning("job %s: the models changed while it ran; its results are not reused", job_id)
            await asyncio.to_thread(self.cache.abandon, key, job_id)
        return output

    def _copy(self, job_id: str, holder: JobRow, attempt: int) -> JobOutput:
        source, target = JobKeys(holder.id), JobKeys(job_id)
        with JobFiles(self.pipeline.storage, job_id, attempt, self.pipeline.leases) as files:
            for name in holder.results:
                files.copy(source.result(name), target.result(name))
            files.publish()
        analysis: dict[str, Any] = dict(holder.analysis or {})
        return JobOutput(list(holder.results), analysis, cache_hit=True)
