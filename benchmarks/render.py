"""Render MIDI with any packaged sound source: SoundFonts with FluidSynth, GUS patches with TiMidity++,
Hydrogen kits with benchmarks.hydrogen_kits. The one renderer of the benchmarks and the tests.

A drum-kit SoundFont (the AVL kits) keeps its kit as program 0 of bank 0, so its drum notes are played
on a melodic channel; a Hydrogen kit plays the drum notes only (it has no pitched instruments).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile

from benchmarks.hydrogen_kits import hydrogen_kit, play
from benchmarks.sound_sources import SoundSource, drum_class_of_key

FLUIDR3 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
TIMEOUT_S = 300


def _need(program: str, package: str) -> None:
    if shutil.which(program) is None:
        raise FileNotFoundError(f"{program} is not installed; install Debian's {package}")


def render(midi: pretty_midi.PrettyMIDI, wav: Path, sample_rate: int = 44100, sound_font: Path | None = None) -> Path:
    """Render with the fluidsynth command line (Debian package `fluidsynth`); FluidR3 GM unless told."""
    _need("fluidsynth", "fluidsynth")
    font = sound_font or FLUIDR3
    if not font.is_file():
        raise FileNotFoundError(f"no soundfont at {font}; install Debian's fluid-soundfont-gm")
    mid = wav.with_suffix(".mid")
    midi.write(str(mid))
    subprocess.run(
        ["fluidsynth", "-ni", "-q", "-g", "0.7", "-r", str(sample_rate), "-F", str(wav), str(font), str(mid)],
        check=True, capture_output=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    return wav


def _drums_as_melodic(midi: pretty_midi.PrettyMIDI) -> pretty_midi.PrettyMIDI:
    out = pretty_midi.PrettyMIDI(resolution=midi.resolution, initial_tempo=120.0)
    for inst in midi.instruments:
        if inst.is_drum:
            moved = pretty_midi.Instrument(program=0, is_drum=False, name=inst.name)
            moved.notes = list(inst.notes)
            out.instruments.append(moved)
    return out


def render_with(
    source: SoundSource, midi: pretty_midi.PrettyMIDI, wav: Path, sample_rate: int = 44100, seed: int = 0
) -> Path:
    """`midi` rendered with `source` into a 16-bit stereo WAV at `sample_rate`."""
    if source.kind == "sf2":
        return render(_drums_as_melodic(midi) if source.drums_only else midi, wav, sample_rate, source.path)
    if source.kind == "gus":
        _need("timidity", "timidity")
        with tempfile.TemporaryDirectory() as work:
            mid = Path(work) / "in.mid"
            midi.write(str(mid))
            subprocess.run(
                # --preserve-silence: TiMidity drops the silence before the first note by default, which
                # would move every onset earlier than its MIDI time.
                ["timidity", "-c", str(source.path), "-Ow", "-s", str(sample_rate), "--reverb=d", "--chorus=d",
                 "-A100", "--preserve-silence", "-o", str(wav), str(mid)],
                check=True, capture_output=True, timeout=TIMEOUT_S,
            )  # fmt: skip
        return wav
    kit = hydrogen_kit(source.path)
    hits = [
        (n.start, cls, n.velocity / 127.0)
        for inst in midi.instruments if inst.is_drum for n in inst.notes
        if (cls := drum_class_of_key(n.pitch)) is not None
    ]  # fmt: skip
    seconds = max((n.end for inst in midi.instruments for n in inst.notes), default=0.0) + 2.0
    audio, _ = play(kit, hits, seconds, sample_rate, np.random.default_rng(seed))
    peak = float(np.abs(audio).max())
    if peak > 0.95:
        audio *= 0.95 / peak
    soundfile.write(wav, audio.T, sample_rate, subtype="PCM_16")
    return wav
