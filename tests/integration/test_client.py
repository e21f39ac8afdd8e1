"""The Python client and the `stemscribe` command line against the live service: a rendered piece goes up,
the client follows it over SSE, every result comes down and parses; `stemscribe transcribe` does the same
end to end (in-process, and in a real terminal under tmux, where the progress bar and the summary are
read off the pane); refusals and an unreachable service give a sentence and an exit code; Ctrl-C cancels."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pretty_midi
import pytest
import soundfile
from typer.testing import CliRunner

from benchmarks.local_service import free_port
from music.engines.demucs_models import DEFAULT_TEST_MODEL
from stemscribe_client import AsyncClient, Client, Gone, cli
from tests.integration.conftest import Service, deploy, undeploy
from tests.music import ensemble, melody, render

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def service(serve_url: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    # One job at a time, so the Ctrl-C test can hold a job in the queue behind a long one.
    svc = deploy(
        serve_url, data_dir=str(tmp_path_factory.mktemp("data-client")), demucs_model=DEFAULT_TEST_MODEL,
        demucs_model_dir=str(model_dir), max_concurrent_jobs=1,
    )  # fmt: skip
    yield svc
    undeploy(svc)


@pytest.fixture(scope="module")
def piano(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(melody(program=0, seconds=6.0), tmp_path_factory.mktemp("audio") / "piano.wav")


def _check_results(folder: Path, names: list[str]) -> None:
    """Every result is there and parses: MIDI with pretty_midi, notes.json as JSON, stems as audio."""
    assert {"transcription.mid", "transcription.quantized.mid", "notes.json"} <= set(names)
    for name in names:
        path = folder / name
        assert path.is_file() and path.stat().st_size > 0, name
        if name.endswith(".mid"):
            midi = pretty_midi.PrettyMIDI(str(path))
            assert sum(len(i.notes) for i in midi.instruments) > 0, name
        elif name.endswith(".wav"):
            assert soundfile.info(str(path)).duration > 5
    notes = json.loads((folder / "notes.json").read_text())
    assert notes["notes"] and {n["stem"] for n in notes["notes"]} == {"mix"}
    assert notes["tempo_bpm"] > 0


def test_the_client_submits_follows_sse_and_downloads_every_result(
    service: Service, piano: Path, tmp_path: Path
) -> None:
    with Client(service.url) as client:
        accepted = client.submit(piano, separation="none", quantize_grid="1/8")
        events = []
        job = client.wait(accepted, on_event=events.append, timeout=300)
        assert job.status == "succeeded", job.error
        assert events and all(e.source == "sse" for e in events)  # the stream, not polling
        assert events[-1].event == "final" and events[-1].progress == 100
        progress = [e.progress for e in events]
        assert progress == sorted(progress) and len(events) >= 2
        assert job.analysis is not None and job.analysis.tempo_bpm
        assert job.options["midi"]["quantize_grid"] == "1/8"
        paths = client.download(job, tmp_path / "piano")
        assert sorted(p.relative_to(tmp_path / "piano").as_posix() for p in paths) == sorted(
            r.name for r in job.results
        )
        _check_results(tmp_path / "piano", [r.name for r in job.results])
        # The same job through the listing, paging with the cursor, and through the async client.
        second = client.wait(client.submit(piano, separation="none"), timeout=300)
        first_page = client.list(limit=1)
        assert [j.job_id for j in first_page.jobs] == [second.job_id] and first_page.next_cursor
        assert client.list(limit=1, cursor=first_page.next_cursor).jobs[0].job_id == job.job_id
        assert client.cancel(job).status == "succeeded"  # a finished job stays as it is

        async def async_view() -> tuple[str, list[str]]:
            async with AsyncClient(service.url) as aclient:
                view = await aclient.status(job.job_id)
                return view.status, [j.job_id async for j in aclient.iter_jobs(page_size=1)]

        status, ids = asyncio.run(async_view())
        assert status == "succeeded" and ids[:2] == [second.job_id, job.job_id]
        client.delete(second)
        with pytest.raises(Gone) as gone:
            client.status(second)
        assert (gone.value.status, gone.value.code) == (410, "job_gone")


def test_stemscribe_transcribe_end_to_end(service: Service, piano: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli.app, ["transcribe", str(piano), "-o", str(out), "--separation", "none", "--onset-threshold", "0.55",
                  "--quantize", "1/16t", "--url", service.url],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = out / "piano"
    names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    _check_results(folder, names)
    notes = json.loads((folder / "notes.json").read_text())
    assert "BPM" in result.stdout and "piano.wav" in result.stdout
    assert f"mix {len(notes['notes'])}" in result.stdout  # notes per stem, as the summary counts them
    assert f"{len(names)} files in {folder}" in " ".join(result.stdout.split())
    with Client(service.url) as client:
        (job,) = [j for j in client.list(limit=5).jobs if j.upload_name == "piano.wav"][:1]
        assert job.options["notes"]["onset_threshold"] == 0.55 and job.options["midi"]["quantize_grid"] == "1/16t"


def test_refusals_and_an_unreachable_service_give_a_sentence_and_an_exit_code(
    service: Service, piano: Path, tmp_path: Path
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("these are not the notes you are looking for\n" * 20)
    refused = CliRunner().invoke(cli.app, ["transcribe", str(text), "-o", str(tmp_path), "--url", service.url])
    assert refused.exit_code == cli.EXIT_FAILED
    assert "415 unsupported_audio" in refused.output and "Traceback" not in refused.output
    out_of_range = CliRunner().invoke(
        cli.app, ["transcribe", str(piano), "--onset-threshold", "1.5", "-o", str(tmp_path), "--url", service.url]
    )
    assert out_of_range.exit_code == cli.EXIT_FAILED
    assert "422 invalid_request" in out_of_range.output and "onset_threshold" in out_of_range.output
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    # As a person runs it: the entry point in a subprocess, so no test harness hides a traceback.
    done = subprocess.run(
        [sys.executable, "-m", "serve_app.cli", "transcribe", str(piano), "--url", nowhere], capture_output=True,
        text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == cli.EXIT_UNREACHABLE, done.stderr
    assert f"cannot reach the stemscribe service at {nowhere} (connection refused)" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr + done.stdout


def live_frame(frames: list[str]) -> str:
    running = [f for f in frames if "EXIT=" not in f and "%" in f and "uploading" not in f]
    return running[len(running) // 2] if running else ""


class _Tmux:
    """A terminal of its own: a private tmux server (-L), one 120x40 pane."""

    def __init__(self, command: str) -> None:
        self.socket = f"stemscribe-client-{uuid.uuid4().hex[:8]}"
        self._tmux("new-session", "-d", "-s", "t", "-x", "120", "-y", "40", command)

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True).stdout

    def capture(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "t", *keys)

    def wait_for(self, words: str, timeout: float, frames: list[str] | None = None) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.capture()
            if frames is not None:
                frames.append(screen)
            if words in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{words!r} not on the screen after {timeout} s:\n{self.capture()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def _cli_in_tmux(*args: str) -> _Tmux:
    command = shlex.join(["env", f"PYTHONPATH={REPO}", "LANG=C.UTF-8", sys.executable, "-m", "serve_app.cli", *args])
    # The pane stays after the command, with its exit code, until the test reads it.
    return _Tmux(f"{command}; echo EXIT=$?; sleep 600")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (Debian's tmux)")
def test_the_progress_bar_and_summary_in_a_real_terminal(service: Service, tmp_path: Path) -> None:
    # 40 s of piano, not the 6 s fixture: a 6 s job was done between two frames of the pane on a fast
    # machine, so the service's own stages never showed.
    piano = render(melody(program=0, seconds=40.0), tmp_path / "piano.wav")
    tmux = _cli_in_tmux("transcribe", str(piano), "-o", str(tmp_path / "out"), "--separation", "none",
                        "--url", service.url)  # fmt: skip
    try:
        frames: list[str] = []
        screen = tmux.wait_for("EXIT=", timeout=300, frames=frames)
    finally:
        tmux.close()
    print(f"--- the pane while it ran ---\n{live_frame(frames)}\n--- the pane at the end ---\n{screen}")
    assert "EXIT=0" in screen, screen
    # While it ran: the file's line with a bar, a percentage and a stage that the events stream reported.
    live = [f for f in frames if "piano.wav" in f and "EXIT=" not in f and "%" in f]
    assert live, frames[-1]
    stages = {s for s in ("uploading", "queued", "decoding", "transcribing", "packaging", "downloading")
              if any(s in f for f in live)}  # fmt: skip
    assert stages & {"decoding", "transcribing", "packaging"}, live[-1]
    assert any("━" in f for f in live)
    # At the end: the finished bar, then the summary.
    assert "100.0% done" in screen and "✓ piano.wav" in screen
    for words in ("tempo", "key", "notes per stem", "BPM", "mix ", "files in"):
        assert words in screen, screen
    assert (tmp_path / "out" / "piano" / "transcription.mid").is_file()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (Debian's tmux)")
def test_ctrl_c_in_a_terminal_cancels_the_job(service: Service, piano: Path, tmp_path: Path) -> None:
    # A long job holds the only slot, so the one under test waits in the queue when Ctrl-C comes.
    band = render(ensemble(seconds=40.0), tmp_path / "band.wav")
    with Client(service.url) as client:
        blocker = client.submit(band, separation="demucs")
        tmux = _cli_in_tmux("transcribe", str(piano), "-o", str(tmp_path / "out"), "--separation", "none",
                            "--url", service.url)  # fmt: skip
        try:
            tmux.wait_for("queued", timeout=120)
            assert not client.status(blocker).is_final
            tmux.keys("C-c")
            screen = tmux.wait_for("EXIT=", timeout=60)
        finally:
            tmux.close()
            client.cancel(blocker)
        print(f"--- the pane after Ctrl-C ---\n{screen}")
        assert "EXIT=130" in screen and "asking the service to cancel the jobs" in screen, screen
        (job,) = [j for j in client.list(limit=10).jobs if j.upload_name == "piano.wav" and j.status != "succeeded"]
        assert job.status == "canceled"
        assert f"job {job.job_id} (piano.wav): canceled" in " ".join(screen.split())
        assert not (tmp_path / "out" / "piano").exists()
