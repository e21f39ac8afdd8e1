"""How a replica tells the job tracker how far a job is, and learns whether it should stop."""

from __future__ import annotations

import logging
import time

import ray

from serve_app.domain.db import JobRepository
from serve_app.domain.jobs import Stage
from serve_app.settings import Settings

logger = logging.getLogger(__name__)


class TrackerReporter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._actor: ray.actor.ActorHandle | None = None

    def __call__(self, job_id: str, stage: Stage, fraction: float) -> None:
        try:
            if self._actor is None:
                self._actor = ray.get_actor(self.settings.tracker_actor_name, namespace=self.settings.ray_namespace)
            self._actor.report.remote(job_id, stage.value, fraction)
        except Exception:  # progress is advisory; the job must not fail because a report did
            self._actor = None
            logger.warning("could not report progress of job %s", job_id, exc_info=True)


class CancelCheck:
    """`should_stop` for long model runs: asks the database, at most once per `interval` seconds."""

    def __init__(self, repo: JobRepository, job_id: str, interval: float = 1.0) -> None:
        self.repo, self.job_id, self.interval = repo, job_id, interval
        self._checked = 0.0
        self._stop = False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self._stop and now - self._checked >= self.interval:
            self._checked = now
            try:
                self._stop = self.repo.cancel_requested(self.job_id)
            except Exception:  # the database being away is no reason to stop separating
                logger.warning("could not check job %s for cancellation", self.job_id)
        return self._stop
