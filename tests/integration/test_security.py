"""API keys: 401 without a valid one, one key never sees another's jobs, per-key limits answer 429."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from music.engines.demucs_models import DEFAULT_TEST_MODEL
from tests.audio_files import encode, tone
from tests.integration.conftest import Service, deploy, fresh_postgres_database, undeploy

pytestmark = pytest.mark.integration

SEEDED = "ssk_seeded-test-key-0123456789abcdef"
MAX_ACTIVE = 2
MAX_PER_MINUTE = 6


@pytest.fixture(scope="module")
def service(serve_url: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    # PostgreSQL, so the limits are tested under concurrency where it matters most.
    with fresh_postgres_database() as database_url:
        svc = deploy(
            serve_url, data_dir=str(tmp_path_factory.mktemp("data-security")), demucs_model_dir=str(model_dir),
            demucs_model=DEFAULT_TEST_MODEL, auth_required=True, api_keys=SEEDED,
            max_active_jobs_per_key=MAX_ACTIVE, max_uploads_per_minute=MAX_PER_MINUTE, database_url=database_url,
        )  # fmt: skip
        yield svc
        undeploy(svc)


def _cli(service: Service, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "serve_app.cli", "keys", *args],
        env={"DATABASE_URL": service.settings["database_url"], "PATH": "/usr/bin:/bin"}, capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    return done.stdout


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encode(tmp_path_factory.mktemp("a") / "s.wav", tone(2.0, channels=1), 22050, "wav")


def _post(service: Service, song: Path, key: str | None, **form: str) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    with open(song, "rb") as fh:
        return service.client.post("/api/v1/transcribe", files={"file": ("s.wav", fh)}, data=form, headers=headers)


def test_missing_unknown_and_revoked_keys_get_401(service: Service, song: Path) -> None:
    for key in (None, "ssk_not-a-key"):
        response = _post(service, song, key, separation="none")
        assert response.status_code == 401 and response.json()["code"] == "unauthorized"
        assert service.client.get("/api/v1/jobs", headers={"X-API-Key": key} if key else {}).status_code == 401
    key = _cli(service, "create", "short-lived").strip()
    assert _post(service, song, key, separation="none").status_code == 202
    (line,) = [row for row in _cli(service, "list").splitlines() if "short-lived" in row]
    assert key not in line  # listing never shows the key itself
    _cli(service, "revoke", line.split()[0])
    response = _post(service, song, key, separation="none")
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_one_key_never_sees_another_keys_job_on_any_route(service: Service, song: Path) -> None:
    alice = {"X-API-Key": SEEDED}
    bob = {"X-API-Key": _cli(service, "create", "bob").strip()}
    job_id = _post(service, song, SEEDED, separation="none").json()["job_id"]
    job = service.wait_with(job_id, alice)
    assert job["status"] == "succeeded"
    routes = [("GET", f"/api/v1/jobs/{job_id}"), ("POST", f"/api/v1/jobs/{job_id}/cancel"),
              ("GET", f"/api/v1/jobs/{job_id}/events"), ("POST", f"/api/v1/jobs/{job_id}/events-token")]  # fmt: skip
    routes += [("GET", f"/api/v1/jobs/{job_id}/results/{r['name']}") for r in job["results"]]
    routes += [("DELETE", f"/api/v1/jobs/{job_id}")]  # last: the owner's walk ends by deleting it
    for method, path in routes:
        response = service.client.request(method, path, headers=bob)
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "job_not_found"
    assert job_id not in {j["job_id"] for j in service.client.get("/api/v1/jobs", headers=bob).json()["jobs"]}
    ws_url = service.url.replace("http://", "ws://") + f"/ws/jobs/{job_id}"
    with pytest.raises(InvalidStatus):
        with connect(ws_url, additional_headers=bob) as ws:
            ws.recv()
    with connect(ws_url, additional_headers=alice) as ws:
        assert json.loads(ws.recv())["status"] == "succeeded"
    # ...and the owner still has it all.
    assert job_id in {j["job_id"] for j in service.client.get("/api/v1/jobs", headers=alice).json()["jobs"]}
    for method, path in routes:
        assert service.client.request(method, path, headers=alice).status_code in (200, 204)


def test_per_key_limits_answer_429_with_retry_after(service: Service, song: Path, tmp_path: Path) -> None:
    key = _cli(service, "create", "busy").strip()
    long = encode(tmp_path / "long.flac", tone(200.0), 44100, "flac")
    # Two long separations keep this key at its limit of active jobs for half a minute.
    first = [_post(service, long, key, separation="demucs") for _ in range(MAX_ACTIVE)]
    assert [r.status_code for r in first] == [202] * MAX_ACTIVE
    over = _post(service, song, key, separation="none")
    assert over.status_code == 429 and over.json()["code"] == "rate_limited"
    assert "queued or running" in over.json()["detail"]
    assert int(over.headers["retry-after"]) >= 1
    # Another key is not held back by this one.
    other = _cli(service, "create", "other").strip()
    assert _post(service, song, other, separation="none").status_code == 202
    for response in first:
        service.client.post(f"/api/v1/jobs/{response.json()['job_id']}/cancel", headers={"X-API-Key": key})
    # Uploads per minute, one at a time so the active-jobs limit stays out of the way.
    accepted = 1
    while True:
        response = _post(service, song, other, separation="none")
        if response.status_code != 202:
            break
        accepted += 1
        service.wait_with(response.json()["job_id"], {"X-API-Key": other})
    assert response.status_code == 429 and "last minute" in response.json()["detail"]
    assert accepted == MAX_PER_MINUTE


def test_a_large_upload_without_a_key_is_refused_before_its_body_is_read(service: Service) -> None:
    """Headers declaring 150 MB (under the size limit) and 64 KB of body: the 401 comes back through
    the Serve proxy while the rest of the body has not been sent."""
    parts = urlsplit(service.url)
    head = (
        f"POST /api/v1/transcribe HTTP/1.1\r\nHost: {parts.hostname}\r\nContent-Length: 150000000\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(head + b"--b\r\n" + b"\0" * 65536)
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401"), answer


def test_concurrent_uploads_stop_exactly_at_the_active_job_limit(service: Service, tmp_path: Path) -> None:
    """20 uploads from one key at once: exactly MAX_ACTIVE are accepted, the rest get 429, no job
    rows beyond the limit and no orphan upload files."""
    key = _cli(service, "create", "burst").strip()
    long = encode(tmp_path / "long.flac", tone(60.0), 44100, "flac")  # keeps its jobs active through the burst
    barrier = threading.Barrier(20)

    def post(_: int) -> httpx.Response:
        barrier.wait()
        return _post(service, long, key, separation="demucs")

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(post, range(20)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [202] * MAX_ACTIVE + [429] * (20 - MAX_ACTIVE), statuses
    accepted = [r.json()["job_id"] for r in answers if r.status_code == 202]
    listed = service.client.get("/api/v1/jobs", headers={"X-API-Key": key}).json()["jobs"]
    assert sorted(j["job_id"] for j in listed) == sorted(accepted)
    with psycopg.connect(service.settings["database_url"]) as conn:
        known = {row[0] for row in conn.execute("SELECT id FROM jobs")}
    deadline = time.monotonic() + 10  # a refused upload's files go right after its 429
    stored = Path(service.settings["data_dir"]) / "storage" / "jobs"
    while orphans := [p.name for p in stored.iterdir() if p.name not in known]:
        assert time.monotonic() < deadline, orphans
        time.sleep(0.2)
    for job_id in accepted:
        service.client.post(f"/api/v1/jobs/{job_id}/cancel", headers={"X-API-Key": key})


STAGES = ["queued", "decoding", "separating", "transcribing", "packaging", "done"]


def _assert_in_order(states: list[dict]) -> None:
    stages = [s["stage"] for s in states]
    assert [STAGES.index(s) for s in stages] == sorted(STAGES.index(s) for s in stages), stages
    progress = [s["progress"] for s in states]
    assert progress == sorted(progress)
    assert states[-1]["status"] == "succeeded" and states[-1]["progress"] == 100.0


def test_server_sent_events_follow_a_real_job_to_its_end(service: Service, tmp_path: Path) -> None:
    song = encode(tmp_path / "s.flac", tone(30.0), 44100, "flac")
    job_id = _post(service, song, SEEDED, separation="demucs").json()["job_id"]
    events: list[tuple[str, dict]] = []
    with service.client.stream("GET", f"/api/v1/jobs/{job_id}/events", headers={"X-API-Key": SEEDED}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    assert [k for k, _ in events][-1] == "final" and all(k == "state" for k, _ in events[:-1])
    states = [e for _, e in events]
    _assert_in_order(states)
    assert {"separating", "transcribing"} <= {s["stage"] for s in states}
    # No key, no events.
    assert service.client.get(f"/api/v1/jobs/{job_id}/events").status_code == 401


def test_websocket_with_a_browser_token_follows_a_job_and_a_late_client_gets_the_end(
    service: Service, tmp_path: Path
) -> None:
    song = encode(tmp_path / "s.flac", tone(20.0), 44100, "flac")
    job_id = _post(service, song, SEEDED, separation="demucs").json()["job_id"]
    token = service.client.post(f"/api/v1/jobs/{job_id}/events-token", headers={"X-API-Key": SEEDED}).json()["token"]
    url = service.url.replace("http://", "ws://") + f"/ws/jobs/{job_id}?token={token}"
    with connect(url) as ws:
        messages = [json.loads(m) for m in ws]
    assert messages[-1]["event"] == "final"
    _assert_in_order(messages)
    # Connecting after the end: the final state at once, then the socket closes.
    with connect(url) as ws:
        late = [json.loads(m) for m in ws]
    assert len(late) == 1 and late[0]["status"] == "succeeded"
    # A token is for one job only, and a forged one is refused.
    other = _post(service, song, SEEDED, separation="none").json()["job_id"]
    for bad in (service.url.replace("http://", "ws://") + f"/ws/jobs/{other}?token={token}",
                url[:-3] + "abc", url.split("?")[0]):  # fmt: skip
        with pytest.raises(InvalidStatus):
            with connect(bad) as ws:
                ws.recv()


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://169.254.169.254/latest/meta-data", "ftp://x/"])
def test_webhooks_to_private_or_odd_targets_are_refused(service: Service, song: Path, url: str) -> None:
    response = _post(service, song, SEEDED, separation="none", webhook_url=url)
    assert response.status_code == 422 and response.json()["code"] == "webhook_url_refused"
