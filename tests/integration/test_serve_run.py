"""`serve run configs/laptop.yaml` as a user starts it, and Ctrl-C: it stops within 10 s and leaves no Ray
process behind; with a job separating, it also stops, once that separation reaches its next batch. Its own Ray cluster (own temp folder, own HTTP port), apart from the test session's."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

from benchmarks.local_service import free_port, processes_naming
from music.engines.demucs_models import DEFAULT_TEST_MODEL
from tests.audio_files import encode, tone

pytestmark = pytest.mark.integration

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
# Idle: Serve stops the four deployments, its controller and proxy, then the local Ray cluster. With a job
# separating: the tracker gives the lease back at once, and the Separation replica drains when its
# separation sees that at the end of its current batch (seconds on a busy CPU); Serve's own limit for that
# drain is the replica's graceful_shutdown_timeout_s (20 s).
STOP_WITHIN_S = {"idle": 10.0, "separating": 20.0}


def _processes_under(folder: Path) -> list[str]:
    return [f"{pid}: {cmdline[:200]}" for pid, cmdline in processes_naming(folder).items()]


def _separate_a_long_song(url: str, tmp_path: Path, deadline: float) -> None:
    """Upload a minute of audio for `demucs` and return once the job is separating."""
    song = encode(tmp_path / "long.flac", tone(60.0), 44100, "flac")
    with open(song, "rb") as fh:
        accepted = httpx.post(
            f"{url}/api/v1/transcribe", files={"file": ("long.flac", fh)}, data={"separation": "demucs"}, timeout=60
        )
    assert accepted.status_code == 202, accepted.text
    job_url = f"{url}/api/v1/jobs/{accepted.json()['job_id']}"
    while httpx.get(job_url, timeout=10).json()["stage"] != "separating":
        assert time.monotonic() < deadline, httpx.get(job_url, timeout=10).text
        time.sleep(0.5)


def _as_in_a_terminal() -> None:
    # A shell runs background commands with SIGINT ignored, and children inherit that: then `serve run`
    # never hears the Ctrl-C, and only the Ray processes in its group do (it exits when they are gone,
    # which is a different path). A terminal's foreground process has the default disposition.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("when", ["idle", "separating"])
def test_ctrl_c_stops_serve_run(model_dir: Path, tmp_path: Path, when: str) -> None:
    config = yaml.safe_load((REPO / "configs" / "laptop.yaml").read_text())
    port = free_port()
    config["http_options"]["port"] = port
    path = tmp_path / "laptop.yaml"
    path.write_text(yaml.safe_dump(config))
    # A short folder: Ray's socket paths live under it and must stay under the kernel's 107 characters.
    ray_tmp = Path(tempfile.mkdtemp(prefix="ssr-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)} | {
        "RAY_TMPDIR": str(ray_tmp),  # its own ray_current_cluster and session folders: never another cluster
        "RAY_OVERRIDE_RESOURCES": '{"GPU": 1}',
        "STEMSCRIBE_DATA_DIR": str(tmp_path / "data"),
        "STEMSCRIBE_DEMUCS_MODEL": DEFAULT_TEST_MODEL,
        "STEMSCRIBE_DEMUCS_MODEL_DIR": str(model_dir),
        "PYTHONPATH": str(REPO),
    }
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "serve"), "run", str(path)], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, cwd=tmp_path, start_new_session=True, preexec_fn=_as_in_a_terminal,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        assert _processes_under(ray_tmp), "no Ray process found under its temp folder"
        if when == "separating":
            _separate_a_long_song(url, tmp_path, deadline)
        # Ctrl-C in a terminal: SIGINT to the foreground process group.
        stopped = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        seconds = time.monotonic() - stopped
        logger.info("serve run (%s) exited %s s after Ctrl-C", when, round(seconds, 2))
        assert proc.returncode is not None, f"still running 60 s after Ctrl-C:\n{log.read_text()[-3000:]}"
        assert seconds < STOP_WITHIN_S[when], f"stopped after {seconds:.1f} s:\n{log.read_text()[-3000:]}"
        assert "Got KeyboardInterrupt, shutting down" in log.read_text()  # Serve's own Ctrl-C path ran
        # The raylet, GCS and workers it started go with it (they may take a moment after `serve run` exits).
        deadline = time.monotonic() + 10
        while _processes_under(ray_tmp) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _processes_under(ray_tmp), _processes_under(ray_tmp)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its own process group only
            proc.wait()
        if not _processes_under(ray_tmp):
            shutil.rmtree(ray_tmp, ignore_errors=True)
