"""What route handlers need, built once per ingress replica, and the dependencies that hand it to them
as named types (`ServicesDep`, `SettingsDep`, `OwnerDep`, `OperatorDep`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from serve_app.api.readiness import HealthLog
from serve_app.domain.api_keys import ApiKeys
from serve_app.domain.db import JobRepository
from serve_app.domain.errors import ServiceUnavailable, StemscribeError, unwrap
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
    health_log: HealthLog = field(default_factory=HealthLog)

    @property
    def keys(self) -> ApiKeys:
        return ApiKeys(self.repo)


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Your stemscribe API key")
ApiKeyHeader = Annotated[str | None, Security(_api_key_header)]


async def get_owner_for_key(services: Services, key: str | None) -> str | None:
    """The id of the caller's API key; None when authentication is off."""
    if not services.settings.auth_required:
        return None
    return await asyncio.to_thread(services.keys.authenticate, key)


async def get_owner(services: ServicesDep, key: ApiKeyHeader) -> str | None:
    return await get_owner_for_key(services, key)


OwnerDep = Annotated[str | None, Depends(get_owner)]


async def get_operator(services: ServicesDep, key: ApiKeyHeader) -> str | None:
    """The id of the caller's operator key (401 without a valid key, 403 for a client's); None when
    authentication is off, where every route is open."""
    if not services.settings.auth_required:
        return None
    return await asyncio.to_thread(services.keys.authenticate_operator, key)


OperatorDep = Annotated[str | None, Depends(get_operator)]


async def call_tracker(call: Any) -> Any:
    """Await a call to the job tracker: its own errors as they are, anything else (it died, it is being
    replaced) as ServiceUnavailable."""
    try:
        return await call
    except Exception as exc:
        cause = unwrap(exc)
        if isinstance(cause, StemscribeError):
            raise cause from exc
        raise ServiceUnavailable("The job tracker is not reachable; try again shortly.") from exc
