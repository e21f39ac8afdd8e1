"""What the sync and async clients share: settings, the upload form, answers, retry decisions."""

from __future__ import annotations

import os
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

from stemscribe_client.errors import ApiError, ServiceUnreachable, error_for, parse_retry_after
from stemscribe_client.models import Job, JobAccepted, JobPage

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "STEMSCRIBE_URL"
KEY_ENV = "STEMSCRIBE_API_KEY"
API = "/api/v1"

# Form fields of POST /api/v1/transcribe (README, API).
OPTION_FIELDS = (
    "separation", "onset_threshold", "frame_threshold", "minimum_note_length_ms", "minimum_frequency",
    "maximum_frequency", "clean_ghost_notes", "clean_octave_duplicates", "quantize_grid", "webhook_url",
    "webhook_progress",
)  # fmt: skip
# 503 (queue full, the database or tracker away for a moment) is worth another try with the same key.
RETRY_STATUSES = frozenset({503})


def resolve_url(url: str | None) -> str:
    return (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")


def resolve_key(api_key: str | None) -> str | None:
    return api_key or os.environ.get(KEY_ENV) or None


def headers(api_key: str | None) -> dict[str, str]:
    out = {"User-Agent": "stemscribe-client/0.1", "Accept": "application/json, application/problem+json"}
    if api_key:
        out["X-API-Key"] = api_key
    return out


def form_fields(options: dict[str, Any]) -> dict[str, str]:
    unknown = set(options) - set(OPTION_FIELDS)
    if unknown:
        raise TypeError(f"unknown transcription option(s): {', '.join(sorted(unknown))}")
    form = {}
    for name, value in options.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        form[name] = str(getattr(value, "value", value))
    return form


def new_idempotency_key() -> str:
    return f"stemscribe-client-{uuid.uuid4().hex}"


def job_id_of(job: str | Job | JobAccepted) -> str:
    return job if isinstance(job, str) else job.job_id


def unreachable(url: str, exc: httpx.TransportError) -> ServiceUnreachable:
    if isinstance(exc, httpx.ConnectError):
        reason = "connection refused" if _refused(exc) else f"cannot connect: {exc}"
    elif isinstance(exc, httpx.TimeoutException):
        reason = "no answer in time"
    else:
        reason = str(exc) or type(exc).__name__
    return ServiceUnreachable(url, reason)


def _refused(exc: BaseException) -> bool:
    """Whether a ConnectError came from a refused connection (the async stack words it differently)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower():
            return True
        inner = getattr(seen, "exceptions", None)  # anyio groups the attempts it made
        if inner and any(_refused(e) for e in inner):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def check(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    raise error_for(response)


def parse_job(response: httpx.Response) -> Job:
    job = Job.model_validate(check(response).json())
    job.retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return job


def parse_accepted(response: httpx.Response) -> JobAccepted:
    accepted = JobAccepted.model_validate(check(response).json())
    accepted.location = response.headers.get("Location")
    return accepted


def parse_page(response: httpx.Response) -> JobPage:
    return JobPage.model_validate(check(response).json())


def retry_delay(attempt: int, backoff: float, error: ApiError | None, max_wait: float) -> float:
    """Seconds before retry number `attempt` (1, 2, ...): the service's Retry-After, else doubling backoff."""
    if error is not None and error.retry_after is not None:
        return min(error.retry_after, max_wait)
    return min(backoff * 2 ** (attempt - 1), max_wait)


def result_path(dest: Path, name: str) -> Path:
    """Where result `name` (e.g. midi/bass.mid) goes under `dest`; never outside it."""
    parts = PurePosixPath(name).parts
    if not parts or any(part in ("..", "") for part in parts) or PurePosixPath(name).is_absolute():
        raise ValueError(f"refusing to write a result named {name!r} outside {dest}")
    return dest.joinpath(*parts)
