"""Which soundfonts and drum kits are the same underneath: shared samples, by name and by sound.

    python -m benchmarks.soundfonts                  # every installed source; writes results/soundfonts.{md,json}
    python -m benchmarks.soundfonts --sources FluidR3_GM,MuseScore_General

Soundfonts copy each other's samples: FluidR3's are inside MuseScore General, csound's GM bank is
inside TimGM6mb, and a Hydrogen kit can be an AVL kit again. A soundfont "held out" from training is
held out only if it shares no sample with anything trained or tuned on. Two checks, per General MIDI
melodic program and per drum class:

- names: the sample names behind the program or the class's keys (benchmarks/sound_sources.py reads them
  from the SoundFont's tables, TiMidity's patch list or the Hydrogen kit's layers); a shared name is a
  shared sample within one kind of source (names are not comparable across kinds);
- sound: one note (middle C; E2 for basses) per program and one hit per drum class (every instrument of
  that class in a Hydrogen kit) are rendered with each source, and the peak of the normalised
  cross-correlation of two renders (first 0.75 s after the onset, lags within 25 ms) is their likeness.
  The same sample through two synthesisers' envelopes and filters stays near 1; two recordings of two
  instruments do not (the distributions are in this tool's output). `SAME_SOUND` is the threshold.

A pair of sources shares a program or a drum class when either check says so. `families()` joins sources
that share anything into one family; `assert_disjoint()` is what every evaluation calls before it
reports a source as held out, and it refuses with the shared programs and classes named.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pretty_midi
import soundfile

from benchmarks.hydrogen_kits import _sample, hydrogen_kit
from benchmarks.provenance import header, header_line, write_results
from benchmarks.render import render_with
from benchmarks.sound_sources import (
    SoundSource,
    contents,
    declared_related,
    gm_family,
    installed_sources,
    same_samples,
    source,
)

logger = logging.getLogger(__name__)

Scope = Literal["melodic", "drums"]
RATE = 22050
CLIP_S = 0.75
MAX_LAG_S = 0.025
NOTE_S, GAP_S = 1.0, 0.5
DRUM_GAP_S = 2.0
# One key per drum class (GM's), each struck at these velocities: multi-sampled kits keep one recording
# per velocity layer, and the same kit in another format must meet one of its layers.
PROBE_KEYS = {"kick": 36, "snare": 38, "hihat_closed": 42, "hihat_pedal": 44, "hihat_open": 46, "tom": 45,
              "crash": 49, "ride": 51}  # fmt: skip
PROBE_VELOCITIES = (40, 70, 100, 127)
# A likeness at or above this is one sample: same samples through two synthesisers measure 0.99-1.00 (median
# 0.999), different recordings at most 0.87 (OPL3 against FluidR3) and simple tones of two fonts up to
# 0.92 (marimba, synth bass, clarinet of FluidR3 and TimGM6mb); see this tool's output.
SAME_SOUND = 0.95
DEFAULT_CACHE = Path(__file__).parent / ".evalset" / "soundfonts"


class SharedSamples(ValueError):
    """A source meant to be held out shares samples with one used for training or choosing."""


def probe_pitch(program: int) -> int:
    return 40 if gm_family(program) == "bass" else 60


def _probe_midi(scope: Scope) -> pretty_midi.PrettyMIDI:
    """Melodic: program p's note at p x (NOTE_S + GAP_S) s, each program on the channel it shares with 15
    others (pretty_midi writes one program change per instrument, at 0 s, so 128 instruments cannot share
    16 channels: each note gets a channel of its own by time slot, programs set just before it). Drums:
    class k, velocity v at (k x len(PROBE_VELOCITIES) + v) x DRUM_GAP_S s."""
    midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    if scope == "melodic":
        for program in range(128):
            inst = pretty_midi.Instrument(program=program, name=str(program))
            t = program * (NOTE_S + GAP_S)
            inst.notes.append(pretty_midi.Note(100, probe_pitch(program), t, t + NOTE_S))
            midi.instruments.append(inst)
    else:
        kit = pretty_midi.Instrument(program=0, is_drum=True, name="drums")
        for k, key in enumerate(PROBE_KEYS.values()):
            for v, velocity in enumerate(PROBE_VELOCITIES):
                t = (k * len(PROBE_VELOCITIES) + v) * DRUM_GAP_S
                kit.notes.append(pretty_midi.Note(velocity, key, t, t + 0.2))
        midi.instruments.append(kit)
    return midi


def _write_probe(src: SoundSource, scope: Scope, wav: Path) -> None:
    """Render the probe MIDI; melodic probes in 8 passes of 16 programs, so no two share a channel."""
    midi = _probe_midi(scope)
    if scope == "drums":
        render_with(src, midi, wav, RATE)
        return
    total = np.zeros((2, int(128 * (NOTE_S + GAP_S) * RATE) + RATE), dtype=np.float32)
    for first in range(0, 128, 15):
        part = pretty_midi.PrettyMIDI(initial_tempo=120.0)
        part.instruments = midi.instruments[first : first + 15]
        piece = wav.with_name(f"part{first}.wav")
        render_with(src, part, piece, RATE)
        audio = soundfile.read(piece, dtype="float32", always_2d=True)[0].T
        n = min(audio.shape[1], total.shape[1])
        total[:, :n] += audio[:, :n]
        piece.unlink()
    soundfile.write(wav, total.T, RATE, subtype="FLOAT")


def _mono(audio: np.ndarray) -> np.ndarray:
    return audio.mean(axis=0) if audio.ndim == 2 else audio


def _clip(samples: np.ndarray) -> np.ndarray | None:
    """The first CLIP_S after the onset, at unit norm; None for silence."""
    peak = float(np.abs(samples).max(initial=0.0))
    if peak < 1e-4:
        return None
    onset = int(np.argmax(np.abs(samples) > 0.01 * peak))
    clip = samples[onset : onset + int(CLIP_S * RATE)].astype(np.float64)
    norm = float(np.linalg.norm(clip))
    return clip / norm if norm > 0 else None


def likeness(a: np.ndarray, b: np.ndarray) -> float:
    """Peak |normalised cross-correlation| of two unit-norm clips within MAX_LAG_S."""
    import scipy.signal

    full = scipy.signal.correlate(a, b, mode="full", method="fft")
    centre, lag = b.size - 1, int(MAX_LAG_S * RATE)
    return float(np.abs(full[max(0, centre - lag) : centre + lag + 1]).max())


@dataclass(frozen=True)
class Probes:
    """Rendered clips: melodic program -> clip; drum class -> clips (one per kit instrument and layer)."""

    melodic: dict[int, np.ndarray]
    drums: dict[str, list[np.ndarray]]


def _folder(src: SoundSource, cache: Path) -> Path:
    folder = cache / src.name.replace(":", "_").replace(" ", "_")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _melodic_probes(src: SoundSource, cache: Path) -> dict[int, np.ndarray]:
    if src.drums_only:
        return {}
    wav = _folder(src, cache) / "melodic.wav"
    if not wav.is_file():
        _write_probe(src, "melodic", wav)
    audio = _mono(soundfile.read(wav, dtype="float32", always_2d=True)[0].T)
    melodic = {}
    for program in range(128):
        start = int(program * (NOTE_S + GAP_S) * RATE)
        clip = _clip(audio[start : start + int((NOTE_S + GAP_S) * RATE)])
        if clip is not None:
            melodic[program] = clip
    return melodic


def _drum_probes(src: SoundSource, cache: Path) -> dict[str, list[np.ndarray]]:
    drums: dict[str, list[np.ndarray]] = {}
    if src.kind == "hydrogen":
        kit = hydrogen_kit(src.path)
        for cls in PROBE_KEYS:
            clips = [
                clip for instrument in kit.of_class(cls) for layer in instrument.layers
                if (clip := _clip(_mono(_sample(layer.path, RATE)))) is not None
            ]  # fmt: skip
            if clips:
                drums[cls] = clips
        return drums
    wav = _folder(src, cache) / "drums.wav"
    if not wav.is_file():
        _write_probe(src, "drums", wav)
    audio = _mono(soundfile.read(wav, dtype="float32", always_2d=True)[0].T)
    for k, cls in enumerate(PROBE_KEYS):
        clips = []
        for v in range(len(PROBE_VELOCITIES)):
            start = int((k * len(PROBE_VELOCITIES) + v) * DRUM_GAP_S * RATE)
            clip = _clip(audio[start : start + int(DRUM_GAP_S * RATE)])
            if clip is not None:
                clips.append(clip)
        if clips:
            drums[cls] = clips
    return drums


@lru_cache(maxsize=128)
def probes(name: str, scope: Scope, cache: Path = DEFAULT_CACHE) -> Probes:
    """The rendered clips of one source within `scope` (rendered once, cached as WAV under `cache`)."""
    src = source(name)
    if scope == "melodic":
        return Probes(_melodic_probes(src, cache), {})
    return Probes({}, _drum_probes(src, cache))


@dataclass(frozen=True)
class Shared:
    scope: Scope
    what: str  # a program number as text, or a drum class
    names: int  # shared sample names
    sound: float  # the highest likeness of the two sources' renders


def compare(a: str, b: str, cache: Path = DEFAULT_CACHE, scopes: tuple[Scope, ...] = ("melodic", "drums")) -> list[Shared]:
    """Every program and drum class both sources have, with shared names and likeness."""
    sa, sb = source(a), source(b)
    ca, cb = contents(sa), contents(sb)
    same_kind = sa.kind == sb.kind
    out = []
    pa = probes(a, "melodic", cache) if "melodic" in scopes else Probes({}, {})
    pb = probes(b, "melodic", cache) if "melodic" in scopes else Probes({}, {})
    for program in sorted(set(pa.melodic) & set(pb.melodic)):
        both = ca.programs.get(program, frozenset()) & cb.programs.get(program, frozenset())
        names = same_samples(ca, cb, both) if same_kind else 0
        out.append(Shared("melodic", str(program), names, round(likeness(pa.melodic[program], pb.melodic[program]), 4)))
    pa = probes(a, "drums", cache) if "drums" in scopes else Probes({}, {})
    pb = probes(b, "drums", cache) if "drums" in scopes else Probes({}, {})
    for cls in PROBE_KEYS:
        if cls in pa.drums and cls in pb.drums:
            both = ca.drums.get(cls, frozenset()) & cb.drums.get(cls, frozenset())
            names = same_samples(ca, cb, both) if same_kind else 0
            best = max(likeness(x, y) for x in pa.drums[cls] for y in pb.drums[cls])
            out.append(Shared("drums", cls, names, round(best, 4)))
    return out


def is_shared(row: Shared, threshold: float = SAME_SOUND) -> bool:
    return row.names > 0 or row.sound >= threshold


@lru_cache(maxsize=1024)
def _shared(a: str, b: str, scope: Scope, cache: Path = DEFAULT_CACHE) -> tuple[Shared, ...]:
    rows = tuple(r for r in compare(a, b, cache, (scope,)) if is_shared(r))
    if not rows and scope == "drums" and declared_related(a, b):
        return (Shared("drums", "the same kit (declared in benchmarks/sound_sources.py)", 0, 0.0),)
    return rows


def shared(a: str, b: str, scope: Scope, cache: Path = DEFAULT_CACHE) -> tuple[Shared, ...]:
    """What `a` and `b` share within `scope` (order-free)."""
    return _shared(*sorted((a, b)), scope, cache)  # type: ignore[arg-type]


# The melodic programs that count: all (None), these (a collection), or per source (source name -> the
# programs that source really plays, e.g. a GUS set's stand-ins instead of the programs it lacks).
Programs = Collection[int] | Mapping[str, Collection[int]] | None


def among_played(rows: Iterable[Shared], a: str, b: str, programs: Programs) -> tuple[Shared, ...]:
    """`rows` without the melodic programs that `a` and `b` do not both play."""
    rows = tuple(rows)
    if programs is None:
        return rows
    if isinstance(programs, Mapping):
        keep = set(programs.get(a, ())) & set(programs.get(b, ()))
    else:
        keep = set(programs)
    return tuple(r for r in rows if r.scope != "melodic" or int(r.what) in keep)


def assert_disjoint(
    used: Iterable[str], held_out: Iterable[str], scope: Scope, cache: Path = DEFAULT_CACHE,
    programs: Programs = None,
) -> None:
    """Refuse (SharedSamples) if any held-out source shares samples in `scope` with a used one; with
    `programs`, only the melodic programs both sides play count."""
    problems = []
    for h, u in itertools.product(sorted(set(held_out)), sorted(set(used))):
        if h == u:
            problems.append(f"{h} is used and held out at once")
            continue
        found = among_played(shared(h, u, scope, cache), h, u, programs)
        if found:
            what = ", ".join(f"{r.what} ({r.names} names, likeness {r.sound:.2f})" for r in found[:6])
            problems.append(f"{h} shares {len(found)} {scope} sounds with {u}: {what}{' ...' if len(found) > 6 else ''}")
    if problems:
        raise SharedSamples("held-out sources are not disjoint from the ones used: " + "; ".join(problems))


def families(
    names: Sequence[str], scope: Scope, cache: Path = DEFAULT_CACHE, programs: Programs = None
) -> list[list[str]]:
    """Sources joined by shared samples in `scope` (connected components), each sorted; with `programs`,
    only the melodic programs both of a pair play count."""
    parent = {n: n for n in names}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for a, b in itertools.combinations(names, 2):
        if among_played(shared(a, b, scope, cache), a, b, programs):
            parent[root(a)] = root(b)
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(root(n), []).append(n)
    return sorted(sorted(g) for g in groups.values())


# --- the command ----------------------------------------------------------------------------------------------


def run(names: Sequence[str], cache: Path) -> dict[str, Any]:
    pairs: dict[str, Any] = {}
    likeness_shared: list[float] = []
    likeness_other: list[float] = []
    for a, b in itertools.combinations(names, 2):
        rows = compare(a, b, cache)
        if not rows and not declared_related(a, b):
            continue
        for r in rows:
            (likeness_shared if r.names else likeness_other).append(r.sound)
        pairs[f"{a} ~ {b}"] = {
            "melodic_shared": [r.what for r in shared(a, b, "melodic", cache)],
            "melodic_compared": sum(r.scope == "melodic" for r in rows),
            "melodic_by_names": sum(r.scope == "melodic" and r.names > 0 for r in rows),
            "drums_shared": {r.what: {"names": r.names, "sound": r.sound} for r in shared(a, b, "drums", cache)},
            "drums": {r.what: r.sound for r in rows if r.scope == "drums"},
        }  # fmt: skip
    return {
        "header": header(threshold=SAME_SOUND, sources=list(names)),
        "sources": {n: {"kind": source(n).kind, "package": source(n).package, "recorded_drums": source(n).recorded_drums}
                    for n in names},  # fmt: skip
        "families": {"melodic": families([n for n in names if not source(n).drums_only], "melodic", cache),
                     "drums": families(names, "drums", cache)},  # fmt: skip
        "likeness": {
            "pairs with a shared sample name": _quantiles(likeness_shared),
            "pairs without one": _quantiles(likeness_other),
        },
        "pairs": pairs,
    }


def _quantiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    q = np.quantile(values, [0.0, 0.1, 0.5, 0.9, 0.99, 1.0])
    return {k: round(float(v), 3) for k, v in zip(("min", "p10", "median", "p90", "p99", "max"), q)} | {"n": len(values)}


def markdown(report: dict[str, Any]) -> str:
    head = report["header"]
    lines = ["# Shared samples between soundfonts and kits", "", header_line(head), "",
             f"Same sample: a shared name, or render likeness >= {head['threshold']}; kits declared one instrument in benchmarks/sound_sources.py count as shared.", "",
             "## Families (sources joined by any shared sample)", ""]  # fmt: skip
    for scope, groups in report["families"].items():
        lines.append(f"- {scope}: " + " | ".join(" + ".join(g) for g in groups))
    lines += ["", "## Likeness of renders", "", "| programs and classes | n | min | p10 | median | p90 | p99 | max |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, q in report["likeness"].items():
        if q:
            lines.append(f"| {label} | {q['n']} | {q['min']} | {q['p10']} | {q['median']} | {q['p90']} | {q['p99']} | {q['max']} |")
    lines += ["", "## Pairs that share something", "", "| pair | melodic programs shared (by names) | drum classes shared |",
              "|---|---|---|"]  # fmt: skip
    for pair, row in report["pairs"].items():
        if row["melodic_shared"] or row["drums_shared"]:
            drums = ", ".join(f"{c} ({v['names']} names, {v['sound']:.2f})" for c, v in row["drums_shared"].items())
            melodic = f"{len(row['melodic_shared'])} of {row['melodic_compared']} ({row['melodic_by_names']})"
            lines.append(f"| {pair} | {melodic} | {drums or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soundfonts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--sources", default="", help="comma-separated source names (default: every installed one)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    names = [s for s in args.sources.split(",") if s] or [s.name for s in installed_sources()]
    report = run(names, args.cache)
    text = markdown(report)
    md, js = write_results("soundfonts", report, text, **({"out": args.out} if args.out else {}))
    sys.stdout.write(text)
    logger.info("wrote %s and %s", md, js)
    json.dumps(report)  # the report must stay JSON
    return report


if __name__ == "__main__":
    main()
