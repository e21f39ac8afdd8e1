"""The web page at `/`: public (with authentication on, the page and its files need no key while the API
still does), outside the OpenAPI document, every file it loads is there, and an install ships them."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serve_app.api.app import create_api
from serve_app.api.services import Services
from serve_app.domain.db import JobRepository
from serve_app.domain.storage import LocalStorage
from serve_app.settings import Settings
from serve_app.web import STATIC_DIR

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, auth_required=True)
    repo = JobRepository(settings.database_url.get_secret_value())
    repo.migrate()
    services = Services(settings, repo, LocalStorage(tmp_path / "s"), tracker=None, separation=None, transcription=None)
    yield TestClient(create_api(services))
    repo.dispose()


def test_the_page_and_its_files_are_public_while_the_api_wants_a_key(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "stemscribe" in page.text
    # It holds a key: scripts from the service only, and never in a frame.
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "<script>" not in page.text  # no inline script: the policy would refuse it
    script = client.get("/web/app.js")
    assert script.status_code == 200
    # ES modules load only with a JavaScript MIME type.
    assert "javascript" in script.headers["content-type"]
    assert client.get("/web/style.css").headers["content-type"].startswith("text/css")
    assert client.get("/api/v1/jobs").status_code == 401
    missing = client.get("/web/nothing.js")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")


def test_the_page_is_not_part_of_the_api_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert all(path.startswith("/api/v1/") or path.startswith("/ws/") for path in paths), sorted(paths)


def test_every_file_the_page_loads_exists(client: TestClient) -> None:
    html = (STATIC_DIR / "index.html").read_text()
    linked = re.findall(r'(?:src|href)="web/([^"]+)"', html)
    imported = [
        name for js in STATIC_DIR.glob("*.js") for name in re.findall(r'from "\./([^"]+)"', js.read_text())
    ]
    assert {"app.js", "style.css", "api.js", "roll.js", "players.js"} <= set(linked) | set(imported)
    for name in linked + imported:
        assert client.get(f"/web/{name}").status_code == 200, name


def test_package_data_covers_every_file_of_the_page() -> None:
    # A non-editable install carries only what pyproject's package data names, not only the Python.
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["serve_app.web"]
    for path in STATIC_DIR.iterdir():
        assert any(fnmatch.fnmatch(f"static/{path.name}", p) for p in patterns), path.name
