"""No head-of-line blocking on the real cluster (one Separation replica: the logical GPU has room for one
beside Transcription), on PostgreSQL: three Demucs jobs queued, then a `separation=none` job. Demucs jobs
hold at most `max_concurrent_separations` (2) of the three slots, so the `none` job takes the third at once
and finishes while the first Demucs job is still separating; before, all three slots went to Demucs jobs
and the `none` job waited until one of them had finished."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from music.engines.demucs_models import DEFAULT_TEST_MODEL
from tests.audio_files import encode, tone
from tests.integration.conftest import FINAL, Service, deploy, undeploy
from tests.music import melody, render


@pytest.fixture(scope="module")
def service(
    serve_url: str, model_dir: Path, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    svc = deploy(
        serve_url, data_dir=str(tmp_path_factory.mktemp("data-head-of-line")), database_url=postgres_url,
        demucs_model=DEFAULT_TEST_MODEL, demucs_model_dir=str(model_dir), max_concurrent_jobs=3,
    )  # fmt: skip
    yield svc
    undeploy(svc)


def test_a_job_without_demucs_finishes_before_demucs_jobs_queued_ahead_of_it(
    service: Service, tmp_path: Path
) -> None:
    long_song = encode(tmp_path / "long.flac", tone(240.0), 44100, "flac")  # minutes of Demucs on the CPU
    short = render(melody(seconds=6.0), tmp_path / "short.wav")
    demucs = [service.submit(long_song, separation="demucs").json()["job_id"] for _ in range(3)]
    quick = service.submit(short, separation="none").json()["job_id"]

    done = service.wait(quick, timeout=120)
    states = [service.client.get(f"/api/v1/jobs/{job_id}").json() for job_id in demucs]
    assert done["status"] == "succeeded", done
    assert states[0]["status"] == "running", states[0]  # the first Demucs job is still at work
    assert states[2]["status"] == "queued", states[2]  # the Demucs pool (2) is full: the third waits

    for job_id in demucs:
        service.client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert all(service.wait(job_id, timeout=60)["status"] in FINAL for job_id in demucs)
