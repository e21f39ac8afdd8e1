"""Drum weights on the real-recording set, in-process: what each input the service can give the drum
engine makes of real drums, for choosing between weight files before a run of benchmarks.real.

    python -m benchmarks.real_drums [WEIGHTS ...]      # the shipped weights when none is named

Per item of ../shared/real-dev with annotated hits, and per weights file: onset F1 (50 ms) of kick, snare
and hi-hat (open and closed pooled) from the item's audio split by HPSS (what `separation=hpss` hands the
engine), from the recorded drum stem where the item has one, and from the whole mix. An item of a song
that a weights file trained on (its own record, `trained_on.real_songs`) is refused, as in benchmarks.real.
Also times the engine: seconds of CPU per minute of audio, one thread. Writes
benchmarks/results/real_drums.{md,json}.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch

from benchmarks import scoring
from benchmarks.provenance import header, header_line, write_results
from benchmarks.real import drum_stem, trained_songs
from benchmarks.real_dev import DRUM_CLASSES, RealItem, load
from music.audio import DecodedAudio
from music.engines.drum_net import WEIGHTS_PATH, DrumNetConfig, NetDrumTranscriber
from music.engines.hpss import hpss_stems

logger = logging.getLogger(__name__)

INPUTS = ("hpss", "stem", "mix")


def _read(path: Path) -> DecodedAudio:
    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return DecodedAudio(samples=np.ascontiguousarray(samples.T), sample_rate=int(rate))


def _inputs(item: RealItem) -> dict[str, DecodedAudio]:
    mix = _read(item.audio)
    found = {"hpss": DecodedAudio(hpss_stems(mix)["drums"], mix.sample_rate), "mix": mix}
    stem = drum_stem(item)
    if stem is not None:
        found["stem"] = mix if stem == item.audio else _read(stem)
    return found


def evaluate(weights: Sequence[Path], items: Sequence[RealItem]) -> dict[str, Any]:
    torch.set_num_threads(1)
    engines = {str(w): NetDrumTranscriber(DrumNetConfig(weights_path=w)) for w in weights}
    seen = {str(w): trained_songs(w) for w in weights}
    results: dict[str, Any] = {}
    engine_seconds = {str(w): 0.0 for w in weights}
    audio_seconds = 0.0
    for item in items:
        clash = [w for w, songs in seen.items() if item.song in songs]
        if clash:
            raise SystemExit(f"{item.id}: its song {item.song} is in the training record of {clash}")
        inputs = _inputs(item)
        row: dict[str, Any] = {}
        for name, engine in engines.items():
            row[name] = {}
            for kind, audio in inputs.items():
                started = time.process_time()
                notes = engine.transcribe(audio.samples, audio.sample_rate)
                if kind == "hpss":
                    engine_seconds[name] += time.process_time() - started
                row[name][kind] = {
                    cls: (None if (prf := scoring.onset_prf(item.drums[cls], scoring.drum_onsets(notes, cls))) is None
                          else round(prf.f1, 3))
                    for cls in DRUM_CLASSES
                }  # fmt: skip
        audio_seconds += inputs["hpss"].samples.shape[1] / inputs["hpss"].sample_rate
        results[item.id] = row
        logger.info("%s %s", item.id, row)
    means = {
        name: {
            kind: {cls: scoring.mean_defined(results[i][name].get(kind, {}).get(cls) for i in results) for cls in DRUM_CLASSES}
            for kind in INPUTS
        }
        for name in engines
    }  # fmt: skip
    per_minute = {name: round(s / audio_seconds * 60, 2) for name, s in engine_seconds.items()}
    return {"items": results, "means": means, "cpu_seconds_per_minute": per_minute}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Real drums, in-process ({header_line(report['header'])})", "",
             "Onset F1 (50 ms), mean over the items with hits of the class; hi-hat = open and closed pooled.", "",
             "| weights | input | " + " | ".join(DRUM_CLASSES) + " | items |", "|---|---|" + "---|" * (len(DRUM_CLASSES) + 1)]  # fmt: skip
    for name, kinds in report["means"].items():
        for kind, means in kinds.items():
            count = sum(1 for row in report["items"].values() if kind in row[name])
            cells = " | ".join("n/a" if v is None else f"{v:.3f}" for v in means.values())
            lines.append(f"| {Path(name).name} | {kind} | {cells} | {count} |")
    lines += ["", "Drum engine CPU seconds per minute of audio (one thread, HPSS input): "
              + ", ".join(f"{Path(n).name} {s}" for n, s in report["cpu_seconds_per_minute"].items()), "",
              "| item | weights | input | " + " | ".join(DRUM_CLASSES) + " |", "|---|---|---|" + "---|" * len(DRUM_CLASSES)]  # fmt: skip
    for item, row in report["items"].items():
        for name, kinds in row.items():
            for kind, values in kinds.items():
                cells = " | ".join("n/a" if v is None else f"{v:.3f}" for v in values.values())
                lines.append(f"| {item} | {Path(name).name} | {kind} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="*", type=Path, default=[WEIGHTS_PATH])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    items = [item for item in load() if item.drums and any(len(v) for v in item.drums.values())]
    report = {"header": header(), **evaluate(args.weights, items)}
    write_results("real_drums", report, markdown(report), args.out)
    return report


if __name__ == "__main__":
    main()
