"""Per-key limits and the queue depth hold under truly concurrent uploads: the check and the insert
are one atomic step (`JobRepository.admit`), Idempotency-Key requests included."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from deployments.job_tracker import JobTracker
from serve_app.api.app import create_api
from serve_app.api.services import Services
from serve_app.domain.db import AdmissionLimits, JobRepository, JobRow, utcnow
from serve_app.domain.errors import QueueFull, RateLimited
from serve_app.domain.storage import LocalStorage
from serve_app.settings import Settings
from tests.audio_files import encode, tone
from tests.unit.conftest import postgres_or_skip, serving

KEY = "ssk_admission-test-key-0123456789"
THREADS = 30


def _row(owner: str | None, idempotency_key: str | None = None) -> JobRow:
    now = utcnow()
    return JobRow(
        id=uuid.uuid4().hex, status="queued", stage="queued", progress=0.0, options={}, upload_name=None,
        upload_bytes=1, duration_seconds=1.0, sample_rate=44100, channels=1, results=[], stage_seconds={},
        created_at=now, updated_at=now, attempts=0, cancel_requested=False, owner=owner,
        idempotency_key=idempotency_key,
    )  # fmt: skip


def _at_once(count: int, call: Any) -> list[Any]:
    """`call(i)` from `count` threads released together; each answer, or the exception it raised."""
    barrier = threading.Barrier(count)

    def one(i: int) -> Any:
        barrier.wait()
        try:
            return call(i)
        except Exception as exc:
            return exc

    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def _count(repo: JobRepository, *where: Any) -> int:
    with repo.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(JobRow).where(*where)) or 0)


@pytest.fixture
def repo(database_url: str) -> Iterator[JobRepository]:
    repository = JobRepository(database_url)
    repository.migrate()
    yield repository
    repository.dispose()


def test_concurrent_admissions_stop_exactly_at_the_per_key_limit(repo: JobRepository) -> None:
    limits = AdmissionLimits(max_queue_depth=1000, max_active_jobs_per_key=5, max_uploads_per_minute=100,
                             retry_after_seconds=2)  # fmt: skip
    answers = _at_once(40, lambda _: repo.admit(_row("alice"), limits))
    accepted = [a for a in answers if isinstance(a, str)]
    assert len(accepted) == 5
    assert all(isinstance(a, RateLimited) for a in answers if not isinstance(a, str))
    assert _count(repo, JobRow.owner == "alice") == 5
    # Uploads per minute count finished jobs too.
    with repo.engine.begin() as conn:
        conn.execute(JobRow.__table__.update().values(status="succeeded"))
    per_minute = AdmissionLimits(1000, 100, 8, 2)
    answers = _at_once(40, lambda _: repo.admit(_row("alice"), per_minute))
    assert len([a for a in answers if isinstance(a, str)]) == 3
    assert _count(repo, JobRow.owner == "alice") == 8


def test_concurrent_admissions_stop_exactly_at_the_queue_depth_idempotency_keys_included(
    repo: JobRepository,
) -> None:
    limits = AdmissionLimits(max_queue_depth=7, max_active_jobs_per_key=100, max_uploads_per_minute=100,
                             retry_after_seconds=2)  # fmt: skip
    # Half the requests carry a new Idempotency-Key: checked like any upload.
    answers = _at_once(40, lambda i: repo.admit(_row(None, f"-:new-{i}" if i % 2 else None), limits))
    assert len([a for a in answers if isinstance(a, str)]) == 7
    assert all(isinstance(a, QueueFull) for a in answers if not isinstance(a, str))
    assert _count(repo, JobRow.status == "queued") == 7
    # With the queue full, a replayed key answers with its job without counting; a new key is refused.
    with repo.engine.connect() as conn:
        first, replayed = conn.execute(
            select(JobRow.id, JobRow.idempotency_key).where(JobRow.idempotency_key.is_not(None)).limit(1)
        ).one()
    assert _at_once(20, lambda _: repo.admit(_row(None, replayed), limits)) == [first] * 20
    with pytest.raises(QueueFull):
        repo.admit(_row(None, "-:another"), limits)
    repo.precheck(None, replayed, limits)  # the early check lets the replay through too
    with pytest.raises(QueueFull):
        repo.precheck(None, "-:another", limits)
    assert _count(repo) == 7


def test_a_retried_submit_of_the_same_job_is_not_counted_twice(repo: JobRepository) -> None:
    limits = AdmissionLimits(1, 1, 1, 2)
    row = _row("bob")
    assert repo.admit(row, limits) == row.id
    again = _row("bob")
    again.id = row.id
    assert repo.admit(again, limits) == row.id
    with pytest.raises(RateLimited):
        repo.admit(_row("bob"), limits)


class _Handle:
    """Stands in for the Ray actor handle: `handle.method.remote(...)` calls the tracker directly."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        return type("Method", (), {"remote": staticmethod(getattr(self._target, name))})


@pytest.fixture
def song(tmp_path: Path) -> bytes:
    return encode(tmp_path / "s.wav", tone(1.0, channels=1), 22050, "wav").read_bytes()


@pytest.mark.postgres
@pytest.mark.parametrize("early_check", [True, False], ids=["with-precheck", "admission-only"])
@pytest.mark.parametrize("limit", ["per_key", "queue_depth"])
def test_concurrent_http_uploads_on_postgres(
    tmp_path: Path, song: bytes, monkeypatch: pytest.MonkeyPatch, early_check: bool, limit: str
) -> None:
    """30 uploads at once over real HTTP through the real routes and the tracker's submit: exactly
    the limit get 202, the rest 429 (per key) or 503 (queue); no rows beyond it; no orphan files."""
    if not early_check:  # prove the atomic admission alone holds (and cleans up after itself)
        monkeypatch.setattr(JobRepository, "precheck", lambda *args: None)
    with postgres_or_skip() as url:
        settings = Settings(
            data_dir=tmp_path, database_url=url, auth_required=limit == "per_key", api_keys=KEY,
            max_active_jobs_per_key=6, max_uploads_per_minute=100, max_queue_depth=6 if limit == "queue_depth" else 1000,
        )  # fmt: skip
        tracker = JobTracker(settings, separation=None, transcription=None)  # type: ignore[arg-type]
        asyncio.run(tracker.prepare_database())  # what its start() does first: schema and seeded keys
        repo = JobRepository(url)
        storage = LocalStorage(Path(settings.storage_dir))
        app = create_api(Services(settings, repo, storage, _Handle(tracker), separation=None, transcription=None))
        headers = {"X-API-Key": KEY} if limit == "per_key" else {}
        with serving(app) as base:

            def upload(i: int) -> int:
                extra = {"Idempotency-Key": f"k-{i}"} if i % 3 == 0 else {}
                with httpx.Client(base_url=base, timeout=120) as client:
                    response = client.post(
                        "/api/v1/transcribe", files={"file": ("s.wav", song)}, data={"separation": "none"},
                        headers=headers | extra,
                    )  # fmt: skip
                    return response.status_code

            statuses = _at_once(THREADS, upload)
        refused = 429 if limit == "per_key" else 503
        assert sorted(statuses) == [202] * 6 + [refused] * (THREADS - 6), statuses
        assert _count(repo) == 6
        stored = {p.name for p in (Path(settings.storage_dir) / "jobs").iterdir()}
        with repo.engine.connect() as conn:
            assert stored == set(conn.scalars(select(JobRow.id)))
        repo.dispose()
        tracker.repo.dispose()  # its loops ended with the server's event loop
