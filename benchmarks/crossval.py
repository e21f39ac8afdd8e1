"""Choose the whole-mix preset ("mix", also "harmonic") by cross-validation over genres AND sample
families, and report only held-out numbers.

    python -m benchmarks.crossval [--subset ci] [--cache DIR] [--out benchmarks/results]

The set is benchmarks/corpus.py's: real scores (chorale, quartet, piano, vocal, folk) and the composed
pieces (band), each rendered with four General MIDI sound sources (FluidR3, TimGM6mb, csound's bank,
freepats' GUS patches through TiMidity++) under rotating effect chains. basic-pitch's
network runs once per render (its output is cached beside the render as .npz); every setting below only
re-runs `basic_pitch.note_creation.model_output_to_notes` and the service's cleaning, and every
(render, setting) score is cached in <cache>/crossval-scores.json.

Folds: leave one genre out x leave one sample family out. Sources that share samples are one family:
benchmarks/soundfonts.py compares them on the melodic programs each really plays here (a freepats render
plays stand-ins for the programs freepats lacks) and groups them, and every fold is checked with its
`assert_disjoint` (csound's GM bank is inside TimGM6mb, so those two are one family; FluidR3 and
freepats are families of their own). For held-out genre g and family F, a procedure tunes on the
renders of every OTHER genre with the sources outside F, and the setting it picks is scored on the
renders of genre g with the sources of F (none of which shares a genre or a sample with what it was
tuned on). Every render is held out exactly once. The tuning objective is the mean over
genres of the genre's mean note F1 (onsets within 50 ms), so the composed set, the largest genre, does
not outvote the others.

Procedures, each cross-validated the same way:
- defaults: basic-pitch's own (onset 0.5, frame 0.3, 127.7 ms, no cleaning) = basic-pitch alone.
- previous: the preset this replaces (onset 0.6, frame 0.6, 92.9 ms), untuned.
- one parameter at a time: onset, frame or minimum length tuned alone, the others at the defaults.
- cleaning: the cleaning rules (CLEANING_GRID) tuned alone on the defaults' notes.
- joint: all three note parameters tuned together.
A parameter (or the cleaning) departs from basic-pitch's defaults only if its own procedure beats the
defaults on the held-out blocks of EVERY genre (genre mean over its renders with every source); the adopted
ones are then tuned together ("chosen") on all renders for the preset, and "chosen" is
cross-validated too: its held-out numbers are the ones to quote. Writes <out>/crossval.{md,json}
(crossval_ci for the CI subset, a smoke run whose numbers are not the evaluation's).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import scoring, soundfonts
from benchmarks.corpus import CORPUS_VERSION, EFFECTS, GENRES, SOUNDFONTS, SOURCE_NAMES, Render, build_all, programs
from benchmarks.evalset import DEFAULT_CACHE
from benchmarks.provenance import RESULTS, header, header_line, write_results
from benchmarks.render import stand_in
from benchmarks.sound_sources import gus_patches
from benchmarks.tune_presets import DEFAULTS, ModelOutputs, Params, _distance, current_preset, notes_for
from music.cleaning import clean
from music.notes import Note
from music.presets import NO_CLEANING, CleaningRules, MidiOptions

logger = logging.getLogger(__name__)

ONSETS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
FRAMES = (0.2, 0.3, 0.4, 0.5, 0.6)
MIN_FRAMES = (8, 11)  # 92.9 and 127.7 ms (basic-pitch's)
# Off, and the rules' useful corners: ghosts (velocity ratio x max length), harmonic duplicates.
CLEANING_GRID: tuple[CleaningRules, ...] = (NO_CLEANING,) + tuple(
    CleaningRules(ghost_velocity_ratio=g, ghost_max_seconds=s, duplicate_velocity_ratio=d)
    for (g, s), d in itertools.product(
        ((0.0, 0.3), (0.5, 0.2), (0.5, 0.5), (0.7, 0.2), (0.7, 0.5), (0.7, 1.0), (0.9, 0.5), (0.9, 1.0)),
        (0.0, 0.6, 1.0),
    )
    if g or d
)
PREVIOUS_MIX = Params(0.6, 0.6, 8)  # the preset before this cross-validation (benchmarks.tune_presets)

Setting = tuple[Params, CleaningRules]


def _rules_key(rules: CleaningRules) -> str:
    if not rules.ghost_velocity_ratio and not rules.duplicate_velocity_ratio:
        return "none"
    return f"g{rules.ghost_velocity_ratio:g}/{rules.ghost_max_seconds:g},d{rules.duplicate_velocity_ratio:g}"


def rules_label(rules: CleaningRules) -> str:
    if _rules_key(rules) == "none":
        return "no cleaning"
    parts = []
    if rules.ghost_velocity_ratio:
        parts.append(f"ghosts < {rules.ghost_velocity_ratio:g} x median velocity and < {rules.ghost_max_seconds:g} s")
    if rules.duplicate_velocity_ratio:
        parts.append(f"harmonic duplicates <= {rules.duplicate_velocity_ratio:g} x velocity")
    return ", ".join(parts)


class Scores:
    """Note F1 of every (render, setting), computed once and kept in a JSON file."""

    def __init__(self, renders: Sequence[Render], cache_file: Path) -> None:
        self.renders = list(renders)
        self.cache_file = cache_file
        self.values: dict[str, float] = {}
        if cache_file.is_file():
            try:
                self.values = json.loads(cache_file.read_text())
            except ValueError:
                self.values = {}
        self.engine: ModelOutputs | None = None
        self._outputs: dict[Path, dict[str, np.ndarray]] = {}
        self._stamps = {r.wav: f"{r.wav}|{r.wav.stat().st_size}|{r.wav.stat().st_mtime_ns}" for r in self.renders}
        self.dirty = 0
        self._raw: dict[tuple[Path, str], list[Note]] = {}

    def output(self, wav: Path) -> dict[str, np.ndarray]:
        if wav not in self._outputs:
            if self.engine is None:
                self.engine = ModelOutputs()
            self._outputs[wav] = self.engine.get(wav)
        return self._outputs[wav]

    def f1(self, render: Render, setting: Setting) -> float:
        params, rules = setting
        key = f"{self._stamps[render.wav]}|{params.label()}|{_rules_key(rules)}"
        if key not in self.values:
            raw_key = (render.wav, params.label())
            if raw_key not in self._raw:  # note creation once per (render, params); cleaning is cheap
                if len(self._raw) > 2000:
                    self._raw.clear()
                self._raw[raw_key] = notes_for(self.output(render.wav), params, NO_CLEANING)
            estimate = clean(self._raw[raw_key], MidiOptions(), rules)
            score = scoring.note_prf(render.reference, estimate)
            self.values[key] = 0.0 if score is None else score.f1
            self.dirty += 1
            if self.dirty >= 500:
                self.save()
        return self.values[key]

    def save(self) -> None:
        if self.dirty:
            tmp = self.cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.values))
            tmp.replace(self.cache_file)
            self.dirty = 0


def genre_balanced(scores: Scores, renders: Sequence[Render], setting: Setting) -> float:
    """Mean over genres of the genre's mean F1: the tuning objective."""
    means = []
    for genre in GENRES:
        rows = [r for r in renders if r.genre == genre]
        if rows:
            means.append(float(np.mean([scores.f1(r, setting) for r in rows])))
    return float(np.mean(means)) if means else 0.0


def best(scores: Scores, renders: Sequence[Render], candidates: Sequence[Setting]) -> Setting:
    """The candidate with the best objective; ties go to the one nearest basic-pitch's defaults."""
    def rank(setting: Setting) -> tuple[float, float, int]:
        params, rules = setting
        return (-round(genre_balanced(scores, renders, setting), 9), _distance(params), _rules_key(rules) != "none")

    return min(candidates, key=rank)


def note_candidates(tuned: Sequence[str]) -> list[Params]:
    """Params with the named parameters over their grids and the others at basic-pitch's defaults."""
    onsets = ONSETS if "onset" in tuned else (DEFAULTS.onset_threshold,)
    frames = FRAMES if "frame" in tuned else (DEFAULTS.frame_threshold,)
    lengths = MIN_FRAMES if "length" in tuned else (DEFAULTS.min_note_frames,)
    return [Params(o, f, n) for o, f, n in itertools.product(onsets, frames, lengths)]


Procedure = Callable[[Scores, Sequence[Render]], Setting]


def tuning(tuned: Sequence[str], cleaning: bool) -> Procedure:
    """A procedure: note parameters `tuned` (others default), then, if `cleaning`, the cleaning rules."""
    def run(scores: Scores, train: Sequence[Render]) -> Setting:
        params = best(scores, train, [(p, NO_CLEANING) for p in note_candidates(tuned)])[0]
        if not cleaning:
            return params, NO_CLEANING
        return best(scores, train, [(params, r) for r in CLEANING_GRID])

    return run


def fixed(setting: Setting) -> Procedure:
    return lambda scores, train: setting


Families = Sequence[Sequence[str]]  # corpus source keys (SOUNDFONTS), grouped by shared samples


def family_label(family: Sequence[str]) -> str:
    return " + ".join(family)


def cross_validate(scores: Scores, procedure: Procedure, families: Families) -> dict[str, Any]:
    """Held-out F1 per render (each render is held out once), and the setting each fold chose."""
    renders = scores.renders
    genres = [g for g in GENRES if any(r.genre == g for r in renders)]
    per_render: dict[int, float] = {}
    folds = []
    for genre, family in itertools.product(genres, families):
        test = [i for i, r in enumerate(renders) if r.genre == genre and r.soundfont in family]
        train = [r for r in renders if r.genre != genre and r.soundfont not in family]
        if not test or not train:
            continue
        setting = procedure(scores, train)
        for i in test:
            per_render[i] = scores.f1(renders[i], setting)
        folds.append({"genre": genre, "family": family_label(family), "params": setting[0].as_json(),
                      "cleaning": _rules_key(setting[1]),
                      "held_out_f1": float(np.mean([per_render[i] for i in test]))})  # fmt: skip
    return {"per_render": per_render, "folds": folds}


def summarise(renders: Sequence[Render], per_render: dict[int, float], families: Families) -> dict[str, Any]:
    def mean(rows: list[int]) -> float | None:
        rows = [i for i in rows if i in per_render]
        return float(np.mean([per_render[i] for i in rows])) if rows else None

    index = range(len(renders))
    by = {
        "genre": {g: mean([i for i in index if renders[i].genre == g]) for g in GENRES},
        "soundfont": {f: mean([i for i in index if renders[i].soundfont == f]) for f in SOUNDFONTS},
        "family": {family_label(fam): mean([i for i in index if renders[i].soundfont in fam]) for fam in families},
        "effect": {e: mean([i for i in index if renders[i].effect == e]) for e in EFFECTS},
    }
    genre_means = [v for v in by["genre"].values() if v is not None]
    by["overall"] = {
        "genre_balanced": float(np.mean(genre_means)) if genre_means else None,
        "renders": mean(list(index)),
    }
    return by


def programs_played(fonts: Sequence[str], wanted: Collection[int]) -> dict[str, set[int]]:
    """Per source (benchmarks/sound_sources.py's name), the melodic programs it plays for the `wanted`
    ones: a GUS set plays stand-ins for the programs it lacks (benchmarks/render.py)."""
    played: dict[str, set[int]] = {}
    for font in fonts:
        path = SOUNDFONTS[font]
        available = set(gus_patches(path)[0]) if path.suffix == ".cfg" else None
        played[SOURCE_NAMES[font]] = {p if available is None else stand_in(p, available) for p in wanted}
    return played


def sample_families(
    fonts: Sequence[str], wanted: Collection[int], cache: Path = soundfonts.DEFAULT_CACHE
) -> tuple[list[list[str]], dict[str, Any]]:
    """The sources `fonts` grouped by shared samples on the programs they play, each family checked
    disjoint from the rest; and the evidence: what each pair shares."""
    played = programs_played(fonts, wanted)
    names = {SOURCE_NAMES[k]: k for k in fonts}
    groups = soundfonts.families(list(names), "melodic", cache, programs=played)
    for group in groups:
        soundfonts.assert_disjoint([n for n in names if n not in group], group, "melodic", cache, programs=played)
    within: dict[str, list[str]] = {}
    across: dict[str, list[str]] = {}
    for a, b in itertools.combinations(names, 2):
        rows = soundfonts.among_played(soundfonts.shared(a, b, "melodic", cache), a, b, played)
        same = any(a in g and b in g for g in groups)
        (within if same else across)[f"{a} ~ {b}"] = [r.what for r in rows]
    families = [[names[n] for n in group] for group in groups]
    evidence = {"programs_played": {n: sorted(p) for n, p in played.items()},
                "shared_within": within, "shared_across": across}  # fmt: skip
    return families, evidence


def run(subset: str, cache: Path) -> dict[str, Any]:
    started = time.monotonic()
    renders = build_all(subset, cache)
    logger.info("%d renders ready (%.0f s)", len(renders), time.monotonic() - started)
    scores = Scores(renders, cache / f"crossval-scores-{CORPUS_VERSION}.json")
    for i, render in enumerate(renders):
        scores.output(render.wav)
    logger.info("model outputs ready (%.0f s)", time.monotonic() - started)
    fonts = [k for k in SOUNDFONTS if any(r.soundfont == k for r in renders)]
    families, evidence = sample_families(fonts, programs(subset))
    logger.info("sample families: %s", " | ".join(family_label(f) for f in families))

    def cv_result(procedure: Procedure) -> dict[str, Any]:
        cv = cross_validate(scores, procedure, families)
        return {"summary": summarise(renders, cv["per_render"], families), "folds": cv["folds"],
                "per_render": cv["per_render"]}  # fmt: skip

    procedures: dict[str, Procedure] = {
        "defaults": fixed((DEFAULTS, NO_CLEANING)),
        "previous": fixed((PREVIOUS_MIX, NO_CLEANING)),
        "onset": tuning(["onset"], False),
        "frame": tuning(["frame"], False),
        "length": tuning(["length"], False),
        "cleaning": tuning([], True),
        "joint": tuning(["onset", "frame", "length"], False),
    }
    results: dict[str, Any] = {}
    for name, procedure in procedures.items():
        t = time.monotonic()
        results[name] = cv_result(procedure)
        scores.save()
        logger.info("%s: held-out %s (%.0f s)", name, results[name]["summary"]["overall"], time.monotonic() - t)

    defaults_by_genre = results["defaults"]["summary"]["genre"]

    def wins_everywhere(name: str) -> bool:
        genre = results[name]["summary"]["genre"]
        return all(genre[g] is None or genre[g] > defaults_by_genre[g] + 1e-9 for g in GENRES)

    adopted = [p for p in ("onset", "frame", "length") if wins_everywhere(p)]
    # The cleaning is judged on top of the adopted note parameters: against them without cleaning.
    if adopted:
        results["chosen_notes"] = cv_result(tuning(adopted, False))
    else:
        results["chosen_notes"] = results["defaults"]
    results["chosen_cleaned"] = cv_result(tuning(adopted, True))
    base = results["chosen_notes"]["summary"]["genre"]
    cleaned = results["chosen_cleaned"]["summary"]["genre"]
    clean_adopted = all(cleaned[g] is None or cleaned[g] > base[g] + 1e-9 for g in GENRES)
    results["chosen"] = results["chosen_cleaned"] if clean_adopted else results["chosen_notes"]
    chosen_procedure = tuning(adopted, clean_adopted)
    final = chosen_procedure(scores, renders)
    scores.save()
    return {
        "header": header(
            subset=subset,
            corpus_version=CORPUS_VERSION,
            renders=len(renders),
            pieces={g: sorted({r.piece for r in renders if r.genre == g}) for g in GENRES},
            soundfonts={k: str(v) for k, v in SOUNDFONTS.items()},
            families=[family_label(f) for f in families],
            effects={k: " ".join(v) or "-" for k, v in EFFECTS.items()},
            seconds=round(time.monotonic() - started, 1),
            grid={"onset": ONSETS, "frame": FRAMES, "min_note_frames": MIN_FRAMES,
                  "cleaning": [_rules_key(r) for r in CLEANING_GRID]},
        ),  # fmt: skip
        "families": evidence,
        "renders": [{"piece": r.piece, "genre": r.genre, "soundfont": r.soundfont, "effect": r.effect,
                     "notes": len(r.reference)} for r in renders],  # fmt: skip
        "procedures": results,
        "adopted": {"parameters": adopted, "cleaning": clean_adopted},
        "preset": {"params": final[0].as_json(), "label": final[0].label(), "cleaning": final[1].model_dump(),
                   "cleaning_label": rules_label(final[1])},  # fmt: skip
        "current_preset": current_preset("mix").as_json(),
    }


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(report: dict[str, Any]) -> str:
    head, procs = report["header"], report["procedures"]
    order = ("defaults", "previous", "onset", "frame", "length", "cleaning", "joint", "chosen_cleaned", "chosen")
    names = [n for n in order if n in procs]
    titles = {
        "defaults": "basic-pitch defaults", "previous": "previous mix preset (0.6/0.6/92.9 ms)",
        "onset": "onset tuned alone", "frame": "frame tuned alone", "length": "min length tuned alone",
        "cleaning": "cleaning tuned alone", "joint": "onset+frame+length tuned", "chosen_cleaned": "adopted parameters + cleaning tuned",
        "chosen": "**chosen preset**",
    }  # fmt: skip
    lines = [
        "# Whole-mix preset, cross-validated (leave one genre out x leave one sample family out)",
        "",
        header_line(head) + f" · {head['renders']} renders · {head['seconds']} s",
        "",
        "Sample families (sources that share samples on the programs they play, benchmarks/soundfonts.py): "
        + " | ".join(head["families"]) + ". Shared between families: "
        + (", ".join(f"{pair}: {len(v)} programs" for pair, v in report["families"]["shared_across"].items() if v)
           or "nothing") + "; within: "
        + (", ".join(f"{pair}: {len(v)} programs" for pair, v in report["families"]["shared_within"].items() if v)
           or "nothing") + ".",
        "",
        "Held-out note F1 only (onsets 50 ms), mean over renders of each genre / family / source / effect; "
        "'balanced' is the mean of the genre means.",
        "",
    ]  # fmt: skip
    axes = (("genre", GENRES), ("family", tuple(head["families"])), ("soundfont", tuple(SOUNDFONTS)),
            ("effect", tuple(EFFECTS)))  # fmt: skip
    for axis, keys in axes:
        present = [k for k in keys if procs["defaults"]["summary"][axis].get(k) is not None]
        lines += [f"| procedure | {' | '.join(present)} | balanced | all renders |",
                  "|---|" + "---|" * (len(present) + 2)]  # fmt: skip
        for name in names:
            s = procs[name]["summary"]
            lines.append(f"| {titles[name]} | " + " | ".join(_f(s[axis][k]) for k in present)
                         + f" | {_f(s['overall']['genre_balanced'])} | {_f(s['overall']['renders'])} |")  # fmt: skip
        lines.append("")
    # Every held-out block (genre x family), and how many renders the chosen preset loses on.
    chosen, defaults = procs["chosen"], procs["defaults"]
    folds = {(f["genre"], f["family"]): f["held_out_f1"] for f in chosen["folds"]}
    base = {(f["genre"], f["family"]): f["held_out_f1"] for f in defaults["folds"]}
    fams = [f for f in head["families"] if any(k[1] == f for k in folds)]
    lines += ["Held-out blocks, basic-pitch defaults -> chosen preset (renders where the chosen preset scores lower):",
              "", f"| genre | {' | '.join(fams)} | renders lower |", "|---|" + "---|" * (len(fams) + 1)]  # fmt: skip
    renders = report["renders"]
    ours = {int(k): v for k, v in chosen["per_render"].items()}
    theirs = {int(k): v for k, v in defaults["per_render"].items()}
    for genre in GENRES:
        if not any(k[0] == genre for k in folds):
            continue
        cells = [f"{base[(genre, f)]:.3f} -> {folds[(genre, f)]:.3f}" if (genre, f) in folds else "-" for f in fams]
        index = [i for i, r in enumerate(renders) if r["genre"] == genre and i in ours and i in theirs]
        lower = [i for i in index if ours[i] < theirs[i] - 1e-9]
        lines.append(f"| {genre} | {' | '.join(cells)} | {len(lower)} of {len(index)} |")
    lines.append("")
    preset = report["preset"]
    lines += [
        f"Adopted (beat the defaults on every genre's held-out blocks): parameters {report['adopted']['parameters'] or 'none'}, "
        f"cleaning {'yes' if report['adopted']['cleaning'] else 'no'}.",
        "",
        f"Preset from all renders: {preset['label']}; {preset['cleaning_label']}.",
        "",
        "Settings the folds chose (joint procedure): "
        + "; ".join(f"{f['genre']}/{f['family']}: {f['params']['onset_threshold']:g}/{f['params']['frame_threshold']:g}/"
                    f"{f['params']['min_note_frames']}" for f in procs["joint"]["folds"]),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m benchmarks.crossval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--subset", choices=("full", "ci"), default="full")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    report = run(args.subset, args.cache)
    text = markdown(report)
    # The CI subset is a smoke run of the procedure: its numbers are not the evaluation's.
    md, js = write_results("crossval" if args.subset == "full" else "crossval_ci", report, text, args.out)
    sys.stdout.write(text)
    logger.info("wrote %s and %s", md, js)
    return report


if __name__ == "__main__":
    main()
