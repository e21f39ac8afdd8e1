"""The result cache without Ray: the tracker, the real database (SQLite, and PostgreSQL when it runs) and
local storage, with model stand-ins that count their computations and write different notes each time,
so a copy can be told from a recomputation.

Reference counting: a result lives as long as some job holds it; deleting or expiring one job never
breaks another's downloads. Sharing across owners: results only, and only when the setting allows."""

from __future__ import annotations

import asyncio
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from deployments.job_tracker import JobTracker, upgrade_schema
from music.notes import Note
from music.rhythm import BeatGrid
from serve_app.domain.db import JobRepository, JobRow, ResultCacheRow, utcnow
from serve_app.domain.jobs import JobOptions, JobStatus
from serve_app.domain.result_cache import Compute, ResultCache, Reuse, Wait
from serve_app.domain.storage import JobKeys, LocalStorage
from serve_app.settings import Settings
from tests.unit.conftest import add_row

SONG = "5e" * 32  # the decoded samples' hash the ingress would send
KEY = "c0" * 32


class _Method:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


class _Models:
    """Separation and transcription stand-ins. Every separation is counted and gives notes of its own
    pitch; `weights` is what they report as their model; `hold` keeps separations waiting until set."""

    def __init__(self, storage: LocalStorage) -> None:
        self.separated: list[str] = []
        self.weights = "v1"
        self.hold = asyncio.Event()
        self.hold.set()
        self.pitch: dict[str, int] = {}

        async def prepare_stems(job_id: str, mode: str, attempt: int) -> list[str]:
            self.separated.append(job_id)
            self.pitch[job_id] = 40 + len(self.separated)
            await self.hold.wait()
            keys = JobKeys(job_id)
            storage.put_bytes(keys.stem("mix"), f"wav of {job_id}".encode())
            storage.put_bytes(keys.beats, json.dumps(BeatGrid.steady(120.0, 4.0).to_json()).encode())
            return ["mix"]

        async def transcribe_stems(job_id: str, stems: list[str], _: dict[str, Any], attempt: int) -> dict[str, int]:
            for stem in stems:
                notes = [Note(0.5, 1.0, self.pitch[job_id], 90).to_json(stem)]
                storage.put_bytes(JobKeys(job_id).stem_notes(stem), json.dumps(notes).encode())
            return {stem: 1 for stem in stems}

        async def fingerprint(*_: Any) -> dict[str, Any]:
            return {"weights": self.weights}

        async def status() -> dict[str, Any]:
            return {}

        self.separation = type("S", (), {})()
        self.separation.prepare_stems, self.separation.status = _Method(prepare_stems), _Method(status)
        self.separation.fingerprint = _Method(fingerprint)
        self.transcription = type("T", (), {})()
        self.transcription.transcribe_stems, self.transcription.status = _Method(transcribe_stems), _Method(status)
        self.transcription.fingerprint = _Method(fingerprint)


def _job(owner: str | None = None, song: str = SONG, **options: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex, "options": JobOptions(**options).model_dump(mode="json"),
        "upload_name": f"upload-{uuid.uuid4().hex[:6]}.wav", "upload_bytes": 10, "duration_seconds": 4.0,
        "sample_rate": 44100, "channels": 2, "request_hash": "h", "owner": owner, "idempotency_key": None,
        "audio_sha256": song,
    }  # fmt: skip


async def _until(condition: Any, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


class _World:
    """One database and one storage; trackers come and go over them (a restart is a new tracker)."""

    def __init__(self, tmp_path: Path, database_url: str) -> None:
        self.tmp_path, self.database_url = tmp_path, database_url
        self.storage = LocalStorage(tmp_path / "storage")
        self.repo = JobRepository(database_url)
        self.models = _Models(self.storage)

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {"data_dir": self.tmp_path, "database_url": self.database_url,
                                  "auth_required": False, "max_concurrent_jobs": 3, **overrides}  # fmt: skip
        return Settings(**values)

    async def tracker(self, **overrides: Any) -> JobTracker:
        tracker = JobTracker(self.settings(**overrides), self.models.separation, self.models.transcription)
        await tracker.start()
        await _until(lambda: tracker._schema_ready.is_set())
        return tracker

    async def finished(self, tracker: JobTracker, job: dict[str, Any]) -> JobRow:
        job_id = await tracker.submit(job)
        await _until(lambda: self.row(job_id).status in ("succeeded", "failed", "canceled"))
        return self.row(job_id)

    def row(self, job_id: str) -> JobRow:
        row = self.repo.get(job_id)
        assert row is not None
        return row

    def midi(self, job_id: str) -> bytes:
        return self.storage.get_bytes(JobKeys(job_id).result("transcription.mid"))

    def delete(self, job_id: str) -> None:
        """What DELETE /api/v1/jobs/{id} does to a finished job."""
        self.storage.delete_prefix(JobKeys(job_id).prefix)
        self.repo.mark_deleted(job_id)

    def entries(self) -> list[str]:
        """The keys in the result_cache table."""
        with self.repo.engine.connect() as conn:
            return list(conn.scalars(select(ResultCacheRow.cache_key)))

    def age(self, *job_ids: str) -> None:
        """Finished long ago, as far as retention is concerned."""
        with self.repo.engine.begin() as conn:
            conn.execute(update(JobRow).where(JobRow.id.in_(job_ids)).values(finished_at=utcnow() - timedelta(hours=2)))


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> _World:
    return _World(tmp_path, database_url)


def test_an_identical_job_gets_its_own_copy_which_outlives_the_first(world: _World) -> None:
    async def scenario() -> None:
        tracker = await world.tracker()
        first = await world.finished(tracker, _job())
        second = await world.finished(tracker, _job(webhook_progress=True))  # a delivery option: same result
        await tracker.stop()

        assert (first.status, first.cache_hit, second.status, second.cache_hit) == ("succeeded", False, "succeeded", True)
        assert world.models.separated == [first.id]  # computed once
        assert second.results == first.results and second.analysis == first.analysis
        assert world.midi(second.id) == world.midi(first.id)
        assert second.upload_name != first.upload_name  # the record is its own
        assert second.stage_seconds == {}  # nothing ran

        world.delete(first.id)
        for name in second.results:  # every download of the second job still works, unchanged
            assert world.storage.exists(JobKeys(second.id).result(name)), name
        assert Note.from_json(json.loads(world.storage.get_bytes(JobKeys(second.id).result("notes.json")))["notes"][0])

        # The result is still cached: the second job holds it now. A restarted tracker finds it too.
        tracker = await world.tracker()
        third = await world.finished(tracker, _job())
        await tracker.stop()
        assert third.cache_hit and world.midi(third.id) == world.midi(second.id)
        assert world.models.separated == [first.id]

    asyncio.run(scenario())


def test_retention_expires_each_holder_and_the_result_goes_with_the_last(world: _World) -> None:
    async def scenario() -> None:
        tracker = await world.tracker()
        first = await world.finished(tracker, _job())
        second = await world.finished(tracker, _job())
        await tracker.stop()
        assert second.cache_hit

        # Retention of an hour; the cleaner every 0.1 s. Only the first job is past it.
        world.age(first.id)
        tracker = await world.tracker(retention_seconds=3600, cleanup_interval_seconds=0.1)
        await _until(lambda: world.row(first.id).expired_at is not None)
        assert world.storage.exists(JobKeys(second.id).result("transcription.mid"))
        third = await world.finished(tracker, _job())
        assert third.cache_hit and world.models.separated == [first.id]

        # Every holder expired: the result is gone, its row swept, and the next job computes.
        world.age(second.id, third.id)
        await _until(lambda: all(world.row(j).expired_at is not None for j in (second.id, third.id)))
        await _until(lambda: world.entries() == [])
        fourth = await world.finished(tracker, _job())
        await tracker.stop()
        assert not fourth.cache_hit and world.models.separated == [first.id, fourth.id]

    asyncio.run(scenario())


def test_other_owners_share_results_only_and_only_when_allowed(world: _World) -> None:
    async def scenario() -> None:
        tracker = await world.tracker()
        mine = await world.finished(tracker, _job(owner="key-a"))
        theirs = await world.finished(tracker, _job(owner="key-b"))
        await tracker.stop()
        assert theirs.cache_hit and world.midi(theirs.id) == world.midi(mine.id)
        assert (theirs.owner, mine.owner) == ("key-b", "key-a")  # each record stays its owner's
        assert theirs.upload_name != mine.upload_name

        tracker = await world.tracker(result_cache_across_owners=False)
        again_theirs = await world.finished(tracker, _job(owner="key-b"))
        again_mine = await world.finished(tracker, _job(owner="key-a"))
        again_theirs_too = await world.finished(tracker, _job(owner="key-b"))
        await tracker.stop()
        assert not again_theirs.cache_hit  # not key-a's results
        assert world.models.separated == [mine.id, again_theirs.id, again_mine.id]
        # Per owner, each one's own results are reused (keys scoped to the owner: computed afresh once).
        assert not again_mine.cache_hit and again_theirs_too.cache_hit
        assert world.midi(again_theirs_too.id) == world.midi(again_theirs.id)

    asyncio.run(scenario())


def test_the_cache_off_computes_every_job(world: _World) -> None:
    async def scenario() -> None:
        tracker = await world.tracker(result_cache=False)
        jobs = [await world.finished(tracker, _job()) for _ in range(2)]
        await tracker.stop()
        assert [j.cache_hit for j in jobs] == [False, False]
        assert world.models.separated == [j.id for j in jobs]
        assert world.midi(jobs[0].id) != world.midi(jobs[1].id)  # the stand-in computes differently each time

    asyncio.run(scenario())


def test_other_options_audio_or_models_compute(world: _World) -> None:
    async def scenario() -> None:
        tracker = await world.tracker()
        await world.finished(tracker, _job())
        others = [await world.finished(tracker, _job(separation="none")), await world.finished(tracker, _job(song="77" * 32))]
        world.models.weights = "v2"  # a redeployed model
        others.append(await world.finished(tracker, _job()))
        await tracker.stop()
        assert [j.cache_hit for j in others] == [False, False, False]
        assert len(world.models.separated) == 4

    asyncio.run(scenario())


def test_identical_jobs_at_once_compute_once_and_share_one_result(world: _World) -> None:
    async def scenario() -> None:
        # All three Demucs jobs at once (the default pool of two would keep the third queued until the
        # first is done, and it would then be a cache hit without waiting at all).
        tracker = await world.tracker(max_concurrent_separations=3)
        world.models.hold.clear()  # the first separation takes until the others are waiting
        ids = [await tracker.submit(_job()) for _ in range(3)]
        await _until(lambda: len(world.models.separated) == 1 and all(world.row(j).status == "running" for j in ids))
        await asyncio.sleep(1.0)  # two poll rounds of the waiters: still one computation
        assert len(world.models.separated) == 1
        world.models.hold.set()
        await _until(lambda: all(world.row(j).status == "succeeded" for j in ids))
        await tracker.stop()
        rows = [world.row(j) for j in ids]
        assert sorted(r.cache_hit for r in rows) == [False, True, True]
        assert len({world.midi(j) for j in ids}) == 1

    asyncio.run(scenario())


def test_a_cache_hit_does_not_queue_behind_computations(world: _World) -> None:
    async def scenario() -> None:
        tracker = await world.tracker(max_concurrent_jobs=1)
        done = await world.finished(tracker, _job())
        world.models.hold.clear()
        busy = await tracker.submit(_job(song="99" * 32))  # takes the one slot, and keeps it
        waiting = await tracker.submit(_job(song="98" * 32))
        await _until(lambda: world.row(busy).status == "running")
        hit = await world.finished(tracker, _job())
        assert hit.cache_hit and world.midi(hit.id) == world.midi(done.id)
        assert (world.row(busy).status, world.row(waiting).status) == ("running", "queued")
        world.models.hold.set()
        await _until(lambda: all(world.row(j).status == "succeeded" for j in (busy, waiting)))
        await tracker.stop()

    asyncio.run(scenario())


def test_models_that_change_during_a_computation_file_nothing(world: _World) -> None:
    async def scenario() -> None:
        tracker = await world.tracker()
        world.models.hold.clear()
        first = await tracker.submit(_job())
        await _until(lambda: len(world.models.separated) == 1)
        world.models.weights = "v2"  # reconfigured while it separated
        world.models.hold.set()
        await _until(lambda: world.row(first).status == "succeeded")
        world.models.weights = "v1"
        again = await world.finished(tracker, _job())
        await tracker.stop()
        assert world.row(first).cache_key is None and not again.cache_hit

    asyncio.run(scenario())


def test_a_holder_whose_files_are_gone_is_forgotten(world: _World) -> None:
    async def scenario() -> None:
        tracker = await world.tracker()
        first = await world.finished(tracker, _job())
        world.storage.delete(JobKeys(first.id).result("notes.json"))  # lost from storage, not deleted
        second = await world.finished(tracker, _job())
        await tracker.stop()
        assert second.status == "succeeded" and not second.cache_hit
        assert world.row(first.id).cache_key is None  # no longer handed out
        assert world.storage.exists(JobKeys(second.id).result("notes.json"))
        assert not world.storage.exists(JobKeys(second.id).temporaries)  # the half copy was removed

    asyncio.run(scenario())


# --- the decisions, on the database alone -------------------------------------------------------------


def _insert(repo: JobRepository, status: str = "queued") -> str:
    job_id = uuid.uuid4().hex
    now = utcnow()
    add_row(repo, JobRow(
        id=job_id, status=status, stage="queued", progress=0.0, options={}, upload_bytes=1, duration_seconds=1.0,
        sample_rate=44100, channels=2, results=["transcription.mid"], stage_seconds={}, created_at=now,
        updated_at=now, attempts=0, cancel_requested=False, finished_at=now if status == "succeeded" else None,
    ))  # fmt: skip
    return job_id


def test_one_computes_a_key_the_others_wait_and_a_dead_computer_is_taken_over(database_url: str) -> None:
    repo = JobRepository(database_url)
    upgrade_schema(repo)
    cache = ResultCache(repo)
    a, b = _insert(repo), _insert(repo)
    assert repo.claim(a, 0, "tracker", 30) and repo.claim(b, 0, "tracker", 30)
    assert cache.begin(KEY, a) == Compute()
    assert cache.begin(KEY, a) == Compute()  # a's next attempt goes on with it
    assert cache.begin(KEY, b) == Wait(a)
    repo.release(a, 1, "a worker died", 0.0)  # a's lease is gone: b does not wait for it
    assert cache.begin(KEY, b) == Compute()
    assert repo.get(a).cache_key is None  # type: ignore[union-attr]  # a is not filed under the key any more
    assert cache.begin(KEY, a) == Wait(b)
    repo.finish(b, 1, JobStatus.SUCCEEDED)
    decision = cache.begin(KEY, a)
    assert isinstance(decision, Reuse) and decision.holder.id == b
    repo.dispose()


def test_a_job_copying_a_result_whose_holder_goes_is_waited_for_and_computes_it(database_url: str) -> None:
    """Never two results for one key: while a job copies from a holder that is then deleted, an identical
    job waits for the copier (which either finishes the copy or computes) instead of computing beside it."""
    repo = JobRepository(database_url)
    upgrade_schema(repo)
    cache = ResultCache(repo)
    holder, copier, later = _insert(repo), _insert(repo), _insert(repo)
    assert repo.claim(holder, 0, "tracker", 30) and cache.begin(KEY, holder) == Compute()
    repo.finish(holder, 1, JobStatus.SUCCEEDED)
    assert repo.claim(copier, 0, "tracker", 30) and repo.claim(later, 0, "tracker", 30)
    reuse = cache.begin(KEY, copier)
    assert isinstance(reuse, Reuse) and reuse.holder.id == holder
    repo.mark_deleted(holder)  # deleted under the copy
    assert cache.begin(KEY, later) == Wait(copier)
    cache.forget(KEY, holder)
    assert cache.begin(KEY, copier, [holder]) == Compute()  # its copy failed: it computes
    assert cache.begin(KEY, later) == Wait(copier)
    repo.dispose()


def test_concurrent_claims_of_one_key_give_one_computation(database_url: str) -> None:
    repo = JobRepository(database_url)
    upgrade_schema(repo)
    cache = ResultCache(repo)
    jobs = [_insert(repo) for _ in range(16)]
    for job_id in jobs:
        assert repo.claim(job_id, 0, "tracker", 30)
    with ThreadPoolExecutor(16) as pool:
        decisions = list(pool.map(lambda job_id: cache.begin(KEY, job_id), jobs))
    computing = [job_id for job_id, d in zip(jobs, decisions) if d == Compute()]
    assert len(computing) == 1
    assert all(d == Wait(computing[0]) for d in decisions if d != Compute())
    repo.dispose()
