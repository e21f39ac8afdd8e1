"""The tracker replica dies after it recorded an upload's job but before its answer reached the ingress
(a window the chaos benchmark's tracker kills can hit): the job is kept with its upload, and the client's retry with the
same Idempotency-Key gets that job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments.job_tracker import JobTracker
from serve_app.api.app import create_api
from serve_app.api.services import Services
from serve_app.domain.db import JobRepository
from serve_app.domain.storage import JobKeys, LocalStorage
from serve_app.settings import Settings
from tests.audio_files import encode, tone
from tests.unit.conftest import serving


class _Method:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


class _TrackerDyingOnce:
    """A tracker handle whose first submit commits the job, then fails as a call to a killed replica does."""

    def __init__(self, tracker: JobTracker) -> None:
        self.deaths = 0

        async def submit(job: dict[str, Any]) -> str:
            accepted = await tracker.submit(job)
            if self.deaths == 0:
                self.deaths += 1
                raise ConnectionError("the actor died unexpectedly before finishing this task")
            return accepted

        self.submit = _Method(submit)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, LocalStorage, JobRepository]]:
    settings = Settings(data_dir=tmp_path, auth_required=False)
    repo = JobRepository(settings.database_url.get_secret_value())
    repo.migrate()
    storage = LocalStorage(tmp_path / "s")
    tracker = JobTracker(settings, None, None)  # type: ignore[arg-type]
    tracker._schema_ready.set()  # the schema is current (migrated above); no loops needed to admit
    services = Services(settings, repo, storage, _TrackerDyingOnce(tracker), separation=None, transcription=None)
    with serving(create_api(services)) as url:
        yield url, storage, repo
    repo.dispose()


def test_a_job_the_tracker_recorded_before_dying_keeps_its_upload(service, tmp_path: Path) -> None:
    url, storage, repo = service
    song = encode(tmp_path / "s.wav", tone(1.0, channels=1), 22050, "wav")

    def post() -> httpx.Response:
        with open(song, "rb") as fh:
            return httpx.post(
                f"{url}/api/v1/transcribe", files={"file": ("s.wav", fh)}, data={"separation": "none"},
                headers={"Idempotency-Key": "one-song"}, timeout=30,
            )  # fmt: skip

    first = post()
    assert first.status_code == 202, first.text  # the job exists: say so, rather than 503
    job_id = first.json()["job_id"]
    assert storage.exists(JobKeys(job_id).upload)
    again = post()  # a client that saw a failure would retry with the same key
    assert again.status_code == 202 and again.json()["job_id"] == job_id
    assert storage.exists(JobKeys(job_id).upload)
    assert [row.id for row in repo.page(None, None, 10, None)] == [job_id]
