"""Faults the integration tests inject from test code: a deployment class that fails the way a real
replica can, bound in place of the production one (`serve_app.app.build_application`)."""

from __future__ import annotations

import logging
import os

from deployments.separation import Separation
from serve_app.domain.storage import JobKeys

logger = logging.getLogger(__name__)

CRASH_MARKER = "STEMSCRIBE-FAULT-CRASH"


class CrashingSeparation(Separation):
    """A separation replica that dies at once (`os._exit`: no cleanup, no answer, as a crash in a decoder
    would) when a job's upload carries CRASH_MARKER: a file that kills its worker every time."""

    def _prepare_stems(self, job_id: str, mode: object, attempt: int) -> list[str]:  # type: ignore[override]
        if CRASH_MARKER.encode() in self.storage.get_bytes(JobKeys(job_id).upload):
            logger.critical("fault injection: the upload of job %s carries the crash marker; exiting", job_id)
            os._exit(1)
        return super()._prepare_stems(job_id, mode, attempt)  # type: ignore[arg-type]
