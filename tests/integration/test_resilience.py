"""Failures injected into a running service on PostgreSQL: every job ends, none is lost, none
is done twice, progress never goes backwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from music.engines.demucs_models import DEFAULT_TEST_MODEL
from tests.audio_files import encode, tone
from tests.integration.conftest import (
    APP_NAME,
    Service,
    TcpProxy,
    crash_mid_separation,
    deploy,
    finished_once,
    kill_replica,
    replica_actors,
    undeploy,
    wait_stage,
)
from tests.integration.faults import CRASH_MARKER, CrashingSeparation
from tests.music import melody, render

pytestmark = pytest.mark.integration

MAX_ATTEMPTS = 3


@pytest.fixture(scope="module")
def database_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", 5432)
    proxy.open()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def service(
    serve_url: str, model_dir: Path, postgres_url: str, database_proxy: TcpProxy, tmp_path_factory
) -> Iterator[Service]:
    # The service reaches PostgreSQL through a proxy the test can close: the real server stays up for others.
    proxied = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{database_proxy.port}")
    svc = deploy(
        serve_url, data_dir=str(tmp_path_factory.mktemp("data-resilience")), database_url=proxied,
        demucs_model=DEFAULT_TEST_MODEL, demucs_model_dir=str(model_dir), max_concurrent_jobs=2,
        lease_seconds=6, retry_backoff_seconds=1, max_attempts=MAX_ATTEMPTS, separation_cls=CrashingSeparation,
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


def test_killing_a_separation_replica_mid_job_retries_it_once(service: Service, audio) -> None:
    job = crash_mid_separation(service, audio["long"], "Separation")
    assert sorted(r["name"] for r in job["results"] if r["name"].startswith("stems/")) == [
        "stems/bass.wav", "stems/drums.wav", "stems/other.wav", "stems/vocals.wav",
    ]  # fmt: skip


def test_killing_the_job_tracker_loses_no_job(service: Service, audio) -> None:
    jobs = [service.submit(audio["long"], separation="demucs").json()["job_id"]]
    jobs += [service.submit(audio["short"], separation="none").json()["job_id"] for _ in range(4)]
    wait_stage(service, jobs[0], "separating")
    (tracker,) = replica_actors("JobTracker")
    # Killed without a graceful shutdown: no lease is given back. Serve replaces the replica; the new one
    # takes the jobs up again as their leases run out, from their finished stages.
    kill_replica(tracker)
    finished_once(service, jobs)


def test_a_file_that_crashes_its_worker_fails_after_the_configured_attempts(service: Service, tmp_path: Path, audio) -> None:
    poison = tmp_path / "poison.wav"
    poison.write_bytes(audio["short"].read_bytes() + CRASH_MARKER.encode())
    job = service.wait(service.submit(poison, separation="demucs").json()["job_id"], timeout=300)
    assert job["status"] == "failed"
    assert job["attempts"] == MAX_ATTEMPTS
    assert f"failed {MAX_ATTEMPTS} times" in job["error"]
    # The service goes on with other work.
    finished_once(service, [service.submit(audio["short"], separation="none").json()["job_id"]])


def test_the_database_going_away_loses_no_job_and_the_api_answers_503_meanwhile(
    service: Service, database_proxy: TcpProxy, audio
) -> None:
    jobs = [service.submit(audio["long"], separation="demucs").json()["job_id"]]
    jobs += [service.submit(audio["short"], separation="none").json()["job_id"] for _ in range(2)]
    wait_stage(service, jobs[0], "separating")
    database_proxy.close()  # every connection cut, nothing listening: as if PostgreSQL went down
    try:
        response = service.client.get(f"/api/v1/jobs/{jobs[0]}")
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "service_unavailable" and "retry-after" in response.headers
        assert service.client.get("/api/v1/health").status_code == 200
        assert service.client.get("/api/v1/health/ready").status_code == 503
        time.sleep(3)
    finally:
        database_proxy.open()
    finished_once(service, jobs)


def test_redeploying_the_application_finishes_queued_and_running_jobs(service: Service, audio) -> None:
    jobs = [service.submit(audio["long"], separation="demucs").json()["job_id"]]
    jobs += [service.submit(audio["short"], separation="none").json()["job_id"] for _ in range(3)]
    wait_stage(service, jobs[0], "separating")
    from ray import serve

    serve.delete(APP_NAME)  # the tracker goes with it, giving its running job's lease back
    time.sleep(2)
    redeployed = deploy(service.url, separation_cls=service.separation_cls, **service.settings)
    redeployed.seen_progress = service.seen_progress
    finished_once(redeployed, jobs)
