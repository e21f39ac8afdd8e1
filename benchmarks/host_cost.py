"""What separating costs besides the network: the service's Demucs pipeline with the network replaced by a
no-op, on the host.

    python -m benchmarks.host_cost                   # a 3-minute song; writes benchmarks/results/host_cost.{md,json}
    python -m benchmarks.host_cost --seconds 60 --long-minutes 0

`DemucsSeparator.separate()` runs as the service runs it (normalisation, segments, the weighted
overlap-add, the stem split, the conversion back to the upload's rate), on a random-weight HTDemucs of
the pretrained `htdemucs` architecture whose forward is replaced by one that returns its input, scaled, as
every source: what is left is the pipeline's own time. One thread (a replica's share of a small machine),
fp32, a warm-up run, then the median of `--runs`. The no-op's own time (it allocates each segment's
output, as the network does) is timed inside the run and reported beside it.

With `--long-minutes` (20 by default) a song that long is separated in a child process, and the peak RSS
above the process' size after loading the model is reported: the host memory a long upload costs.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.provenance import RESULTS, header, header_line, write_results
from music.engines.demucs_models import write_random_htdemucs

logger = logging.getLogger(__name__)
RATE = 44100


def null_separator(model_dir: Path):  # type: ignore[no-untyped-def]
    """The service's separator on a full-size random htdemucs whose network does nothing, and the no-op."""
    from music.engines.separator import DemucsSeparator, SeparationConfig

    separator = DemucsSeparator(SeparationConfig(model="htdemucs", model_dir=model_dir, device="cpu", autocast="none"))
    separator.load()
    model = separator._model
    assert model is not None, separator.error
    sources = len(model.sources)
    spent: list[float] = []  # seconds inside the no-op, per call

    def no_op(mix: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        out = mix[:, None].expand(-1, sources, -1, -1) * 0.25
        spent.append(time.perf_counter() - started)
        return out

    model.forward = no_op
    return separator, spent, sum(p.numel() for p in model.parameters())


def song(seconds: float) -> Any:
    from music.audio import DecodedAudio

    rng = np.random.default_rng(0)
    return DecodedAudio((rng.standard_normal((2, int(seconds * RATE))) * 0.1).astype(np.float32), RATE)


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def long_song_child(model_dir: Path, minutes: float) -> dict[str, float]:
    """In this (child) process: peak RSS above the loaded size while separating `minutes` of audio."""
    separator, _, _ = null_separator(model_dir)
    audio = song(minutes * 60)
    before = _rss_bytes()
    started = time.perf_counter()
    separator.separate(audio)
    return {"seconds": round(time.perf_counter() - started, 2), "peak_rss_above_loaded_gib": round((_rss_bytes() - before) / 2**30, 2),
            "input_gib": round(audio.samples.nbytes / 2**30, 2)}  # fmt: skip


def run(seconds: float, runs: int, long_minutes: float, model_dir: Path) -> dict[str, Any]:
    torch.set_num_threads(1)
    separator, spent, parameters = null_separator(model_dir)
    audio = song(seconds)
    separator.separate(audio)  # warm-up: allocator, first-touch pages
    times, inside = [], []
    for _ in range(runs):
        spent.clear()
        started = time.perf_counter()
        separator.separate(audio)
        times.append(time.perf_counter() - started)
        inside.append(sum(spent))
    middle = sorted(range(runs), key=lambda i: times[i])[runs // 2]
    report: dict[str, Any] = {
        "header": header(seconds=seconds, runs=runs, threads=1, parameters=parameters, shifts=separator.config.shifts,
                         overlap=separator.config.overlap),  # fmt: skip
        "separate_seconds": [round(t, 4) for t in times],
        "separate_median_seconds": round(statistics.median(times), 4),
        "segments": len(spent),
        "no_op_seconds": round(inside[middle], 4),  # in the median run
    }
    if long_minutes > 0:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.host_cost", "--child-long", str(long_minutes), "--model-dir", str(model_dir)],
            check=True, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        report["long"] = {"minutes": long_minutes, **json.loads(out.stdout.strip().splitlines()[-1])}
    return report


def markdown(report: dict[str, Any]) -> str:
    head = report["header"]
    median, no_op = report["separate_median_seconds"], report["no_op_seconds"]
    lines = [
        "# Host cost of separating (the network replaced by a no-op)",
        "",
        header_line(head),
        "",
        f"A {head['seconds']:g} s stereo song at 44.1 kHz, the service's `DemucsSeparator.separate()` on a "
        f"random-weight htdemucs ({head['parameters'] / 1e6:.1f} M parameters) whose forward returns its input; "
        f"{head['threads']} thread, fp32, shifts {head['shifts']}, overlap {head['overlap']}, median of {head['runs']} "
        "after a warm-up.",
        "",
        "| what | seconds |",
        "|---|---|",
        f"| separate(), whole call | **{median:.3f}** |",
        f"| of which the no-op network ({report['segments']} segments) | {no_op:.3f} |",
        f"| the pipeline's own host time | **{median - no_op:.3f}** |",
    ]
    if "long" in report:
        long = report["long"]
        lines += ["", f"{long['minutes']:g}-minute song: {long['seconds']} s, peak RSS {long['peak_rss_above_loaded_gib']} GiB "
                  f"above the loaded process (the input alone is {long['input_gib']} GiB of float32)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.host_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--long-minutes", type=float, default=20.0, help="0 leaves the long song out")
    parser.add_argument("--model-dir", type=Path, help="a folder with htdemucs.th (default: a random one)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    parser.add_argument("--child-long", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.child_long is not None:
        torch.set_num_threads(1)
        sys.stdout.write(json.dumps(long_song_child(args.model_dir, args.child_long)) + "\n")
        return None
    with tempfile.TemporaryDirectory() as work:
        model_dir = args.model_dir or Path(work)
        if args.model_dir is None:
            write_random_htdemucs(model_dir, "htdemucs", full_size=True)
        report = run(args.seconds, args.runs, args.long_minutes, model_dir)
    text = markdown(report)
    md, js = write_results("host_cost", report, text, args.out)
    sys.stdout.write(text)
    logger.info("wrote %s and %s", md, js)
    return report


if __name__ == "__main__":
    main()
