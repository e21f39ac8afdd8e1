"""What route handlers need, built once per ingress replica and reached as `ServicesDep`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from serve_app.domain.api_keys import ApiKeys
from serve_app.domain.db import JobRepository
from serve_app.domain.storage import StorageBackend
from serve_app.settings import Settings


@dataclass
class Services:
    settings: Settings
    repo: JobRepository
    storage: StorageBackend
    tracker: Any  # DeploymentHandle of the JobTracker deployment (deployments.job_tracker)
    separation: Any  # DeploymentHandle of deployments.separation.Separation
    transcription: Any  # DeploymentHandle of deployments.transcription.Transcription

    @property
    def keys(self) -> ApiKeys:
        return ApiKeys(self.repo)


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Your stemscribe API key")


async def get_owner_for_key(services: Services, key: str | None) -> str | None:
    """The id of the caller's API key; None when authentication is off."""
    if not services.settings.auth_required:
        return None
    return await asyncio.to_thread(services.keys.authenticate, key)


async def get_owner(services: ServicesDep, key: Annotated[str | None, Security(_api_key_header)]) -> str | None:
    return await get_owner_for_key(services, key)


OwnerDep = Annotated[str | None, Depends(get_owner)]
