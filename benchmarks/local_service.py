"""The whole service on this machine, for benchmarks: a local Ray cluster, Serve on a free port,
the application from `serve_app.app:build_app`, and the URL once it answers.

    with local_service({"data_dir": "/tmp/x", "demucs_model": ..., "demucs_model_dir": ...}) as url:
        httpx.get(f"{url}/api/v1/health")
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

logger = logging.getLogger(__name__)

APP_NAME = "stemscribe"
# The PostgreSQL server the integration tests and the chaos benchmark create their databases on.
POSTGRES_URL = os.environ.get("STEMSCRIBE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def processes_naming(folder: Path) -> dict[int, str]:
    """Live processes whose command line names `folder`, pid to command line. Ray's processes carry their
    session folder, so this finds one cluster's processes (started with its own RAY_TMPDIR) and no other's."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(folder) in cmdline:
                found[int(entry.name)] = cmdline
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database on the real PostgreSQL server (a plain postgresql:// URL), dropped afterwards;
    psycopg.OperationalError when no server answers (within 3 s)."""
    import psycopg

    name = f"stemscribe_test_{uuid.uuid4().hex[:8]}"
    admin = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def replica_actors(deployment: str, app: str = APP_NAME) -> list[str]:
    """The live replica actors of one deployment of the application, by actor name (namespace `serve`),
    on the Ray cluster this process is connected to."""
    import ray

    return [
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve" and f"{app}#{deployment}#" in a["name"]
    ]  # fmt: skip


def kill_replica(name: str) -> None:
    """Kill one Serve replica actor by name, as a crash would: no graceful shutdown, Serve starts another."""
    import ray

    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)


def has_cuda() -> bool:
    """Without importing torch (slow): a visible NVIDIA device means CUDA for Demucs."""
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True, check=False).returncode == 0


def wait_until_ready(url: str, timeout: float = 600.0) -> dict[str, Any]:
    """Wait until no model is still loading; returns the last health report.

    A model that failed to load does not count as loading: the service then runs what it can
    (`separation=none`), and the caller decides from the report whether that is enough.
    """
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=30) as client:
        while True:
            try:
                health = client.get("/api/v1/health").json()
                codes = [health["components"][c]["code"] for c in ("separation", "transcription")]
                # Loading, or not answering yet (`<name>_unreachable`): wait; ready or failed: done.
                if not any(code == "model_loading" or code.endswith("_unreachable") for code in codes):
                    return dict(health)
            except (httpx.HTTPError, KeyError, ValueError):
                pass  # the proxy answers before the application is up
            if time.monotonic() > deadline:
                raise TimeoutError(f"the service at {url} was not ready after {timeout:g} s")
            time.sleep(0.5)


def redeploy(url: str, settings: dict[str, Any], user_configs: dict[str, dict[str, Any]] | None = None) -> None:
    """Deploy (or deploy again) the application on the running local Serve, with `user_configs` replacing
    fields of the deployments' user_config; returns once no model is loading."""
    from ray import serve

    from serve_app.app import build_application
    from serve_app.settings import Settings

    app = build_application(Settings(**{"auth_required": False, **settings}), user_configs=user_configs)
    serve.run(app, name=APP_NAME, route_prefix="/")
    wait_until_ready(url)


@contextlib.contextmanager
def local_service(settings: dict[str, Any], *, num_cpus: int | None = None) -> Iterator[str]:
    """Start Ray, Serve and the app with `settings` (Settings fields); yield its base URL; stop it all.

    Laptop defaults: authentication off unless `settings` says otherwise (it listens on 127.0.0.1 only).
    """
    import ray
    from ray import serve

    cuda = has_cuda()
    # Logical CPUs: the three replicas ask for 2.25 between them, more than a 2-core machine has,
    # though the stages of one job never run at the same time. Without CUDA, one logical GPU lets the
    # 0.5-GPU replicas schedule; the code falls back to the CPU.
    ray.init(
        num_cpus=num_cpus or (os.cpu_count() or 1) + 2,
        num_gpus=None if cuda else 1,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}"
        redeploy(url, settings)
        logger.info("service up at %s", url)
        yield url
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
