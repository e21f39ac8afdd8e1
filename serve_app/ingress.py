"""The HTTP ingress deployment: a thin shell that builds the FastAPI app for its replica."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.job_tracker import get_or_create_tracker
from serve_app.api.routes import create_api
from serve_app.api.services import Services
from serve_app.domain.db import JobRepository
from serve_app.domain.storage import storage_from_settings
from serve_app.settings import Settings

logger = logging.getLogger(__name__)


@serve.ingress()
class Ingress:
    async def __init__(
        self, settings: Settings, separation: DeploymentHandle, transcription: DeploymentHandle
    ) -> None:
        self.settings = settings
        self.separation = separation
        self.transcription = transcription
        self.tracker = get_or_create_tracker(settings, separation, transcription)
        # The tracker creates the schema; wait for it so the first read finds the table.
        await self.tracker.start.remote()
        self.repo = JobRepository(settings.database_url)
        self.storage = storage_from_settings(settings)
        logger.info("ingress ready: database %s, storage %s", self.repo.engine.dialect.name, settings.storage_backend)
        if not settings.auth_required:
            logger.warning(
                "AUTHENTICATION IS OFF: anyone who reaches this service can upload and read every job. "
                "Set auth_required: true (STEMSCRIBE_AUTH_REQUIRED=1) before exposing it."
            )

    async def check_health(self) -> None:
        # Serve calls this every few seconds: it also restarts the tracker's loops if Ray restarted it.
        await self.tracker.start.remote()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(
            Services(self.settings, self.repo, self.storage, self.tracker, self.separation, self.transcription)
        )
