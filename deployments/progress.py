"""How a replica tells the job tracker how far a job is, without waiting for an answer."""

from __future__ import annotations

import logging

import ray

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
