"""Choose basic-pitch's note-creation parameters and the cleaning rules per stem on the evaluation
set's "tune" half.

    python -m benchmarks.tune_presets [--cache DIR] [--out benchmarks/results]

For each pitched role (vocals, bass, other) on the isolated instrument renders, and for "mix" on the
whole mixes, basic-pitch's model runs once per audio file (its output is cached next to the render);
then `basic_pitch.note_creation.model_output_to_notes` is swept over a modest grid of onset threshold,
frame threshold, minimum note length and, where a stem has a natural range, frequency limits. Per role
the parameters with the best MEAN note F1 (onsets within 50 ms, no offsets) over the tune pieces win
(ties go to the setting nearest basic-pitch's defaults). Those are then scored on the held-out "test"
half next to basic-pitch's defaults and the project's current preset, which is the number to trust:
the tune numbers are optimistic by construction.

Notes are scored as the service hands them out: after its cleaning steps. The two kinds of parameters
interact, so they are chosen in turn: note parameters with the default cleaning rules, then the cleaning
rules (CLEANING_GRID) with those, then the note parameters again with the chosen rules.

melodia_trick=True and multiple_pitch_bends=False as in music/engines/transcriber.py. Writes
<out>/presets.md and <out>/presets.json.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import scoring
from benchmarks.evalset import DEFAULT_CACHE, ROLE_STEM, RenderedPiece, TruthNote, build, select
from benchmarks.provenance import RESULTS, header, header_line, write_results
from music.cleaning import clean
from music.notes import Note
from music.presets import NO_CLEANING, CleaningRules, MidiOptions, preset_for

logger = logging.getLogger(__name__)

FRAMES_PER_SECOND = 22050 / 256  # basic-pitch: AUDIO_SAMPLE_RATE / FFT_HOP
ROLES = ("vocals", "bass", "other", "mix")

ONSET_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
FRAME_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
# 58, 93 and 128 ms (basic-pitch's 127.7 ms). Not longer: a first run picked 174 ms for vocals and
# other by a hair (<= 0.01 F1 on the tune half), but that drops every sixteenth note above 86 BPM,
# which real songs have more of than this set.
MIN_NOTE_FRAMES = (5, 8, 11)
# Frequency limits (Hz) worth trying per role: none, and the stem's natural range. The mix has
# everything in it, so no limits there.
FREQUENCY_RANGES: dict[str, tuple[tuple[float | None, float | None], ...]] = {
    "vocals": ((None, None), (80.0, 1400.0)),
    "bass": ((None, None), (30.0, 400.0), (30.0, 250.0)),
    "other": ((None, None), (65.0, None)),
    "mix": ((None, None),),
}


@dataclass(frozen=True)
class Params:
    onset_threshold: float
    frame_threshold: float
    min_note_frames: int
    minimum_frequency: float | None = None
    maximum_frequency: float | None = None

    @property
    def minimum_note_length_ms(self) -> float:
        # The service converts ms back to frames with round(); this value maps to exactly these frames.
        return round(self.min_note_frames / FRAMES_PER_SECOND * 1000, 1)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "minimum_note_length_ms": self.minimum_note_length_ms}

    def label(self) -> str:
        low = "-" if self.minimum_frequency is None else f"{self.minimum_frequency:g}"
        high = "-" if self.maximum_frequency is None else f"{self.maximum_frequency:g}"
        return (
            f"onset {self.onset_threshold:g}, frame {self.frame_threshold:g}, "
            f"min {self.minimum_note_length_ms:g} ms, {low}..{high} Hz"
        )


DEFAULTS = Params(0.5, 0.3, 11)  # basic_pitch.inference.predict's defaults

# Ghost-note velocity ratio (0 = off) x ghost maximum length x octave-duplicate velocity ratio (0 = off).
CLEANING_GRID = tuple(
    CleaningRules(ghost_velocity_ratio=g, ghost_max_seconds=s, duplicate_velocity_ratio=d)
    for g, s, d in itertools.product((0.0, 0.5, 0.6, 0.7, 0.8, 0.9), (0.2, 0.3, 0.5, 1.0), (0.0, 0.6, 0.8, 1.0))
)


def current_preset(role: str) -> Params:
    """The project's preset for the stem today (music/presets.py)."""
    notes = preset_for(role).notes
    assert notes.onset_threshold and notes.frame_threshold and notes.minimum_note_length_ms
    return Params(
        notes.onset_threshold, notes.frame_threshold,
        int(round(notes.minimum_note_length_ms / 1000 * FRAMES_PER_SECOND)),
        notes.minimum_frequency, notes.maximum_frequency,
    )  # fmt: skip


def grid(role: str) -> list[Params]:
    combos = itertools.product(ONSET_THRESHOLDS, FRAME_THRESHOLDS, MIN_NOTE_FRAMES, FREQUENCY_RANGES[role])
    return [Params(o, f, n, low, high) for o, f, n, (low, high) in combos]


def _distance(params: Params) -> float:
    """How far from basic-pitch's defaults: the tie-breaker, so a flat optimum changes nothing."""
    return (
        abs(params.onset_threshold - DEFAULTS.onset_threshold)
        + abs(params.frame_threshold - DEFAULTS.frame_threshold)
        + abs(params.min_note_frames - DEFAULTS.min_note_frames) / 10
        + (params.minimum_frequency is not None) * 0.01
        + (params.maximum_frequency is not None) * 0.01
    )


# --- the model, once per audio file --------------------------------------------------------------------


class ModelOutputs:
    """basic-pitch's raw output per audio file, cached as .npz beside the render (invalidated by the
    file's size and modification time)."""

    def __init__(self) -> None:
        from basic_pitch.inference import Model

        from music.engines.transcriber import bundled_onnx_model

        self.model_path = bundled_onnx_model()
        self.model = Model(self.model_path)
        self.inference_seconds = 0.0

    def get(self, wav: Path) -> dict[str, np.ndarray]:
        from basic_pitch.inference import run_inference

        stat = wav.stat()
        stamp = f"{stat.st_size}-{stat.st_mtime_ns}-{self.model_path.name}"
        cache = wav.with_name(f"{wav.stem}.basic_pitch.npz")
        if cache.is_file():
            with np.load(cache) as data:
                if str(data["stamp"]) == stamp:
                    return {k: data[k] for k in ("note", "onset", "contour")}
        started = time.monotonic()
        output = run_inference(wav, self.model)
        self.inference_seconds += time.monotonic() - started
        np.savez_compressed(cache, stamp=np.array(stamp), **output)
        return output


def notes_for(output: dict[str, np.ndarray], params: Params, rules: CleaningRules) -> list[Note]:
    from basic_pitch.note_creation import model_output_to_notes

    _, events = model_output_to_notes(
        output,
        onset_thresh=params.onset_threshold,
        frame_thresh=params.frame_threshold,
        min_note_len=params.min_note_frames,
        min_freq=params.minimum_frequency,
        max_freq=params.maximum_frequency,
        include_pitch_bends=False,  # bends do not change which notes come out; they only cost time
        multiple_pitch_bends=False,
        melodia_trick=True,
    )
    notes = [Note(float(s), float(e), int(p), int(np.clip(round(127 * a), 1, 127))) for s, e, p, a, _ in events]
    return clean(notes, MidiOptions(), rules)


@dataclass(frozen=True)
class Item:
    piece: str
    split: str
    wav: Path
    reference: list[TruthNote]


def items_for(role: str, pieces: Sequence[RenderedPiece]) -> list[Item]:
    """The audio and reference notes a role is tuned and tested on."""
    items = []
    for piece in pieces:
        if role == "mix":
            if piece.truth.pitched_notes():
                items.append(Item(piece.spec.name, piece.spec.split, piece.mix, piece.truth.pitched_notes()))
            continue
        for part_role, wav in piece.parts.items():
            if ROLE_STEM[part_role] == role:
                items.append(Item(piece.spec.name, piece.spec.split, wav, piece.truth.notes[part_role]))
    return items


def mean_f1(
    items: Sequence[Item],
    outputs: dict[Path, dict[str, np.ndarray]],
    params: Params,
    rules: CleaningRules,
    offsets: bool = False,
) -> float:
    values = []
    for item in items:
        estimate = notes_for(outputs[item.wav], params, rules)
        score = scoring.note_prf(item.reference, estimate, with_offsets=offsets)
        values.append(score.f1 if score is not None else None)
    mean = scoring.mean_defined(values)
    return 0.0 if mean is None else mean


def _rules_label(rules: CleaningRules) -> str:
    ghost = (
        f"ghosts < {rules.ghost_velocity_ratio:g} x median velocity and < {rules.ghost_max_seconds:g} s"
        if rules.ghost_velocity_ratio else "no ghost rule"
    )
    dup = (
        f"harmonic duplicates <= {rules.duplicate_velocity_ratio:g} x velocity"
        if rules.duplicate_velocity_ratio else "no duplicate rule"
    )
    return f"{ghost}, {dup}"


def tune(pieces: Sequence[RenderedPiece]) -> dict[str, Any]:
    engine = ModelOutputs()
    report: dict[str, Any] = {
        "header": header(
            pieces=len(pieces),
            grid={
                "onset_threshold": ONSET_THRESHOLDS, "frame_threshold": FRAME_THRESHOLDS,
                "min_note_frames": MIN_NOTE_FRAMES,
                "frequency_ranges": {r: [list(x) for x in v] for r, v in FREQUENCY_RANGES.items()},
                "cleaning": [r.model_dump() for r in CLEANING_GRID],
            },
        ),
        "roles": {},
    }  # fmt: skip
    started = time.monotonic()
    for role in ROLES:
        role_started = time.monotonic()
        items = items_for(role, pieces)
        tune_items = [i for i in items if i.split == "tune"]
        test_items = [i for i in items if i.split == "test"]
        outputs = {item.wav: engine.get(item.wav) for item in items}
        candidates = grid(role)
        current_rules = preset_for(role).cleaning

        def best_params(rules: CleaningRules) -> list[tuple[float, Params]]:
            return sorted(
                ((mean_f1(tune_items, outputs, p, rules), p) for p in candidates),
                key=lambda pair: (-round(pair[0], 9), _distance(pair[1])),
            )

        first = best_params(CleaningRules())[0][1]
        rules = max(CLEANING_GRID, key=lambda r: round(mean_f1(tune_items, outputs, first, r), 9))
        scored = best_params(rules)
        best = scored[0][1]
        current = current_preset(role)
        rows = {}
        for name, params, row_rules in (
            ("chosen", best, rules),
            ("chosen_uncleaned", best, NO_CLEANING),
            ("basic_pitch_defaults", DEFAULTS, NO_CLEANING),
            ("current_preset", current, current_rules),
        ):
            rows[name] = {
                "params": params.as_json(),
                "cleaning": row_rules.model_dump(),
                "label": params.label() + "; " + _rules_label(row_rules),
                "tune_f1": mean_f1(tune_items, outputs, params, row_rules),
                "test_f1": mean_f1(test_items, outputs, params, row_rules),
                "test_f1_offsets": mean_f1(test_items, outputs, params, row_rules, offsets=True),
            }
        report["roles"][role] = {
            "tune_pieces": [i.piece for i in tune_items],
            "test_pieces": [i.piece for i in test_items],
            "candidates": len(candidates),
            "top": [{"tune_f1": f, "label": p.label(), "params": p.as_json()} for f, p in scored[:5]],
            **rows,
        }
        logger.info(
            "%s: %s; tune %.3f (defaults %.3f), test %.3f (defaults %.3f) [%.0f s]",
            role, best.label(), rows["chosen"]["tune_f1"], rows["basic_pitch_defaults"]["tune_f1"],
            rows["chosen"]["test_f1"], rows["basic_pitch_defaults"]["test_f1"], time.monotonic() - role_started,
        )  # fmt: skip
    report["header"]["seconds"] = round(time.monotonic() - started, 1)
    report["header"]["inference_seconds"] = round(engine.inference_seconds, 1)
    return report


def markdown(report: dict[str, Any]) -> str:
    head = report["header"]
    lines = [
        "# basic-pitch presets per stem",
        "",
        header_line(head) + f" · {head['seconds']} s",
        "",
        "Chosen on the `tune` half by mean note F1 (onsets 50 ms, no offsets), reported on the held-out `test` half. "
        "vocals/bass/other: isolated instrument renders; mix: whole mixes.",
        "",
        "| stem | parameters | tune F1 | test F1 | test F1 +offsets | tune / test pieces |",
        "|---|---|---|---|---|---|",
    ]
    for role, data in report["roles"].items():
        for name, title in (("chosen", "**chosen**"), ("chosen_uncleaned", "chosen, no cleaning"),
                            ("basic_pitch_defaults", "basic-pitch defaults"),
                            ("current_preset", "current preset")):  # fmt: skip
            row = data[name]
            lines.append(
                f"| {role} | {title}: {row['label']} | {row['tune_f1']:.3f} | {row['test_f1']:.3f} | "
                f"{row['test_f1_offsets']:.3f} | {len(data['tune_pieces'])} / {len(data['test_pieces'])} |"
            )
    lines += ["", "Best five on the tune half:", ""]
    for role, data in report["roles"].items():
        lines.append(f"- {role}: " + "; ".join(f"{t['tune_f1']:.3f} ({t['label']})" for t in data["top"]))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tune_presets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    pieces = build(select("full"), args.cache)
    report = tune(pieces)
    text = markdown(report)
    write_results("presets", report, text, args.out)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
