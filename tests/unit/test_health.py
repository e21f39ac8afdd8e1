"""With the database away the API still answers: health 200 with a status word and a code per component
(the database's own error only on the operators' details route and in the log), readiness 503, uploads
503 with Retry-After."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from benchmarks.local_service import free_port
from serve_app.api.app import create_api
from serve_app.api.services import Services
from serve_app.domain.api_keys import ApiKeys
from serve_app.domain.db import JobRepository
from serve_app.domain.storage import LocalStorage
from serve_app.settings import Settings
from tests.audio_files import encode, tone

CLIENT_KEY = "ssk_health-client-key-0123456789"
OPERATOR_KEY = "ssk_health-operator-key-0123456789"
MODEL_DIR = "/srv/models/secret-folder"


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


def _services(settings: Settings, tracker: dict[str, Any], separation: dict[str, Any]) -> Services:
    return Services(
        settings, JobRepository(settings.database_url.get_secret_value()), LocalStorage(settings.data_dir / "s"),
        tracker=_Handle(tracker), separation=_Handle(separation), transcription=_Handle({"state": "ready"}),
    )  # fmt: skip


def test_without_its_database_the_api_answers_and_tells_only_operators_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    config = Settings(data_dir=tmp_path, database_url=f"postgresql://postgres@127.0.0.1:{port}/x", auth_required=False)
    waiting = {"state": "waiting for the database", "error": "connection refused"}
    loading = {"state": "loading", "model": "htdemucs", "error": f"{MODEL_DIR}/htdemucs.th: still reading"}
    client = TestClient(create_api(_services(config, waiting, loading)))

    caplog.set_level(logging.INFO, logger="serve_app")
    health = client.get("/api/v1/health")
    assert health.status_code == 200
    body = health.json()
    assert body["components"] == {
        "database": {"status": "unavailable", "code": "database_unreachable"},
        "storage": {"status": "ready", "code": "ok"},
        "job_tracker": {"status": "starting", "code": "waiting_for_database"},
        "separation": {"status": "starting", "code": "model_loading"},
        "transcription": {"status": "ready", "code": "ok"},
    }
    assert not body["ready"] and body["live"]
    assert str(port) not in health.text and "refused" not in health.text and MODEL_DIR not in health.text
    ready = client.get("/api/v1/health/ready")
    assert ready.status_code == 503 and ready.json() == body

    # The reasons, in the driver's words: on the details route (open, like every route, with auth off)...
    details = client.get("/api/v1/health/details").json()["components"]
    assert details["database"]["code"] == "database_unreachable"
    assert "not reachable" in details["database"]["detail"]["error"] and str(port) in details["database"]["detail"]["error"]
    assert details["job_tracker"]["detail"]["state"] == "waiting for the database"
    assert MODEL_DIR in details["separation"]["detail"]["error"]
    # ...and in the log, once per change rather than on every poll.
    database_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("health: database")]
    assert len(database_lines) == 1 and str(port) in database_lines[0]

    song = encode(tmp_path / "a.wav", tone(1.0), 44100, "wav")
    with open(song, "rb") as fh:
        upload = client.post("/api/v1/transcribe", files={"file": ("a.wav", fh)}, data={"separation": "none"})
    assert upload.status_code == 503 and upload.json()["code"] == "service_unavailable"
    assert upload.headers["retry-after"] == str(config.retry_after_seconds)


def test_health_details_need_an_operators_key_when_auth_is_on(tmp_path: Path) -> None:
    config = Settings(data_dir=tmp_path, auth_required=True)
    services = _services(config, {"state": "ready"}, {"state": "ready", "model": "htdemucs", "device": "cpu"})
    services.repo.migrate()
    ApiKeys(services.repo).seed([CLIENT_KEY], [OPERATOR_KEY])
    client = TestClient(create_api(services))

    # Liveness and readiness stay open: load balancers probe them without a key.
    assert client.get("/api/v1/health").json()["components"]["separation"] == {"status": "ready", "code": "ok"}
    assert client.get("/api/v1/health/ready").status_code == 200
    for headers, status, code in (({}, 401, "unauthorized"), ({"X-API-Key": "ssk_unknown"}, 401, "unauthorized"),
                                  ({"X-API-Key": CLIENT_KEY}, 403, "forbidden")):  # fmt: skip
        refused = client.get("/api/v1/health/details", headers=headers)
        assert refused.status_code == status and refused.json()["code"] == code, refused.text
    details = client.get("/api/v1/health/details", headers={"X-API-Key": OPERATOR_KEY})
    assert details.status_code == 200
    separation = details.json()["components"]["separation"]
    assert separation["status"] == "ready" and separation["detail"]["device"] == "cpu"
    assert details.json()["components"]["database"]["detail"] == {"backend": "sqlite"}
    # An operator's key is a client's key too.
    assert client.get("/api/v1/jobs", headers={"X-API-Key": OPERATOR_KEY}).status_code == 200
