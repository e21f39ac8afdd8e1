"""The job tracker lives and dies with the application, on PostgreSQL: the application deploys without
its database and proceeds when it comes back; a redeploy with a changed setting hands the jobs over to
one new tracker that runs them with the new setting; deleting the application leaves no tracker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import ray
from ray import serve

from music.engines.demucs_models import DEFAULT_TEST_MODEL
from tests.audio_files import encode, tone
from tests.integration.conftest import (
    APP_NAME,
    Service,
    TcpProxy,
    deploy,
    finished_once,
    fresh_postgres_database,
    replica_actors,
    undeploy,
    wait_stage,
)
from tests.music import melody, render

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def database_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", 5432)  # closed: the application deploys with its database away
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def service(serve_url: str, model_dir: Path, database_proxy: TcpProxy, tmp_path_factory) -> Iterator[Service]:
    with fresh_postgres_database() as url:
        proxied = url.replace("127.0.0.1:5432", f"127.0.0.1:{database_proxy.port}")
        svc = deploy(
            serve_url, wait_for_database=False, data_dir=str(tmp_path_factory.mktemp("data-lifecycle")), database_url=proxied,
            demucs_model=DEFAULT_TEST_MODEL, demucs_model_dir=str(model_dir), max_concurrent_jobs=1,
            lease_seconds=6, retry_backoff_seconds=1,
        )  # fmt: skip
        yield svc
        if APP_NAME in serve.status().applications:
            undeploy(svc)


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("audio")
    return {
        "short": render(melody(seconds=6.0), folder / "short.wav"),
        "long": encode(folder / "long.flac", tone(120.0), 44100, "flac"),  # ~20 s of separation here
    }


def _when(condition, timeout: float = 90):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError("condition not met in time")


def test_it_deploys_without_its_database_and_proceeds_when_the_database_comes_back(
    service: Service, database_proxy: TcpProxy, audio
) -> None:
    try:
        health = service.client.get("/api/v1/health")
        assert health.status_code == 200, health.text
        components = health.json()["components"]
        assert components["database"] == {"status": "unavailable", "code": "database_unreachable"}
        assert components["job_tracker"] == {"status": "starting", "code": "waiting_for_database"}
        assert "refused" not in health.text.lower()  # the reasons are for operators
        details = service.client.get("/api/v1/health/details").json()["components"]  # open: auth is off here
        database = details["database"]
        assert "not reachable" in database["detail"]["error"], database
        assert "refused" in database["detail"]["error"].lower(), database  # the driver's own words
        tracker = details["job_tracker"]["detail"]
        assert tracker["state"] == "waiting for the database", tracker
        assert service.client.get("/api/v1/health/ready").status_code == 503
        upload = service.submit(audio["short"], separation="none")
        assert upload.status_code == 503, upload.text
        assert upload.json()["code"] == "service_unavailable" and "retry-after" in upload.headers
    finally:
        database_proxy.open()
    # No redeploy: the tracker creates the schema, and everything answers.
    _when(lambda: service.client.get("/api/v1/health/ready").status_code == 200)
    accepted = service.submit(audio["short"], separation="none")
    assert accepted.status_code == 202, accepted.text
    finished_once(service, [accepted.json()["job_id"]])


def test_a_redeploy_with_a_changed_setting_hands_the_jobs_to_one_new_tracker(service: Service, audio) -> None:
    running = service.submit(audio["long"], separation="demucs").json()["job_id"]
    queued = service.submit(audio["short"], separation="none").json()["job_id"]
    wait_stage(service, running, "separating")
    assert service.client.get(f"/api/v1/jobs/{queued}").json()["status"] == "queued"  # one slot

    # New settings (two slots); the old tracker replica hands its job over through its lease.
    redeployed = deploy(service.url, **{**service.settings, "max_concurrent_jobs": 2})
    redeployed.seen_progress = service.seen_progress
    _when(lambda: len(replica_actors("JobTracker")) == 1)
    first, second = finished_once(redeployed, [running, queued])
    assert first["attempts"] == 2 and second["attempts"] == 1  # handed over once; the queued one ran once
    # The queued job ran beside the long one, which only the new setting allows.
    assert datetime.fromisoformat(second["started_at"]) < datetime.fromisoformat(first["finished_at"])
    assert len(replica_actors("JobTracker")) == 1
    tracker = redeployed.client.get("/api/v1/health/details").json()["components"]["job_tracker"]["detail"]
    assert tracker["slots"] == 2 and tracker["state"] == "ready"
    service.settings = redeployed.settings


def test_deleting_the_application_leaves_no_tracker(service: Service) -> None:
    assert len(replica_actors("JobTracker")) == 1
    service.client.close()
    serve.delete(APP_NAME)
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    assert not [name for name in names if "JobTracker" in name or "job-tracker" in name], names
