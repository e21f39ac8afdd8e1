"""Real scores for the evaluation set: excerpts of music21's bundled public-domain corpus, rendered with
several General MIDI soundfonts and room/mastering effects, grouped by genre.

    python -m benchmarks.corpus [--subset ci] [--cache DIR]     # render (cached) and list the set

The composed pieces of benchmarks/evalset.py are kept as the genre "band" (pop/rock-like ensembles);
this adds chorales (Bach), string quartets (Haydn, Mozart, Beethoven, Schumann), piano pieces (Joplin,
Mozart, Chopin, Clara Schumann, C. P. E. Bach, Verdi), vocal music (Monteverdi madrigals, songs with
piano, a hymn) and folk melodies (Essen, O'Neill, Aird, Ryan's Mammoth). Each excerpt is 15-25 s of the
score from its first note, up to five parts, every part on a General MIDI program, at a fixed tempo.

Every piece is rendered with each sound source in SOUNDFONTS (Debian packages fluid-soundfont-gm,
timgm6mb-soundfont, csound-soundfont with FluidSynth; freepats' GUS patches with TiMidity++, programs
freepats lacks played by stand-ins) and one effect chain per source (EFFECTS, with sox): dry, a room
reverb, or a reverb plus a mastering-style compressor; the chains rotate so that every piece has every
chain at least once and every source has all three.

Renders are cached under `<cache>/corpus-<CORPUS_VERSION>-<soundfont>/<piece>/` (mix.wav and truth.json,
the truth read back from the MIDI file that was rendered); composed pieces get their effect chains as
`mix.<effect>.wav` beside evalset.py's own renders. Bump CORPUS_VERSION when excerpts or rendering change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi

from benchmarks import evalset
from benchmarks.evalset import DEFAULT_CACHE, TruthNote
from benchmarks.render import render
from benchmarks.sound_sources import SOURCES

logger = logging.getLogger(__name__)

CORPUS_VERSION = "c1"
FIRST_NOTE = 0.5  # seconds of silence before the first note
TAIL = 1.5

# name -> path. Debian: fluid-soundfont-gm, timgm6mb-soundfont, csound-soundfont, freepats (GUS patches,
# rendered with TiMidity++: benchmarks/render.py).
SOUNDFONTS: dict[str, Path] = {
    "fluidr3": Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    "timgm6mb": Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),
    "csound": Path("/usr/share/sounds/sf2/sf_GMbank.sf2"),
    "freepats": Path("/etc/timidity/freepats.cfg"),
}
# The same sources by their names in benchmarks/sound_sources.py (matched by file), which knows what is
# inside each.
SOURCE_NAMES: dict[str, str] = {key: next(s.name for s in SOURCES if s.path == path) for key, path in SOUNDFONTS.items()}
# sox effect chains, applied to FluidSynth's render (which has FluidSynth's own light reverb already).
# No pre-delay and no compander look-ahead: the direct sound keeps the MIDI file's timing.
EFFECTS: dict[str, list[str]] = {
    "dry": [],
    "room": ["reverb", "45", "50", "70", "100", "0", "0"],
    "master": [
        "reverb", "30", "50", "50", "100", "0", "-2",
        "compand", "0.01,0.2", "6:-70,-70,-40,-28,-20,-14,0,-8", "4", "-90", "0",
    ],
}  # fmt: skip
GENRES = ("chorale", "quartet", "piano", "vocal", "folk", "band")


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    genre: str
    source: str  # music21 corpus path
    parts: tuple[tuple[int, int], ...]  # (part index in the score, General MIDI program)
    tempo: float  # quarter notes per minute
    seconds: float  # excerpt length (less if the score is shorter)
    seed: int
    number: int | None = None  # the work's number inside a collection (abc files)
    subset: bool = False  # part of the small CI subset


def _same(program: int, n: int = 4) -> tuple[tuple[int, int], ...]:
    return tuple((i, program) for i in range(n))


SATB_STRINGS = ((0, 40), (1, 40), (2, 41), (3, 42))  # violin, violin, viola, cello
SATB_WINDS = ((0, 73), (1, 68), (2, 71), (3, 70))  # flute, oboe, clarinet, bassoon
SATB_BRASS = ((0, 56), (1, 60), (2, 57), (3, 58))  # trumpet, horn, trombone, tuba
PIANO = ((0, 0), (1, 0))  # both staves

PIECES: tuple[CorpusSpec, ...] = (
    # Chorales (Bach), four voices on six ensembles.
    CorpusSpec("chorale_bwv66_choir", "chorale", "bach/bwv66.6", _same(52), 88, 20, 101, subset=True),
    CorpusSpec("chorale_bwv269_strings", "chorale", "bach/bwv269", SATB_STRINGS, 84, 20, 102),
    CorpusSpec("chorale_bwv347_organ", "chorale", "bach/bwv347", _same(19), 80, 20, 103),
    CorpusSpec("chorale_bwv153_winds", "chorale", "bach/bwv153.1", SATB_WINDS, 92, 18, 104),
    CorpusSpec("chorale_bwv86_brass", "chorale", "bach/bwv86.6", SATB_BRASS, 86, 20, 105),
    CorpusSpec("chorale_bwv267_ensemble", "chorale", "bach/bwv267", _same(48), 80, 22, 106),
    # String quartets: first movements (Schumann's slow introduction), violin, violin, viola, cello.
    CorpusSpec("quartet_haydn74", "quartet", "haydn/opus74no1/movement1", SATB_STRINGS, 120, 20, 201),
    CorpusSpec("quartet_mozart155", "quartet", "mozart/k155/movement1", SATB_STRINGS, 120, 20, 202, subset=True),
    CorpusSpec("quartet_mozart458", "quartet", "mozart/k458/movement1", SATB_STRINGS, 132, 20, 203),
    CorpusSpec("quartet_beethoven18", "quartet", "beethoven/opus18no1/movement1.mxl", SATB_STRINGS, 144, 20, 204),
    CorpusSpec("quartet_haydn1", "quartet", "haydn/opus1no1/movement1", SATB_STRINGS, 116, 20, 205),
    CorpusSpec("quartet_schumann41", "quartet", "schumann_robert/opus41no1/movement1", SATB_STRINGS, 72, 22, 206),
    # Piano.
    CorpusSpec("piano_joplin_rag", "piano", "joplin/maple_leaf_rag", PIANO, 76, 20, 301, subset=True),
    CorpusSpec("piano_mozart545", "piano", "mozart/k545/movement1_exposition", ((0, 1), (1, 1)), 120, 20, 302),
    CorpusSpec("piano_clara_polonaise", "piano", "schumann_clara/polonaise_op1n1", PIANO, 100, 20, 303),
    CorpusSpec("piano_chopin_mazurka", "piano", "chopin/mazurka06-2", ((0, 0), (1, 0)), 126, 20, 304),
    CorpusSpec("piano_cpebach", "piano", "cpebach/h186", ((0, 4), (1, 4)), 90, 20, 305),
    CorpusSpec("piano_verdi_reduction", "piano", "verdi/laDonnaEMobile", ((0, 2), (1, 2)), 90, 20, 306),
    # Vocal: madrigals (five voices), songs with piano, a hymn.
    CorpusSpec("vocal_monteverdi31", "vocal", "monteverdi/madrigal.3.1", _same(52, 5), 112, 20, 401),
    CorpusSpec("vocal_monteverdi41", "vocal", "monteverdi/madrigal.4.1", _same(53, 5), 112, 20, 402, subset=True),
    CorpusSpec("vocal_monteverdi51", "vocal", "monteverdi/madrigal.5.1", ((0, 52), (1, 52), (2, 53), (3, 53), (4, 52)),
               108, 20, 403),
    CorpusSpec("vocal_schubert_lindenbaum", "vocal", "schubert/Lindenbaum", ((0, 53), (1, 0), (2, 0)), 84, 22, 404),
    CorpusSpec("vocal_handel_lascia", "vocal", "handel/rinaldo/Lascia_chio_pianga", ((0, 52), (1, 0), (2, 0)),
               66, 22, 405),
    CorpusSpec("vocal_lift_every_voice", "vocal", "johnson_j_r/lift_every_voice", _same(52), 96, 20, 406),
    # Folk melodies, one instrument each.
    CorpusSpec("folk_essen_altdeu", "folk", "essenFolksong/altdeu10", ((0, 73),), 104, 18, 501, number=1),
    CorpusSpec("folk_oneill_1", "folk", "oneills1850/0001-0050", ((0, 110),), 100, 20, 502, number=1, subset=True),
    CorpusSpec("folk_aird_1", "folk", "airdsAirs/book1", ((0, 21),), 100, 20, 503, number=1),
    CorpusSpec("folk_ryan_7th_reel", "folk", "ryansMammoth/7thRegimentReel", ((0, 40),), 120, 18, 504),
    CorpusSpec("folk_ryan_acacia", "folk", "ryansMammoth/AcaciaReel", ((0, 74),), 120, 18, 505),
    CorpusSpec("folk_essen_ballad", "folk", "essenFolksong/ballad10", ((0, 71),), 100, 18, 506, number=1),
)  # fmt: skip


def select(subset: str = "full", genres: Sequence[str] | None = None) -> list[CorpusSpec]:
    if subset not in ("full", "ci"):
        raise ValueError(f"unknown subset {subset!r}; use 'full' or 'ci'")
    return [p for p in PIECES if (subset == "full" or p.subset) and (genres is None or p.genre in genres)]


def programs(subset: str = "full", genres: Sequence[str] = GENRES) -> set[int]:
    """The melodic General MIDI programs the set's parts ask for (before a patch set's stand-ins)."""
    wanted = {program for spec in select(subset, [g for g in genres if g != "band"]) for _, program in spec.parts}
    if "band" in genres:
        wanted |= {part.program for spec in evalset.select(subset) if spec.pitched for part in spec.parts
                   if part.role != "drums"}  # fmt: skip
    return wanted


# --- scores to MIDI ----------------------------------------------------------------------------------


def _parse(spec: CorpusSpec):  # type: ignore[no-untyped-def]
    from music21 import corpus

    work = corpus.parse(spec.source, number=spec.number) if spec.number is not None else corpus.parse(spec.source)
    if not hasattr(work, "parts"):  # an Opus: the first score
        work = work.scores[0]
    return work


def excerpt(spec: CorpusSpec) -> pretty_midi.PrettyMIDI:
    """The excerpt as MIDI: one instrument per chosen part, times from the fixed tempo."""
    score = _parse(spec)
    per_part: list[list[tuple[float, float, int]]] = []  # (start ql, end ql, pitch)
    for index, _ in spec.parts:
        part = score.parts[index].stripTies(inPlace=False)
        rows = []
        for element in part.flatten().notes:
            if element.duration.isGrace or element.quarterLength <= 0:
                continue
            start = float(element.offset)
            for pitch in element.pitches:
                rows.append((start, start + float(element.quarterLength), int(round(pitch.ps))))
        per_part.append(rows)
    first = min(row[0] for rows in per_part for row in rows)
    seconds_per_ql = 60.0 / spec.tempo
    window = spec.seconds * spec.tempo / 60.0
    last_start = first + window
    rng = np.random.default_rng(spec.seed)
    midi = pretty_midi.PrettyMIDI(resolution=960, initial_tempo=spec.tempo)
    end_time = 0.0
    for (index, program), rows in zip(spec.parts, per_part):
        instrument = pretty_midi.Instrument(program=program, name=f"part{index}")
        base = int(rng.integers(72, 100))
        notes: list[pretty_midi.Note] = []
        for start_ql, end_ql, pitch in sorted(rows):
            if start_ql >= last_start or not 21 <= pitch <= 108:
                continue
            start = FIRST_NOTE + (start_ql - first) * seconds_per_ql
            end = FIRST_NOTE + (min(end_ql, last_start) - first) * seconds_per_ql
            end = start + max(0.05, (end - start) * 0.95)  # a little articulation between notes
            velocity = int(np.clip(base + rng.integers(-10, 11), 30, 127))
            notes.append(pretty_midi.Note(velocity, pitch, start, end))
        # Same pitch twice in one part (a unison inside a chord, overlapping voices): one key, one note.
        kept: list[pretty_midi.Note] = []
        sounding: dict[int, pretty_midi.Note] = {}
        for note in notes:
            held = sounding.get(note.pitch)
            if held is not None and held.end > note.start:
                if note.start - held.start < 0.03:
                    held.end = max(held.end, note.end)
                    continue
                held.end = note.start - 0.005
            kept.append(note)
            sounding[note.pitch] = note
        instrument.notes = kept
        end_time = max([end_time, *(n.end for n in kept)])
        midi.instruments.append(instrument)
    for instrument in midi.instruments:
        # Every render lasts as long as the piece plus the tail.
        instrument.control_changes.append(pretty_midi.ControlChange(20, 0, end_time + TAIL))
    return midi


def truth_notes(midi_file: Path) -> list[TruthNote]:
    """All pitched notes of the rendered MIDI file; the same pitch starting together in two parts
    (voices in unison) is one note to a listener and to the scorer."""
    midi = pretty_midi.PrettyMIDI(str(midi_file))
    notes = sorted(
        (TruthNote(round(n.start, 6), round(n.end, 6), n.pitch, n.velocity) for i in midi.instruments for n in i.notes),
        key=lambda n: (n.pitch, n.start),
    )
    merged: list[TruthNote] = []
    for note in notes:
        if merged and merged[-1].pitch == note.pitch and note.start - merged[-1].start < 0.03:
            if note.end > merged[-1].end:
                merged[-1] = TruthNote(merged[-1].start, note.end, note.pitch, merged[-1].velocity)
            continue
        merged.append(note)
    return sorted(merged, key=lambda n: (n.start, n.pitch))


# --- rendering ----------------------------------------------------------------------------------------


def effect_for(piece_index: int, font_index: int) -> str:
    """The chains rotate over sources: each piece gets every chain at least once."""
    names = list(EFFECTS)
    return names[(piece_index + font_index) % len(names)]


def apply_effect(source: Path, target: Path, effect: str) -> Path:
    if shutil.which("sox") is None:
        raise FileNotFoundError("sox is not installed; install Debian's sox")
    tmp = target.with_suffix(".tmp.wav")
    subprocess.run(["sox", str(source), str(tmp), *EFFECTS[effect], "gain", "-n", "-1"],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    tmp.replace(target)
    return target


def fluidsynth(mid: Path, wav: Path, sound_font: Path, gain: float = 0.4) -> Path:
    if shutil.which("fluidsynth") is None:
        raise FileNotFoundError("fluidsynth is not installed; install Debian's fluidsynth")
    subprocess.run(["fluidsynth", "-ni", "-q", "-g", str(gain), "-r", "44100", "-F", str(wav), str(sound_font), str(mid)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    return wav


@dataclass(frozen=True)
class Render:
    """One audio file of the set with its reference notes: what a preset is tuned and scored on."""

    piece: str
    genre: str
    soundfont: str
    effect: str
    wav: Path
    reference: list[TruthNote]
    subset: bool


def _fingerprint(spec: CorpusSpec, font: str, effect: str) -> str:
    return hashlib.sha256(f"{CORPUS_VERSION}|{spec!r}|{font}|{effect}|{EFFECTS[effect]}".encode()).hexdigest()[:16]


def render_corpus_piece(spec: CorpusSpec, font: str, effect: str, cache: Path = DEFAULT_CACHE) -> Render:
    folder = cache / f"corpus-{CORPUS_VERSION}-{font}" / spec.name
    truth_file, mix = folder / "truth.json", folder / "mix.wav"
    stamp = _fingerprint(spec, font, effect)
    fresh = truth_file.is_file() and mix.is_file()
    if fresh:
        try:
            fresh = json.loads(truth_file.read_text()).get("fingerprint") == stamp
        except ValueError:
            fresh = False
    if not fresh:
        started = time.monotonic()
        folder.mkdir(parents=True, exist_ok=True)
        mid, raw = folder / "mix.mid", folder / "raw.wav"
        midi = excerpt(spec)
        midi.write(str(mid))
        if SOUNDFONTS[font].suffix == ".cfg":
            # TiMidity++, with stand-ins for the programs the patch set lacks (benchmarks/render.py).
            render(midi, raw, sound_font=SOUNDFONTS[font])
            raw.with_suffix(".mid").unlink()
        else:
            fluidsynth(mid, raw, SOUNDFONTS[font])
        apply_effect(raw, mix, effect)
        raw.unlink()
        notes = truth_notes(mid)
        truth_file.write_text(json.dumps({
            "name": spec.name, "genre": spec.genre, "soundfont": font, "effect": effect, "source": spec.source,
            "tempo": spec.tempo, "notes": [n.__dict__ for n in notes], "fingerprint": stamp,
        }))  # fmt: skip
        logger.info("rendered %s with %s (%s) in %.1f s", spec.name, font, effect, time.monotonic() - started)
    data = json.loads(truth_file.read_text())
    return Render(spec.name, spec.genre, font, effect, mix, [TruthNote(**n) for n in data["notes"]], spec.subset)


def render_band_piece(spec: evalset.PieceSpec, font: str, effect: str, cache: Path = DEFAULT_CACHE) -> Render:
    """A composed piece (evalset.py, rendered by it with this soundfont), with the effect chain on top."""
    piece = evalset.build_piece(spec, cache, SOUNDFONTS[font])
    wav = piece.mix
    if effect != "dry":
        wav = piece.folder / f"mix.{effect}.wav"
        if not wav.is_file() or wav.stat().st_mtime < piece.mix.stat().st_mtime:
            apply_effect(piece.mix, wav, effect)
    return Render(spec.name, "band", font, effect, wav, piece.truth.pitched_notes(), spec.subset)


def build_all(
    subset: str = "full",
    cache: Path = DEFAULT_CACHE,
    fonts: Sequence[str] = tuple(SOUNDFONTS),
    genres: Sequence[str] = GENRES,
) -> list[Render]:
    """Every render of the set: corpus pieces and the composed pitched pieces, every soundfont."""
    renders: list[Render] = []
    band = [p for p in evalset.select(subset) if p.pitched] if "band" in genres else []
    corpus_pieces = select(subset, [g for g in genres if g != "band"])
    for font in fonts:
        j = list(SOUNDFONTS).index(font)
        for i, spec in enumerate(corpus_pieces):
            renders.append(render_corpus_piece(spec, font, effect_for(i, j), cache))
        for i, band_spec in enumerate(band):
            renders.append(render_band_piece(band_spec, font, effect_for(i, j), cache))
    return renders


def table(renders: Sequence[Render]) -> str:
    lines = ["| genre | pieces | renders | notes | seconds of audio |", "|---|---|---|---|---|"]
    for genre in GENRES:
        rows = [r for r in renders if r.genre == genre]
        if not rows:
            continue
        seconds = sum(max(n.end for n in r.reference) + TAIL for r in rows)
        lines.append(f"| {genre} | {len({r.piece for r in rows})} | {len(rows)} | "
                     f"{sum(len(r.reference) for r in rows)} | {seconds:.0f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subset", choices=("full", "ci"), default="full")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    started = time.monotonic()
    renders = build_all(args.subset, args.cache)
    logger.info("%d renders ready in %.1f s", len(renders), time.monotonic() - started)
    sys.stdout.write(table(renders) + "\n")


if __name__ == "__main__":
    main()
