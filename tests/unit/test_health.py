"""With the database away the API still answers: health 200 with the database's own error,
readiness 503, uploads 503 with Retry-After."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from serve_app.api.routes import create_api
from serve_app.api.services import Services
from serve_app.domain.db import JobRepository
from serve_app.domain.storage import LocalStorage
from serve_app.settings import Settings
from tests.audio_files import encode, tone


class _Status:
    def __init__(self, detail: dict[str, Any]) -> None:
        self.detail = detail

    def remote(self) -> Any:
        async def answer() -> dict[str, Any]:
            return self.detail

        return answer()


class _Handle:
    def __init__(self, detail: dict[str, Any]) -> None:
        self.status = _Status(detail)


def test_without_its_database_the_api_answers_and_says_why(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = Settings(data_dir=tmp_path, database_url=f"postgresql://postgres@127.0.0.1:{port}/x", auth_required=False)
    waiting = {"state": "waiting for the database", "error": "connection refused"}
    services = Services(
        config, JobRepository(config.database_url), LocalStorage(tmp_path / "s"), tracker=_Handle(waiting),
        separation=_Handle({"state": "ready"}), transcription=_Handle({"state": "ready"}),
    )  # fmt: skip
    client = TestClient(create_api(services))

    health = client.get("/api/v1/health")
    assert health.status_code == 200
    database = health.json()["components"]["database"]
    assert not database["ready"] and "not reachable" in database["detail"]["error"]
    assert str(port) in database["detail"]["error"]  # the driver's words: which server refused
    assert health.json()["components"]["job_tracker"]["detail"]["state"] == "waiting for the database"
    assert client.get("/api/v1/health/ready").status_code == 503

    song = encode(tmp_path / "a.wav", tone(1.0), 44100, "wav")
    with open(song, "rb") as fh:
        upload = client.post("/api/v1/transcribe", files={"file": ("a.wav", fh)}, data={"separation": "none"})
    assert upload.status_code == 503 and upload.json()["code"] == "service_unavailable"
    assert upload.headers["retry-after"] == str(config.retry_after_seconds)
