"""The evaluation set: pieces composed here, rendered with FluidSynth, with the MIDI kept as ground truth.

    python -m benchmarks.evalset [--subset ci] [--cache DIR]

Every piece is written by a seeded composer (nothing copyrighted): a known key, tempo and meter, a chord
progression from the key, and up to four parts whose roles map to the service's stems (lead melody ->
"vocals", bass -> "bass", harmony/accompaniment -> "other", drums -> "drums"). Each piece is rendered
twice over: the whole mix (what the service gets) and every part alone (what the oracle gets).

Renders are cached under `<cache>/<EVALSET_VERSION>-<soundfont>/<piece>/`; change EVALSET_VERSION whenever
the composer, the piece list or the rendering changes. As a guard against forgetting, each piece's
truth.json also records a fingerprint of the notes it was rendered from, and a piece whose composed
notes differ is rendered again: stale audio is never scored against new ground truth.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pretty_midi

from benchmarks.pieces import soundfont
from benchmarks.render import render

logger = logging.getLogger(__name__)

EVALSET_VERSION = "v1"
DEFAULT_CACHE = Path(__file__).parent / ".evalset"

ROLE_STEM = {"lead": "vocals", "bass": "bass", "harmony": "other", "drums": "drums"}
PITCHED_ROLES = ("lead", "bass", "harmony")
# The stable order of roles; also seeds each part's own random stream, so adding a part to a piece
# never changes the notes of the others.
ROLE_ORDER = ("lead", "bass", "harmony", "drums")

PITCH_CLASSES = {"C": 0, "Db": 1, "D": 2, "Eb": 3, "E": 4, "F": 5, "F#": 6, "G": 7, "Ab": 8, "A": 9, "Bb": 10, "B": 11}
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}

# Chord progressions as scale degrees (0 = tonic). Every one starts on the tonic, and every piece
# ends on a held tonic bar, which is what makes its key unambiguous to a listener.
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4), (0, 3, 5, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 4), (0, 3, 6, 2)),
}

# Sounding ranges (MIDI pitch) of the lead instruments, kept to their comfortable middle.
LEAD_RANGE = {73: (67, 89), 40: (62, 86), 56: (58, 79), 65: (56, 77), 53: (57, 76), 71: (55, 81)}
BASS_RANGE = (28, 50)
HARMONY_RANGE = (53, 76)
FIRST_DOWNBEAT = 0.5  # seconds of silence before the first note, as most recordings have
TAIL = 1.5  # seconds after the last bar, so releases and reverb are not cut off


@dataclass(frozen=True)
class Part:
    role: str  # lead, bass, harmony or drums
    program: int  # General MIDI program, 0-based; ignored for drums
    style: str  # how the part plays (see the _lead/_bass/_harmony functions, or a drum_patterns style)


@dataclass(frozen=True)
class PieceSpec:
    name: str
    split: str  # "tune" (presets may be chosen on it) or "test" (reported only)
    subset: bool  # part of the small CI subset
    seconds: float  # target length; the piece is a whole number of bars no longer than this
    tempo: float
    beats_per_bar: int
    key: str | None  # mir_eval form, "C major" / "A minor"; None for drums alone
    parts: tuple[Part, ...]
    seed: int

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(p.role for p in self.parts)

    @property
    def has_drums(self) -> bool:
        return "drums" in self.roles

    @property
    def pitched(self) -> bool:
        return any(r in PITCHED_ROLES for r in self.roles)


def _parts(
    lead: int | None = None,
    bass: int | None = None,
    harmony: int | None = None,
    drums: str | None = None,
    *,
    lead_style: str = "song",
    bass_style: str = "root",
    harmony_style: str = "block",
) -> tuple[Part, ...]:
    parts = []
    if lead is not None:
        parts.append(Part("lead", lead, lead_style))
    if bass is not None:
        parts.append(Part("bass", bass, bass_style))
    if harmony is not None:
        parts.append(Part("harmony", harmony, harmony_style))
    if drums is not None:
        parts.append(Part("drums", 0, drums))
    return tuple(parts)


# Programs: lead Flute 73, Violin 40, Trumpet 56, Alto Sax 65, Voice Oohs 53, Clarinet 71; bass Acoustic 32,
# Finger 33, Pick 34, Synth Bass 1 38; harmony Piano 0, E-Piano 4, Organ 16, Nylon Guitar 24, Strings 48.
# Splits alternate within each kind of mix (solo, duo, trio, band, drums), and lead/bass/harmony
# instruments differ between the splits where they can, so presets chosen on "tune" are measured on
# sounds they were not chosen on.
PIECES: tuple[PieceSpec, ...] = (
    # The CI subset: three short pieces covering solo, ensemble without drums and ensemble with drums.
    PieceSpec("ci_solo_piano", "test", True, 10, 108, 4, "G major", _parts(harmony=0, harmony_style="arpeggio"), 11),
    PieceSpec("ci_trio", "tune", True, 10, 112, 4, "D minor", _parts(73, 33, 4, bass_style="root_fifth"), 12),
    PieceSpec("ci_band", "test", True, 10, 124, 4, "A minor",
              _parts(56, 34, 0, "rock", bass_style="eighths", harmony_style="comp"), 13),
    # Solos.
    PieceSpec("solo_bass", "tune", False, 20, 84, 4, "E minor", _parts(bass=33, bass_style="walking"), 21),
    PieceSpec("solo_flute", "test", False, 20, 100, 4, "F major", _parts(lead=73), 22),
    PieceSpec("solo_guitar_waltz", "tune", False, 20, 90, 3, "A major",
              _parts(harmony=24, harmony_style="arpeggio"), 23),
    # Duos.
    PieceSpec("duo_sax_piano", "tune", False, 20, 88, 4, "Bb major", _parts(65, None, 0), 31),
    PieceSpec("duo_bass_organ", "test", False, 20, 108, 4, "G minor",
              _parts(None, 32, 16, bass_style="half", harmony_style="pad"), 32),
    PieceSpec("duo_clarinet_bass", "tune", False, 20, 120, 4, "Eb major", _parts(71, 38, bass_style="funk"), 33),
    # Trio without drums.
    PieceSpec("trio_oohs_strings", "test", False, 20, 76, 4, "F# minor",
              _parts(53, 33, 48, bass_style="root_fifth", harmony_style="pad"), 41),
    # Bands, with drums.
    PieceSpec("band_rock", "tune", False, 20, 132, 4, "E major",
              _parts(56, 34, 0, "rock", bass_style="eighths", harmony_style="comp"), 51),
    PieceSpec("band_disco", "test", False, 20, 118, 4, "B minor",
              _parts(73, 38, 4, "disco", bass_style="octaves", harmony_style="comp"), 52),
    PieceSpec("band_halftime", "tune", False, 20, 150, 4, "D major",
              _parts(40, 33, 48, "halftime", bass_style="half", harmony_style="pad"), 53),
    PieceSpec("band_waltz", "test", False, 20, 138, 3, "C major",
              _parts(71, 32, 24, "waltz", bass_style="root_fifth", harmony_style="arpeggio"), 54),
    PieceSpec("band_sixteenths", "test", False, 20, 96, 4, "C minor",
              _parts(53, 33, 16, "sixteenths", bass_style="funk"), 55),
    # Drums with little or nothing else.
    PieceSpec("drums_only", "tune", False, 20, 104, 4, None, _parts(drums="rock"), 61),
    PieceSpec("bass_drums", "test", False, 20, 126, 4, "G major",
              _parts(bass=34, drums="disco", bass_style="octaves"), 62),
)  # fmt: skip


def select(subset: str = "full", split: str | None = None) -> list[PieceSpec]:
    """`subset`: "full" (every piece) or "ci" (the three short ones); `split`: None, "tune" or "test"."""
    if subset not in ("full", "ci"):
        raise ValueError(f"unknown subset {subset!r}; use 'full' or 'ci'")
    return [p for p in PIECES if (subset == "full" or p.subset) and (split is None or p.split == split)]


# --- ground truth -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TruthNote:
    start: float
    end: float
    pitch: int  # MIDI pitch; General MIDI percussion number for drums
    velocity: int


@dataclass
class GroundTruth:
    name: str
    split: str
    subset: bool
    tempo_bpm: float
    beats_per_bar: int
    time_signature: str
    key: str | None
    duration: float
    beats: list[float]
    downbeats: list[float]
    instruments: dict[str, dict[str, Any]]  # role -> {"stem", "program", "style"}
    notes: dict[str, list[TruthNote]] = field(default_factory=dict)  # role -> notes

    def stem_notes(self, stem: str) -> list[TruthNote]:
        return [n for role, notes in self.notes.items() if ROLE_STEM[role] == stem for n in notes]

    def pitched_notes(self) -> list[TruthNote]:
        return [n for role, notes in self.notes.items() if role in PITCHED_ROLES for n in notes]

    def drum_notes(self) -> list[TruthNote]:
        return list(self.notes.get("drums", []))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["notes"] = {role: [asdict(n) for n in notes] for role, notes in self.notes.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GroundTruth:
        notes = {role: [TruthNote(**n) for n in rows] for role, rows in data["notes"].items()}
        return cls(**{**data, "notes": notes})


# --- the composer -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Harmony:
    tonic: int  # pitch class
    mode: str
    chords: list[tuple[int, ...]]  # per bar: the chord's pitch classes, root first

    def scale(self, bar: int) -> list[int]:
        """The scale's pitch classes, with the raised leading tone under a minor key's dominant."""
        pcs = [(self.tonic + s) % 12 for s in SCALES[self.mode]]
        if self.mode == "minor" and self.chords[bar][0] == (self.tonic + 7) % 12:
            pcs[6] = (self.tonic + 11) % 12
        return pcs


def _harmony(spec: PieceSpec, bars: int, rng: np.random.Generator) -> _Harmony:
    assert spec.key is not None
    name, mode = spec.key.split()
    tonic = PITCH_CLASSES[name]
    options = PROGRESSIONS[mode]
    progression = options[int(rng.integers(len(options)))]
    scale = [(tonic + s) % 12 for s in SCALES[mode]]
    chords = []
    for bar in range(bars):
        degree = 0 if bar == bars - 1 else progression[bar % len(progression)]
        chord = tuple(scale[(degree + k) % 7] for k in (0, 2, 4))
        if mode == "minor" and degree == 4:
            chord = (chord[0], (chord[1] + 1) % 12, chord[2])  # harmonic minor: a major dominant
        chords.append(chord)
    return _Harmony(tonic, mode, chords)


def _nearest(pc: int, around: int, low: int, high: int) -> int:
    """The pitch of pitch class `pc` closest to `around`, inside [low, high]."""
    candidates = [p for p in range(low, high + 1) if p % 12 == pc]
    return min(candidates, key=lambda p: (abs(p - around), p))


_LEAD_RHYTHMS = {
    4: (
        (1, 1, 1, 1), (2, 1, 1), (1.5, 0.5, 1, 1), (1, 0.5, 0.5, 2), (0.5, 0.5, 1, 0.5, 0.5, 1), (3, 1), (1, 1, 2),
        (2, 2),
    ),
    3: ((1, 1, 1), (2, 1), (1.5, 0.5, 1), (1, 0.5, 0.5, 1), (3,)),
}
# Sixteenth-note figures, for tempos where they stay playable (<= 112 BPM: 134 ms or longer). They
# keep notes shorter than basic-pitch's 128 ms minimum in the set, so a preset that simply drops
# short notes is not mistaken for a better one.
_FAST_RHYTHMS = {
    4: ((0.25, 0.25, 0.5, 1, 2), (1, 0.25, 0.25, 0.25, 0.25, 2), (0.5, 0.25, 0.25, 1, 1, 1)),
    3: ((0.25, 0.25, 0.5, 1, 1), (1, 0.25, 0.25, 0.25, 0.25, 1)),
}
FAST_TEMPO = 112


Notes = list[pretty_midi.Note]


def _lead(spec: PieceSpec, part: Part, harmony: _Harmony, bars: int, rng: np.random.Generator) -> Notes:
    """A singable line: chord tones on downbeats, steps and small leaps between, an occasional rest."""
    beat = 60.0 / spec.tempo
    low, high = LEAD_RANGE.get(part.program, (60, 84))
    centre = (low + high) // 2
    notes: list[pretty_midi.Note] = []
    pitch = _nearest(harmony.chords[0][0], centre, low, high)
    for bar in range(bars):
        bar_start = FIRST_DOWNBEAT + bar * spec.beats_per_bar * beat
        scale = harmony.scale(bar)
        if bar == bars - 1:
            rhythm: Sequence[float] = (float(spec.beats_per_bar),)
        else:
            options = _LEAD_RHYTHMS[spec.beats_per_bar]
            if spec.tempo <= FAST_TEMPO:
                options = options + _FAST_RHYTHMS[spec.beats_per_bar]
            rhythm = options[int(rng.integers(len(options)))]
        position = 0.0
        for i, length in enumerate(rhythm):
            if i == 0:
                # Downbeat: the chord tone nearest the line (the tonic on the last bar).
                targets = [harmony.chords[bar][0]] if bar == bars - 1 else list(harmony.chords[bar])
                pitch = min((_nearest(pc, pitch, low, high) for pc in targets), key=lambda p: abs(p - pitch))
            else:
                pool = sorted(p for p in range(low, high + 1) if p % 12 in scale)
                index = min(range(len(pool)), key=lambda k: abs(pool[k] - pitch))
                step = int(rng.choice([-2, -1, -1, 1, 1, 2, 3, -3]))
                # Lean back towards the middle of the range so the line never sits at an edge.
                if pool[index] > centre + 5:
                    step = -abs(step)
                elif pool[index] < centre - 5:
                    step = abs(step)
                pitch = pool[int(np.clip(index + step, 0, len(pool) - 1))]
            rest = i > 0 and bar != bars - 1 and rng.random() < 0.08
            if not rest:
                start = bar_start + position * beat
                end = start + length * beat * (0.97 if bar == bars - 1 else 0.9)
                notes.append(pretty_midi.Note(int(rng.integers(88, 112)), pitch, start, end))
            position += length
    return notes


def _bass(spec: PieceSpec, part: Part, harmony: _Harmony, bars: int, rng: np.random.Generator) -> Notes:
    beat = 60.0 / spec.tempo
    bpb = spec.beats_per_bar
    low, high = BASS_RANGE
    notes: list[pretty_midi.Note] = []

    def add(pitch: int, start_beat: float, length: float, bar_start: float) -> None:
        start = bar_start + start_beat * beat
        notes.append(pretty_midi.Note(int(rng.integers(92, 112)), pitch, start, start + length * beat * 0.88))

    for bar in range(bars):
        bar_start = FIRST_DOWNBEAT + bar * bpb * beat
        chord = harmony.chords[bar]
        root = _nearest(chord[0], 38, low, high)
        fifth = _nearest(chord[2], root + 7, low, high)
        if bar == bars - 1:
            add(root, 0, bpb, bar_start)
        elif part.style == "root":
            for k in range(bpb):
                add(root, k, 1, bar_start)
        elif part.style == "root_fifth":
            for k in range(bpb):
                add(fifth if k % 2 else root, k, 1, bar_start)
        elif part.style == "half":
            for k, pitch in zip(range(0, bpb, 2), (root, fifth)):
                add(pitch, k, min(2, bpb - k), bar_start)
        elif part.style == "eighths":
            for k in range(2 * bpb):
                add(root, k / 2, 0.5, bar_start)
        elif part.style == "octaves":
            octave = root + 12 if root + 12 <= high + 12 else root
            for k in range(2 * bpb):
                add(octave if k % 2 else root, k / 2, 0.5, bar_start)
        elif part.style == "funk":
            # Root on the beat, sixteenth pickups (octave, then root) into beats 2 and 4.
            for k in range(bpb):
                add(root, k, 0.5, bar_start)
                if k % 2 == 0:
                    add(root + 12, k + 0.5, 0.25, bar_start)
                    add(root, k + 0.75, 0.25, bar_start)
        elif part.style == "walking":
            # Chord tones then a chromatic approach to the next bar's root.
            next_root = _nearest(harmony.chords[bar + 1][0], root, low, high)
            third = _nearest(chord[1], root + 4, low, high)
            line = [root, third, fifth][: bpb - 1] + [next_root + (1 if next_root < root else -1)]
            for k, pitch in enumerate(line):
                add(int(np.clip(pitch, low, high)), k, 1, bar_start)
        else:
            raise ValueError(f"unknown bass style {part.style!r}")
    return notes


def _voicing(chord: tuple[int, ...], previous: list[int] | None) -> list[int]:
    """The inversion of a triad inside HARMONY_RANGE that moves least from the previous voicing."""
    low, high = HARMONY_RANGE
    best: list[int] | None = None
    best_cost = float("inf")
    for bottom in range(low, high - 7):
        if bottom % 12 not in chord:
            continue
        voicing = [bottom]
        for _ in range(2):
            nxt = voicing[-1] + 1
            while nxt % 12 not in chord or nxt % 12 in {v % 12 for v in voicing}:
                nxt += 1
            voicing.append(nxt)
        if voicing[-1] > high:
            continue
        centre = (low + high) / 2
        cost = sum(abs(a - b) for a, b in zip(voicing, previous)) if previous else abs(np.mean(voicing) - centre)
        if cost < best_cost:
            best, best_cost = voicing, cost
    assert best is not None
    return best


def _harmony_part(spec: PieceSpec, part: Part, harmony: _Harmony, bars: int, rng: np.random.Generator) -> Notes:
    beat = 60.0 / spec.tempo
    bpb = spec.beats_per_bar
    notes: list[pretty_midi.Note] = []
    voicing: list[int] | None = None

    def chord_at(pitches: Iterable[int], start: float, length: float, legato: float, velocity: int) -> None:
        for p in pitches:
            notes.append(pretty_midi.Note(velocity, p, start, start + length * beat * legato))

    for bar in range(bars):
        bar_start = FIRST_DOWNBEAT + bar * bpb * beat
        chord = harmony.chords[bar]
        voicing = _voicing(chord, voicing)
        velocity = int(rng.integers(62, 80))
        if bar == bars - 1 or part.style == "pad":
            chord_at(voicing, bar_start, bpb, 0.97, velocity)
        elif part.style == "block":
            # Whole or half bars, picked per bar.
            halves = (0, 2) if bpb == 4 and rng.random() < 0.5 else (0,)
            for k in halves:
                chord_at(voicing, bar_start + k * beat, bpb / len(halves), 0.92, velocity)
        elif part.style == "comp":
            # The root low on the downbeat, chord stabs off it: what a band's keyboard does.
            chord_at([voicing[0] - 12], bar_start, 1, 0.8, velocity)
            for k in range(1, bpb):
                chord_at(voicing, bar_start + k * beat, 0.5, 0.8, velocity)
        elif part.style == "arpeggio":
            # A low root held through the bar, the chord broken in eighths above it, up then down.
            chord_at([_nearest(chord[0], voicing[0] - 12, 36, 55)], bar_start, bpb, 0.95, velocity)
            shape = voicing + [voicing[0] + 12] + voicing[:0:-1]
            for k in range(2 * bpb):
                start = bar_start + k * beat / 2
                chord_at([shape[k % len(shape)]], start, 0.5, 0.95, velocity)
        else:
            raise ValueError(f"unknown harmony style {part.style!r}")
    return notes


def _drums(spec: PieceSpec, part: Part, bars: int, rng: np.random.Generator) -> pretty_midi.Instrument:
    from benchmarks.drum_patterns import drum_part  # imported late: only pieces with drums need it

    return drum_part(part.style, bars, spec.tempo, spec.beats_per_bar, FIRST_DOWNBEAT, rng)


def bars_of(spec: PieceSpec) -> int:
    bar = spec.beats_per_bar * 60.0 / spec.tempo
    # The nearest whole number of bars, so a piece lasts about `seconds` whatever its tempo.
    return max(2, int(round((spec.seconds - FIRST_DOWNBEAT - TAIL) / bar)))


def compose(spec: PieceSpec) -> dict[str, pretty_midi.Instrument]:
    """The piece's parts as MIDI instruments, by role. Deterministic for a spec."""
    bars = bars_of(spec)
    parts: dict[str, pretty_midi.Instrument] = {}
    harmony = _harmony(spec, bars, np.random.default_rng(spec.seed)) if spec.key else None
    for part in spec.parts:
        rng = np.random.default_rng((spec.seed, ROLE_ORDER.index(part.role)))
        if part.role == "drums":
            instrument = _drums(spec, part, bars, rng)
            instrument.is_drum = True
        else:
            assert harmony is not None, f"{spec.name}: pitched parts need a key"
            make = {"lead": _lead, "bass": _bass, "harmony": _harmony_part}[part.role]
            instrument = pretty_midi.Instrument(program=part.program)
            instrument.notes = make(spec, part, harmony, bars, rng)
        instrument.name = part.role
        parts[part.role] = instrument
    return parts


def _midi(spec: PieceSpec, instruments: Iterable[pretty_midi.Instrument], end: float) -> pretty_midi.PrettyMIDI:
    # High resolution so the written ticks stay within a millisecond of the composed times.
    midi = pretty_midi.PrettyMIDI(resolution=960, initial_tempo=spec.tempo)
    for instrument in instruments:
        copy = pretty_midi.Instrument(program=instrument.program, is_drum=instrument.is_drum, name=instrument.name)
        copy.notes = list(instrument.notes)
        # An inert controller event at the piece's end: every render (mix or one part) then has the
        # same length, so the oracle's audio lines up with the mix's.
        copy.control_changes.append(pretty_midi.ControlChange(20, 0, end))
        midi.instruments.append(copy)
    return midi


def ground_truth(spec: PieceSpec, midi_file: Path) -> GroundTruth:
    """Truth read back from the MIDI file that was rendered, so times are the ticks FluidSynth played."""
    midi = pretty_midi.PrettyMIDI(str(midi_file))
    bars = bars_of(spec)
    beat = 60.0 / spec.tempo
    beats = [round(FIRST_DOWNBEAT + k * beat, 6) for k in range(bars * spec.beats_per_bar)]
    by_role = {p.role: p for p in spec.parts}
    notes = {
        inst.name: [
            TruthNote(round(n.start, 6), round(n.end, 6), n.pitch, n.velocity)
            for n in sorted(inst.notes, key=lambda n: (n.start, n.pitch))
        ]
        for inst in midi.instruments
    }
    return GroundTruth(
        name=spec.name,
        split=spec.split,
        subset=spec.subset,
        tempo_bpm=spec.tempo,
        beats_per_bar=spec.beats_per_bar,
        time_signature=f"{spec.beats_per_bar}/4",
        key=spec.key,
        duration=round(FIRST_DOWNBEAT + bars * spec.beats_per_bar * beat + TAIL, 6),
        beats=beats,
        downbeats=beats[:: spec.beats_per_bar],
        instruments={
            role: {"stem": ROLE_STEM[role], "program": p.program if role != "drums" else None, "style": p.style}
            for role, p in by_role.items()
        },
        notes=notes,
    )


# --- rendering and the cache ------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedPiece:
    spec: PieceSpec
    folder: Path
    mix: Path  # the whole piece
    parts: dict[str, Path]  # role -> that part alone
    truth: GroundTruth


def cache_folder(cache: Path = DEFAULT_CACHE, sound_font: Path | None = None) -> Path:
    return cache / f"{EVALSET_VERSION}-{(sound_font or soundfont()).stem}"


def fingerprint(spec: PieceSpec) -> str:
    """Changes whenever the notes the piece is rendered from change (composing is cheap; rendering is not).

    Changes to how notes become audio (render settings, the soundfont's contents) are not seen here:
    bump EVALSET_VERSION for those.
    """
    digest = hashlib.sha256(f"{EVALSET_VERSION}|{spec!r}|{FIRST_DOWNBEAT}|{TAIL}".encode())
    for role, instrument in sorted(compose(spec).items()):
        digest.update(f"{role}|{instrument.program}|{instrument.is_drum}|".encode())
        digest.update(";".join(f"{n.start:.6f},{n.end:.6f},{n.pitch},{n.velocity}" for n in instrument.notes).encode())
    return digest.hexdigest()[:16]


def _cached(folder: Path, spec: PieceSpec) -> bool:
    truth_file = folder / "truth.json"
    if not (truth_file.is_file() and (folder / "mix.wav").is_file()):
        return False
    if not all((folder / f"{role}.wav").is_file() for role in spec.roles):
        return False
    try:
        return bool(json.loads(truth_file.read_text()).get("fingerprint") == fingerprint(spec))
    except ValueError:
        return False


def build_piece(spec: PieceSpec, cache: Path = DEFAULT_CACHE, sound_font: Path | None = None) -> RenderedPiece:
    """Render a piece (mix and parts) unless its cached renders are current; truth.json is written last."""
    folder = cache_folder(cache, sound_font) / spec.name
    truth_file = folder / "truth.json"
    parts = {role: folder / f"{role}.wav" for role in spec.roles}
    mix = folder / "mix.wav"
    if not _cached(folder, spec):
        started = time.monotonic()
        folder.mkdir(parents=True, exist_ok=True)
        instruments = compose(spec)
        end = FIRST_DOWNBEAT + bars_of(spec) * spec.beats_per_bar * 60.0 / spec.tempo + TAIL
        render(_midi(spec, instruments.values(), end), mix, sound_font=sound_font)
        for role, instrument in instruments.items():
            render(_midi(spec, [instrument], end), parts[role], sound_font=sound_font)
        truth = ground_truth(spec, mix.with_suffix(".mid"))
        truth_file.write_text(json.dumps({**truth.to_json(), "fingerprint": fingerprint(spec)}, indent=1))
        logger.info("rendered %s (%d parts) in %.1f s", spec.name, len(parts), time.monotonic() - started)
    data = json.loads(truth_file.read_text())
    data.pop("fingerprint", None)
    truth = GroundTruth.from_json(data)
    return RenderedPiece(spec, folder, mix, parts, truth)


def build(
    pieces: Sequence[PieceSpec], cache: Path = DEFAULT_CACHE, sound_font: Path | None = None
) -> list[RenderedPiece]:
    return [build_piece(spec, cache, sound_font) for spec in pieces]


def describe(spec: PieceSpec) -> str:
    """The instruments of a piece in words, for tables."""
    names = []
    for part in spec.parts:
        if part.role == "drums":
            names.append(f"drums ({part.style})")
        else:
            program = pretty_midi.program_to_instrument_name(part.program)
            names.append(f"{part.role}: {program} ({part.style})")
    return "; ".join(names)


def table(pieces: Sequence[PieceSpec]) -> str:
    lines = [
        "| piece | split | subset | seconds | tempo | meter | key | instruments |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in pieces:
        bar = p.beats_per_bar * 60.0 / p.tempo
        seconds = FIRST_DOWNBEAT + bars_of(p) * bar + TAIL
        lines.append(
            f"| {p.name} | {p.split} | {'ci' if p.subset else ''} | {seconds:.1f} | {p.tempo:g} | "
            f"{p.beats_per_bar}/4 | {p.key or '-'} | {describe(p)} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subset", choices=("full", "ci"), default="full")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    pieces = select(args.subset)
    started = time.monotonic()
    build(pieces, args.cache)
    logger.info("%d pieces ready in %.1f s under %s", len(pieces), time.monotonic() - started, cache_folder(args.cache))
    sys.stdout.write(table(pieces) + "\n")


if __name__ == "__main__":
    main()
