"""The service against the two command lines a user would glue together by hand, in one sitting.

    python -m benchmarks.speed                     # a 3-minute piece, 1, 2 and 4 concurrent jobs
    python -m benchmarks.speed --seconds 60 --concurrency 1 2

On one rendered piece (piano, bass, strings, drums; FluidSynth) and one Demucs model folder:

1. By hand: `demucs -n NAME --repo DIR piece.wav`, then `basic-pitch OUT vocals.wav bass.wav other.wav`,
   each a process of its own (wall time and peak RSS of each).
1b. The same work in one warm Python process (benchmarks/warm_baseline.py: `demucs.api.Separator` and
   basic-pitch's `predict()`, models loaded once, one warm-up run each, fp32): the baseline without
   start-up costs.
2. The service as a laptop user starts it (`serve run configs/laptop.yaml`, on a free port), one job
   over HTTP with `separation=demucs`: wall time from upload to `succeeded`, the stage times the
   service recorded, the real-time factor, and the peak RSS of every Serve replica.
3. N jobs at once for each N in --concurrency (the first after a warm-up job): songs per minute and
   p50/p95 latency from upload to `succeeded`.

Without --model-dir it writes a random-weight HTDemucs of the pretrained `htdemucs` architecture
(41.5 M parameters), which costs what the trained model costs (its stems are noise; the timing is
not). `--autocast none` runs the service's Demucs in fp32 (as on a CPU without bf16 instructions; the
baselines are fp32 always), `--name` names the results: benchmarks/results/<name>.{md,json} (speed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.local_service import free_port, processes_naming, wait_until_ready
from benchmarks.pieces import ensemble
from benchmarks.provenance import header
from benchmarks.render import render
from music.engines.demucs_models import write_random_htdemucs
from music.engines.separator import cpu_has_native_bf16

logger = logging.getLogger("benchmarks.speed")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BIN = Path(sys.executable).parent
PITCHED = ("vocals", "bass", "other")
REPLICA_TITLE = "ServeReplica:stemscribe:"
# Polls cost the service CPU on a small machine; clients are told to wait 2 s (Retry-After).
POLL_SECONDS = 0.5


@dataclass
class Process:
    seconds: float
    peak_rss_mb: float


def _run(cmd: list[str], log: Path) -> Process:
    """Run one command to the end; its wall time and the peak RSS the kernel accounted to it."""
    started = time.monotonic()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[0]} failed (exit {os.waitstatus_to_exitcode(status)}); see {log}")
    return Process(round(seconds, 2), round(usage.ru_maxrss / 1024, 1))


def by_hand(piece: Path, model: str, model_dir: Path, work: Path) -> dict[str, Any]:
    """What a user does without stemscribe: the two command lines, one after the other."""
    out = work / "by_hand"
    log = work / "by_hand.log"
    demucs = _run([str(BIN / "demucs"), "-n", model, "--repo", str(model_dir), "-o", str(out), str(piece)], log)
    stems = [out / model / piece.stem / f"{stem}.wav" for stem in PITCHED]
    midi = out / "midi"
    midi.mkdir(parents=True, exist_ok=True)
    basic_pitch = _run([str(BIN / "basic-pitch"), str(midi), *map(str, stems)], log)
    return {
        "separation_s": demucs.seconds,
        "transcription_s": basic_pitch.seconds,
        "total_s": round(demucs.seconds + basic_pitch.seconds, 2),
        "peak_rss_mb": {"demucs": demucs.peak_rss_mb, "basic-pitch": basic_pitch.peak_rss_mb},
    }


def warm_in_process(piece: Path, model: str, model_dir: Path, work: Path) -> dict[str, Any]:
    """The by-hand work in one warm Python process of its own (benchmarks/warm_baseline.py)."""
    cmd = [sys.executable, "-m", "benchmarks.warm_baseline", str(piece), "--model", model, "--model-dir", str(model_dir),
           "--out", str(work / "warm")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT, timeout=3600)
    with open(work / "warm.log", "a") as log:
        log.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"the warm baseline failed (exit {done.returncode}); see {work / 'warm.log'}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _replica_peaks() -> dict[str, float]:
    """Peak RSS (VmHWM) of every Serve replica process, by deployment, read from /proc."""
    peaks: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if REPLICA_TITLE not in title:
                continue
            deployment = title.split(REPLICA_TITLE, 1)[1].split()[0]
            status = (entry / "status").read_text()
            kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
            peaks[deployment] = max(peaks.get(deployment, 0.0), round(kb / 1024, 1))
    return peaks


@contextlib.contextmanager
def laptop_service(work: Path, env: dict[str, str], separation_config: dict[str, Any] | None = None) -> Iterator[str]:
    """`serve run configs/laptop.yaml` as a laptop user runs it, on a free port; yields the URL. With
    `separation_config`, that is the Separation deployment's `user_config`, as an operator would set it."""
    config = yaml.safe_load((ROOT / "configs" / "laptop.yaml").read_text())
    port = free_port()
    config["http_options"]["port"] = port
    if separation_config is not None:
        (entry,) = [d for d in config["applications"][0]["deployments"] if d["name"] == "Separation"]
        entry["user_config"] = separation_config
    path = work / "laptop.yaml"
    path.write_text(yaml.safe_dump(config))
    log = open(work / "serve.log", "ab")
    # Its own Ray temp folder: its processes can be told from any other cluster's on this machine.
    ray_tmp = Path(tempfile.mkdtemp(prefix="ssb-", dir="/tmp"))  # short: Ray's socket paths live below it
    environ = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | env | {"RAY_TMPDIR": str(ray_tmp)}
    proc = subprocess.Popen(
        [str(BIN / "serve"), "run", str(path)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=environ, cwd=work, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, timeout=900)
        yield url
    finally:
        # Ctrl-C is how a user stops it; Serve then shuts the local cluster down.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in processes_naming(ray_tmp):  # whatever of this cluster outlived the Ctrl-C; nobody else's
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log.close()


def run_job(client: httpx.Client, piece: Path) -> dict[str, Any]:
    started = time.monotonic()
    with open(piece, "rb") as fh:
        response = client.post(
            "/api/v1/transcribe", files={"file": (piece.name, fh)}, data={"separation": "demucs"}
        )
    response.raise_for_status()
    job_id = response.json()["job_id"]
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            break
        time.sleep(POLL_SECONDS)
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} {job['status']}: {job.get('error')}")
    if job.get("cache_hit"):
        raise RuntimeError(f"job {job_id} was answered from the result cache: its time says nothing of the pipeline")
    return {"end_to_end_s": round(time.monotonic() - started, 2), "stages_s": job["stage_seconds"]}


def concurrent(url: str, pieces: list[Path]) -> dict[str, Any]:
    """All pieces submitted at once; throughput over the whole batch and latency per job."""
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=600) as client, ThreadPoolExecutor(len(pieces)) as pool:
        jobs = list(pool.map(lambda p: run_job(client, p), pieces))
    makespan = time.monotonic() - started
    latencies = sorted(job["end_to_end_s"] for job in jobs)
    return {
        "jobs": len(pieces),
        "makespan_s": round(makespan, 2),
        "songs_per_minute": round(60 * len(pieces) / makespan, 3),
        "p50_s": round(statistics.median(latencies), 2),
        "p95_s": round(_percentile(latencies, 0.95), 2),
    }


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    position = (len(values) - 1) * q
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def report_markdown(report: dict[str, Any]) -> str:
    hand, service, warm = report["by_hand"], report["service"], report.get("warm_in_process")
    stages = service["stages_s"]
    seconds = report["audio_seconds"]

    def ratio(value: float | None) -> str:
        return "-" if not value else f"{service['end_to_end_s'] / value:.2f}"

    lines = [
        f"{seconds:g} s piece, {report['machine']}, {report['date']}, commit {report.get('commit', '?')}, "
        f"`{report.get('command', '?')}`, model {report['model']} ({report['model_note']}); Demucs autocast in the "
        f"service: {report.get('service_autocast', '?')}, in both baselines: none (fp32)",
        "",
        "| | separation | transcription | whole job | service / this | real-time factor |",
        "|---|---|---|---|---|---|",
        f"| by hand: `demucs`, then `basic-pitch` on 3 stems | {hand['separation_s']} s | "
        f"{hand['transcription_s']} s | {hand['total_s']} s | **{ratio(hand['total_s'])}** | "
        f"{hand['total_s'] / seconds:.2f} |",
    ]
    if warm:
        lines.append(
            f"| one warm Python process: `demucs.api.Separator`, then `predict()` on 3 stems | {warm['separation_s']} s | "
            f"{warm['transcription_s']} s | {warm['total_s']} s | **{ratio(warm['total_s'])}** | {warm['total_s'] / seconds:.2f} |"
        )
    lines += [
        f"| stemscribe, `separation=demucs`, upload to `succeeded` | {stages.get('separating', '-')} s | "
        f"{stages.get('transcribing', '-')} s | {service['end_to_end_s']} s | 1.00 | "
        f"{service['end_to_end_s'] / seconds:.2f} |",
        "",
        "Service stages: " + ", ".join(f"{k} {v} s" for k, v in stages.items()),
        "",
        "Peak RSS: by hand " + ", ".join(f"{k} {v} MB" for k, v in hand["peak_rss_mb"].items())
        + "; service replicas " + ", ".join(f"{k} {v} MB" for k, v in report["replica_peak_rss_mb"].items()),
    ]
    if report["concurrency"]:
        lines += [
            "",
            f"Concurrent jobs ({report['concurrency_audio_seconds']:g} s pieces):",
            "",
            "| jobs at once | songs per minute | vs one at a time | p50 latency | p95 latency |",
            "|---|---|---|---|---|",
        ]
        base = report["concurrency"][0]["songs_per_minute"]
        for row in report["concurrency"]:
            lines.append(
                f"| {row['jobs']} | {row['songs_per_minute']} | {row['songs_per_minute'] / base:.2f}x | "
                f"{row['p50_s']} s | {row['p95_s']} s |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180.0, help="length of the piece")
    parser.add_argument("--model", default="htdemucs", help="model name in --model-dir")
    parser.add_argument("--model-dir", type=Path, help="Demucs model folder; default: a random full-size htdemucs")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 2, 4], help="jobs at once")
    parser.add_argument("--concurrency-seconds", type=float, help="piece length for those runs; default --seconds")
    parser.add_argument("--skip-by-hand", action="store_true", help="only the service (the ratio is then missing)")
    parser.add_argument("--skip-warm", action="store_true", help="leave the warm in-process baseline out")
    parser.add_argument("--autocast", choices=("auto", "none", "bf16"), default="auto",
                        help="the service's Demucs precision (auto: bf16 where the CPU has bf16 instructions)")  # fmt: skip
    parser.add_argument("--name", default="speed", help="results file name in benchmarks/results")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="stemscribe-speed-"))
    model_dir = args.model_dir or work / "models"
    model_note = "trained weights"
    if args.model_dir is None:
        write_random_htdemucs(model_dir, name=args.model, full_size=True)
        model_note = "random weights, pretrained htdemucs architecture, 41.5 M parameters"
    piece = render(ensemble(args.seconds), work / "piece.wav")
    logger.info("piece %s (%g s), work folder %s", piece, args.seconds, work)

    hand: dict[str, Any] = {"separation_s": 0, "transcription_s": 0, "total_s": 0, "peak_rss_mb": {}}
    if not args.skip_by_hand:
        hand = by_hand(piece, args.model, model_dir, work)
        logger.info("by hand: %s", hand)
    warm = None if args.skip_warm else warm_in_process(piece, args.model, model_dir, work)
    logger.info("warm in-process: %s", warm)
    separation_config = None
    if args.autocast != "auto":
        separation_config = {"model": args.model, "model_dir": str(model_dir), "device": "cpu", "autocast": args.autocast}
    service_autocast = args.autocast if args.autocast != "auto" else ("bf16" if cpu_has_native_bf16() else "none")

    env = {
        "STEMSCRIBE_DATA_DIR": str(work / "data"),
        "STEMSCRIBE_DEMUCS_MODEL": args.model,
        "STEMSCRIBE_DEMUCS_MODEL_DIR": str(model_dir),
        # The runs below send the same piece again and again; real uploads are different songs, which the
        # result cache would never answer, so it is off here.
        "STEMSCRIBE_RESULT_CACHE": "false",
    }
    rows: list[dict[str, Any]] = []
    concurrency_seconds = args.concurrency_seconds or args.seconds
    with laptop_service(work, env, separation_config) as url:
        with httpx.Client(base_url=url, timeout=600) as client:
            service = run_job(client, piece)
        logger.info("service: %s", service)
        peaks = _replica_peaks()
        if args.concurrency:
            short = piece
            if concurrency_seconds != args.seconds:
                short = render(ensemble(concurrency_seconds), work / "short.wav")
            with httpx.Client(base_url=url, timeout=600) as client:
                run_job(client, short)  # warm: the first job in a fresh replica pays one-off costs
            for n in args.concurrency:
                rows.append(concurrent(url, [short] * n))
                logger.info("concurrency %d: %s", n, rows[-1])
        peaks = {k: max(v, peaks.get(k, 0.0)) for k, v in _replica_peaks().items()}

    report = {
        **header(),
        "python": platform.python_version(),
        "audio_seconds": args.seconds,
        "model": args.model,
        "model_note": model_note,
        "by_hand": hand,
        "warm_in_process": warm,
        "service": service,
        "service_autocast": service_autocast,
        "ratio_service_to_by_hand": service["end_to_end_s"] / hand["total_s"] if hand["total_s"] else float("nan"),
        "ratio_service_to_warm": service["end_to_end_s"] / warm["total_s"] if warm else None,
        "replica_peak_rss_mb": peaks,
        "concurrency_audio_seconds": concurrency_seconds,
        "concurrency": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    markdown = report_markdown(report)
    (RESULTS / f"{args.name}.md").write_text(markdown)
    logger.info("\n%s", markdown)


if __name__ == "__main__":
    main()
