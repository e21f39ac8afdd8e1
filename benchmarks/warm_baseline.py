"""The second baseline of benchmarks/speed.py: the by-hand work in one warm Python process.

    python -m benchmarks.warm_baseline PIECE --model htdemucs --model-dir DIR --out DIR   # prints one JSON line

What a developer who glues the two libraries together in Python would write: Demucs' own
`demucs.api.Separator` (`apply_model` with the CLI's defaults: one shift, overlap 0.25, fp32) and
basic-pitch's `predict()` with its defaults on the three pitched stems, each model loaded once and run once
on a short excerpt before the timed run, so neither imports, model loading nor first-call costs count. The
thread pools are the libraries' own defaults (every core), as in such a script.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PITCHED = ("vocals", "bass", "other")
WARM_UP_SECONDS = 10.0


def run(piece: Path, model: str, model_dir: Path, out: Path) -> dict[str, Any]:
    import soundfile
    from basic_pitch import ICASSP_2022_MODEL_PATH
    from basic_pitch.inference import Model, predict
    from demucs.api import Separator, save_audio

    out.mkdir(parents=True, exist_ok=True)
    separator = Separator(model=model, repo=model_dir, device="cpu", shifts=1, overlap=0.25, progress=False)
    transcriber = Model(ICASSP_2022_MODEL_PATH)
    audio, rate = soundfile.read(piece, dtype="float32", always_2d=True)
    excerpt = out / "warm-up.wav"
    soundfile.write(excerpt, audio[: int(WARM_UP_SECONDS * rate)], rate)
    separator.separate_audio_file(excerpt)  # warm-up
    predict(excerpt, transcriber)

    started = time.perf_counter()
    _, stems = separator.separate_audio_file(piece)
    paths = []
    for name in PITCHED:
        path = out / f"{name}.wav"
        save_audio(stems[name], path, samplerate=separator.samplerate)
        paths.append(path)
    separated = time.perf_counter() - started
    started = time.perf_counter()
    notes = sum(len(predict(path, transcriber)[2]) for path in paths)
    transcribed = time.perf_counter() - started
    return {"separation_s": round(separated, 2), "transcription_s": round(transcribed, 2),
            "total_s": round(separated + transcribed, 2), "notes": notes, "autocast": "none"}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.warm_baseline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("piece", type=Path)
    parser.add_argument("--model", default="htdemucs")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for the stems and the warm-up excerpt")
    args = parser.parse_args(argv)
    result = run(args.piece, args.model, args.model_dir, args.out)
    sys.stdout.write(json.dumps(result) + "\n")  # the last line of output is the result


if __name__ == "__main__":
    main()
