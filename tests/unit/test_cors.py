"""CORS is off by default and limited to the configured origins when on."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from serve_app.api.app import create_api
from serve_app.api.services import Services
from serve_app.domain.db import JobRepository
from serve_app.domain.storage import LocalStorage
from serve_app.settings import Settings


def _client(tmp_path: Path, **settings: object) -> TestClient:
    config = Settings(data_dir=tmp_path, **settings)
    repo = JobRepository(config.database_url.get_secret_value())
    repo.migrate()
    services = Services(config, repo, LocalStorage(tmp_path / "s"), tracker=None, separation=None, transcription=None)
    return TestClient(create_api(services))


def _preflight(client: TestClient, origin: str) -> dict[str, str]:
    response = client.options(
        "/api/v1/jobs", headers={"Origin": origin, "Access-Control-Request-Method": "GET",
                                 "Access-Control-Request-Headers": "X-API-Key"},
    )  # fmt: skip
    return dict(response.headers)


def test_cors_is_off_by_default(tmp_path: Path) -> None:
    headers = _preflight(_client(tmp_path), "https://evil.example")
    assert "access-control-allow-origin" not in headers


def test_only_configured_origins_are_allowed(tmp_path: Path) -> None:
    client = _client(tmp_path, cors_origins="https://app.example.com")
    assert _preflight(client, "https://app.example.com")["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-origin" not in _preflight(client, "https://evil.example")


def test_fastapi_own_errors_are_problem_json(tmp_path: Path) -> None:
    client = _client(tmp_path, auth_required=False)
    for response, status in ((client.get("/nowhere"), 404), (client.put("/api/v1/jobs"), 405)):
        assert response.status_code == status
        assert response.headers["content-type"].startswith("application/problem+json")
        assert {"type", "title", "status", "detail", "code"} <= set(response.json())
