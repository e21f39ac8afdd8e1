"""Test pieces with known notes: written as MIDI, rendered to audio with FluidSynth and a GM soundfont."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pretty_midi

SOUNDFONT_CANDIDATES = (
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    Path("/usr/share/soundfonts/FluidR3_GM.sf2"),
)


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


def render(midi: pretty_midi.PrettyMIDI, wav: Path, sample_rate: int = 44100) -> Path:
    """Render with the fluidsynth command line (Debian package `fluidsynth`)."""
    if shutil.which("fluidsynth") is None:
        raise FileNotFoundError("fluidsynth is not installed; install Debian's fluidsynth")
    mid = wav.with_suffix(".mid")
    midi.write(str(mid))
    subprocess.run(
        ["fluidsynth", "-ni", "-q", "-g", "0.7", "-r", str(sample_rate), "-F", str(wav), str(soundfont()), str(mid)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return wav
