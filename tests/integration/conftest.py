"""A real local Ray cluster (with one logical GPU), the app from `serve_app.app:build_app`,
the real models, and real HTTP."""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import ray
from ray import serve

from deployments.demucs_models import write_random_htdemucs
from serve_app.app import build_app
from serve_app.settings import Settings

APP_NAME = "stemscribe"
POSTGRES_URL = os.environ.get("STEMSCRIBE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
FINAL = {"succeeded", "failed", "canceled"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def serve_url() -> Iterator[str]:
    # Logical resources: the GPU lets the 0.5-GPU replicas schedule; the code falls back to the CPU.
    ray.init(num_cpus=8, num_gpus=1, include_dashboard=False, log_to_driver=False)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    write_random_htdemucs(folder)
    return folder


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database on the real PostgreSQL server, dropped afterwards."""
    name = f"stemscribe_test_{uuid.uuid4().hex[:8]}"
    admin = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


@dataclass
class Service:
    url: str
    client: httpx.Client
    settings: dict[str, Any]
    seen_progress: dict[str, list[float]] = field(default_factory=dict)

    def submit(self, path: Path, **form: Any) -> httpx.Response:
        with open(path, "rb") as fh:
            return self.client.post("/api/v1/transcribe", files={"file": (path.name, fh)}, data=form)

    def wait(self, job_id: str, timeout: float = 300) -> dict[str, Any]:
        return self.wait_with(job_id, {}, timeout)

    def wait_with(self, job_id: str, headers: dict[str, str], timeout: float = 300) -> dict[str, Any]:
        """Poll until the job is final, recording every progress value seen on the way."""
        deadline = time.monotonic() + timeout
        seen = self.seen_progress.setdefault(job_id, [])
        while time.monotonic() < deadline:
            job = self.client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
            seen.append(job["progress"])
            if job["status"] in FINAL:
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} not finished after {timeout} s: {job}")

    def result(self, job: dict[str, Any], name: str) -> bytes:
        (link,) = [r["url"] for r in job["results"] if r["name"] == name]
        response = self.client.get(link)
        assert response.status_code == 200, response.text
        return response.content


def deploy(serve_url: str, **settings: Any) -> Service:
    settings.setdefault("auth_required", False)  # tests/integration/test_security.py turns it on
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
    client = httpx.Client(base_url=serve_url, timeout=120)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        health = client.get("/api/v1/health").json()
        if health["components"]["separation"]["detail"].get("state") != "loading":
            break
        time.sleep(0.5)
    return Service(serve_url, client, settings)


def undeploy(service: Service) -> None:
    service.client.close()
    serve.delete(APP_NAME)
    # The tracker is detached (it outlives the application on purpose); end it with the test's settings.
    settings = Settings(**service.settings)
    try:
        ray.kill(ray.get_actor(settings.tracker_actor_name, namespace=settings.ray_namespace), no_restart=True)
    except ValueError:
        pass
