"""Test pieces with known notes, written as MIDI (rendered with benchmarks.render): a melody and a band
ensemble, used by the tests, the speed and chaos benchmarks."""

from __future__ import annotations

from pathlib import Path

import pretty_midi

from benchmarks.render import FLUIDR3

SOUNDFONT_CANDIDATES = (FLUIDR3, Path("/usr/share/soundfonts/FluidR3_GM.sf2"))
# A second, independent General MIDI set (Debian's timgm6mb-soundfont): what is tuned on one kit is
# measured on the other.
TIMGM6MB = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")


def soundfont() -> Path:
    for path in SOUNDFONT_CANDIDATES:
        if path.is_file():
            return path
    raise FileNotFoundError("No General MIDI soundfont; install Debian's fluid-soundfont-gm")


def melody(program: int = 0, seconds: float = 12.0, tempo: float = 100.0) -> pretty_midi.PrettyMIDI:
    """A monophonic line with leaps, repeated notes and varied lengths (no two notes overlap)."""
    pitches = [60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60, 55, 57, 59, 60, 60, 72, 70, 69, 65, 62, 59, 55, 60]
    beat = 60.0 / tempo
    midi = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    instrument = pretty_midi.Instrument(program=program, name="melody")
    t, i = 0.5, 0
    while t < seconds - 1.0:
        length = beat * (1.0 if i % 3 else 1.5)
        instrument.notes.append(pretty_midi.Note(96, pitches[i % len(pitches)], t, t + length * 0.9))
        t += length
        i += 1
    midi.instruments.append(instrument)
    return midi


def ensemble(seconds: float = 30.0, tempo: float = 100.0) -> pretty_midi.PrettyMIDI:
    """Piano melody, bass line, string pad and drums: something for every stem to do."""
    midi = melody(program=0, seconds=seconds, tempo=tempo)
    beat = 60.0 / tempo
    bass = pretty_midi.Instrument(program=33, name="bass")
    pad = pretty_midi.Instrument(program=48, name="strings")
    drums = pretty_midi.Instrument(program=0, is_drum=True, name="drums")
    roots = [36, 41, 43, 36]
    bar, t = 0, 0.5
    while t < seconds - 4 * beat:
        root = roots[bar % len(roots)]
        for k in range(4):
            bass.notes.append(pretty_midi.Note(100, root + (7 if k == 2 else 0), t + k * beat, t + (k + 0.8) * beat))
            drums.notes.append(pretty_midi.Note(100, 36 if k % 2 == 0 else 38, t + k * beat, t + k * beat + 0.1))
            drums.notes.append(pretty_midi.Note(70, 42, t + (k + 0.5) * beat, t + (k + 0.5) * beat + 0.05))
        for offset in (12, 16, 19):
            pad.notes.append(pretty_midi.Note(60, root + offset + 12, t, t + 4 * beat * 0.95))
        bar, t = bar + 1, t + 4 * beat
    midi.instruments.extend([bass, pad, drums])
    return midi
