"""Cancel, delete, list, idempotency keys, back-pressure and Retry-After, over real HTTP."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from music.engines.demucs_models import DEFAULT_TEST_MODEL
from tests.audio_files import encode, tone
from tests.integration.conftest import Service, deploy, undeploy
from tests.music import melody, render

pytestmark = pytest.mark.integration

MAX_QUEUE_DEPTH = 4
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"stemscribe-test-webhook-secret!!").decode()


class _Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook receiver on loopback that answers 500 to the first delivery of each message."""

    received: list[tuple[dict[str, str], bytes, int]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["content-length"]))
        seen = [h["webhook-id"] for h, _, _ in self.received]
        status = 500 if self.headers["webhook-id"] not in seen else 200
        self.received.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


@pytest.fixture(scope="module")
def service(serve_url: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = deploy(
        serve_url, data_dir=str(tmp_path_factory.mktemp("data-lifecycle")), demucs_model=DEFAULT_TEST_MODEL,
        demucs_model_dir=str(model_dir), max_concurrent_jobs=1, max_queue_depth=MAX_QUEUE_DEPTH,
        webhook_secret=WEBHOOK_SECRET, webhook_allow_private=True, webhook_retry_seconds=30,
    )  # fmt: skip
    yield svc
    undeploy(svc)


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(melody(seconds=8.0), tmp_path_factory.mktemp("audio") / "song.wav")


@pytest.fixture(scope="module")
def long_song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Long enough that Demucs is still separating when the test cancels it.
    return encode(tmp_path_factory.mktemp("audio") / "long.flac", tone(240.0), 44100, "flac")


def _wait_for(service: Service, job_id: str, stage: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = service.client.get(f"/api/v1/jobs/{job_id}").json()
        if job["stage"] == stage or job["status"] in ("succeeded", "failed", "canceled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {stage}")


def test_unfinished_jobs_tell_pollers_when_to_come_back(service: Service, song: Path, long_song: Path) -> None:
    blocker = service.submit(long_song, separation="demucs").json()["job_id"]
    job_id = service.submit(song, separation="none").json()["job_id"]  # waits: one slot only
    waiting = service.client.get(f"/api/v1/jobs/{job_id}")
    assert waiting.json()["status"] == "queued"
    assert int(waiting.headers["retry-after"]) >= 1
    service.client.post(f"/api/v1/jobs/{blocker}/cancel")
    service.wait(job_id)
    assert "retry-after" not in service.client.get(f"/api/v1/jobs/{job_id}").headers


def test_cancel_a_running_separation_frees_the_slot_for_the_next_job(
    service: Service, song: Path, long_song: Path
) -> None:
    running = service.submit(long_song, separation="demucs").json()["job_id"]
    waiting = service.submit(song, separation="none").json()["job_id"]
    assert _wait_for(service, running, "separating")["status"] == "running"
    assert service.client.get(f"/api/v1/jobs/{waiting}").json()["status"] == "queued"  # one slot only

    started = time.monotonic()
    response = service.client.post(f"/api/v1/jobs/{running}/cancel")
    assert response.status_code == 200
    job = service.wait(running, timeout=30)
    assert job["status"] == "canceled" and time.monotonic() - started < 30
    assert job["error"] == "Canceled by the client."
    assert service.wait(waiting)["status"] == "succeeded"
    # Canceling a finished job leaves it as it is.
    again = service.client.post(f"/api/v1/jobs/{waiting}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "succeeded"


def test_cancel_while_transcribing_stops_before_packaging(service: Service, song: Path, long_song: Path) -> None:
    running = service.submit(long_song, separation="demucs").json()["job_id"]
    waiting = service.submit(song, separation="none").json()["job_id"]
    assert _wait_for(service, running, "transcribing", timeout=120)["status"] == "running"
    started = time.monotonic()
    service.client.post(f"/api/v1/jobs/{running}/cancel")
    job = service.wait(running, timeout=30)
    assert job["status"] == "canceled" and time.monotonic() - started < 30
    assert job["results"] == []
    assert service.wait(waiting)["status"] == "succeeded"


def test_cancel_a_queued_job_is_immediate(service: Service, song: Path, long_song: Path) -> None:
    blocker = service.submit(long_song, separation="demucs").json()["job_id"]
    queued = service.submit(song, separation="none").json()["job_id"]
    response = service.client.post(f"/api/v1/jobs/{queued}/cancel")
    assert response.json()["status"] == "canceled"
    service.client.post(f"/api/v1/jobs/{blocker}/cancel")
    assert service.wait(blocker, timeout=30)["status"] == "canceled"
    assert service.client.get(f"/api/v1/jobs/{queued}").json()["attempts"] == 0  # it never ran


def test_delete_removes_files_and_leaves_a_410_tombstone(service: Service, song: Path) -> None:
    job = service.wait(service.submit(song, separation="none").json()["job_id"])
    link = job["results"][0]["url"]
    assert service.client.get(link).status_code == 200
    assert service.client.delete(f"/api/v1/jobs/{job['job_id']}").status_code == 204
    for response in (service.client.get(f"/api/v1/jobs/{job['job_id']}"), service.client.get(link)):
        assert response.status_code == 410 and response.json()["code"] == "job_gone"
    folder = Path(service.settings["data_dir"]) / "storage" / "jobs" / job["job_id"]
    assert not folder.exists()
    listed = service.client.get("/api/v1/jobs", params={"limit": 100}).json()["jobs"]
    assert job["job_id"] not in {j["job_id"] for j in listed}


def test_list_pages_newest_first_with_a_cursor(service: Service, song: Path) -> None:
    ids = [service.submit(song, separation="none").json()["job_id"] for _ in range(3)]
    for job_id in ids:
        service.wait(job_id)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, "status": "succeeded"} | ({"cursor": cursor} if cursor else {})
        page = service.client.get("/api/v1/jobs", params=params).json()
        assert len(page["jobs"]) <= 2 and all(j["status"] == "succeeded" for j in page["jobs"])
        seen += [j["job_id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert seen[:3] == ids[::-1]  # newest first
    assert service.client.get("/api/v1/jobs", params={"limit": 101}).status_code == 422
    assert service.client.get("/api/v1/jobs", params={"cursor": "garbage"}).json()["code"] == "invalid_cursor"


def test_idempotency_key_makes_one_job_even_from_20_concurrent_posts(service: Service, song: Path) -> None:
    key = f"key-{time.time_ns()}"

    def post() -> tuple[int, str, str]:
        with open(song, "rb") as fh:
            response = service.client.post(
                "/api/v1/transcribe", files={"file": ("song.wav", fh)}, data={"separation": "none"},
                headers={"Idempotency-Key": key},
            )  # fmt: skip
        return response.status_code, response.json()["job_id"], response.json()["status"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: post(), range(20)))
    assert {status for status, _, _ in answers} == {202}
    assert len({job_id for _, job_id, _ in answers}) == 1
    job_id = answers[0][1]
    assert service.wait(job_id)["status"] == "succeeded"
    # The same key later: the same job, as it stands now (not "queued"). With other options: 422.
    assert post() == (202, job_id, "succeeded")
    with open(song, "rb") as fh:
        other = service.client.post(
            "/api/v1/transcribe", files={"file": ("song.wav", fh)}, data={"separation": "none", "onset_threshold": "0.7"},
            headers={"Idempotency-Key": key},
        )  # fmt: skip
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    # The 19 uploads that lost the race were removed: every stored folder belongs to a known job.
    stored = Path(service.settings["data_dir"]) / "storage" / "jobs"
    orphans = [p.name for p in stored.iterdir() if service.client.get(f"/api/v1/jobs/{p.name}").status_code == 404]
    assert orphans == []


def test_a_full_queue_answers_503_with_retry_after(service: Service, song: Path, long_song: Path) -> None:
    blocker = service.submit(long_song, separation="demucs").json()["job_id"]
    _wait_for(service, blocker, "separating")
    key = f"queued-{time.time_ns()}"

    def keyed(idempotency_key: str) -> httpx.Response:
        with open(song, "rb") as fh:
            return service.client.post(
                "/api/v1/transcribe", files={"file": ("song.wav", fh)}, data={"separation": "none"},
                headers={"Idempotency-Key": idempotency_key},
            )  # fmt: skip

    queued = [keyed(key)] + [service.submit(song, separation="none") for _ in range(MAX_QUEUE_DEPTH - 1)]
    assert [r.status_code for r in queued] == [202] * MAX_QUEUE_DEPTH
    refused = service.submit(song, separation="none")
    assert refused.status_code == 503 and refused.json()["code"] == "queue_full"
    assert int(refused.headers["retry-after"]) >= 1
    # An Idempotency-Key does not pass the queue: a new one is refused like any upload, and a replay of
    # one already used answers with its job without counting.
    fresh = keyed(f"new-{time.time_ns()}")
    assert fresh.status_code == 503 and fresh.json()["code"] == "queue_full"
    replay = keyed(key)
    assert replay.status_code == 202 and replay.json()["job_id"] == queued[0].json()["job_id"]
    service.client.post(f"/api/v1/jobs/{blocker}/cancel")
    assert [service.wait(r.json()["job_id"])["status"] for r in queued] == ["succeeded"] * MAX_QUEUE_DEPTH


def _verify(headers: dict[str, str], body: bytes) -> bool:
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(headers["webhook-signature"], expected)


def test_webhooks_are_signed_and_retried_under_the_same_id(service: Service, song: Path, receiver: str) -> None:
    response = service.submit(song, separation="none", webhook_url=receiver, webhook_progress="true")
    job = service.wait(response.json()["job_id"])
    assert job["status"] == "succeeded"
    deadline = time.monotonic() + 30
    while not any(json.loads(b)["type"] == "job.succeeded" and s == 200 for _, b, s in _Receiver.received):
        assert time.monotonic() < deadline, _Receiver.received
        time.sleep(0.2)
    final = [(h, b, s) for h, b, s in _Receiver.received if json.loads(b)["type"] == "job.succeeded"]
    assert [s for _, _, s in final] == [500, 200]  # the first answer was 500: it came again
    assert len({h["webhook-id"] for h, _, _ in final}) == 1
    assert all(_verify(h, b) for h, b, _ in _Receiver.received)
    data = json.loads(final[-1][1])["data"]
    assert data["job_id"] == job["job_id"] and "transcription.mid" in data["results"]
    progress = [json.loads(b)["data"]["stage"] for _, b, s in _Receiver.received
                if json.loads(b)["type"] == "job.progress" and s == 200]  # fmt: skip
    assert "transcribing" in progress


def test_a_canceled_queued_job_calls_its_webhook(service: Service, song: Path, long_song: Path, receiver: str) -> None:
    blocker = service.submit(long_song, separation="demucs").json()["job_id"]
    queued = service.submit(song, separation="none", webhook_url=receiver).json()["job_id"]
    service.client.post(f"/api/v1/jobs/{queued}/cancel")
    service.client.post(f"/api/v1/jobs/{blocker}/cancel")
    deadline = time.monotonic() + 30
    while not any(json.loads(b)["type"] == "job.canceled" and s == 200 for _, b, s in _Receiver.received):
        assert time.monotonic() < deadline, _Receiver.received
        time.sleep(0.2)
    service.wait(blocker, timeout=30)
