"""The job tracker without Ray: it starts without its database, hands running jobs over when it stops,
and the model replicas' cancel check hears of a handover. Model replicas fail their health check only
when a new replica could do better."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from benchmarks.local_service import free_port
from deployments.job_tracker import HANDED_OVER, JobTracker, upgrade_schema
from deployments.progress import CancelCheck
from deployments.separation import Separation
from deployments.transcription import Transcription
from music.engines.separator import ModelState, SeparationConfig
from music.notes import Note
from music.rhythm import BeatGrid
from serve_app.domain.db import JobRepository
from serve_app.domain.errors import ServiceUnavailable
from serve_app.domain.jobs import JobOptions
from serve_app.domain.storage import JobKeys, LocalStorage
from serve_app.settings import Settings


class _Method:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


async def _ok(*_: Any) -> dict[str, Any]:
    return {}


class _Separation:
    """Writes one stem `mix` and the beats; with `block`, never finishes (the job is mid-separation)."""

    def __init__(self, storage: LocalStorage, block: bool) -> None:
        self.calls: list[str] = []

        async def prepare_stems(job_id: str, mode: str, attempt: int) -> list[str]:
            self.calls.append(job_id)
            if block:
                await asyncio.Event().wait()
            keys = JobKeys(job_id)
            storage.put_bytes(keys.stem("mix"), b"wav")
            storage.put_bytes(keys.beats, json.dumps(BeatGrid.steady(120.0, 4.0).to_json()).encode())
            return ["mix"]

        self.prepare_stems = _Method(prepare_stems)
        self.status = _Method(_ok)


class _Transcription:
    def __init__(self, storage: LocalStorage) -> None:
        async def transcribe_stems(job_id: str, stems: list[str], _: dict[str, Any], attempt: int) -> dict[str, int]:
            for stem in stems:
                notes = [Note(0.5, 1.0, 60, 90).to_json(stem)]
                storage.put_bytes(JobKeys(job_id).stem_notes(stem), json.dumps(notes).encode())
            return {stem: 1 for stem in stems}

        self.transcribe_stems = _Method(transcribe_stems)
        self.status = _Method(_ok)


def _job() -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex, "options": JobOptions().model_dump(mode="json"), "upload_name": "a.wav",
        "upload_bytes": 10, "duration_seconds": 4.0, "sample_rate": 44100, "channels": 2,
        "request_hash": "h", "owner": None, "idempotency_key": None,
    }  # fmt: skip


async def _until(condition: Any, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_a_stopping_tracker_hands_its_running_job_over_and_the_next_one_finishes_both(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, max_concurrent_jobs=1, lease_seconds=30, auth_required=False)
    storage = LocalStorage(settings.storage_dir)  # type: ignore[arg-type]
    repo = JobRepository(settings.database_url.get_secret_value())

    async def scenario() -> None:
        stuck = _Separation(storage, block=True)
        old = JobTracker(settings, stuck, _Transcription(storage))
        await old.start()
        await _until(lambda: _state(old, "ready"))
        running, queued = await old.submit(_job()), await old.submit(_job())
        await _until(lambda: _true(stuck.calls == [running]))
        await old.stop()
        row = repo.get(running)
        assert row is not None
        assert (row.status, row.attempts, row.lease_owner, row.last_error) == ("running", 1, None, HANDED_OVER)
        assert repo.get(queued).attempts == 0  # type: ignore[union-attr]
        assert (await old.status())["state"] == "stopping"

        working = _Separation(storage, block=False)
        new = JobTracker(settings, working, _Transcription(storage))
        await new.start()
        await _until(lambda: _true(all(repo.get(j).status == "succeeded" for j in (running, queued))))  # type: ignore[union-attr]
        await new.stop()
        assert working.calls == [running, queued]  # each once, the handed-over job first
        assert [repo.get(j).attempts for j in (running, queued)] == [2, 1]  # type: ignore[union-attr]

    asyncio.run(scenario())


async def _state(tracker: JobTracker, state: str) -> bool:
    return (await tracker.status())["state"] == state


async def _true(value: bool) -> bool:
    return value


class _SlowDemucs(_Separation):
    """Demucs jobs separate until `release` is set; every other mode at once."""

    def __init__(self, storage: LocalStorage) -> None:
        super().__init__(storage, block=False)
        self.release = asyncio.Event()
        self.separating: list[str] = []
        quick = self.prepare_stems.fn

        async def prepare_stems(job_id: str, mode: str, attempt: int) -> list[str]:
            if mode == "demucs":
                self.separating.append(job_id)
                await self.release.wait()
            return await quick(job_id, mode, attempt)

        self.prepare_stems = _Method(prepare_stems)


def test_jobs_that_need_no_demucs_go_past_demucs_jobs_waiting_for_a_separation_slot(
    tmp_path: Path, database_url: str
) -> None:
    """Three slots, one of them for Demucs: of three Demucs jobs queued first, one separates and two wait in
    the queue; a `separation=none` job submitted after them takes a free slot and finishes meanwhile."""
    settings = Settings(
        data_dir=tmp_path, database_url=database_url, max_concurrent_jobs=3, max_concurrent_separations=1,
        auth_required=False,
    )  # fmt: skip
    storage = LocalStorage(settings.storage_dir)  # type: ignore[arg-type]
    repo = JobRepository(settings.database_url.get_secret_value())
    none = _job() | {"options": JobOptions.model_validate({"separation": "none"}).model_dump(mode="json")}

    async def scenario() -> None:
        separation = _SlowDemucs(storage)
        tracker = JobTracker(settings, separation, _Transcription(storage))
        await tracker.start()
        await _until(lambda: _state(tracker, "ready"))
        demucs = [await tracker.submit(_job()) for _ in range(3)]
        await _until(lambda: _true(separation.separating == demucs[:1]))
        quick = await tracker.submit(none)
        await _until(lambda: _true(repo.get(quick).status == "succeeded"))  # type: ignore[union-attr]
        assert [repo.get(j).status for j in demucs] == ["running", "queued", "queued"]  # type: ignore[union-attr]
        status = await tracker.status()
        assert (status["separation_slots"], status["separating"]) == (1, 1)
        separation.release.set()
        await _until(lambda: _true(all(repo.get(j).status == "succeeded" for j in demucs)))  # type: ignore[union-attr]
        await tracker.stop()

    asyncio.run(scenario())


def test_the_tracker_starts_without_its_database_and_says_why(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    settings = Settings(data_dir=tmp_path, database_url=url, auth_required=False)
    storage = LocalStorage(settings.storage_dir)  # type: ignore[arg-type]

    async def scenario() -> None:
        tracker = JobTracker(settings, _Separation(storage, block=False), _Transcription(storage))
        await tracker.start()  # returns at once: nothing waits for the database
        await _until(lambda: _true(tracker._schema_error != "not checked yet"))
        status = await tracker.status()
        assert status["state"] == "waiting for the database"
        assert "refused" in status["error"] or "failed" in status["error"], status
        with pytest.raises(ServiceUnavailable):
            await tracker.submit(_job())
        await tracker.stop()

    asyncio.run(scenario())


def test_webhook_deliveries_wait_for_the_schema(tmp_path: Path) -> None:
    """On a fresh or absent database the outbox table does not exist yet: the delivery loop must not
    query it (and log tracebacks) before the migrations ran."""
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    settings = Settings(data_dir=tmp_path, database_url=url, auth_required=False, webhook_secret="s" * 32)
    storage = LocalStorage(settings.storage_dir)  # type: ignore[arg-type]

    async def scenario() -> None:
        tracker = JobTracker(settings, _Separation(storage, block=False), _Transcription(storage))
        assert tracker.webhooks is not None
        delivered: list[bool] = []

        async def run() -> None:
            delivered.append(True)

        tracker.webhooks.run = run  # type: ignore[method-assign]
        await tracker.start()
        await _until(lambda: _true(tracker._schema_error != "not checked yet"))
        await asyncio.sleep(0.2)
        assert delivered == []  # the database is away: no delivery loop yet
        tracker._schema_ready.set()  # as prepare_database does once the schema is current
        await _until(lambda: _true(bool(delivered)))
        await tracker.stop()

    asyncio.run(scenario())


def test_the_cancel_check_stops_work_whose_attempt_was_handed_over(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, auth_required=False)
    repo = JobRepository(settings.database_url.get_secret_value())
    upgrade_schema(repo)
    upgrade_schema(repo)  # a second start finds nothing to do

    async def insert() -> str:
        tracker = JobTracker(settings, None, None)  # type: ignore[arg-type]
        tracker._schema_ready.set()
        return await tracker.submit(_job())

    job_id = asyncio.run(insert())
    assert repo.claim(job_id, 0, "tracker-a", 30)
    check = CancelCheck(repo, job_id, 1, interval=0)
    assert not check()
    repo.release(job_id, 1, HANDED_OVER, 0)
    assert check()  # given back: this work is nobody's now
    assert repo.claim(job_id, 1, "tracker-b", 30)
    assert not CancelCheck(repo, job_id, 2, interval=0)()  # the new attempt's work goes on
    assert CancelCheck(repo, job_id, 1, interval=0)()  # the old one's stops
    repo.cancel(job_id)
    assert CancelCheck(repo, job_id, 2, interval=0)()


def _separation(tmp_path: Path, state: ModelState, with_file: bool) -> Separation:
    folder = tmp_path / "models"
    folder.mkdir(parents=True, exist_ok=True)
    if with_file:
        (folder / "m.th").write_bytes(b"x")
    replica = Separation.__new__(Separation)  # no Serve, no model: only what check_health reads
    replica.engine = SimpleNamespace(  # type: ignore[assignment]
        state=state, error="boom", config=SeparationConfig(model="m", model_dir=folder)
    )
    return replica


def test_a_separation_replica_whose_present_model_failed_to_load_is_unhealthy(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(_separation(tmp_path / "a", ModelState.FAILED, with_file=True).check_health())
    # Missing from its configuration: a new replica would fail the same way; this one explains and serves `none`.
    asyncio.run(_separation(tmp_path / "b", ModelState.FAILED, with_file=False).check_health())
    # Still loading: healthy (and not ready, which /health/ready reports).
    asyncio.run(_separation(tmp_path / "c", ModelState.LOADING, with_file=True).check_health())
    asyncio.run(_separation(tmp_path / "d", ModelState.READY, with_file=True).check_health())


def test_a_transcription_replica_whose_model_failed_to_load_is_unhealthy(tmp_path: Path) -> None:
    replica = Transcription.__new__(Transcription)
    replica.engine, replica.error, replica.model_path = None, "no onnxruntime", None
    with pytest.raises(RuntimeError, match="no onnxruntime"):
        asyncio.run(replica.check_health())
    replica.model_path = tmp_path / "missing.onnx"
    asyncio.run(replica.check_health())
    replica.error = None
    replica.model_path = None
    asyncio.run(replica.check_health())


def test_a_sick_replica_gives_its_jobs_back_for_another_replica_instead_of_failing_them(tmp_path: Path) -> None:
    import contextvars

    from deployments.job_tracker import _user_error
    from music.presets import NoteParameters
    from serve_app.domain.errors import ModelUnavailable, ReplicaUnhealthy
    from serve_app.domain.jobs import SeparationMode

    nobody = SimpleNamespace(get=lambda _job_id: None)  # the cancel check's database: nothing to hear

    def call(method: Any, *args: Any) -> Any:
        # In a context of its own, as Ray gives each call: the job id the method binds stays there.
        return contextvars.copy_context().run(method, *args)

    job_id = uuid.uuid4().hex
    separation = _separation(tmp_path / "a", ModelState.FAILED, with_file=True)
    separation.repo = nobody  # type: ignore[assignment]
    with pytest.raises(ReplicaUnhealthy, match="boom"):
        call(separation._prepare_stems, job_id, SeparationMode.DEMUCS, 1)

    storage = LocalStorage(tmp_path / "store")
    storage.put_bytes(JobKeys(job_id).stem("bass"), b"RIFF")
    transcription = Transcription.__new__(Transcription)
    transcription.engine, transcription.error, transcription.model_path = None, "no onnxruntime", None
    transcription.storage, transcription.repo = storage, nobody  # type: ignore[assignment]
    with pytest.raises(ReplicaUnhealthy, match="no onnxruntime"):
        call(transcription._transcribe_stems, job_id, ["bass"], NoteParameters(), 1)
    transcription.model_path = tmp_path / "missing.onnx"  # a new replica would fail the same way: the user's answer
    with pytest.raises(ModelUnavailable):
        call(transcription._transcribe_stems, job_id, ["bass"], NoteParameters(), 1)

    # The tracker retries what is the replica's fault and fails at once only what the user must fix.
    assert _user_error(ReplicaUnhealthy("sick")) is None
    assert _user_error(ModelUnavailable("missing")) is not None
