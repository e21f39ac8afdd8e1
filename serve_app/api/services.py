"""What route handlers need, built once per ingress replica and reached as `ServicesDep`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from serve_app.domain.db import JobRepository
from serve_app.domain.storage import StorageBackend
from serve_app.settings import Settings


@dataclass
class Services:
    settings: Settings
    repo: JobRepository
    storage: StorageBackend
    tracker: Any  # ray ActorHandle of deployments.job_tracker.JobTracker
    separation: Any  # DeploymentHandle of deployments.separation.Separation
    transcription: Any  # DeploymentHandle of deployments.transcription.Transcription


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]
