"""Failures injected into a running service on PostgreSQL: every job ends, none is lost, none
is done twice, progress never goes backwards."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from deployments.demucs_models import DEFAULT_TEST_MODEL
from serve_app.settings import Settings
from tests.audio_files import encode, tone
from tests.integration.conftest import APP_NAME, Service, deploy, undeploy
from tests.music import melody, render

pytestmark = pytest.mark.integration

CRASH_MARKER = "STEMSCRIBE-FAULT-CRASH"
MAX_ATTEMPTS = 3


@pytest.fixture(scope="module")
def service(serve_url: str, model_dir: Path, postgres_url: str, tmp_path_factory) -> Iterator[Service]:
    svc = deploy(
        serve_url, data_dir=str(tmp_path_factory.mktemp("data-resilience")), database_url=postgres_url,
        demucs_model=DEFAULT_TEST_MODEL, demucs_model_dir=str(model_dir), max_concurrent_jobs=2,
        lease_seconds=6, retry_backoff_seconds=1, max_attempts=MAX_ATTEMPTS, fault_crash_marker=CRASH_MARKER,
    )  # fmt: skip
    yield svc
    undeploy(svc)


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("audio")
    return {
        "short": render(melody(seconds=6.0), folder / "short.wav"),
        "long": encode(folder / "long.flac", tone(120.0), 44100, "flac"),  # ~20 s of separation here
    }


def _wait_stage(service: Service, job_id: str, stage: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = service.client.get(f"/api/v1/jobs/{job_id}").json()
        if job["stage"] == stage:
            return
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.1)
    raise AssertionError(f"{job_id} never reached {stage}")


def _finished_once(service: Service, jobs: list[str]) -> list[dict]:
    """Every job succeeded with one set of results, and its progress never went backwards."""
    finished = [service.wait(job_id, timeout=300) for job_id in jobs]
    for job in finished:
        assert job["status"] == "succeeded", job
        names = [r["name"] for r in job["results"]]
        assert len(names) == len(set(names))
        seen = service.seen_progress[job["job_id"]]
        assert seen == sorted(seen), f"progress went backwards: {seen}"
    return finished


def _replica_actors(deployment: str) -> list[str]:
    return [
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve" and f"{APP_NAME}#{deployment}#" in a["name"]
    ]  # fmt: skip


def test_killing_a_separation_replica_mid_job_retries_it_once(service: Service, audio) -> None:
    job_id = service.submit(audio["long"], separation="demucs").json()["job_id"]
    _wait_stage(service, job_id, "separating")
    (replica,) = _replica_actors("Separation")
    ray.kill(ray.get_actor(replica, namespace="serve"), no_restart=True)
    (job,) = _finished_once(service, [job_id])
    assert job["attempts"] == 2
    assert sorted(r["name"] for r in job["results"] if r["name"].startswith("stems/")) == [
        "stems/bass.wav", "stems/drums.wav", "stems/other.wav", "stems/vocals.wav",
    ]  # fmt: skip


def test_killing_the_job_tracker_loses_no_job(service: Service, audio) -> None:
    jobs = [service.submit(audio["long"], separation="demucs").json()["job_id"]]
    jobs += [service.submit(audio["short"], separation="none").json()["job_id"] for _ in range(4)]
    _wait_stage(service, jobs[0], "separating")
    settings = Settings(**service.settings)
    tracker = ray.get_actor(settings.tracker_actor_name, namespace=settings.ray_namespace)
    ray.kill(tracker, no_restart=False)  # Ray restarts it; it rebuilds its work from the database
    _finished_once(service, jobs)


def test_a_file_that_crashes_its_worker_fails_after_the_configured_attempts(service: Service, tmp_path: Path, audio) -> None:
    poison = tmp_path / "poison.wav"
    poison.write_bytes(audio["short"].read_bytes() + CRASH_MARKER.encode())
    job = service.wait(service.submit(poison, separation="demucs").json()["job_id"], timeout=300)
    assert job["status"] == "failed"
    assert job["attempts"] == MAX_ATTEMPTS
    assert f"failed {MAX_ATTEMPTS} times" in job["error"]
    # The service goes on with other work.
    _finished_once(service, [service.submit(audio["short"], separation="none").json()["job_id"]])


@pytest.mark.skipif(shutil.which("pg_ctlcluster") is None, reason="needs a local PostgreSQL cluster to restart")
def test_restarting_postgresql_loses_no_job_and_the_api_answers_503_meanwhile(service: Service, audio) -> None:
    jobs = [service.submit(audio["long"], separation="demucs").json()["job_id"]]
    jobs += [service.submit(audio["short"], separation="none").json()["job_id"] for _ in range(2)]
    _wait_stage(service, jobs[0], "separating")
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "stop", "-m", "fast"], check=True)
    try:
        response = service.client.get(f"/api/v1/jobs/{jobs[0]}")
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "service_unavailable" and "retry-after" in response.headers
        time.sleep(3)
    finally:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=True)
    _finished_once(service, jobs)


def test_redeploying_the_application_finishes_queued_and_running_jobs(service: Service, audio) -> None:
    jobs = [service.submit(audio["long"], separation="demucs").json()["job_id"]]
    jobs += [service.submit(audio["short"], separation="none").json()["job_id"] for _ in range(3)]
    _wait_stage(service, jobs[0], "separating")
    from ray import serve

    serve.delete(APP_NAME)
    time.sleep(2)
    redeployed = deploy(service.url, **service.settings)
    redeployed.seen_progress = service.seen_progress
    _finished_once(redeployed, jobs)
