"""The command line (`stemscribe transcribe`, `jobs`, `serve`, and the service's own commands under the same
entry point) against the stand-in service: outputs, summaries, messages and exit codes."""

from __future__ import annotations

import functools
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from benchmarks.local_service import free_port
from serve_app import cli as service_cli
from stemscribe_client import cli
from tests.unit._fake_service import FakeService, problem

# Wide enough that Rich never wraps an error message (the tmp paths in them vary in length).
runner = CliRunner(env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeService:
    """The CLI's clients talk to a FakeService, and never sleep between tries."""
    service = FakeService()
    monkeypatch.setattr(cli, "AsyncClient", functools.partial(cli.AsyncClient, transport=service.transport()))
    monkeypatch.setattr(cli, "Client", functools.partial(cli.Client, transport=service.transport()))
    monkeypatch.setattr("stemscribe_client._common.retry_delay", lambda *a: 0.0)
    monkeypatch.delenv("STEMSCRIBE_URL", raising=False)
    monkeypatch.delenv("STEMSCRIBE_API_KEY", raising=False)
    return service


@pytest.fixture
def songs(tmp_path: Path) -> list[Path]:
    (tmp_path / "b").mkdir()
    paths = [tmp_path / "intro.wav", tmp_path / "song.flac", tmp_path / "b" / "song.flac"]
    for path in paths:
        path.write_bytes(b"fLaC" + bytes(64))
    return paths


def _run(*args: str) -> object:
    return runner.invoke(cli.app, list(args))


def test_transcribe_downloads_every_result_per_song_and_sums_up(
    fake: FakeService, songs: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = _run("transcribe", *map(str, songs), "-o", str(out), "--separation", "none", "--onset-threshold",
                  "0.6", "--keep-ghost-notes", "--quantize", "1/8t", "--api-key", "ssk_x")  # fmt: skip
    assert result.exit_code == 0, result.output
    for folder in ("intro", "song", "song-2"):  # the second song.flac does not overwrite the first
        assert sorted(p.relative_to(out / folder).as_posix() for p in (out / folder).rglob("*") if p.is_file()) == [
            "midi/mix.mid", "notes.json", "transcription.mid"
        ]  # fmt: skip
    body = fake.uploads[0].content.decode(errors="replace")
    for name, value in [("separation", "none"), ("onset_threshold", "0.6"), ("clean_ghost_notes", "false"),
                        ("quantize_grid", "1/8t")]:  # fmt: skip
        assert f'name="{name}"\r\n\r\n{value}\r\n' in body
    assert fake.uploads[0].headers["x-api-key"] == "ssk_x"
    text = result.stdout
    assert "100.0 BPM" in text and "C major" in text and "4/4" in text
    assert "bass 1" in text and "mix 3" in text
    assert f"song.flac: 3 files in {out / 'song-2'}" in " ".join(text.split())


def test_a_refused_file_says_why_and_the_others_go_on(fake: FakeService, songs: list[Path], tmp_path: Path) -> None:
    fake.script = [problem(415, "unsupported_audio", "The file is not audio in an accepted format (WAV, FLAC).")]
    result = _run("transcribe", str(songs[0]), str(songs[1]), "-o", str(tmp_path / "out"))
    assert result.exit_code == cli.EXIT_FAILED
    assert "The file is not audio in an accepted format" in result.output and "415 unsupported_audio" in result.output
    assert "Traceback" not in result.output
    assert len(list((tmp_path / "out").rglob("*.mid"))) == 2  # the other song's results


def test_a_failed_job_is_reported_with_its_error(fake: FakeService, songs: list[Path], tmp_path: Path) -> None:
    fake.final_status = "failed"
    result = _run("transcribe", str(songs[0]), "-o", str(tmp_path / "out"))
    assert result.exit_code == cli.EXIT_FAILED
    assert "the job failed: The audio could not be transcribed." in " ".join(result.output.split())


def test_a_wrong_key_is_exit_code_4_with_a_hint(fake: FakeService, songs: list[Path], tmp_path: Path) -> None:
    fake.api_key = "ssk_right"
    result = _run("transcribe", str(songs[0]), "--api-key", "ssk_wrong", "-o", str(tmp_path))
    assert result.exit_code == cli.EXIT_UNAUTHORIZED
    assert "refused the API key" in result.output and "STEMSCRIBE_API_KEY" in result.output
    assert "Traceback" not in result.output


def test_an_unreachable_service_is_exit_code_3_without_a_traceback(
    songs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("stemscribe_client._common.retry_delay", lambda *a: 0.0)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for args in (["transcribe", str(songs[0]), "-o", str(tmp_path)], ["jobs", "list"], ["jobs", "show", "x"]):
        result = _run(*args, "--url", url)
        assert result.exit_code == cli.EXIT_UNREACHABLE, result.output
        assert f"cannot reach the stemscribe service at {url}" in result.output
        assert "connection refused" in result.output and "Traceback" not in result.output


def test_the_url_comes_from_stemscribe_url(fake: FakeService, songs: list[Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("STEMSCRIBE_URL", "http://from-env:1234")
    assert _run("transcribe", str(songs[0]), "-o", str(tmp_path / "o")).exit_code == 0
    assert fake.uploads[0].url.host == "from-env" and fake.uploads[0].url.port == 1234


def test_a_missing_file_is_a_usage_error(fake: FakeService, tmp_path: Path) -> None:
    result = _run("transcribe", str(tmp_path / "nope.mp3"))
    assert result.exit_code == 2 and "does not exist" in result.output
    assert fake.uploads == []


def test_ctrl_c_cancels_the_jobs(fake: FakeService, songs: list[Path], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    original = fake.events

    def interrupted(job_id: str) -> httpx.Response:
        raise KeyboardInterrupt  # as if Ctrl-C came while following the job

    monkeypatch.setattr(fake, "events", interrupted)
    result = _run("transcribe", str(songs[0]), "-o", str(tmp_path / "o"))
    assert result.exit_code == cli.EXIT_INTERRUPTED
    assert fake.canceled == ["job1"] and fake.jobs["job1"]["status"] == "canceled"
    assert "job job1 (intro.wav): canceled" in result.output
    assert original  # the real handler stays untouched


def test_jobs_list_show_cancel_delete(fake: FakeService) -> None:
    for i in range(3):
        fake.jobs[f"j{i}"] = {"status": "running", "stage": "separating", "progress": 12.0, "name": f"s{i}.wav"}
    listed = _run("jobs", "list", "--limit", "2")
    assert listed.exit_code == 0 and "j0" in listed.stdout and "j2" not in listed.stdout
    assert "--cursor 2" in listed.stderr
    assert "j2" in _run("jobs", "list", "--limit", "2", "--all").stdout
    shown = _run("jobs", "show", "j1")
    assert shown.exit_code == 0 and "s1.wav" in shown.stdout and "running (separating, 12%)" in shown.stdout
    assert '"job_id": "j1"' in _run("jobs", "show", "j1", "--json").stdout
    assert "j1: canceled" in _run("jobs", "cancel", "j1").stdout
    assert "j1: deleted" in _run("jobs", "delete", "j1").stdout
    gone = _run("jobs", "show", "j1")
    assert gone.exit_code == cli.EXIT_FAILED and "There is no job j1. (404 job_not_found)" in gone.output


def test_jobs_download(fake: FakeService, tmp_path: Path) -> None:
    fake.jobs["j1"] = {"status": "succeeded", "stage": "done", "progress": 100.0, "name": "a.wav"}
    result = _run("jobs", "download", "j1", "-o", str(tmp_path / "d"))
    assert result.exit_code == 0 and (tmp_path / "d" / "midi" / "mix.mid").is_file()


def test_serve_runs_the_laptop_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(cli.os, "execv", lambda exe, argv: calls.append(argv))
    assert _run("serve").exit_code == 0
    ((exe, run, config),) = calls
    assert Path(exe).name == "serve" and run == "run"
    assert Path(config) == Path(service_cli.__file__).resolve().parents[1] / "configs" / "laptop.yaml"


def test_one_entry_point_offers_everything(capsys: pytest.CaptureFixture[str]) -> None:
    assert service_cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("transcribe", "jobs", "serve", "make-test-model", "keys"):
        assert command in text
    # the service's own commands still answer through the same entry point, and through the client's app
    with pytest.raises(SystemExit) as done:
        service_cli.main(["keys", "--help"])
    assert done.value.code == 0 and "create" in capsys.readouterr().out
    assert cli.main(["make-test-model", "--help"]) == 0
    assert "--full-size" in capsys.readouterr().out


def test_make_test_model_and_keys_still_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    written = []
    monkeypatch.setattr("music.engines.demucs_models.write_random_htdemucs",
                        lambda folder, **kw: written.append((folder, kw)) or folder / "m.th")  # fmt: skip
    assert service_cli.main(["make-test-model", str(tmp_path), "--name", "m"]) == 0
    assert written and written[0][1]["name"] == "m"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'k.db'}")
    assert cli.main(["keys", "create", "laptop"]) == 0
    assert capsys.readouterr().out.startswith("ssk_")
    assert service_cli.main(["keys", "list"]) == 0
    assert "laptop" in capsys.readouterr().out
