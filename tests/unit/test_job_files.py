"""Fencing in storage: an attempt writes attempt-scoped temporaries and publishes them only while it holds
the job's lease; a stale attempt publishes nothing and leaves nothing; a delete at any moment leaves no
files. On local storage and on S3 (moto), and in the job tracker with the real repository."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from deployments.job_tracker import JobTracker, upgrade_schema
from music.rhythm import BeatGrid
from serve_app.domain.db import JobRepository, JobRow, utcnow
from serve_app.domain.job_files import JobFiles, LeaseLost
from serve_app.domain.storage import JobKeys, LocalStorage, StorageBackend
from serve_app.settings import Settings
from tests.unit.conftest import add_row
from tests.unit.test_job_tracker import _job, _Method, _ok, _state, _Transcription, _true, _until

JOB = "0123456789abcdef0123456789abcdef"
_AWS = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StorageBackend]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "store")
        return
    moto = pytest.importorskip("moto")
    import boto3

    from serve_app.domain.storage import S3Storage

    for name, value in _AWS.items():
        monkeypatch.setenv(name, value)
    with moto.mock_aws():
        boto3.client("s3").create_bucket(Bucket="songs")
        yield S3Storage("songs", prefix="stemscribe/")


def _objects(storage: StorageBackend, job_id: str = JOB) -> set[str]:
    """Every object under the job's folder, as keys relative to it."""
    prefix = JobKeys(job_id).prefix + "/"
    if isinstance(storage, LocalStorage):
        folder = storage.path(JobKeys(job_id).prefix)
        return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()
    pages = storage.client.get_paginator("list_objects_v2").paginate(  # type: ignore[attr-defined]
        Bucket=storage.bucket, Prefix=storage.prefix + prefix  # type: ignore[attr-defined]
    )
    return {item["Key"].removeprefix(storage.prefix + prefix) for page in pages for item in page.get("Contents", [])}  # type: ignore[attr-defined]


class _Leases:
    """The job's lease as the database would answer: held by `holder`, or by nobody once canceled."""

    def __init__(self, holder: int) -> None:
        self.holder: int | None = holder
        self.canceled = False

    def holds_lease(self, job_id: str, attempt: int) -> bool:
        return not self.canceled and attempt == self.holder

    def cancel_requested(self, job_id: str) -> bool:
        return self.canceled


def test_attempts_write_their_own_temporaries_and_only_the_lease_holder_publishes(storage: StorageBackend) -> None:
    keys, leases = JobKeys(JOB), _Leases(holder=2)
    stale, current = JobFiles(storage, JOB, 1, leases), JobFiles(storage, JOB, 2, leases)
    # Both write the same stem at once, as an orphaned separation beside the attempt that took over would.
    stale.put_bytes(keys.stem("bass"), b"stale")
    current.put_bytes(keys.stem("bass"), b"current")
    assert stale.temporary(keys.stem("bass")) != current.temporary(keys.stem("bass"))
    assert _objects(storage) == {"tmp/attempt-1/results/stems/bass.wav.tmp", "tmp/attempt-2/results/stems/bass.wav.tmp"}
    assert not storage.exists(keys.stem("bass"))  # nothing is final before it is published

    assert current.publish() == [keys.stem("bass")]
    with pytest.raises(LeaseLost):
        stale.publish()  # after the newer attempt: it must not overwrite it
    assert storage.get_bytes(keys.stem("bass")) == b"current"
    assert _objects(storage) == {"results/stems/bass.wav"}  # the stale attempt cleaned up after itself


def test_a_stale_attempt_publishes_nothing_and_removes_what_it_wrote(storage: StorageBackend, tmp_path: Path) -> None:
    keys, leases = JobKeys(JOB), _Leases(holder=1)
    files = JobFiles(storage, JOB, 1, leases)
    source = tmp_path / "drums.wav"
    source.write_bytes(b"RIFF")
    files.put_file(keys.stem("drums"), source)
    files.put_bytes(keys.beats, b"{}")
    leases.holder = 2  # taken over while the attempt worked
    with pytest.raises(LeaseLost):
        files.publish()
    assert _objects(storage) == set()


def test_files_publish_in_the_order_written_and_leave_no_temporaries(storage: StorageBackend) -> None:
    keys = JobKeys(JOB)
    files = JobFiles(storage, JOB, 3, _Leases(holder=3))
    files.put_bytes(keys.stem("bass"), b"wav")
    files.put_bytes(keys.beats, b"{}")  # the separation's last write: a later attempt reuses stems only with it
    assert files.publish() == [keys.stem("bass"), keys.beats]
    assert files.staged == [] and files.publish() == []
    assert _objects(storage) == {"results/stems/bass.wav", "work/beats.json"}


@pytest.mark.parametrize("moment", [0, 1, 2])
def test_a_delete_while_files_move_leaves_no_files(storage: StorageBackend, moment: int) -> None:
    """The delete route flags the job (cancel), then removes its folder. Here both happen after the
    attempt's lease check, before the first rename, between two, or after the last: the attempt hears of
    it right after the renames and removes what it published; the route's removal takes the rest."""
    keys, leases = JobKeys(JOB), _Leases(holder=1)
    storage.put_bytes(keys.upload, b"song")
    files = JobFiles(storage, JOB, 1, leases)
    for name in ("transcription.mid", "notes.json"):
        files.put_bytes(keys.result(name), b"x")
    move, moves = storage.move, []

    def delete_now() -> None:
        leases.canceled = True
        storage.delete_prefix(keys.prefix)

    def move_beside_a_delete(source: str, target: str) -> None:
        if len(moves) == moment:
            delete_now()
        moves.append(source)
        move(source, target)

    storage.move = move_beside_a_delete  # type: ignore[method-assign]
    if moment < 2:
        with pytest.raises(LeaseLost):
            files.publish()
    else:  # after the last rename and the check after it: published, then the route's removal takes it
        assert len(files.publish()) == 2
        delete_now()
    assert _objects(storage) == set()


def test_a_delete_flagged_during_the_renames_and_removed_later_leaves_no_files(storage: StorageBackend) -> None:
    keys, leases = JobKeys(JOB), _Leases(holder=1)
    files = JobFiles(storage, JOB, 1, leases)
    files.put_bytes(keys.result("notes.json"), b"x")
    move = storage.move

    def move_then_flag(source: str, target: str) -> None:
        move(source, target)
        leases.canceled = True  # the route's cancel; its folder removal has not run yet

    storage.move = move_then_flag  # type: ignore[method-assign]
    with pytest.raises(LeaseLost):
        files.publish()
    assert _objects(storage) == set()  # the attempt removed its own published file


def test_leaving_with_an_error_removes_the_temporaries(storage: StorageBackend) -> None:
    keys = JobKeys(JOB)
    with pytest.raises(RuntimeError), JobFiles(storage, JOB, 1, _Leases(holder=1)) as files:
        files.put_bytes(keys.stem("bass"), b"wav")
        raise RuntimeError("the separation broke")
    assert _objects(storage) == set()


def test_move_replaces_the_target_and_a_missing_source_is_not_found(storage: StorageBackend) -> None:
    keys = JobKeys(JOB)
    storage.put_bytes(keys.result("notes.json"), b"old")
    storage.put_bytes(keys.temporary(keys.result("notes.json"), 1), b"new")
    storage.move(keys.temporary(keys.result("notes.json"), 1), keys.result("notes.json"))
    assert storage.get_bytes(keys.result("notes.json")) == b"new"
    assert _objects(storage) == {"results/notes.json"}
    with pytest.raises(FileNotFoundError):
        storage.move(keys.temporary(keys.result("notes.json"), 1), keys.result("notes.json"))
    storage.delete(keys.result("notes.json"))
    storage.delete(keys.result("notes.json"))  # already gone: no error
    assert _objects(storage) == set()


def test_temporary_names_stay_inside_their_job() -> None:
    keys = JobKeys(JOB)
    assert keys.temporary(keys.stem("bass"), 2) == f"jobs/{JOB}/tmp/attempt-2/results/stems/bass.wav.tmp"
    with pytest.raises(ValueError):
        keys.temporary(JobKeys("f" * 32).stem("bass"), 2)


# --- the repository's lease check ---------------------------------------------------------------


def _insert(repo: JobRepository) -> str:
    job = _job()
    now = utcnow()
    add_row(repo, JobRow(
        **job, status="queued", stage="queued", progress=0.0, results=[], stage_seconds={}, created_at=now,
        updated_at=now, attempts=0, cancel_requested=False,
    ))  # fmt: skip
    return str(job["id"])


def test_only_the_current_attempt_with_a_live_lease_holds_it(database_url: str) -> None:
    repo = JobRepository(database_url)
    upgrade_schema(repo)
    job_id = _insert(repo)
    assert not repo.holds_lease(job_id, 0)  # queued: nobody holds it
    assert repo.claim(job_id, 0, "tracker-a", 30)
    assert repo.holds_lease(job_id, 1) and not repo.holds_lease(job_id, 2)
    repo._update(JobRow.id == job_id, lease_expires_at=utcnow() - timedelta(seconds=1))
    assert not repo.holds_lease(job_id, 1)  # run out: another tracker may claim it any moment
    assert repo.claim(job_id, 1, "tracker-b", 30)
    assert repo.holds_lease(job_id, 2) and not repo.holds_lease(job_id, 1)
    repo.release(job_id, 2, "handed over", 30)
    assert not repo.holds_lease(job_id, 2)  # given back, though its time has not run out
    assert repo.claim(job_id, 2, "tracker-c", 30) is False  # the backoff still runs
    repo._update(JobRow.id == job_id, lease_expires_at=None)
    assert repo.claim(job_id, 2, "tracker-c", 30)
    repo.cancel(job_id)
    assert not repo.holds_lease(job_id, 3)
    other = _insert(repo)
    assert repo.claim(other, 0, "tracker-a", 30)
    repo.mark_deleted(other)
    assert not repo.holds_lease(other, 1)
    assert not repo.holds_lease(uuid.uuid4().hex, 1)


# --- in the job tracker ------------------------------------------------------------------------


class _FencedSeparation:
    """Separates (a stem and the beats) through JobFiles as the real replica does, once `go` is set."""

    def __init__(self, storage: StorageBackend, repo: JobRepository) -> None:
        self.calls: list[tuple[str, int]] = []
        self.go = asyncio.Event()

        async def prepare_stems(job_id: str, mode: str, attempt: int) -> list[str]:
            self.calls.append((job_id, attempt))
            await self.go.wait()
            keys = JobKeys(job_id)
            with JobFiles(storage, job_id, attempt, repo) as files:
                files.put_bytes(keys.stem("mix"), f"attempt {attempt}".encode())
                files.put_bytes(keys.beats, json.dumps(BeatGrid.steady(120.0, 4.0).to_json()).encode())
                files.put_bytes(keys.separated, json.dumps({"stems": ["mix"]}).encode())
                await asyncio.to_thread(files.publish)
            return ["mix"]

        self.prepare_stems = _Method(prepare_stems)
        self.status = _Method(_ok)


def _tracker(tmp_path: Path) -> tuple[JobTracker, _FencedSeparation, LocalStorage, JobRepository]:
    settings = Settings(data_dir=tmp_path, max_concurrent_jobs=1, lease_seconds=30, auth_required=False)
    storage = LocalStorage(settings.storage_dir)  # type: ignore[arg-type]
    repo = JobRepository(settings.database_url.get_secret_value())
    separation = _FencedSeparation(storage, repo)
    return JobTracker(settings, separation, _Transcription(storage)), separation, storage, repo


def test_an_attempt_whose_lease_was_taken_publishes_nothing_and_records_nothing(tmp_path: Path) -> None:
    tracker, separation, storage, repo = _tracker(tmp_path)

    async def scenario() -> str:
        await tracker.start()
        await _until(lambda: _state(tracker, "ready"))
        job_id = await tracker.submit(_job())
        await _until(lambda: _true(separation.calls == [(job_id, 1)]))
        # A second tracker takes the job over, as it would once attempt 1's lease ran out unrenewed.
        with repo.engine.begin() as conn:
            conn.execute(update(JobRow).where(JobRow.id == job_id).values(
                attempts=2, lease_owner="tracker-b", lease_expires_at=utcnow() + timedelta(seconds=60),
            ))  # fmt: skip
        separation.go.set()
        await _until(lambda: _true(not tracker._tasks))
        await tracker.stop()
        return job_id

    job_id = asyncio.run(scenario())
    row = repo.get(job_id)
    assert row is not None
    assert (row.status, row.attempts, row.lease_owner, row.last_error) == ("running", 2, "tracker-b", None)
    assert _objects(storage, job_id) == set()  # no stem, no beats, no temporaries


def test_a_job_deleted_mid_separation_ends_canceled_with_no_files(tmp_path: Path) -> None:
    tracker, separation, storage, repo = _tracker(tmp_path)

    async def scenario() -> str:
        await tracker.start()
        await _until(lambda: _state(tracker, "ready"))
        job_id = await tracker.submit(_job())
        storage.put_bytes(JobKeys(job_id).upload, b"song")
        await _until(lambda: _true(separation.calls == [(job_id, 1)]))
        # What DELETE /jobs/{id} does, in its order, while the separation still runs.
        await tracker.cancel(job_id)
        storage.delete_prefix(JobKeys(job_id).prefix)
        repo.mark_deleted(job_id)
        separation.go.set()  # it finishes after the delete and tries to publish
        await _until(lambda: _true(not tracker._tasks))
        await tracker.stop()
        return job_id

    job_id = asyncio.run(scenario())
    row = repo.get(job_id)
    assert row is not None and row.status == "canceled"
    assert _objects(storage, job_id) == set()


def test_a_succeeded_job_keeps_no_temporaries_of_earlier_attempts(tmp_path: Path) -> None:
    tracker, separation, storage, repo = _tracker(tmp_path)
    separation.go.set()

    async def scenario() -> str:
        await tracker.start()
        await _until(lambda: _state(tracker, "ready"))
        job_id = _job()["id"]
        # What a replica that died mid-write in an earlier attempt left behind.
        storage.put_bytes(JobKeys(job_id).temporary(JobKeys(job_id).stem("mix"), 7), b"half")
        job_id = await tracker.submit({**_job(), "id": job_id})
        await _until(lambda: _true(repo.get(job_id).status == "succeeded"))  # type: ignore[union-attr]
        await _until(lambda: _true(not tracker._tasks))
        await tracker.stop()
        return job_id

    job_id = asyncio.run(scenario())
    files: Any = _objects(storage, job_id)
    assert files and not [name for name in files if name.startswith("tmp/") or name.endswith((".tmp", ".part"))]
    assert storage.get_bytes(JobKeys(job_id).stem("mix")) == b"attempt 1"


class _Stop(Exception):
    pass


def test_stems_published_by_an_attempt_whose_tracker_died_are_reused(tmp_path: Path) -> None:
    """The separation replica published attempt 1's stems, but its tracker died before it heard (so the
    database never got the stem names): attempt 2 finds them in storage and separates nothing again."""
    from serve_app.domain.jobs import JobOptions, Stage
    from serve_app.domain.pipeline import JobPipeline

    storage = LocalStorage(tmp_path)
    keys = JobKeys(JOB)
    with JobFiles(storage, JOB, 1, _Leases(holder=1)) as files:
        files.put_bytes(keys.stem("mix"), b"stem")
        files.put_bytes(keys.beats, json.dumps(BeatGrid.steady(120.0, 4.0).to_json()).encode())
        files.put_bytes(keys.separated, json.dumps({"stems": ["mix"]}).encode())
        files.publish()

    class Separation:
        class prepare_stems:  # noqa: N801 - a handle's method
            @staticmethod
            def remote(*args: object) -> None:
                raise AssertionError("the stems are in storage: nothing to separate again")

    class Transcription:
        class transcribe_stems:  # noqa: N801
            @staticmethod
            def remote(job_id: str, stems: list[str], *args: object) -> None:
                raise _Stop(stems)

    recorded: list[list[str]] = []

    class Attempt:
        number = 2
        known_stems = None

        async def report(self, stage: Stage, fraction: float) -> None: ...

        async def checkpoint(self) -> None: ...

        async def stems_separated(self, stems: list[str]) -> None:
            recorded.append(stems)

    pipeline = JobPipeline(storage, Separation(), Transcription(), _Leases(holder=2))  # type: ignore[arg-type]
    with pytest.raises(_Stop) as stopped:
        asyncio.run(pipeline.run(JOB, JobOptions(), Attempt()))  # type: ignore[arg-type]
    assert stopped.value.args == (["mix"],)  # on to transcribing the stem attempt 1 published
    assert recorded == [["mix"]]  # and the job's row learns its stems
