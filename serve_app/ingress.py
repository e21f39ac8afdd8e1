"""The HTTP ingress deployment: a thin shell that builds the FastAPI app for its replica."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.api.app import create_api
from serve_app.api.services import Services
from serve_app.domain.db import JobRepository
from serve_app.domain.storage import storage_from_settings
from serve_app.logs import configure_logging
from serve_app.settings import Settings

logger = logging.getLogger(__name__)


@serve.ingress()
class Ingress:
    def __init__(
        self,
        settings: Settings,
        tracker: DeploymentHandle,
        separation: DeploymentHandle,
        transcription: DeploymentHandle,
    ) -> None:
        # Nothing here waits for the database: the ingress answers (health, 503s) while it is away.
        self.settings = settings
        self.tracker = tracker
        configure_logging(settings)
        self.separation = separation
        self.transcription = transcription
        self.repo = JobRepository(settings.database_url.get_secret_value())
        self.storage = storage_from_settings(settings)
        logger.info("ingress ready: database %s, storage %s", self.repo.engine.dialect.name, settings.storage_backend)
        if not settings.auth_required:
            logger.warning(
                "AUTHENTICATION IS OFF: anyone who reaches this service can upload and read every job. "
                "Set auth_required: true (STEMSCRIBE_AUTH_REQUIRED=1) before exposing it."
            )

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(
            Services(self.settings, self.repo, self.storage, self.tracker, self.separation, self.transcription)
        )
