"""Drum transcription inside band mixes, through separation=hpss, exactly as the service runs it.

    OMP_NUM_THREADS=1 python -m benchmarks.drums_in_mixes [--split test] [--fonts FluidR3_GM sf_GMbank]
        [--drums key=value ...] [--hpss key=value ...] [--cache DIR] [--per-piece]

For each soundfont and each piece of the split: compose a band piece (lead, bass, keys or guitar and
a drum part; benchmarks.evalset's composer, benchmarks.drum_patterns' grooves, several tempos, meters
and GM drum kits, the TR-808 one among them), render the mix with FluidSynth, then do what the
service does with an upload: decode it (serve_app.domain.audio.decode), split it with
music.engines.hpss.hpss_stems, write the drums stem as 16-bit WAV and read it back, and give it to
music.engines.drums.DrumTranscriber. Prints onset F1 (mir_eval's 50 ms window, matches pooled over
the split's pieces) per class: kick, snare, closed hi-hat (42 and pedal 44), open hi-hat (46) and
all hi-hats (was a hat found at all), per soundfont.

Held out, so a tuned value is never judged on what it was tuned on:
- split "tune" (seeds 100..) on TimGM6mb is what thresholds and HPSS settings may be chosen on
  (the drum templates come from TimGM6mb kits too);
- split "test" (seeds 200..) on FluidR3_GM and sf_GMbank (csound's GM bank) is what is reported.
The two splits play the same kinds of pieces with different notes (seeds).

`--drums` / `--hpss` override DrumConfig / HpssConfig fields, values as JSON (for tuning on the tune
split, e.g. `--hpss margin_percussive=2`, `--drums open_decay_level=0.15`, or another dictionary from
benchmarks.make_drum_templates: `--drums 'templates_path="/tmp/t.npz"'`).
Renders are cached under --cache (default benchmarks/.evalset/drums_in_mixes); a run of the test split on two
soundfonts takes a few minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mir_eval
import numpy as np
import soundfile

from benchmarks.evalset import FIRST_DOWNBEAT, TAIL, PieceSpec, _midi, _parts, bars_of, compose
from music.drum_kit import HIHAT_CLASSES, HIHAT_CLOSED, HIHAT_OPEN, KICK, SNARE, drum_onsets
from music.engines.drum_net import DrumNetConfig, NetDrumTranscriber
from music.engines.drums import DrumConfig, DrumTranscriber
from music.engines.hpss import PERCUSSIVE_STEM, HpssConfig, hpss_stems
from tests.music import render

SOUND_FONTS = {
    "TimGM6mb": Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),  # Debian timgm6mb-soundfont
    "FluidR3_GM": Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),  # Debian fluid-soundfont-gm
    "sf_GMbank": Path("/usr/share/sounds/sf2/sf_GMbank.sf2"),  # Debian csound-soundfont
    # Debian musescore-general-soundfont-small (the Lite file): training material for the drum network only.
    "MuseScore_General": Path("/usr/share/sounds/sf3/MuseScore_General.sf3"),
}
SPLIT_FONTS = {"tune": ("TimGM6mb",), "test": ("FluidR3_GM", "sf_GMbank")}
SPLIT_SEED = {"tune": 100, "test": 200}
# --random pieces: benchmarks.train_drum_net's generator from these seeds on (it trains from 10000 on,
# a few hundred pieces), on held-out soundfonts only.
RANDOM_SEED = 20_000
WINDOW_S = 0.05
SCORED = {
    "kick": (KICK,),
    "snare": (SNARE,),
    "hh_closed": (HIHAT_CLOSED,),
    "hh_open": (HIHAT_OPEN,),
    "hihat": HIHAT_CLASSES,
}


@dataclass(frozen=True)
class Design:
    """A kind of band piece; each split plays it with its own seed."""

    name: str
    tempo: float
    beats_per_bar: int
    key: str
    lead: int | None
    bass: int
    harmony: int
    drums: str
    bass_style: str
    harmony_style: str
    kit: int  # GM drum program: 0 Standard, 8 Room, 16 Power, 25 TR-808


# GM programs: leads 56 trumpet, 73 flute, 53 voice oohs, 40 violin, 71 clarinet, 65 alto sax; bass 33
# finger, 34 pick, 38 synth, 32 acoustic; keys 0 piano, 4 e-piano, 16 organ; guitars 24 nylon, 27
# clean electric, 29 overdriven; 48 strings.
DESIGNS: tuple[Design, ...] = (
    Design("rock", 124, 4, "A minor", 56, 34, 27, "rock", "eighths", "comp", 0),
    Design("disco", 118, 4, "B minor", 73, 38, 4, "disco", "octaves", "comp", 0),
    Design("sixteenths", 96, 4, "C minor", 53, 33, 16, "sixteenths", "funk", "block", 8),
    Design("halftime", 150, 4, "D major", 40, 33, 48, "halftime", "half", "pad", 16),
    Design("waltz", 138, 3, "C major", 71, 32, 24, "waltz", "root_fifth", "arpeggio", 0),
    Design("disco_808", 108, 4, "G minor", None, 38, 29, "disco", "octaves", "comp", 25),
    Design("rock_guitar", 140, 4, "E major", 65, 33, 29, "rock", "eighths", "comp", 8),
)
SECONDS = 16.0


def spec_of(design: Design, split: str, index: int) -> PieceSpec:
    parts = _parts(
        design.lead, design.bass, design.harmony, design.drums,
        bass_style=design.bass_style, harmony_style=design.harmony_style,
    )  # fmt: skip
    return PieceSpec(
        f"{design.name}_{split}", split, False, SECONDS, design.tempo, design.beats_per_bar, design.key, parts,
        SPLIT_SEED[split] + index,
    )  # fmt: skip


def render_mix(design: Design, split: str, index: int, font: str, cache: Path) -> tuple[Path, list]:
    """The rendered mix and its drum notes (as rendered: read back from the MIDI file written)."""
    import pretty_midi

    spec = spec_of(design, split, index)
    folder = cache / font / spec.name
    wav = folder / "mix.wav"
    instruments = compose(spec)
    instruments["drums"].program = design.kit
    if not (wav.is_file() and wav.with_suffix(".mid").is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        end = FIRST_DOWNBEAT + bars_of(spec) * spec.beats_per_bar * 60.0 / spec.tempo + TAIL
        render(_midi(spec, instruments.values(), end), wav, sound_font=SOUND_FONTS[font])
    midi = pretty_midi.PrettyMIDI(str(wav.with_suffix(".mid")))
    drums = [n for inst in midi.instruments if inst.is_drum for n in inst.notes]
    return wav, drums


# Recorded acoustic kits (Debian avldrums.lv2-soundfont), training material for the drum network only.
# Each is one melodic preset (bank 0, program 0) with the GM drum keys, so its drums are rendered apart, as
# a melodic part, and mixed in at a random level.
RECORDED_KITS = {
    "AVL_BlackPearl": Path("/usr/share/sounds/sf2/Black_Pearl_4_LV2.sf2"),
    "AVL_RedZeppelin": Path("/usr/share/sounds/sf2/Red_Zeppelin_4_LV2.sf2"),
}


def render_random(seed: int, font: str, cache: Path, drum_font: str | None = None) -> tuple[Path, list]:
    """A random piece of benchmarks.train_drum_net (style, tempo, kit, instruments, sox effect drawn
    from `seed`) rendered with `font` (its drums with the recorded kit `drum_font` when given): the mix
    and its drum notes."""
    import pretty_midi

    from benchmarks.corpus import apply_effect
    from benchmarks.train_drum_net import piece, thin

    spec, kit, _, effect = piece(seed)
    name = spec.name if drum_font is None else f"{spec.name}_{drum_font}"
    wav = cache / font / name / "mix.wav"
    if not (wav.is_file() and wav.with_suffix(".mid").is_file()):
        wav.parent.mkdir(parents=True, exist_ok=True)
        instruments = compose(spec)
        instruments["drums"].program = kit
        instruments["drums"].notes = thin(instruments["drums"].notes, seed)
        end = FIRST_DOWNBEAT + bars_of(spec) * spec.beats_per_bar * 60.0 / spec.tempo + TAIL
        if drum_font is None:
            render(_midi(spec, instruments.values(), end), wav, sound_font=SOUND_FONTS[font])
        else:
            _render_with_recorded_kit(spec, instruments, end, wav, SOUND_FONTS[font], RECORDED_KITS[drum_font])
        if effect != "dry":
            apply_effect(wav, wav, effect)
    midi = pretty_midi.PrettyMIDI(str(wav.with_suffix(".mid")))
    return wav, [n for inst in midi.instruments if inst.is_drum for n in inst.notes]


def _render_with_recorded_kit(spec: PieceSpec, instruments: dict, end: float, wav: Path, font: Path, kit: Path) -> None:
    import pretty_midi

    drums = instruments["drums"]
    as_melodic = pretty_midi.Instrument(program=0, is_drum=False, name="drums")
    as_melodic.notes = list(drums.notes)
    parts = [render(_midi(spec, [as_melodic], end), wav.with_name("drums.wav"), sound_font=kit)]
    pitched = [i for role, i in instruments.items() if role != "drums"]
    if pitched:
        parts.append(render(_midi(spec, pitched, end), wav.with_name("pitched.wav"), sound_font=font))
    audio = [soundfile.read(p, dtype="float32", always_2d=True)[0] for p in parts]
    length = max(a.shape[0] for a in audio)
    # The drums' level in the mix: -9 to +3 dB against the pitched parts, drawn from the seed.
    gain = 10 ** (np.random.default_rng((spec.seed, 7)).uniform(-9.0, 3.0) / 20)
    mix = np.zeros((length, 2), dtype=np.float32)
    for k, a in enumerate(audio):
        mix[: a.shape[0]] += (gain if k == 0 else 1.0) * a
    mix /= max(1.0, float(np.abs(mix).max()) / 0.9)
    soundfile.write(wav, mix, 44100, subtype="PCM_16")
    _midi(spec, instruments.values(), end).write(str(wav.with_suffix(".mid")))  # the truth, drums on channel 10
    for p in parts:
        p.unlink()
        p.with_suffix(".mid").unlink()


def service_drums(mix: Path, hpss: HpssConfig, transcriber: DrumTranscriber | NetDrumTranscriber) -> list:
    """What the service does with an uploaded mix under separation=hpss, up to the drum notes."""
    from serve_app.domain.audio import decode, write_wav

    audio = decode(mix, 3600.0)
    stems = hpss_stems(audio, hpss)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "drums.wav"
        write_wav(path, stems[PERCUSSIVE_STEM], audio.sample_rate)
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return transcriber.transcribe(samples.T, rate)


def counts(reference: list, estimate: list) -> dict[str, tuple[int, int, int]]:
    """class -> (matched, reference hits, estimated hits)."""
    out = {}
    for name, classes in SCORED.items():
        ref, est = drum_onsets(reference, classes), drum_onsets(estimate, classes)
        matched = len(mir_eval.util.match_events(ref, est, WINDOW_S)) if ref.size and est.size else 0
        out[name] = (matched, int(ref.size), int(est.size))
    return out


def f1(total: tuple[int, int, int]) -> float:
    matched, n_ref, n_est = total
    return 2 * matched / (n_ref + n_est) if n_ref + n_est else float("nan")


def _overrides(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = json.loads(value)
    return out


def evaluate(
    split: str,
    fonts: list[str],
    drums: DrumConfig,
    hpss: HpssConfig,
    cache: Path,
    per_piece: bool = False,
    transcriber: DrumTranscriber | NetDrumTranscriber | None = None,
    random_pieces: int = 0,
) -> dict[str, dict[str, float]]:
    transcriber = transcriber or DrumTranscriber(drums)
    table: dict[str, dict[str, float]] = {}
    for font in fonts:
        totals = {name: np.zeros(3, dtype=int) for name in SCORED}
        if random_pieces:
            pieces = [(f"random_{RANDOM_SEED + i}", lambda i=i: render_random(RANDOM_SEED + i, font, cache))
                      for i in range(random_pieces)]  # fmt: skip
        else:
            pieces = [(d.name, lambda i=i, d=d: render_mix(d, split, i, font, cache)) for i, d in enumerate(DESIGNS)]
        for name, make in pieces:
            wav, reference = make()
            found = counts(reference, service_drums(wav, hpss, transcriber))
            for cls, c in found.items():
                totals[cls] += c
            if per_piece:
                print(f"  {font:11s} {name:12s} " + " ".join(f"{n} {f1(c):.2f}" for n, c in found.items()))
        table[font] = {cls: f1(tuple(t)) for cls, t in totals.items()}
        table[font].update({f"n_{cls}": int(t[1]) for cls, t in totals.items()})
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=tuple(SPLIT_FONTS), default="test")
    parser.add_argument("--fonts", nargs="+", choices=tuple(SOUND_FONTS), help="default: the split's")
    parser.add_argument("--drums", nargs="*", default=[], metavar="KEY=VALUE", help="DrumConfig overrides")
    parser.add_argument("--hpss", nargs="*", default=[], metavar="KEY=VALUE", help="HpssConfig overrides")
    parser.add_argument("--cache", type=Path, default=Path(__file__).parent / ".evalset" / "drums_in_mixes")
    parser.add_argument("--per-piece", action="store_true")
    parser.add_argument("--engine", choices=("nmfd", "net"), default="nmfd", help="NMFD templates or the network")
    parser.add_argument("--net", nargs="*", default=[], metavar="KEY=VALUE", help="DrumNetConfig overrides")
    parser.add_argument("--random", type=int, default=0, metavar="N",
                        help="instead of the split's 7 designs, N random pieces (tempo, kit, effect) from seed 20000")  # fmt: skip
    args = parser.parse_args(argv)
    fonts = args.fonts or list(SPLIT_FONTS[args.split])
    drums = DrumConfig(**_overrides(args.drums))
    hpss = HpssConfig(**_overrides(args.hpss))
    net = NetDrumTranscriber(DrumNetConfig(**_overrides(args.net))) if args.engine == "net" else None
    table = evaluate(args.split, fonts, drums, hpss, args.cache, args.per_piece, net, args.random)
    what = f"{args.random} random pieces" if args.random else f"split {args.split} ({len(DESIGNS)} band mixes of {SECONDS:g} s each)"
    print(f"{what}, {args.engine}, onset F1, 50 ms (reference hits in brackets)")
    print(f"{'soundfont':12s}" + "".join(f"{name:>16s}" for name in SCORED))
    for font, row in table.items():
        print(f"{font:12s}" + "".join(f"{row[name]:10.3f} ({row['n_' + name]:3d})" for name in SCORED))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
