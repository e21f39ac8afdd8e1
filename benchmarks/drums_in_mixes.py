"""Drum transcription on rendered band pieces, on kits and soundfonts the drum network never heard.

    python -m benchmarks.drums_in_mixes [--engine net|nmfd] [--pieces 7] [--kits K ...] [--weights PATH]

The synthetic check beside the real-recording evaluation (benchmarks/real.py, which comes first). Each
band piece is benchmarks.evalset's composer with benchmarks.drum_patterns' grooves (seven designs: rock,
disco, sixteenths, half-time, waltz, an 808 disco, a rock guitar piece), which is not the generator the
network trains on (benchmarks/grooves.py). The drums are rendered with each held-out kit, the pitched
parts with the held-out soundfont, the two mixed with the drums 3 dB under the band to 3 dB over it,
then the service's path: decode, split with music.engines.hpss as `separation=hpss` does, the drum
engine on the percussive part; and the drums alone, as a clean drum stem would be.

Held out is checked, not assumed: the weights record the kits and fonts they trained on, and
benchmarks.soundfonts refuses to run if a kit or font here shares a sample (by name or by sound) with
one of them. Onset F1 per class (kick, snare, closed and open hi-hat, and all hi-hats), 50 ms, mean over
pieces (benchmarks.scoring, the real-recording evaluation's scoring). Writes
benchmarks/results/drums_in_mixes.{md,json}.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from benchmarks import scoring
from benchmarks.evalset import FIRST_DOWNBEAT, TAIL, PieceSpec, _midi, _parts, bars_of, compose
from benchmarks.provenance import header, header_line, write_results
from benchmarks.render import render_with
from benchmarks.sound_sources import source
from music.audio import DecodedAudio
from music.engines.hpss import PERCUSSIVE_STEM, HpssConfig, hpss_stems

logger = logging.getLogger(__name__)

# Two recorded acoustic kits (Hydrogen's BJA Pacific and Colombo), FluidR3's GM kits and the freepats
# kit: every one a sample family of its own (benchmarks/results/soundfonts.md).
KITS = ("hydrogen:BJA_Pacific", "hydrogen:ColomboAcousticDrumkit", "FluidR3_GM", "freepats")
BAND_FONT = "freepats"
SECONDS = 16.0
SEED = 200
CLASSES = ("kick", "snare", "hihat_closed", "hihat_open", scoring.HIHAT)


@dataclass(frozen=True)
class Design:
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
    kit: int  # GM drum program (GM soundfont kits): 0 Standard, 8 Room, 16 Power, 25 TR-808


# GM programs: leads 56 trumpet, 73 flute, 53 voice oohs, 40 violin, 71 clarinet, 65 alto sax; bass 33
# finger, 34 pick, 38 synth, 32 acoustic; keys 4 e-piano, 16 organ; guitars 24 nylon, 27 clean, 29 overdriven.
DESIGNS: tuple[Design, ...] = (
    Design("rock", 124, 4, "A minor", 56, 34, 27, "rock", "eighths", "comp", 0),
    Design("disco", 118, 4, "B minor", 73, 38, 4, "disco", "octaves", "comp", 0),
    Design("sixteenths", 96, 4, "C minor", 53, 33, 16, "sixteenths", "funk", "block", 8),
    Design("halftime", 150, 4, "D major", 40, 33, 48, "halftime", "half", "pad", 16),
    Design("waltz", 138, 3, "C major", 71, 32, 24, "waltz", "root_fifth", "arpeggio", 0),
    Design("disco_808", 108, 4, "G minor", None, 38, 29, "disco", "octaves", "comp", 25),
    Design("rock_guitar", 140, 4, "E major", 65, 33, 29, "rock", "eighths", "comp", 8),
)


def spec_of(design: Design, index: int) -> PieceSpec:
    parts = _parts(design.lead, design.bass, design.harmony, design.drums,
                   bass_style=design.bass_style, harmony_style=design.harmony_style)  # fmt: skip
    return PieceSpec(f"{design.name}", "test", False, SECONDS, design.tempo, design.beats_per_bar, design.key, parts,
                     SEED + index)  # fmt: skip


def band_programs() -> frozenset[int]:
    return frozenset(p for d in DESIGNS for p in (d.lead, d.bass, d.harmony) if p is not None)


def check_held_out(weights: Path | None, kits: Sequence[str], band_font: str) -> None:
    """Refuse (benchmarks.soundfonts.SharedSamples) where a kit or the band's font shares samples with
    what the weights trained on."""
    import torch

    from benchmarks.soundfonts import assert_disjoint
    from music.engines.drum_net import WEIGHTS_PATH

    trained = torch.load(weights or WEIGHTS_PATH, map_location="cpu", weights_only=True)["trained_on"]
    # The fonts play only the pitched parts of the training pieces; every drum the network heard came from
    # its kits.
    assert_disjoint(trained.get("kits", []), kits, "drums")
    # The band: only the programs it plays need be sounds the network never heard (freepats and MuseScore
    # General share organs, mallets and effects, none of which the band plays).
    assert_disjoint(trained.get("fonts", []), [band_font], "melodic", programs=band_programs())


def render_piece(design: Design, index: int, kit: str, cache: Path) -> tuple[np.ndarray, np.ndarray, int, list]:
    """(mix, drums alone, rate, drum notes) of one design with `kit`, cached."""
    spec = spec_of(design, index)
    folder = cache / kit.replace(":", "_").replace(" ", "_") / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    instruments = compose(spec)
    drums = instruments.pop("drums")
    drums.program = design.kit
    end = FIRST_DOWNBEAT + bars_of(spec) * spec.beats_per_bar * 60.0 / spec.tempo + TAIL
    drum_wav, band_wav = folder / "drums.wav", folder / "band.wav"
    if not drum_wav.is_file():
        render_with(source(kit), _midi(spec, [drums], end), drum_wav, 44100, spec.seed)
    if not band_wav.is_file():
        render_with(source(BAND_FONT), _midi(spec, instruments.values(), end), band_wav, 44100, spec.seed)
    alone, rate = soundfile.read(drum_wav, dtype="float32", always_2d=True)
    band, _ = soundfile.read(band_wav, dtype="float32", always_2d=True)
    n = min(alone.shape[0], band.shape[0])
    alone, band = alone[:n].T, band[:n].T
    from benchmarks.augment import mix, rms

    level = float(np.random.default_rng(spec.seed).uniform(-3.0, 3.0))
    mixed = mix(alone, band, level) if rms(band) > 1e-5 else alone
    return mixed, alone, rate, list(drums.notes)


def transcriber_for(engine: str, weights: Path | None) -> Any:
    from music.engines.drum_net import DrumNetConfig, NetDrumTranscriber
    from music.engines.drums import DrumTranscriber

    return NetDrumTranscriber(DrumNetConfig(weights_path=weights)) if engine == "net" else DrumTranscriber()


def evaluate(kits: Sequence[str], pieces: int, engine: str, weights: Path | None, cache: Path) -> dict[str, Any]:
    transcriber = transcriber_for(engine, weights)
    rows: dict[str, Any] = {}
    for kit in kits:
        for k, design in enumerate(DESIGNS[:pieces]):
            mixed, alone, rate, truth = render_piece(design, k, kit, cache)
            percussive = hpss_stems(DecodedAudio(mixed.astype(np.float32), rate), HpssConfig())[PERCUSSIVE_STEM]
            for condition, audio in (("hpss", percussive), ("alone", alone)):
                found = transcriber.transcribe(audio, rate)
                per_class = scoring.drum_prf(truth, found)
                rows[f"{kit}|{design.name}|{condition}"] = {
                    cls: None if per_class[cls] is None else round(per_class[cls].f1, 4) for cls in CLASSES
                } | {"hits": {cls: per_class[cls].n_ref if per_class[cls] else 0 for cls in CLASSES}}
            logger.info("%s %s: %s", kit, design.name, rows[f"{kit}|{design.name}|hpss"])
    summary: dict[str, Any] = {}
    for kit in kits:
        for condition in ("hpss", "alone"):
            mine = [v for key, v in rows.items() if key.startswith(f"{kit}|") and key.endswith(f"|{condition}")]
            summary[f"{kit}|{condition}"] = {
                cls: scoring.mean_defined(r[cls] for r in mine) for cls in CLASSES
            } | {"hits": {cls: sum(r["hits"][cls] for r in mine) for cls in CLASSES}}
    return {"pieces": rows, "summary": summary}


def markdown(report: dict[str, Any]) -> str:
    head = report["header"]
    lines = ["# Drums on held-out kits (rendered band pieces)", "", header_line(head), "",
             f"Engine {head['engine']}, weights {head['weights']}; {head['pieces']} pieces per kit, band parts with "
             f"{head['band_font']}; onset F1 (50 ms), mean over pieces; hits in brackets.", "",
             "| kit | condition | kick | snare | closed hat | open hat | all hats |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for key, row in report["summary"].items():
        kit, condition = key.split("|")

        def cell(cls: str, row: dict = row) -> str:
            value = row[cls]
            return "n/a" if value is None else f"{value:.3f} ({row['hits'][cls]})"

        lines.append(f"| {kit} | {condition} | " + " | ".join(cell(c) for c in CLASSES) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.drums_in_mixes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--engine", choices=("net", "nmfd"), default="net")
    parser.add_argument("--weights", type=Path, help="drum network weights (default: the shipped ones)")
    parser.add_argument("--kits", nargs="+", default=list(KITS))
    parser.add_argument("--pieces", type=int, default=len(DESIGNS))
    parser.add_argument("--cache", type=Path, default=Path(__file__).parent / ".evalset" / "drums_in_mixes")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    check_held_out(args.weights, args.kits, BAND_FONT)
    report = {"header": header(engine=args.engine, weights=str(args.weights or "shipped"), kits=list(args.kits),
                               band_font=BAND_FONT, pieces=args.pieces)}  # fmt: skip
    report |= evaluate(args.kits, args.pieces, args.engine, args.weights, args.cache)
    text = markdown(report)
    write_results("drums_in_mixes", report, text, **({"out": args.out} if args.out else {}))
    sys.stdout.write(text)
    return report


if __name__ == "__main__":
    main()
