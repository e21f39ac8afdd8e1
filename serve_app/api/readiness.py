"""How each component is doing. Everyone may see a status word and a stable code per component
(`/api/v1/health`); the component's own report, with the database driver's words or the model's
folder, goes to the log (when it changes) and to operators (`/api/v1/health/details`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from deployments.job_tracker import database_error
from serve_app.api.schemas import ComponentDetails, ComponentHealth, Health, HealthDetails
from serve_app.api.schemas import ComponentStatus as Status
from serve_app.domain.errors import ServiceUnavailable, StemscribeError

if TYPE_CHECKING:
    from serve_app.api.services import Services

logger = logging.getLogger(__name__)

OK = "ok"
# A component's own state word (in its report) -> what the public view says.
_TRACKER_STATES = {
    "ready": (Status.READY, OK),
    "waiting for the database": (Status.STARTING, "waiting_for_database"),
    "stopping": (Status.UNAVAILABLE, "tracker_stopping"),
    "failed": (Status.UNAVAILABLE, "tracker_failed"),
}
_MODEL_STATES = {
    "ready": (Status.READY, OK),
    "loading": (Status.STARTING, "model_loading"),
    "failed": (Status.UNAVAILABLE, "model_unavailable"),
}
Judge = Callable[[dict[str, Any]], tuple[Status, str]]


def _answered(_: dict[str, Any]) -> tuple[Status, str]:
    return Status.READY, OK


def _by_state(states: dict[str, tuple[Status, str]], unknown: str) -> Judge:
    def judge(report: dict[str, Any]) -> tuple[Status, str]:
        return states.get(str(report.get("state")), (Status.UNAVAILABLE, unknown))

    return judge


class HealthLog:
    """Logs a component's report when its status, code or error changes, not on every poll."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[Status, str, Any]] = {}

    def record(self, name: str, component: ComponentDetails) -> None:
        seen = (component.status, component.code, component.detail.get("error"))
        if self._last.get(name) == seen:
            return
        first = name not in self._last
        self._last[name] = seen
        if component.status is Status.READY:
            if not first:
                logger.info("health: %s is ready again", name)
            return
        level = logging.INFO if component.status is Status.STARTING else logging.WARNING
        logger.log(level, "health: %s %s (%s): %s", name, component.status.value, component.code, component.detail)


async def check(services: Services) -> HealthDetails:
    """Every component's report, probed at once, each within the health timeout."""
    timeout = services.settings.health_timeout_seconds

    async def probe(name: str, call: Awaitable[Any], judge: Judge) -> tuple[str, ComponentDetails]:
        try:
            report = await asyncio.wait_for(call, timeout)
        except TimeoutError:
            found = ComponentDetails(
                status=Status.UNAVAILABLE, code=f"{name}_unreachable", detail={"error": f"no answer within {timeout:g} s"}
            )
        except Exception as exc:
            error = exc.message if isinstance(exc, StemscribeError) else type(exc).__name__
            found = ComponentDetails(status=Status.UNAVAILABLE, code=f"{name}_unreachable", detail={"error": error})
        else:
            report = report if isinstance(report, dict) else {}
            status, code = judge(report)
            found = ComponentDetails(status=status, code=code, detail=report)
        services.health_log.record(name, found)
        return name, found

    async def database() -> dict[str, Any]:
        try:
            await asyncio.to_thread(services.repo.ping)
        except ServiceUnavailable as exc:
            # The driver's own words (refused, unknown host, bad password): for the log and operators only.
            raise ServiceUnavailable(f"{exc.message} ({database_error(exc)})") from exc
        return {"backend": services.repo.engine.dialect.name}

    async def storage() -> dict[str, Any]:
        await asyncio.to_thread(services.storage.ping)
        return {"backend": services.settings.storage_backend}

    results = await asyncio.gather(
        probe("database", database(), _answered),
        probe("storage", storage(), _answered),
        # "ready" once it has brought the schema up to date; "waiting for the database" with the reason before.
        probe("job_tracker", services.tracker.status.remote(), _by_state(_TRACKER_STATES, "tracker_failed")),
        probe("separation", services.separation.status.remote(), _by_state(_MODEL_STATES, "model_unavailable")),
        probe("transcription", services.transcription.status.remote(), _by_state(_MODEL_STATES, "model_unavailable")),
    )
    components = dict(results)
    return HealthDetails(
        live=True, ready=all(c.status is Status.READY for c in components.values()), components=components
    )


def public(details: HealthDetails) -> Health:
    """What anyone may see: no component's report, only its status word and code."""
    return Health(
        live=details.live, ready=details.ready,
        components={name: ComponentHealth(status=c.status, code=c.code) for name, c in details.components.items()},
    )  # fmt: skip
