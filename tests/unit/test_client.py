"""The Python client against a stand-in service (httpx.MockTransport): the requests it sends, retries with
one Idempotency-Key, problem+json errors, the events stream and its polling fallback, downloads, paging."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pretty_midi
import pytest

from benchmarks.local_service import free_port
from stemscribe_client import (
    ApiError,
    AsyncClient,
    Client,
    Job,
    NotFound,
    ServiceUnreachable,
    Unauthorized,
    _common,
)  # fmt: skip
from tests.unit._fake_service import FakeService, problem


@pytest.fixture
def song(tmp_path: Path) -> Path:
    path = tmp_path / "song.wav"
    path.write_bytes(b"RIFF....WAVEfmt " + bytes(64))
    return path


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Seconds the client slept, without sleeping."""
    slept: list[float] = []
    monkeypatch.setattr("stemscribe_client.client.time.sleep", slept.append)

    async def no_wait(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("stemscribe_client.aio.asyncio.sleep", no_wait)
    return slept


def _client(fake: FakeService, **kwargs: object) -> Client:
    return Client("http://svc", transport=fake.transport(), **kwargs)  # type: ignore[arg-type]


def test_url_and_key_come_from_arguments_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEMSCRIBE_URL", raising=False)
    monkeypatch.delenv("STEMSCRIBE_API_KEY", raising=False)
    assert Client().url == "http://127.0.0.1:8000"
    assert "x-api-key" not in Client()._http.headers
    monkeypatch.setenv("STEMSCRIBE_URL", "http://elsewhere:9000/")
    monkeypatch.setenv("STEMSCRIBE_API_KEY", "ssk_env")
    assert Client().url == "http://elsewhere:9000"
    assert Client()._http.headers["x-api-key"] == "ssk_env"
    assert Client("http://given", api_key="ssk_arg")._http.headers["x-api-key"] == "ssk_arg"
    assert Client("http://given").url == "http://given"


def test_submit_sends_the_file_options_key_and_an_idempotency_key(song: Path) -> None:
    fake = FakeService()
    with Client("http://svc", api_key="ssk_k", transport=fake.transport()) as client:
        accepted = client.submit(song, separation="none", onset_threshold=0.6, clean_ghost_notes=False,
                                 quantize_grid="1/8t")  # fmt: skip
    assert accepted.job_id == "job1" and accepted.status == "queued"
    assert accepted.location == "http://x/api/v1/jobs/job1"
    (request,) = fake.uploads
    body = request.content.decode(errors="replace")
    assert request.headers["x-api-key"] == "ssk_k"
    assert request.headers["idempotency-key"].startswith("stemscribe-client-")
    for name, value in [("separation", "none"), ("onset_threshold", "0.6"), ("clean_ghost_notes", "false"),
                        ("quantize_grid", "1/8t")]:  # fmt: skip
        assert f'name="{name}"\r\n\r\n{value}\r\n' in body
    assert 'name="file"; filename="song.wav"' in body
    assert "frame_threshold" not in body  # options left out are not sent


def test_submit_refuses_an_unknown_option(song: Path) -> None:
    with pytest.raises(TypeError, match="onset_treshold"), _client(FakeService()) as client:
        client.submit(song, onset_treshold=0.5)


def test_submit_retries_connection_errors_and_503_with_one_idempotency_key(song: Path, sleeps: list[float]) -> None:
    fake = FakeService(script=[
        httpx.ConnectError("refused"), problem(503, "queue_full", "Too many jobs.", {"Retry-After": "7"}),
        httpx.ReadError("dropped"), None,
    ])  # fmt: skip
    with _client(fake, retries=3) as client:
        accepted = client.submit(song)
        second = client.submit(song)
    assert accepted.job_id == "job1" and second.job_id == "job2"
    keys = [r.headers["idempotency-key"] for r in fake.uploads]
    assert len(set(keys[:4])) == 1 and keys[4] != keys[0]  # one key per call, reused across its retries
    assert sleeps == [0.5, 7.0, 2.0]  # backoff, then the service's Retry-After, then backoff again
    # every retry sent the whole file again
    assert all(b'filename="song.wav"' in r.content and r.content.endswith(b"--\r\n") for r in fake.uploads)


def test_submit_gives_up_after_the_retries(song: Path, sleeps: list[float]) -> None:
    fake = FakeService(script=[problem(503, "service_unavailable", "The database is away.")] * 5)
    with pytest.raises(ApiError) as caught, _client(fake, retries=2) as client:
        client.submit(song)
    assert (caught.value.status, caught.value.code) == (503, "service_unavailable")
    assert len(fake.uploads) == 3


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [(415, "unsupported_audio", ApiError), (413, "upload_too_large", ApiError), (422, "audio_too_long", ApiError),
     (401, "unauthorized", Unauthorized), (429, "rate_limited", ApiError)],
)  # fmt: skip
def test_refusals_raise_with_the_problem_code_status_and_detail(
    song: Path, status: int, code: str, cls: type[ApiError]
) -> None:
    fake = FakeService(script=[problem(status, code, "Because.", {"Retry-After": "60"})])
    with pytest.raises(cls) as caught, _client(fake) as client:
        client.submit(song)
    assert (caught.value.status, caught.value.code, caught.value.detail) == (status, code, "Because.")
    assert caught.value.retry_after == 60.0
    assert len(fake.uploads) == 1  # refusals are not retried


def test_an_answer_that_is_not_problem_json_still_says_what_came_back() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(502, text="Bad gateway from nginx"))
    with pytest.raises(ApiError) as caught, Client("http://svc", transport=transport, retries=0) as client:
        client.status("j")
    assert caught.value.status == 502 and caught.value.code == "http_error"
    assert "nginx" in caught.value.detail


def test_an_unreachable_service_is_one_clear_exception(song: Path, sleeps: list[float]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ServiceUnreachable) as caught, Client(url, retries=1) as client:
        client.submit(song)
    assert caught.value.url == url and "refused" in caught.value.reason
    assert "Cannot reach the stemscribe service" in str(caught.value)
    assert len(sleeps) == 1


def test_wait_follows_the_events_stream(sleeps: list[float]) -> None:
    fake = FakeService()
    fake.jobs["j1"] = {"status": "queued", "stage": "queued", "progress": 0.0, "name": "a.wav"}
    seen = []
    with _client(fake) as client:
        job = client.wait("j1", on_event=seen.append)
    assert [(e.event, e.stage, e.progress) for e in seen] == [
        ("state", "queued", 0.0), ("state", "decoding", 5.0), ("state", "transcribing", 60.0), ("final", "done", 100.0)
    ]  # fmt: skip
    assert {e.source for e in seen} == {"sse"}
    assert job.status == "succeeded" and job.is_final and len(job.results) == 3
    assert fake.polls == 1 and sleeps == []  # one GET for the final view, no polling


@pytest.mark.parametrize("mode", ["html", "drop"])
def test_wait_polls_at_the_retry_after_pace_when_the_stream_is_unavailable(mode: str, sleeps: list[float]) -> None:
    fake = FakeService(events_mode=mode)
    fake.jobs["j1"] = {"status": "queued", "stage": "queued", "progress": 0.0, "name": "a.wav"}
    seen = []
    with _client(fake) as client:
        job = client.wait("j1", on_event=seen.append)
    assert job.status == "succeeded"
    assert seen[-1].is_final and seen[-1].source == "poll"
    assert all(s == 2.0 for s in sleeps)  # the job's Retry-After
    if mode == "html":
        assert [e.progress for e in seen] == [0.0, 5.0, 60.0, 100.0] and len(sleeps) == 3


def test_a_503_on_the_stream_falls_back_to_polling(sleeps: list[float]) -> None:
    fake = FakeService(events_mode="html")
    fake.jobs["j1"] = {"status": "queued", "stage": "queued", "progress": 0.0, "name": "a.wav"}
    fake.events = lambda job_id: problem(503, "service_unavailable", "Away.", {"Retry-After": "1"})  # type: ignore[method-assign]
    with _client(fake) as client:
        assert client.wait("j1").status == "succeeded"
    assert fake.polls >= 4


def test_wait_times_out_without_touching_the_job(sleeps: list[float]) -> None:
    fake = FakeService(events_mode="html", states=[("running", "separating", 10.0)])
    fake.jobs["j1"] = {"status": "queued", "stage": "queued", "progress": 0.0, "name": "a.wav"}
    with pytest.raises(TimeoutError), _client(fake) as client:
        client.wait("j1", timeout=0)
    assert fake.canceled == []


def test_status_of_an_unknown_job_is_not_found() -> None:
    with pytest.raises(NotFound) as caught, _client(FakeService()) as client:
        client.status("nope")
    assert caught.value.code == "job_not_found"


def test_download_writes_every_result_in_its_folder(tmp_path: Path, song: Path, sleeps: list[float]) -> None:
    with _client(FakeService()) as client:
        job = client.wait(client.submit(song))
        paths = client.download(job, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in paths) == [
        "midi/mix.mid", "notes.json", "transcription.mid"
    ]  # fmt: skip
    pretty_midi.PrettyMIDI(str(tmp_path / "out" / "midi" / "mix.mid"))
    assert len(json.loads((tmp_path / "out" / "notes.json").read_text())["notes"]) == 4
    assert not list((tmp_path / "out").rglob("*.part"))


def test_a_result_name_never_escapes_the_destination(tmp_path: Path) -> None:
    for name in ("../evil.mid", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(ValueError):
            _common.result_path(tmp_path, name)
    assert _common.result_path(tmp_path, "stems/bass.wav") == tmp_path / "stems" / "bass.wav"


def test_list_pages_with_the_cursor() -> None:
    fake = FakeService()
    for i in range(5):
        fake.jobs[f"j{i}"] = {"status": "succeeded", "stage": "done", "progress": 100.0, "name": f"{i}.wav"}
    with _client(fake) as client:
        first = client.list(limit=2)
        second = client.list(limit=2, cursor=first.next_cursor)
        everything = list(client.iter_jobs(page_size=2))
    assert [j.job_id for j in first.jobs] == ["j0", "j1"] and first.next_cursor
    assert [j.job_id for j in second.jobs] == ["j2", "j3"]
    assert [j.job_id for j in everything] == [f"j{i}" for i in range(5)]


def test_cancel_and_delete() -> None:
    fake = FakeService()
    fake.jobs["j1"] = {"status": "running", "stage": "separating", "progress": 20.0, "name": "a.wav"}
    with _client(fake) as client:
        assert client.cancel("j1").status == "canceled"
        client.delete("j1")
        with pytest.raises(NotFound):
            client.delete("j1")


def test_the_job_model_tolerates_fields_and_values_it_does_not_know() -> None:
    job = Job.model_validate({"job_id": "j", "status": "paused_by_operator", "progress": 3, "brand_new": [1]})
    assert job.status == "paused_by_operator" and not job.is_final and job.results == []


def test_the_async_client_does_the_same(tmp_path: Path, song: Path, sleeps: list[float]) -> None:
    fake = FakeService()

    async def scenario() -> tuple[list[str], list[Path], list[str]]:
        async with AsyncClient("http://svc", api_key="ssk_a", transport=fake.transport()) as client:
            accepted = await client.submit(song, separation="hpss")
            stages: list[str] = []
            job = await client.wait(accepted, on_event=lambda e: stages.append(e.stage))
            paths = await client.download(job, tmp_path / "a")
            ids = [j.job_id async for j in client.iter_jobs(page_size=1)]
            return stages, paths, ids

    stages, paths, ids = asyncio.run(scenario())
    assert stages == ["queued", "decoding", "transcribing", "done"]
    assert len(paths) == 3 and ids == ["job1"]
    assert fake.uploads[0].headers["x-api-key"] == "ssk_a"


def test_the_async_client_retries_submit_with_one_key(song: Path, sleeps: list[float]) -> None:
    fake = FakeService(script=[httpx.ConnectError("refused"), problem(503, "queue_full", "Full.", {"Retry-After": "3"})])

    async def scenario() -> str:
        async with AsyncClient("http://svc", transport=fake.transport()) as client:
            return (await client.submit(song)).job_id

    assert asyncio.run(scenario()) == "job1"
    assert len({r.headers["idempotency-key"] for r in fake.uploads}) == 1 and len(fake.uploads) == 3
    assert sleeps == [0.5, 3.0]
