"""Wall time of one job, per stage, on this machine.

    python -m benchmarks.job_timing --seconds 30

Starts a local Ray cluster and the application from `serve_app.app:build_app` (see
benchmarks/local_service.py), renders an ensemble piece with FluidSynth, sends it over HTTP and
reports the stage times the service recorded. Without --model-dir it writes a random-weight
HTDemucs with the pretrained `htdemucs` architecture, which costs the same compute as the trained
model (its stems are meaningless; the timing is not).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import torch

from benchmarks.local_service import local_service
from deployments.demucs_models import write_random_htdemucs
from tests.music import ensemble, render

logger = logging.getLogger("benchmarks.job_timing")
RESULTS = Path(__file__).parent / "results"


def _machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}"


def _run_job(client: httpx.Client, path: Path, separation: str) -> dict:
    started = time.monotonic()
    with open(path, "rb") as fh:
        response = client.post("/api/v1/transcribe", files={"file": (path.name, fh)}, data={"separation": separation})
    response.raise_for_status()
    accepted = time.monotonic() - started
    job_id = response.json()["job_id"]
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            break
        time.sleep(0.1)
    if job["status"] != "succeeded":
        raise RuntimeError(f"job failed: {job['error']}")
    return {
        "separation": separation,
        "upload_and_validate_s": round(accepted, 3),
        "stages_s": job["stage_seconds"],
        "end_to_end_s": round(time.monotonic() - started, 3),
    }


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--model", default="htdemucs_random")
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--runs", type=int, default=2, help="the first run includes warm-up")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="stemscribe-bench-"))
    model_dir = args.model_dir or work / "models"
    if args.model_dir is None:
        write_random_htdemucs(model_dir, name=args.model, full_size=True)
    piece = render(ensemble(args.seconds), work / "piece.wav")

    settings = {"data_dir": str(work / "data"), "demucs_model": args.model, "demucs_model_dir": str(model_dir)}
    with local_service(settings) as url, httpx.Client(base_url=url, timeout=600) as client:
        runs = [_run_job(client, piece, sep) for _ in range(args.runs) for sep in ("demucs", "none")]
    report = {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": _machine(),
        "audio_seconds": args.seconds,
        "model": args.model,
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "job_timing.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"{args.seconds:g} s of audio, {report['machine']}, {report['date']}",
        "| run | separation | upload+validate | decoding | separating | transcribing | packaging | end to end |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, run in enumerate(runs):
        st = run["stages_s"]
        cells = [st.get(s, "-") for s in ("decoding", "separating", "transcribing", "packaging")]
        lines.append(
            f"| {i // 2 + 1} | {run['separation']} | {run['upload_and_validate_s']} | "
            + " | ".join(str(c) for c in cells) + f" | {run['end_to_end_s']} |"
        )
    (RESULTS / "job_timing.md").write_text("\n".join(lines) + "\n")
    logger.info("\n".join(lines))


if __name__ == "__main__":
    main()
