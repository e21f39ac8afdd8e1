"""Every kind of bad input gets its status code and a sentence a person understands, and the
service keeps working afterwards. This deployment also has no usable Demucs model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.audio_files import encode, tone
from tests.integration.conftest import Service, deploy, undeploy

pytestmark = pytest.mark.integration

MAX_UPLOAD_BYTES = 2_000_000
MAX_DURATION_SECONDS = 20.0


@pytest.fixture(scope="module")
def service(serve_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = deploy(
        serve_url,
        data_dir=str(tmp_path_factory.mktemp("data-bad")),
        demucs_model="htdemucs",
        demucs_model_dir=str(tmp_path_factory.mktemp("empty-models") / "missing"),
        max_upload_bytes=MAX_UPLOAD_BYTES,
        max_duration_seconds=MAX_DURATION_SECONDS,
    )
    yield svc
    undeploy(svc)


@pytest.fixture(scope="module")
def short_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encode(tmp_path_factory.mktemp("a") / "short.wav", tone(2.0, channels=1), 22050, "wav")


def _problem(response: httpx.Response, status: int, code: str, words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["code"] == code
    assert words in body["detail"]
    assert "Traceback" not in response.text


def _still_works(service: Service, short_wav: Path) -> None:
    response = service.submit(short_wav, separation="none")
    assert response.status_code == 202
    assert service.wait(response.json()["job_id"])["status"] == "succeeded"


def test_empty_upload_is_400(service: Service, tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    _problem(service.submit(empty), 400, "empty_upload", "empty")


@pytest.mark.parametrize(
    "content", [b"just some text, not a song\n" * 100, b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\xff" * 3000],
    ids=["text", "broken-wav"],
)  # fmt: skip
def test_undecodable_upload_is_415(service: Service, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "song.mp3"
    path.write_bytes(content)
    _problem(service.submit(path), 415, "unsupported_audio", "audio")


def test_upload_over_the_size_limit_is_413(service: Service, tmp_path: Path, short_wav: Path) -> None:
    big = tmp_path / "big.wav"
    big.write_bytes(short_wav.read_bytes() + b"\x00" * MAX_UPLOAD_BYTES)
    _problem(service.submit(big), 413, "upload_too_large", "2 MB")


def test_size_limit_holds_for_chunked_uploads_without_content_length(service: Service) -> None:
    boundary = "stemscribeboundary"

    def body() -> Iterator[bytes]:
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.wav"\r\n'
               "Content-Type: audio/wav\r\n\r\n").encode()  # fmt: skip
        for _ in range(MAX_UPLOAD_BYTES // 65536 + 20):
            yield b"\x00" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    response = service.client.post(
        "/api/v1/transcribe", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert "content-length" not in {k.lower() for k in response.request.headers}
    _problem(response, 413, "upload_too_large", "larger than the limit")


def test_audio_longer_than_the_limit_is_422(service: Service, tmp_path: Path) -> None:
    # FLAC of a quiet tone is small: the size limit is not what refuses it.
    long = encode(tmp_path / "long.flac", tone(MAX_DURATION_SECONDS + 5, channels=1), 8000, "flac")
    assert long.stat().st_size < MAX_UPLOAD_BYTES
    _problem(service.submit(long), 422, "audio_too_long", "longer than the limit")


@pytest.mark.parametrize(
    "form,field",
    [({"separation": "magic"}, "separation"), ({"onset_threshold": "1.5"}, "onset_threshold"),
     ({"frame_threshold": "-0.1"}, "frame_threshold"), ({"minimum_note_length_ms": "0"}, "minimum_note_length_ms"),
     ({"minimum_frequency": "900", "maximum_frequency": "100"}, "minimum_frequency"),
     ({"maximum_frequency": "99999"}, "maximum_frequency")],
)  # fmt: skip
def test_out_of_range_options_are_422(service: Service, short_wav: Path, form: dict, field: str) -> None:
    _problem(service.submit(short_wav, **form), 422, "invalid_request", field)


def test_missing_file_field_is_422(service: Service) -> None:
    _problem(service.client.post("/api/v1/transcribe", data={"separation": "none"}), 422, "invalid_request", "file")


def test_unknown_job_and_result_are_404(service: Service, short_wav: Path) -> None:
    _problem(service.client.get("/api/v1/jobs/" + "0" * 32), 404, "job_not_found", "no job")
    _problem(service.client.get("/api/v1/jobs/../../etc/passwd"), 404, "not_found", "nothing")
    _problem(service.client.get("/api/v1/jobs/not-a-job-id"), 404, "job_not_found", "no job")
    job_id = service.submit(short_wav, separation="none").json()["job_id"]
    assert service.wait(job_id)["status"] == "succeeded"
    _problem(service.client.get(f"/api/v1/jobs/{job_id}/results/..%2F..%2Fupload"), 404, "result_not_found", "no result")
    _problem(service.client.get(f"/api/v1/jobs/{job_id}/results/stems/vocals.wav"), 404, "result_not_found", "")


def test_missing_demucs_model_is_reported_and_fails_jobs_at_once(service: Service, short_wav: Path) -> None:
    health = service.client.get("/api/v1/health").json()
    assert health["components"]["separation"] == {"status": "unavailable", "code": "model_unavailable"}
    assert not health["ready"]
    assert health["components"]["database"]["status"] == health["components"]["transcription"]["status"] == "ready"
    assert service.client.get("/api/v1/health/ready").status_code == 503
    # Why, in words, for operators (the details route; open with auth off).
    separation = service.client.get("/api/v1/health/details").json()["components"]["separation"]
    assert "htdemucs" in separation["detail"]["error"]

    response = service.submit(short_wav, separation="demucs")
    assert response.status_code == 202
    job = service.wait(response.json()["job_id"], timeout=30)
    assert job["status"] == "failed"
    assert "htdemucs" in job["error"] and "separation=none" in job["error"]
    assert "Traceback" not in job["error"]
    assert job["results"] == []
    _problem(service.client.get(f"/api/v1/jobs/{job['job_id']}/results/notes.json"), 409, "result_not_ready", "failed")


def test_service_keeps_working_after_all_of_that(service: Service, short_wav: Path) -> None:
    _still_works(service, short_wav)
