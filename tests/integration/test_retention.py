"""Uploads and results expire: the cleaner removes them and their URLs answer 410."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.audio_files import encode, tone
from tests.integration.conftest import Service, deploy, undeploy

pytestmark = pytest.mark.integration

RETENTION_SECONDS = 3


@pytest.fixture(scope="module")
def service(serve_url: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = deploy(
        serve_url, data_dir=str(tmp_path_factory.mktemp("data-retention")),
        demucs_model_dir=str(model_dir), retention_seconds=RETENTION_SECONDS, cleanup_interval_seconds=0.5,
    )  # fmt: skip
    yield svc
    undeploy(svc)


def test_finished_jobs_expire_after_the_retention_time(service: Service, tmp_path: Path) -> None:
    song = encode(tmp_path / "a.wav", tone(2.0, channels=1), 22050, "wav")
    job = service.wait(service.submit(song, separation="none").json()["job_id"])
    assert job["status"] == "succeeded" and job["expired_at"] is None
    link = job["results"][0]["url"]
    assert service.client.get(link).status_code == 200

    deadline = time.monotonic() + RETENTION_SECONDS + 30
    while service.client.get(f"/api/v1/jobs/{job['job_id']}").json()["expired_at"] is None:
        assert time.monotonic() < deadline, "the job never expired"
        time.sleep(0.5)
    expired = service.client.get(link)
    assert expired.status_code == 410 and expired.json()["code"] == "job_gone"
    after = service.client.get(f"/api/v1/jobs/{job['job_id']}").json()
    assert after["status"] == "succeeded" and after["results"] == []
    assert not (Path(service.settings["data_dir"]) / "storage" / "jobs" / job["job_id"]).exists()
