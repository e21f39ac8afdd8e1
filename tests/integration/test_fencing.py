"""Fencing in storage, live on PostgreSQL: a job deleted while it separates, is transcribed or is packaged
keeps no file once its work stops; an attempt whose lease another tracker took publishes nothing, and the job's
results are written once, by the attempt that finished it, with no temporaries left; a tracker killed
mid-separation leaves stems published once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import ray

from music.engines.demucs_models import DEFAULT_TEST_MODEL
from tests.audio_files import encode, tone
from tests.integration.conftest import (
    Service,
    crash_mid_separation,
    deploy,
    finished_once,
    undeploy,
    wait_stage,
)  # fmt: skip
from tests.music import melody, render

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(serve_url: str, model_dir: Path, postgres_url: str, tmp_path_factory) -> Iterator[Service]:
    svc = deploy(
        serve_url, data_dir=str(tmp_path_factory.mktemp("data-fencing")), database_url=postgres_url,
        demucs_model=DEFAULT_TEST_MODEL, demucs_model_dir=str(model_dir), max_concurrent_jobs=1,
        lease_seconds=6, retry_backoff_seconds=1,
    )  # fmt: skip
    yield svc
    undeploy(svc)


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("audio")
    return {
        "long": encode(folder / "long.flac", tone(120.0), 44100, "flac"),  # ~20 s of separation here
        # Many notes, so that packaging (MIDI, the score) takes long enough to be caught at it.
        "dense": render(melody(seconds=90.0, tempo=240.0), folder / "dense.wav"),
    }


def _job_folder(service: Service, job_id: str) -> Path:
    return Path(service.settings["data_dir"]) / "storage" / "jobs" / job_id


def _files(service: Service, job_id: str) -> list[str]:
    folder = _job_folder(service, job_id)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _row(service: Service, job_id: str) -> dict[str, Any]:
    with psycopg.connect(service.settings["database_url"]) as conn:
        cursor = conn.execute(
            "SELECT status, attempts, lease_owner, deleted_at FROM jobs WHERE id = %s", (job_id,)
        )
        status, attempts, owner, deleted_at = cursor.fetchone()  # type: ignore[misc]
    return {"status": status, "attempts": attempts, "lease_owner": owner, "deleted_at": deleted_at}


def _until_idle(service: Service, timeout: float = 120) -> None:
    """Until the tracker runs no attempt: the work of a deleted job has stopped (replica calls included,
    since the attempt waits for them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tracker = service.client.get("/api/v1/health/details").json()["components"]["job_tracker"]
        if tracker["detail"].get("running") == 0:
            return
        time.sleep(0.2)
    raise AssertionError("the tracker still runs an attempt")


def _delete_at(service: Service, job_id: str, stage: str) -> dict[str, Any]:
    wait_stage(service, job_id, stage, timeout=300)
    seen = service.client.get(f"/api/v1/jobs/{job_id}").json()
    response = service.client.delete(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 204, response.text
    return seen


def test_a_job_deleted_while_it_separates_keeps_no_files(service: Service, audio) -> None:
    job_id = service.submit(audio["long"], separation="demucs").json()["job_id"]
    seen = _delete_at(service, job_id, "separating")
    assert (seen["status"], seen["stage"]) == ("running", "separating")
    _until_idle(service)
    time.sleep(2)  # anything still on its way to storage would land now
    assert _files(service, job_id) == []
    assert service.client.get(f"/api/v1/jobs/{job_id}").status_code == 410
    row = _row(service, job_id)
    assert row["status"] == "canceled" and row["deleted_at"] is not None


@pytest.mark.parametrize("stage", ["transcribing", "packaging"])
def test_a_job_deleted_while_it_is_transcribed_or_packaged_keeps_no_files(service: Service, audio, stage: str) -> None:
    job_id = service.submit(audio["dense"], separation="none").json()["job_id"]
    seen = _delete_at(service, job_id, stage)
    assert seen["stage"] == stage
    _until_idle(service)
    time.sleep(2)
    assert _files(service, job_id) == []
    row = _row(service, job_id)
    # Caught at work it ends canceled. Packaging's last steps (the publish, then the status) can also
    # finish on either side of the DELETE: then DELETE removed a finished job's files. Never failed, and
    # gone for the client either way.
    assert row["deleted_at"] is not None
    assert row["status"] in ("canceled", "succeeded"), (row, seen)
    assert service.client.get(f"/api/v1/jobs/{job_id}").status_code == 410


def _published_lines(job_id: str, deployment: str = "*") -> list[str]:
    """The replicas' and the tracker's log lines saying which attempt of the job published files."""
    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    needle = f"job {job_id}: attempt "
    return [
        line for path in sorted(logs.glob(f"replica_stemscribe_{deployment}_*.log"))
        for line in path.read_text(errors="replace").splitlines() if needle in line and " published " in line
    ]  # fmt: skip


def _published_by(job_id: str, attempt: int) -> list[str]:
    """Every publish line of the job, once the separation's, the transcription's and the packaging's are
    all in the logs; each must name `attempt`."""
    deadline = time.monotonic() + 20
    while len(lines := _published_lines(job_id)) < 3 and time.monotonic() < deadline:
        time.sleep(1)
    assert len(lines) >= 3 and all(f"job {job_id}: attempt {attempt} published" in line for line in lines), lines
    return lines


def _no_temporaries(service: Service, job: dict[str, Any]) -> None:
    names = [r["name"] for r in job["results"]]
    for name in names:
        assert service.result(job, name), name  # every listed result is there, whole
    files = _files(service, job["job_id"])
    assert not [f for f in files if f.startswith("tmp/") or f.endswith((".tmp", ".part"))], files
    assert {f"results/{name}" for name in names} | {"upload"} <= set(files)


def test_an_attempt_whose_lease_another_tracker_took_publishes_nothing(service: Service, audio) -> None:
    job_id = service.submit(audio["long"], separation="demucs").json()["job_id"]
    wait_stage(service, job_id, "separating")
    # What a second tracker does when it claims the job (attempt 2), here one that dies at once: its
    # lease runs out after 3 s, and this service's tracker takes the job up again as attempt 3.
    with psycopg.connect(service.settings["database_url"]) as conn:
        conn.execute(
            "UPDATE jobs SET attempts = attempts + 1, lease_owner = 'tracker-elsewhere', "
            "lease_expires_at = now() + interval '3 seconds' WHERE id = %s AND attempts = 1",
            (job_id,),
        )
    (job,) = finished_once(service, [job_id])
    assert job["attempts"] == 3
    names = [r["name"] for r in job["results"]]
    assert {"stems/bass.wav", "stems/drums.wav", "stems/other.wav", "stems/vocals.wav", "notes.json"} <= set(names)
    _no_temporaries(service, job)
    # Written once, by the surviving attempt: separation, transcription and packaging each published as
    # attempt 3; attempt 1 (stopped or fenced) and attempt 2 (never ran here) published nothing.
    _published_by(job_id, 3)
    assert len(_published_lines(job_id, "Separation")) == 1


def test_the_stems_are_written_once_when_the_tracker_dies_mid_separation(service: Service, audio) -> None:
    # No graceful shutdown, no lease given back: the separation of attempt 1 runs on, unrenewed, until the
    # new tracker replica takes the job as attempt 2. Either it finished in time, held the lease and
    # published (attempt 2 reuses its stems), or it was stopped or fenced and attempt 2 separated again.
    job = crash_mid_separation(service, audio["long"], "JobTracker")
    job_id = job["job_id"]
    _no_temporaries(service, job)
    deadline = time.monotonic() + 20
    while not (lines := _published_lines(job_id, "Separation")) and time.monotonic() < deadline:
        time.sleep(1)
    assert len(lines) == 1, lines  # the stems were published once, by one attempt
