"""The Server-Sent Events stream over real HTTP: the current state at once, a keep-alive comment while
the job has no news (so proxies keep the connection), then the job's next states and the final one."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from sqlalchemy import update

from serve_app.api.app import create_api
from serve_app.api.services import Services
from serve_app.domain.db import JobRepository, JobRow, utcnow
from serve_app.domain.storage import LocalStorage
from serve_app.settings import Settings
from tests.unit.conftest import add_row, serving

JOB = "e" * 32


def _queued(job_id: str) -> JobRow:
    now = utcnow()
    return JobRow(
        id=job_id, status="queued", stage="queued", progress=0.0, options={}, upload_name="a.wav", upload_bytes=4,
        duration_seconds=1.0, sample_rate=44100, channels=1, results=[], stage_seconds={}, created_at=now,
        updated_at=now, attempts=0, cancel_requested=False,
    )  # fmt: skip


def test_an_idle_job_gets_keep_alive_comments_then_its_news_and_the_end(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, auth_required=False, events_keepalive_seconds=0.2)
    repo = JobRepository(settings.database_url.get_secret_value())
    repo.migrate()
    add_row(repo, _queued(JOB))
    services = Services(settings, repo, LocalStorage(tmp_path / "s"), tracker=None, separation=None, transcription=None)
    lines: list[str] = []
    with serving(create_api(services)) as url, httpx.stream("GET", f"{url}/api/v1/jobs/{JOB}/events", timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            lines.append(line)
            if lines.count(": keep-alive") == 2 and "running" not in "".join(lines):
                # No news for two intervals; now the job moves on and ends.
                with repo.engine.begin() as conn:
                    conn.execute(update(JobRow).where(JobRow.id == JOB).values(status="running", stage="decoding"))
            if lines.count(": keep-alive") >= 2 and '"running"' in line:
                with repo.engine.begin() as conn:
                    conn.execute(update(JobRow).where(JobRow.id == JOB).values(status="succeeded", stage="done"))
    repo.dispose()
    events = [(kind.removeprefix("event: "), json.loads(data.removeprefix("data: ")))
              for kind, data in zip(lines, lines[1:]) if kind.startswith("event: ")]  # fmt: skip
    assert [(kind, e["status"]) for kind, e in events] == [("state", "queued"), ("state", "running"), ("final", "succeeded")]
    # The comments came between the first state and the news, where the job had none; no event carries one.
    first_news = lines.index(next(line for line in lines if '"running"' in line))
    assert lines[: first_news].count(": keep-alive") >= 2
    assert all(not line.startswith(":") or line == ": keep-alive" for line in lines)
