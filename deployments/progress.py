"""How a model replica tells the job tracker how far a job is, and learns whether it should stop.

Progress goes to the `JobTracker` deployment of the replica's own application, through a handle
obtained at run time (the tracker is bound with the model handles, so they cannot be bound with
its handle too). Reports are fire-and-forget: a report that is lost costs a progress step, never
the job. The tracker, not the replica, writes the job's row."""

from __future__ import annotations

import logging
import time
from typing import Any

from ray import serve

from deployments.job_tracker import TRACKER_DEPLOYMENT
from serve_app.domain.db import JobRepository
from serve_app.domain.jobs import JobStatus, Stage

logger = logging.getLogger(__name__)


class TrackerReporter:
    def __init__(self) -> None:
        self._handle: Any = None

    def __call__(self, job_id: str, stage: Stage, fraction: float) -> None:
        try:
            if self._handle is None:
                # The application this replica belongs to; a redeploy's new tracker answers the same name.
                self._handle = serve.get_deployment_handle(TRACKER_DEPLOYMENT)
            self._handle.report.remote(job_id, stage.value, fraction)
        except Exception:  # progress is advisory; the job must not fail because a report did
            self._handle = None
            logger.warning("could not report progress of job %s", job_id, exc_info=True)


class CancelCheck:
    """`should_stop` for long model runs: asks the database, at most once per `interval` seconds,
    whether the job was canceled, or taken from the attempt that asked for this work (its tracker
    gave the lease back on a redeploy, or a newer attempt took over), so that work nobody waits for
    stops within a segment instead of running beside the attempt that replaced it. `attempt` is the
    attempt the work is for."""

    def __init__(self, repo: JobRepository, job_id: str, attempt: int, interval: float = 1.0) -> None:
        self.repo, self.job_id, self.interval = repo, job_id, interval
        self._checked = 0.0
        self._stop = False
        self._attempt = attempt
        self.__call__()

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self._stop and now - self._checked >= self.interval:
            self._checked = now
            try:
                self._stop = self._should_stop()
            except Exception:  # the database being away is no reason to stop separating
                logger.warning("could not check job %s for cancellation", self.job_id)
        return self._stop

    def _should_stop(self) -> bool:
        row = self.repo.get(self.job_id)
        if row is None or row.cancel_requested or JobStatus(row.status).is_final:
            return True
        # A running attempt always holds its lease; none means its tracker gave the job back.
        return row.attempts != self._attempt or row.lease_owner is None
