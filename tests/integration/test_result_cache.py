"""The result cache over real HTTP, with the real models, on SQLite with local storage and on PostgreSQL
with S3: the same samples in another container are served from a finished job's files, byte for byte;
another key gets the files and nothing of the first job's record; deleting the first job leaves the
copies whole; identical uploads at once compute once; the settings turn sharing and the cache off."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from music.engines.demucs_models import DEFAULT_TEST_MODEL
from tests.audio_files import encode
from tests.integration.conftest import Service, deploy, fresh_postgres_database, undeploy
from tests.integration.s3_server import S3Server
from tests.integration.test_metrics import Scrape, _scrape
from tests.music import melody, render

pytestmark = pytest.mark.integration

KEY_A = "ssk_cache-test-key-a-0123456789abcdef"
KEY_B = "ssk_cache-test-key-b-0123456789abcdef"
AT_ONCE = 4
EXPORT_WAIT_SECONDS = 60


@pytest.fixture(scope="module", params=["sqlite-local", pytest.param("postgresql-s3", marks=pytest.mark.postgres)])
def service(
    request: pytest.FixtureRequest, serve_url: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    settings: dict[str, Any] = {
        "data_dir": str(tmp_path_factory.mktemp("data-cache")), "demucs_model": DEFAULT_TEST_MODEL,
        "demucs_model_dir": str(model_dir), "auth_required": True, "api_keys": f"{KEY_A},{KEY_B}",
        "result_cache": True, "max_concurrent_jobs": 3,
    }  # fmt: skip
    if request.param == "sqlite-local":
        svc = deploy(serve_url, **settings)
        yield svc
        undeploy(svc)
        return
    s3 = S3Server("stemscribe-cache")
    s3.start()
    try:
        with fresh_postgres_database() as database_url:
            svc = deploy(serve_url, **settings, database_url=database_url, **s3.settings("cache/"))
            yield svc
            undeploy(svc)
    finally:
        s3.stop()


def _samples(folder: Path, seconds: float, program: int) -> np.ndarray:
    samples, _ = soundfile.read(str(render(melody(program=program, seconds=seconds), folder / "r.wav")), always_2d=True)
    return samples.T.astype(np.float32)


@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One piece as WAV and as FLAC (the same 16-bit samples), and another piece."""
    folder = tmp_path_factory.mktemp("audio")
    piece = _samples(folder, 6.0, program=0)
    return {
        "wav": encode(folder / "piece.wav", piece, 44100, "wav"),
        "flac": encode(folder / "piece-remastered.flac", piece, 44100, "flac"),
        "other": encode(folder / "other.wav", _samples(folder, 6.0, program=40), 44100, "wav"),
    }


def _as(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def _submit(service: Service, path: Path, key: str, name: str | None = None) -> str:
    with open(path, "rb") as fh:
        response = service.client.post(
            "/api/v1/transcribe", files={"file": (name or path.name, fh)}, data={"separation": "none"}, headers=_as(key)
        )
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def _finished(service: Service, job_id: str, key: str) -> dict[str, Any]:
    job = service.wait_with(job_id, _as(key))
    assert job["status"] == "succeeded", job
    return job


def _files(service: Service, job: dict[str, Any], key: str) -> dict[str, bytes]:
    found = {}
    for link in job["results"]:
        response = service.client.get(link["url"], headers=_as(key), follow_redirects=True)
        assert response.status_code == 200, (link, response.text)
        found[link["name"]] = response.content
    return found


def _cache_lookups(scrape: Scrape, result: str) -> float:
    return scrape.value("ray_stemscribe_cache_lookups_total", result=result, separation="none")


def test_identical_uploads_at_once_compute_once(service: Service, songs: dict[str, Path]) -> None:
    # First in the module, so no lookup of this deployment is still on its way to the metrics agent.
    before = _scrape()
    with concurrent.futures.ThreadPoolExecutor(AT_ONCE) as pool:
        ids = list(pool.map(lambda _: _submit(service, songs["other"], KEY_A), range(AT_ONCE)))
    jobs = [_finished(service, job_id, KEY_A) for job_id in ids]
    assert sorted(job["cache_hit"] for job in jobs) == [False] + [True] * (AT_ONCE - 1)
    (computed,) = [job for job in jobs if not job["cache_hit"]]
    assert "transcribing" in computed["stage_seconds"]
    assert all(job["stage_seconds"] == {} for job in jobs if job["cache_hit"])
    assert len({_files(service, job, KEY_A)["transcription.mid"] for job in jobs}) == 1

    deadline = time.monotonic() + EXPORT_WAIT_SECONDS
    while True:  # the counters reach Ray's metrics agent on an interval
        scrape = _scrape()
        counted = (_cache_lookups(scrape, "miss") - _cache_lookups(before, "miss"),
                   _cache_lookups(scrape, "hit") - _cache_lookups(before, "hit"))  # fmt: skip
        if counted == (1, AT_ONCE - 1) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert counted == (1, AT_ONCE - 1)


_jobs: dict[str, dict[str, Any]] = {}  # what the earlier tests of this module made, per service


def test_the_same_samples_in_another_container_are_a_cache_hit(service: Service, songs: dict[str, Path]) -> None:
    first = _finished(service, _submit(service, songs["wav"], KEY_A), KEY_A)
    assert first["cache_hit"] is False and "transcribing" in first["stage_seconds"]
    again = _finished(service, _submit(service, songs["flac"], KEY_A), KEY_A)
    assert again["cache_hit"] is True
    assert again["stage_seconds"] == {} and again["upload_name"] == "piece-remastered.flac"
    assert again["analysis"] == first["analysis"]
    files = _files(service, first, KEY_A)
    assert set(files) >= {"transcription.mid", "notes.json", "stems/mix.wav"}
    assert _files(service, again, KEY_A) == files  # byte for byte, every result
    _jobs[service.settings["data_dir"] + "first"], _jobs[service.settings["data_dir"] + "again"] = first, again


def test_another_key_gets_the_files_and_nothing_of_the_first_job(service: Service, songs: dict[str, Path]) -> None:
    first = _jobs[service.settings["data_dir"] + "first"]
    theirs = _finished(service, _submit(service, songs["wav"], KEY_B, name="my take.wav"), KEY_B)
    assert theirs["cache_hit"] is True and theirs["upload_name"] == "my take.wav"
    assert _files(service, theirs, KEY_B) == _files(service, first, KEY_A)
    # The first job stays invisible to the other key, as it was before the cache.
    assert service.client.get(f"/api/v1/jobs/{first['job_id']}", headers=_as(KEY_B)).status_code == 404
    listed = service.client.get("/api/v1/jobs", params={"limit": 100}, headers=_as(KEY_B)).json()["jobs"]
    assert [j["job_id"] for j in listed] == [theirs["job_id"]]
    _jobs[service.settings["data_dir"] + "theirs"] = theirs


def test_deleting_jobs_leaves_the_copies_and_the_cache_goes_with_the_last(
    service: Service, songs: dict[str, Path]
) -> None:
    first, again, theirs = (_jobs[service.settings["data_dir"] + name] for name in ("first", "again", "theirs"))
    kept = _files(service, first, KEY_A)
    assert service.client.delete(f"/api/v1/jobs/{first['job_id']}", headers=_as(KEY_A)).status_code == 204
    assert service.client.get(first["results"][0]["url"], headers=_as(KEY_A)).status_code == 410
    assert _files(service, again, KEY_A) == kept
    assert _files(service, theirs, KEY_B) == kept
    # The copies hold the result: it is still reused.
    later = _finished(service, _submit(service, songs["wav"], KEY_A), KEY_A)
    assert later["cache_hit"] is True and _files(service, later, KEY_A) == kept
    for job, key in ((again, KEY_A), (theirs, KEY_B), (later, KEY_A)):
        assert service.client.delete(f"/api/v1/jobs/{job['job_id']}", headers=_as(key)).status_code == 204
    fresh = _finished(service, _submit(service, songs["wav"], KEY_A), KEY_A)
    assert fresh["cache_hit"] is False  # no job holds it any more: computed again


def test_the_settings_turn_sharing_and_then_the_cache_off(service: Service, songs: dict[str, Path]) -> None:
    """Redeploys of the same database and storage; once is enough (the settings do not depend on them)."""
    if service.settings.get("storage_backend") == "s3":
        pytest.skip("the settings are checked on the SQLite deployment")
    held = _finished(service, _submit(service, songs["other"], KEY_A), KEY_A)
    assert held["cache_hit"] is True  # held by the jobs of the first test

    private = deploy(service.url, **{**service.settings, "result_cache_across_owners": False})
    theirs = _finished(private, _submit(private, songs["other"], KEY_B), KEY_B)
    assert theirs["cache_hit"] is False  # key A's results are not handed to key B
    assert _finished(private, _submit(private, songs["other"], KEY_B), KEY_B)["cache_hit"] is True  # B's own are

    private.client.close()

    off = deploy(service.url, **{**service.settings, "result_cache": False})
    assert _finished(off, _submit(off, songs["other"], KEY_A), KEY_A)["cache_hit"] is False
    off.client.close()
