"""Regenerate music/engines/data/drum_templates.npz: the drum transcriber's NMFD dictionary.

The templates are measured on isolated hits rendered with the TimGM6mb soundfont, never with FluidR3
(the kit the transcriber is evaluated on), so the evaluation measures how well they carry over to an
unseen kit. For each of five TimGM6mb drum kits and each template class, the template is the mean,
over the class's GM keys and a few velocities, of the hit's mel-band spectrogram patch (from
`ONSET_FRAME` frames before the attack, `LAGS` frames long), each patch normalised to sum to 1.
A kit's template that is nearly the same as one already kept (the kits share many samples) is
left out.

    python -m benchmarks.make_drum_templates [--out PATH] [--sound-fonts SF2 ...]

`--sound-fonts` adds other soundfonts' kits (their templates that repeat a kept one are left out, as
above). Measured leave-one-soundfont-out on band mixes through hpss (benchmarks/drums_in_mixes.py,
test split, onset F1 kick / snare / closed / open / all hats), against TimGM6mb alone:
- TimGM6mb + sf_GMbank, on FluidR3: 0.770 -> 0.815, 0.748 -> 0.747, 0.696 -> 0.735, 0.420 -> 0.450,
  0.774 -> 0.802;
- TimGM6mb + FluidR3, on sf_GMbank: 0.922 -> 0.877, 0.820 -> 0.778, 0.828 -> 0.855, 0.547 -> 0.415,
  0.891 -> 0.915.
More hats found both ways, kick, snare and open hats not reliably better, so the shipped dictionary
stays TimGM6mb-only.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile

from benchmarks.pieces import TIMGM6MB
from benchmarks.render import render
from music.engines.drums import TEMPLATE_NAMES, TEMPLATES_PATH, DrumConfig, DrumTemplates, band_spectrogram

logger = logging.getLogger(__name__)

# GM keys whose hits make up each template.
TEMPLATE_KEYS: dict[str, tuple[int, ...]] = {
    "kick": (35, 36),
    "snare": (38, 40),
    "hihat_closed": (42, 44),
    "hihat_open": (46,),
    # Toms by register: averaged together they would be a blur that fits no tom (a floor tom then
    # reads as a kick).
    "tom_low": (41, 43),
    "tom_mid": (45, 47),
    "tom_high": (48, 50),
    "cymbal": (49, 57, 51, 55),
}
# TimGM6mb's Standard, Room, Power, Electronic and TR-808 kits (GM drum programs). Its Jazz kit is
# the Standard one; Brush and Orchestra are not drum-set sounds.
KITS: dict[int, str] = {0: "Standard", 8: "Room", 16: "Power", 24: "Electronic", 25: "TR-808"}
VELOCITIES = (50, 80, 110, 127)
SPACING_S = 2.0  # long enough for a crash to die away before the next hit
ONSET_FRAME = 2  # the attack is this many frames into a template: the 46 ms window sees it early
# 209 ms at the default front end: a kick's or snare's whole body, so its tail is not left over
# for the hi-hat template to explain (10 frames left a phantom hat ~100 ms after each snare).
LAGS = 18
DUPLICATE = 0.98  # cosine similarity above which a kit's template repeats one already kept


def isolated_hits(kit: int) -> tuple[pretty_midi.PrettyMIDI, list[tuple[str, float]]]:
    midi = pretty_midi.PrettyMIDI()
    drums = pretty_midi.Instrument(program=kit, is_drum=True, name="drums")
    hits: list[tuple[str, float]] = []
    t = 0.5
    for name in TEMPLATE_NAMES:
        for key in TEMPLATE_KEYS[name]:
            for velocity in VELOCITIES:
                drums.notes.append(pretty_midi.Note(velocity, key, t, t + 0.08))
                hits.append((name, t))
                t += SPACING_S
    midi.instruments.append(drums)
    return midi, hits


def kit_templates(
    kit: int, config: DrumConfig, workdir: Path, lags: int = LAGS, sound_font: Path = TIMGM6MB
) -> dict[str, np.ndarray]:
    midi, hits = isolated_hits(kit)
    wav = render(midi, workdir / f"{sound_font.stem}-kit{kit}.wav", sample_rate=44100, sound_font=sound_font)
    samples, sample_rate = soundfile.read(wav, dtype="float32", always_2d=True)
    spec = band_spectrogram(samples.T, sample_rate, config)
    frame_rate = config.analysis_rate / config.hop_length
    patches: dict[str, list[np.ndarray]] = {name: [] for name in TEMPLATE_NAMES}
    for name, onset in hits:
        first = int(round(onset * frame_rate)) - ONSET_FRAME
        patch = spec[:, first : first + lags]
        patches[name].append(patch / patch.sum())
    return {name: np.mean(p, axis=0) for name, p in patches.items()}


def build(
    config: DrumConfig,
    lags: int = LAGS,
    kits: tuple[int, ...] = tuple(KITS),
    sound_fonts: tuple[Path, ...] = (TIMGM6MB,),
) -> tuple[DrumTemplates, list[str]]:
    names: list[str] = []
    origins: list[str] = []
    kept: list[np.ndarray] = []
    with tempfile.TemporaryDirectory() as tmp:
        for sound_font, kit in ((f, k) for f in sound_fonts for k in kits):
            kit_name = KITS.get(kit, f"program {kit}")
            if sound_font != TIMGM6MB:
                kit_name = f"{sound_font.stem} {kit_name}"
            for name, template in kit_templates(kit, config, Path(tmp), lags, sound_font).items():
                flat = template.ravel() / np.linalg.norm(template)
                if any(n == name and float(flat @ k.ravel()) / np.linalg.norm(k) > DUPLICATE for n, k in zip(names, kept)):
                    continue
                names.append(name)
                origins.append(kit_name)
                kept.append(template)
    templates = DrumTemplates(
        names=tuple(names),
        templates=np.stack(kept),
        onset_frame=ONSET_FRAME,
        analysis_rate=config.analysis_rate,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        n_bands=config.n_bands,
        fmin=config.fmin,
    )
    return templates, origins


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=TEMPLATES_PATH)
    parser.add_argument("--lags", type=int, default=LAGS, help="template length in frames")
    parser.add_argument("--kits", type=int, nargs="+", default=list(KITS), help="GM drum programs")
    parser.add_argument("--sound-fonts", type=Path, nargs="+", default=[TIMGM6MB], help="default: TimGM6mb")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    templates, origins = build(DrumConfig(), args.lags, tuple(args.kits), tuple(args.sound_fonts))
    templates.save(args.out, kits=np.array(origins), sound_font=",".join(f.name for f in args.sound_fonts))
    logger.info(
        "wrote %s: %d templates (%s)",
        args.out,
        len(templates.names),
        ", ".join(f"{n}/{o}" for n, o in zip(templates.names, origins)),
    )


if __name__ == "__main__":
    main()
