"""A real local Ray cluster (with one logical GPU), the app from `serve_app.app:build_app`,
the real models, and real HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
from ray import serve

from benchmarks.local_service import (  # noqa: F401 (shared with the tests)
    APP_NAME,
    free_port,
    fresh_postgres_database,
    kill_replica,
    replica_actors,
)
from deployments.separation import Separation
from music.engines.demucs_models import write_random_htdemucs
from serve_app.app import build_application
from serve_app.settings import Settings

FINAL = {"succeeded", "failed", "canceled"}


@pytest.fixture(scope="session")
def serve_url() -> Iterator[str]:
    # Logical resources: the GPU lets the 0.5-GPU replicas schedule; the code falls back to the CPU.
    ray.init(num_cpus=8, num_gpus=1, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    write_random_htdemucs(folder)
    return folder


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
    separation_cls: type[Separation] = Separation  # what `deploy` bound; a redeploy binds it again

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


def deploy(
    serve_url: str, wait_for_database: bool = True, separation_cls: type[Separation] = Separation, **settings: Any
) -> Service:
    """Deploy (or redeploy) the application, with `separation_cls` as its separation deployment (a fault-
    injecting subclass, say); wait until the model is no longer loading and, unless the test keeps the
    database away, until the job tracker has migrated the schema and seeded the API keys."""
    settings.setdefault("auth_required", False)  # tests/integration/test_security.py turns it on
    # Most tests upload one song many times and mean each upload to run the models; the result cache's
    # own tests (test_result_cache.py) turn it on.
    settings.setdefault("result_cache", False)
    serve.run(build_application(Settings(**settings), separation_cls), name=APP_NAME, route_prefix="/")
    client = httpx.Client(base_url=serve_url, timeout=120)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        components = client.get("/api/v1/health").json()["components"]
        loading = components["separation"]["code"] == "model_loading"
        waiting = components["job_tracker"]["code"] == "waiting_for_database"
        if not loading and not (wait_for_database and waiting):
            break
        time.sleep(0.5)
    return Service(serve_url, client, settings, separation_cls=separation_cls)


def undeploy(service: Service) -> None:
    service.client.close()
    serve.delete(APP_NAME)  # the job tracker is a deployment of the application: it goes with it


def wait_stage(service: Service, job_id: str, stage: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = service.client.get(f"/api/v1/jobs/{job_id}").json()
        if job["stage"] == stage:
            return
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.1)
    raise AssertionError(f"{job_id} never reached {stage}")


def finished_once(service: Service, jobs: list[str]) -> list[dict[str, Any]]:
    """Every job succeeded with one set of results, and its progress never went backwards."""
    finished = [service.wait(job_id, timeout=300) for job_id in jobs]
    for job in finished:
        assert job["status"] == "succeeded", job
        names = [r["name"] for r in job["results"]]
        assert len(names) == len(set(names))
        seen = service.seen_progress[job["job_id"]]
        assert seen == sorted(seen), f"progress went backwards: {seen}"
    return finished


def crash_mid_separation(service: Service, song: Path, deployment: str) -> dict[str, Any]:
    """Submit `song` for Demucs, kill the one `deployment` replica (no graceful shutdown) while it
    separates, and return the job once it has finished: succeeded once, on its second attempt."""
    job_id = service.submit(song, separation="demucs").json()["job_id"]
    wait_stage(service, job_id, "separating")
    (replica,) = replica_actors(deployment)
    kill_replica(replica)
    (job,) = finished_once(service, [job_id])
    assert job["attempts"] == 2, job
    return job


class TcpProxy:
    """A TCP forwarder on a free local port, so a test can take the database away and bring it back
    without touching the PostgreSQL server others use: `close()` stops listening and cuts every open
    connection; `open()` listens on the same port again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True).start()

    def open(self) -> None:
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)

    def stop(self) -> None:
        self.close()
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _open(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port, reuse_address=True)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _forward(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, server_writer}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                writer.transport.abort()
                self._writers.discard(writer)

        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))
