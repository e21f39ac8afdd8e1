"""Health: liveness and readiness for anyone (a status word and a code per component), the details
for operators."""

from __future__ import annotations

from fastapi import APIRouter, Response

from serve_app.api import readiness
from serve_app.api.errors import problem_responses
from serve_app.api.schemas import Health, HealthDetails
from serve_app.api.services import OperatorDep, ServicesDep

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness, and readiness of each component")
async def health(services: ServicesDep) -> Health:
    return readiness.public(await readiness.check(services))


@router.get(
    "/health/ready",
    response_model=Health,
    responses={503: {"model": Health, "description": "Not ready: the same report"}},
    summary="200 when every component is ready, else 503",
)
async def ready(services: ServicesDep, response: Response) -> Health:
    report = readiness.public(await readiness.check(services))
    if not report.ready:
        response.status_code = 503
    return report


@router.get(
    "/health/details",
    response_model=HealthDetails,
    responses=problem_responses(403),
    summary="Each component's own report (errors in words, models, devices): for operators' keys",
)
async def details(services: ServicesDep, _operator: OperatorDep) -> HealthDetails:
    return await readiness.check(services)
