"""Render MIDI with any packaged sound source: SoundFonts with FluidSynth, GUS patches with TiMidity++,
Hydrogen kits with benchmarks.hydrogen_kits. The one renderer of the benchmarks and the tests.

A GUS patch set (a TiMidity `.cfg`, freepats) lacks some General MIDI programs, and TiMidity++ reads
Debian's /etc/timidity/timidity.cfg (FluidR3 through its SoundFont support) before the set named with
`-c`: a program the set lacks would be played by FluidR3's samples. `render()` therefore plays such a
program with a stand-in the set has (`stand_in`), so a freepats render holds freepats' samples only;
`render_with()` renders what TiMidity itself does, which is what benchmarks/soundfonts.py must hear.

A drum-kit SoundFont (the AVL kits) keeps its kit as program 0 of bank 0, so its drum notes are played
on a melodic channel; a Hydrogen kit plays the drum notes only (it has no pitched instruments).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import tempfile
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile

from benchmarks.hydrogen_kits import hydrogen_kit, play
from benchmarks.sound_sources import SoundSource, drum_class_of_key, gus_patches

FLUIDR3 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
TIMEOUT_S = 300


def _need(program: str, package: str) -> None:
    if shutil.which(program) is None:
        raise FileNotFoundError(f"{program} is not installed; install Debian's {package}")


# Programs a GUS set is often without, played by the nearest instrument a listener would accept
# (fiddle -> violin, shanai -> oboe, banjo -> steel guitar, shamisen -> nylon guitar, koto -> harp).
DECLARED_STAND_INS = {110: 40, 111: 68, 105: 25, 106: 24, 107: 46}


def stand_in(program: int, available: Collection[int]) -> int:
    """`program` if the set has it; else its declared stand-in; else the nearest program of its GM family."""
    if program in available:
        return program
    declared = DECLARED_STAND_INS.get(program)
    if declared is not None and declared in available:
        return declared
    family = [p for p in available if p // 8 == program // 8]
    if not family:
        raise ValueError(f"the patch set has no program of program {program}'s General MIDI family")
    return min(family, key=lambda p: (abs(p - program), p))


def with_stand_ins(midi: pretty_midi.PrettyMIDI, available: Collection[int]) -> pretty_midi.PrettyMIDI:
    """A copy of `midi` whose melodic instruments play programs in `available`."""
    out = copy.deepcopy(midi)
    for inst in out.instruments:
        if not inst.is_drum:
            inst.program = stand_in(inst.program, available)
    return out


def _timidity(midi: pretty_midi.PrettyMIDI, wav: Path, sample_rate: int, cfg: Path) -> Path:
    _need("timidity", "timidity")
    mid = wav.with_suffix(".mid")
    midi.write(str(mid))
    subprocess.run(
        # --preserve-silence: TiMidity drops the silence before the first note by default, which
        # would move every onset earlier than its MIDI time.
        ["timidity", "-c", str(cfg), "-Ow", "-s", str(sample_rate), "--reverb=d", "--chorus=d",
         "-A100", "--preserve-silence", "-o", str(wav), str(mid)],
        check=True, capture_output=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    return wav


def render(midi: pretty_midi.PrettyMIDI, wav: Path, sample_rate: int = 44100, sound_font: Path | None = None) -> Path:
    """Render `midi` into `wav` (and the MIDI file played beside it, `wav` with `.mid`): with the
    fluidsynth command line (Debian package `fluidsynth`) and FluidR3 GM unless told; a TiMidity config
    (`.cfg`) with TiMidity++, each program the set lacks played by its stand-in."""
    font = sound_font or FLUIDR3
    if not font.is_file():
        raise FileNotFoundError(f"no soundfont at {font}; install Debian's fluid-soundfont-gm (or the font's package)")
    if font.suffix == ".cfg":
        programs, _ = gus_patches(font)
        return _timidity(with_stand_ins(midi, set(programs)), wav, sample_rate, font)
    _need("fluidsynth", "fluidsynth")
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
        with tempfile.TemporaryDirectory() as work:
            shutil.move(_timidity(midi, Path(work) / "in.wav", sample_rate, source.path), wav)
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
