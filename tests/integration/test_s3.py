"""S3 for real: the whole job flow on PostgreSQL, with storage in a standalone S3 server that the service
reaches only over HTTP (boto3 and `s3_endpoint_url`), once with presigned downloads (307 to the S3
server) and once streamed through the ingress; large files go up in parts; an S3 outage answers 503."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.audio_files import encode, tone
from tests.integration.conftest import Service, deploy, undeploy
from tests.integration.s3_server import S3Server

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

BUCKET = "stemscribe-it"
PREFIX = "it/"
MiB = 1024 * 1024
THRESHOLD = 1 * MiB  # the upload and the stem are above it, the MIDI and JSON below
CHUNK = 5 * MiB  # S3's smallest part
RETRY_AFTER = 3
RESULTS = {
    "transcription.mid", "transcription.quantized.mid", "transcription.musicxml", "notes.json", "midi/mix.mid",
    "stems/mix.wav",
}  # fmt: skip


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server(BUCKET)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["presigned", "streamed"])
def service(
    request: pytest.FixtureRequest, serve_url: str, postgres_url: str, s3: S3Server, tmp_path_factory
) -> Iterator[Service]:
    svc = deploy(
        serve_url, data_dir=str(tmp_path_factory.mktemp("data-s3")), database_url=postgres_url,
        # separation=none needs no Demucs weights; an empty folder makes the model fail fast
        demucs_model_dir=str(tmp_path_factory.mktemp("no-models") / "missing"),
        **s3.settings(PREFIX), s3_multipart_threshold_bytes=THRESHOLD, s3_multipart_chunk_bytes=CHUNK,
        s3_presigned_downloads=request.param == "presigned", s3_max_attempts=2, s3_timeout_seconds=3,
        retry_after_seconds=RETRY_AFTER,
    )  # fmt: skip
    yield svc
    undeploy(svc)


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """15 s of stereo 96 kHz 16-bit WAV: 5.8 MB (and so is its stem), two parts of at most 5 MiB, while the
    models see only 15 s of audio."""
    path = tmp_path_factory.mktemp("audio") / "tone.wav"
    return encode(path, tone(15.0, sample_rate=96000, channels=2), 96000, "wav")


def _download(service: Service, s3: S3Server, link: str) -> httpx.Response:
    """A result as a client gets it: straight from S3 after a 307 when presigned, else from the ingress."""
    response = service.client.get(link)
    if not service.settings["s3_presigned_downloads"]:
        assert response.status_code == 200, response.text
        return response
    assert response.status_code == 307, response.text
    assert response.headers["cache-control"] == "no-store"
    location = response.headers["location"]
    assert location.startswith(f"{s3.url}/{BUCKET}/{PREFIX}jobs/"), location
    fetched = httpx.get(location, timeout=30)  # the S3 server itself, not the ingress
    assert fetched.status_code == 200, fetched.text
    return fetched


def _links(job: dict[str, Any]) -> dict[str, str]:
    return {r["name"]: r["url"] for r in job["results"]}


def test_whole_flow_keeps_every_file_in_the_bucket_and_delete_removes_them(
    service: Service, s3: S3Server, song: Path
) -> None:
    assert service.client.get("/api/v1/health").json()["components"]["storage"] == {"status": "ready", "code": "ok"}
    assert service.client.get("/api/v1/health/details").json()["components"]["storage"]["detail"] == {"backend": "s3"}
    accepted = service.submit(song, separation="none")
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    job = service.wait(job_id)
    assert job["status"] == "succeeded", job["error"]
    links = _links(job)
    assert set(links) == RESULTS

    folder = f"{PREFIX}jobs/{job_id}/"
    objects = s3.objects(folder)
    work = {"work/beats.json", "work/notes_mix.json", "work/separated.json"}
    assert set(objects) == {folder + "upload"} | {folder + name for name in work} | {
        f"{folder}results/{name}" for name in RESULTS
    }
    assert objects[folder + "upload"]["Size"] == song.stat().st_size
    for name, link in links.items():
        response = _download(service, s3, link)
        body = s3.client().get_object(Bucket=BUCKET, Key=f"{folder}results/{name}")["Body"].read()
        assert response.content == body and len(body) == objects[f"{folder}results/{name}"]["Size"] > 0
        filename = f"{job_id}-{name.replace('/', '-')}"
        assert response.headers["content-disposition"] == f'attachment; filename="{filename}"'

    # Managed transfer: every object from the threshold on went up as a multipart upload, whose ETag
    # ends in "-<number of parts>"; the small ones as one PUT.
    for key, info in objects.items():
        if info["Size"] >= THRESHOLD:
            assert info["ETag"].endswith(f"-{math.ceil(info['Size'] / CHUNK)}"), (key, info)
        else:
            assert "-" not in info["ETag"], (key, info)
    assert objects[folder + "upload"]["ETag"].endswith("-2")
    assert objects[f"{folder}results/stems/mix.wav"]["ETag"].endswith("-2")

    assert service.client.delete(f"/api/v1/jobs/{job_id}").status_code == 204
    assert s3.objects(folder) == {}
    assert service.client.get(links["notes.json"]).status_code == 410


def test_an_s3_outage_answers_503_with_retry_after_and_never_reads_as_missing(
    service: Service, s3: S3Server, song: Path
) -> None:
    if not service.settings["s3_presigned_downloads"]:
        pytest.skip("one outage is enough: both download modes ask S3 for the object before answering")
    job = service.wait(service.submit(song, separation="none").json()["job_id"])
    assert job["status"] == "succeeded", job["error"]
    link = _links(job)["notes.json"]
    assert _download(service, s3, link).content

    s3.stop()
    try:
        started = time.monotonic()
        down = service.client.get(link)
        assert down.status_code == 503, down.text
        assert time.monotonic() - started < 30
        assert down.headers["retry-after"] == str(RETRY_AFTER)
        assert down.headers["content-type"].startswith("application/problem+json")
        assert down.json()["code"] == "storage_unavailable"
        ready = service.client.get("/api/v1/health/ready")
        assert ready.status_code == 503
        assert ready.json()["components"]["storage"] == {"status": "unavailable", "code": "storage_unreachable"}
        refused = service.submit(song, separation="none")  # the upload cannot be stored either
        assert refused.status_code == 503 and refused.json()["code"] == "storage_unavailable"
    finally:
        s3.start()  # on the same port; moto keeps objects in memory, so it comes back empty

    # Now the object is truly gone: that, and only that, is a missing file.
    missing = service.client.get(link)
    assert missing.status_code == 404 and missing.json()["code"] == "result_not_found", missing.text
    assert service.client.get("/api/v1/health").json()["components"]["storage"]["status"] == "ready"
    again = service.wait(service.submit(song, separation="none").json()["job_id"])
    assert again["status"] == "succeeded", again["error"]
    assert _download(service, s3, _links(again)["notes.json"]).content
