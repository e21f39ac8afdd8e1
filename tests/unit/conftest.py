"""Fixtures for unit tests that need a real database (SQLite, and PostgreSQL when it is running)
or a real local HTTP server."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn
from sqlalchemy.orm import Session

from benchmarks.local_service import fresh_postgres_database
from serve_app.domain.db import JobRepository, JobRow
from serve_app.settings import normalize_database_url


@contextlib.contextmanager
def postgres_or_skip() -> Iterator[str]:
    """`fresh_postgres_database` with the psycopg 3 driver in its URL; skips the test when no server answers."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(fresh_postgres_database())
        except psycopg.OperationalError as exc:
            pytest.skip(f"PostgreSQL is not reachable: {exc}")
        yield normalize_database_url(url)


def add_row(repo: JobRepository, row: JobRow) -> None:
    """A job row as a test needs it, whatever its state (the service itself only adds rows through `admit`)."""
    with Session(repo.engine) as session, session.begin():
        session.add(row)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'stemscribe.db'}"
        return
    with postgres_or_skip() as url:
        yield url


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """The ASGI app behind a real uvicorn server on a free loopback port, in a thread."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
