"""The result cache, measured through the live service: the same song uploaded again.

    python -m benchmarks.cache [--seconds 180] [--separation hpss] [--at-once 4]

Starts Ray and the application on this machine (benchmarks/local_service.py; SQLite, local storage, the
cache on) and, on a rendered piece (piano, bass, strings and drums; FluidSynth) encoded as MP3:

1. uploads the MP3: computed (seconds from the start of the upload to `succeeded`);
2. uploads the same MP3 behind another ID3 tag (other title): a cache hit, timed the same way, and every
   result (downloaded with stemscribe's client) compared byte for byte with the first job's;
3. uploads the MP3's decoded samples as a 32-bit float WAV (the same samples, another container): the same;
4. uploads another, shorter piece N times at once: how many of the N computed, and whether all N got the
   same transcription.mid.

`none` or `hpss` (the default) keep the run short on a shared CPU: a hit costs the same whichever
separation made the files, since no model runs. Writes benchmarks/results/cache.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import soundfile

from benchmarks.local_service import local_service
from benchmarks.provenance import git_commit, machine
from benchmarks.report import DEFAULT_OUT
from music.engines.demucs_models import DEFAULT_TEST_MODEL, write_random_htdemucs
from serve_app.domain import audio
from stemscribe_client import Client
from tests.audio_files import encode
from tests.music import ensemble, render

logger = logging.getLogger("benchmarks.cache")


def _retagged(mp3: bytes, title: str) -> bytes:
    """The same MPEG frames behind another ID3v2.3 tag (the encoder's own tag dropped)."""
    body = mp3[10 + _synchsafe(mp3[6:10]) :] if mp3[:3] == b"ID3" else mp3
    text = b"\x00" + title.encode("latin-1")
    frame = b"TIT2" + len(text).to_bytes(4, "big") + b"\x00\x00" + text
    size = len(frame)
    synchsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    return b"ID3\x03\x00\x00" + synchsafe + frame + body


def _synchsafe(raw: bytes) -> int:
    value = 0
    for byte in raw:
        value = (value << 7) | (byte & 0x7F)
    return value


def make_uploads(folder: Path, seconds: float, short_seconds: float) -> dict[str, Path]:
    wav = render(ensemble(seconds), folder / "piece.wav")
    samples, rate = soundfile.read(str(wav), dtype="float32", always_2d=True)
    mp3 = encode(folder / "piece.mp3", samples.T, rate, "mp3")
    retagged = folder / "piece-retagged.mp3"
    retagged.write_bytes(_retagged(mp3.read_bytes(), "Another title, another album"))
    decoded = audio.decode(mp3, max_duration_seconds=seconds + 60)
    float_wav = folder / "piece-decoded.wav"
    soundfile.write(str(float_wav), decoded.samples.T, decoded.sample_rate, subtype="FLOAT", format="WAV")
    short = render(ensemble(short_seconds, tempo=120.0), folder / "short.wav")
    return {"mp3": mp3, "retagged": retagged, "float_wav": float_wav, "short": short}


def run_job(client: Client, path: Path, separation: str, folder: Path) -> dict[str, Any]:
    """Upload `path` with stemscribe's own client, follow it (SSE) and download its results under `folder`.
    Upload to succeeded is the job's `finished_at` less the moment the upload began (one clock, one
    machine), so it does not depend on how often the client hears of the job."""
    began, started = datetime.now(UTC), time.monotonic()
    accepted = client.submit(path, separation=separation)
    to_202 = time.monotonic() - started
    job = client.wait(accepted.job_id)
    if job.status != "succeeded" or job.finished_at is None:
        raise RuntimeError(f"job {job.job_id} {job.status}: {job.error}")
    client.download(job, folder / job.job_id)
    return {
        "upload": path.name, "bytes": path.stat().st_size, "job_id": job.job_id, "cache_hit": job.cache_hit,
        "upload_to_202_s": round(to_202, 3),
        "upload_to_succeeded_s": round((job.finished_at - began).total_seconds(), 3),
        "stage_seconds": job.stage_seconds,
    }  # fmt: skip


def results(folder: Path, job: dict[str, Any]) -> dict[str, bytes]:
    root = folder / job["job_id"]
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def measure(url: str, uploads: dict[str, Path], separation: str, at_once: int, folder: Path) -> dict[str, Any]:
    with Client(url, timeout=1800) as client:
        first = run_job(client, uploads["mp3"], separation, folder)
        logger.info("first job: %.2f s (computed)", first["upload_to_succeeded_s"])
        reference = results(folder, first)
        again: dict[str, Any] = {}
        for name in ("retagged", "float_wav"):
            job = run_job(client, uploads[name], separation, folder)
            files = results(folder, job)
            again[name] = {
                **job,
                "transcription_mid_identical": files.get("transcription.mid") == reference["transcription.mid"],
                "all_results_identical": files == reference,
            }
            logger.info("%s: %.3f s, cache hit %s", name, job["upload_to_succeeded_s"], job["cache_hit"])

        started = time.monotonic()
        with ThreadPoolExecutor(at_once) as pool:
            jobs = list(pool.map(lambda _: run_job(client, uploads["short"], separation, folder), range(at_once)))
        makespan = time.monotonic() - started
    midis = {results(folder, job)["transcription.mid"] for job in jobs}
    return {
        "first": first,
        "again": again,
        "at_once": {
            "uploads": at_once, "computed": sum(not job["cache_hit"] for job in jobs),
            "cache_hits": sum(job["cache_hit"] for job in jobs), "distinct_transcription_mid": len(midis),
            "all_done_s": round(makespan, 2), "upload_to_succeeded_s": [job["upload_to_succeeded_s"] for job in jobs],
        },
    }  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    first, again, crowd = report["first"], report["again"], report["at_once"]
    lines = [
        "# stemscribe result cache",
        "",
        f"{report['date']} · {report['machine']} · commit {report['commit']}",
        "",
        f"`{report['command']}`: the live service on this machine (SQLite, local storage), "
        f"separation={report['separation']}, a {report['seconds']:g} s rendered piece as MP3. "
        f"{report['note']}",
        "",
        "Upload → succeeded: the job's `finished_at` less the moment its upload began.",
        "",
        "| upload | bytes | cache hit | upload → 202 (s) | upload → succeeded (s) | transcription.mid identical | "
        "all results identical |",
        "|---|---|---|---|---|---|---|",
        f"| {first['upload']} (first) | {first['bytes']} | {first['cache_hit']} | {first['upload_to_202_s']} | "
        f"{first['upload_to_succeeded_s']} | - | - |",
    ]
    for row in again.values():
        lines.append(
            f"| {row['upload']} | {row['bytes']} | {row['cache_hit']} | {row['upload_to_202_s']} | "
            f"{row['upload_to_succeeded_s']} | {row['transcription_mid_identical']} | {row['all_results_identical']} |"
        )
    lines += [
        "",
        f"{crowd['uploads']} identical uploads of a {report['short_seconds']:g} s piece at once: "
        f"{crowd['computed']} computed, {crowd['cache_hits']} cache hits, {crowd['distinct_transcription_mid']} "
        f"distinct transcription.mid; all followed and downloaded {crowd['all_done_s']} s after the first upload "
        f"began (upload to succeeded per job: {', '.join(f'{s:g}' for s in crowd['upload_to_succeeded_s'])} s).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180.0, help="length of the piece uploaded again")
    parser.add_argument("--short-seconds", type=float, default=20.0, help="length of the piece uploaded at once")
    parser.add_argument("--separation", choices=["none", "hpss"], default="hpss")
    parser.add_argument("--at-once", type=int, default=4, help="identical uploads sent together")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="stemscribe-cache-") as work:
        folder = Path(work)
        uploads = make_uploads(folder, args.seconds, args.short_seconds)
        # none/hpss need no weights; a small random model keeps the service healthy and quick to start.
        write_random_htdemucs(folder / "models")
        settings = {
            "data_dir": str(folder / "data"), "demucs_model": DEFAULT_TEST_MODEL,
            "demucs_model_dir": str(folder / "models"), "result_cache": True,
        }  # fmt: skip
        with local_service(settings) as url:
            measured = measure(url, uploads, args.separation, args.at_once, folder / "downloads")

    report = {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": machine(),
        "commit": git_commit(),
        "command": " ".join(["python -m benchmarks.cache", *(argv if argv is not None else sys.argv[1:])]),
        "separation": args.separation,
        "seconds": args.seconds,
        "short_seconds": args.short_seconds,
        "note": (
            f"separation={args.separation} keeps the computed jobs short on a shared CPU; a hit runs no model, so "
            "it costs the same whichever separation made the files. Timings are indicative: the machine ran "
            "other people's work at the same time."
        ),
        **measured,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cache.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "cache.md").write_text(markdown(report))
    logger.info("\n%s", markdown(report))
    return report


if __name__ == "__main__":
    main()
