"""transcription.musicxml: the quantized notes as a score, read back with music21 (and rendered by MuseScore)."""

from __future__ import annotations

import io
import itertools
import os
import random
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import pretty_midi
import pytest
from music21 import clef, converter, layout, note, stream, tempo
from music21 import key as m21key
from music21 import meter as m21meter

from music.key import Key
from music.midi import build_midi, midi_bytes, notes_document
from music.musicxml import musicxml_bytes
from music.notes import Note
from music.presets import QuantizeGrid
from music.quantize import quantize
from music.rhythm import BeatGrid

GRID = BeatGrid.steady(120.0, 30.0)  # a beat every 0.5 s from time 0, 4/4: position = 2 * seconds
B = 0.5  # seconds per beat on GRID


def _beats(start: float, length: float, pitch: int, velocity: int = 90) -> Note:
    """A note on GRID, in beats."""
    return Note(start * B, (start + length) * B, pitch, velocity)


def _score(stems: dict[str, list[Note]], grid: BeatGrid = GRID, key: Key | None = None, divisions: int = 4):
    """Quantize as the pipeline does, write the MusicXML, and parse it back."""
    quantized = {stem: quantize(notes, grid, divisions) for stem, notes in stems.items()}
    data = musicxml_bytes(quantized, grid, key, divisions)
    return converter.parse(data, format="musicxml"), data


def _parts(score: stream.Score) -> dict[str, list[stream.Part]]:
    """Parts by name; a grand staff is two PartStaffs of one name."""
    parts: dict[str, list[stream.Part]] = {}
    for part in score.parts:
        parts.setdefault(part.partName, []).append(part)
    return parts


def _notes(parts: list[stream.Part]) -> set[tuple[int, Fraction, Fraction]]:
    """(MIDI pitch, offset, duration) in quarter notes from the start, tied pieces joined (per voice, as the
    MusicXML ties them; music21's stripTies mixes up neighbouring notes of one pitch), chords opened up."""
    found = set()
    for part in parts:
        tied: dict[tuple[str, int], Fraction] = {}  # (voice, pitch) -> where its tie chain started
        measures = list(part.getElementsByClass(stream.Measure))
        # music21 drops the container of a bar's only voice, which is the staff's first (1, or 5 below).
        first_voice = min((str(v.id) for m in measures for v in m.voices), key=int, default="1")
        for m in measures:
            for container in list(m.voices) or [m]:
                voice = str(container.id) if container is not m else first_voice
                for el in container.notes:
                    start = Fraction(m.offset) + Fraction(el.offset)
                    end = start + Fraction(el.quarterLength)
                    for n in getattr(el, "notes", None) or [el]:
                        kind = (n.tie or el.tie).type if (n.tie or el.tie) else None
                        key = (voice, n.pitch.midi)
                        began = tied.pop(key) if kind in ("continue", "stop") else start
                        if kind in ("start", "continue"):
                            tied[key] = began
                        else:
                            found.add((n.pitch.midi, began, end - began))
        assert not tied, f"ties left open: {tied}"
    return found


def _expected(notes: list[Note], grid: BeatGrid, divisions: int) -> set[tuple[int, Fraction, Fraction]]:
    """What the score must hold for notes: their quantized positions, in beats (steps counted from the
    beats' offset, as quantize counts them)."""
    origin = Fraction(grid.first_beat_position % 1)
    out = set()
    for n in quantize(notes, grid, divisions):
        start = origin + Fraction(round((grid.beat_position(n.start) - origin) * divisions), divisions)
        end = origin + Fraction(round((grid.beat_position(n.end) - origin) * divisions), divisions)
        out.add((n.pitch, start, end - start))
    return out


BAND = {
    "vocals": [_beats(0, 1, 67), _beats(1, 0.5, 69), _beats(1.5, 0.25, 71), _beats(1.75, 0.25, 72),
               _beats(2, 2, 74), _beats(6, 1.5, 72)],
    "bass": [_beats(0, 2, 36), _beats(2, 1, 43), _beats(3, 1, 41), _beats(4, 4, 36)],
    "other": [_beats(0, 2, 60), _beats(0, 2, 64), _beats(0, 2, 67),  # a chord on the treble staff
              _beats(0, 4, 48),  # bass staff
              _beats(2, 2, 65), _beats(2.5, 0.5, 72),  # overlapping, of different lengths: two voices
              _beats(4, 1, 55), _beats(5, 1, 62)],
    "drums": [_beats(0, 0.2, 36), _beats(0, 0.2, 42), _beats(0.5, 0.2, 42), _beats(1, 0.2, 38),
              _beats(1, 0.2, 42), _beats(1.5, 0.2, 46), _beats(2, 0.2, 36)],
}  # fmt: skip


def test_every_note_comes_back_per_part_with_its_offset_and_duration() -> None:
    score, _ = _score(BAND, key=Key(0, "major", 0.9))
    parts = _parts(score)
    assert list(parts) == ["Vocals", "Bass", "Other", "Drums"]  # the stems' order
    for stem in ("vocals", "bass", "other"):
        assert _notes(parts[stem.capitalize()]) == _expected(BAND[stem], GRID, 4), stem
    # Instruments of the stems' General MIDI programs (0-based, as options.py has them).
    assert [parts[name][0].getInstrument().midiProgram for name in ("Vocals", "Bass", "Other")] == [53, 33, 0]


def test_key_time_signature_and_tempo() -> None:
    grid = BeatGrid.steady(100.0, 30.0, beats_per_bar=3)
    stems = {"vocals": [Note(0.0, 0.6, 63, 90)], "bass": [Note(0.6, 1.2, 39, 90)], "drums": []}
    score, _ = _score(stems, grid, key=Key(3, "major", 0.8))  # Eb major
    for part in score.parts:
        (ts,) = part.recurse().getElementsByClass(m21meter.TimeSignature)
        assert ts.ratioString == "3/4"
    pitched = [p for p in score.parts if p.partName != "Drums"]
    for part in pitched:
        (ks,) = part.recurse().getElementsByClass(m21key.KeySignature)
        assert ks.sharps == -3
    drums = next(p for p in score.parts if p.partName == "Drums")
    assert not drums.recurse().getElementsByClass(m21key.KeySignature)  # a drum staff has no key
    marks = list(score.recurse().getElementsByClass(tempo.MetronomeMark))
    assert [(m.number, m.referent.quarterLength) for m in marks] == [(100, 1.0)]  # one, in quarter notes
    # Spelled in the key: Eb, not D#.
    assert {n.pitch.name for n in score.recurse().notes if n.isNote} == {"E-"}


@pytest.mark.parametrize(
    ("key", "sharps", "names"),
    [
        (Key(1, "major", 0.9), -5, {"D-", "E-"}),  # Db major rather than C# major's 7 sharps
        (Key(9, "minor", 0.9), 0, {"G#", "A"}),  # A minor's raised 7th is G#, not Ab
        (Key(2, "minor", 0.9), -1, {"C#", "D"}),  # D minor: C#, though the key has flats
    ],
)
def test_pitches_are_spelled_in_the_key(key: Key, sharps: int, names: set[str]) -> None:
    pcs = {"D-": 1, "E-": 3, "G#": 8, "A": 9, "C#": 1, "D": 2}
    stems = {"vocals": [_beats(i, 1, 60 + pcs[name]) for i, name in enumerate(sorted(names))]}
    score, _ = _score(stems, key=key)
    assert score.recurse().getElementsByClass(m21key.KeySignature)[0].sharps == sharps
    assert {n.pitch.name for n in score.recurse().notes} == names


def test_accidentals_follow_the_key_and_the_bar() -> None:
    # G major: F# needs no sign; F natural does, and again in the next bar, and F# after it in a bar.
    stems = {"vocals": [_beats(0, 1, 66), _beats(1, 1, 65), _beats(2, 1, 65), _beats(3, 1, 66), _beats(4, 1, 65)]}
    _, data = _score(stems, key=Key(7, "major", 0.9))
    shown = [
        (float(n.findtext("pitch/alter") or 0), n.findtext("accidental"))
        for n in ET.fromstring(data).iter("note")
        if n.find("pitch") is not None
    ]
    assert shown == [(1, None), (0, "natural"), (0, None), (1, "sharp"), (0, "natural")]


def test_clefs_suit_each_part_and_piano_like_stems_get_a_grand_staff() -> None:
    stems = {
        "vocals": [_beats(0, 1, 67)],
        "bass": [_beats(0, 1, 33)],
        "guitar": [_beats(0, 1, 52)],
        "piano": [_beats(0, 1, 72), _beats(0, 1, 40)],
        "mix": [],
        "drums": [_beats(0, 1, 36)],
    }
    score, _ = _score(stems)
    parts = _parts(score)

    def clefs(name: str) -> list[str]:
        return [type(part.recurse().getElementsByClass(clef.Clef)[0]).__name__ for part in parts[name]]

    assert clefs("Vocals") == ["TrebleClef"]
    assert clefs("Bass") == ["Bass8vbClef"]  # bass guitar sounds an octave below the written note
    assert clefs("Guitar") == ["Treble8vbClef"]
    assert clefs("Piano") == clefs("Mix") == ["TrebleClef", "BassClef"]
    assert clefs("Drums") == ["PercussionClef"]
    groups = {g.name: g for g in score.recurse().getElementsByClass(layout.StaffGroup)}
    assert set(groups) == {"Piano", "Mix"}
    assert groups["Piano"].symbol == "brace"
    treble, bass = parts["Piano"]
    assert isinstance(treble, stream.PartStaff) and groups["Piano"].isFirst(treble)
    assert _notes([treble]) == {(72, 0, 1)} and _notes([bass]) == {(40, 0, 1)}  # split at middle C


def test_a_note_across_a_bar_line_is_tied_and_reads_back_as_one() -> None:
    score, _ = _score({"vocals": [_beats(2, 4, 64), _beats(6, 2, 65)]})
    (part,) = score.parts
    pieces = [(n.measureNumber, n.offset, n.quarterLength, n.tie.type if n.tie else None) for n in part.recurse().notes]
    assert pieces == [(1, 2.0, 2.0, "start"), (2, 0.0, 2.0, "stop"), (2, 2.0, 2.0, None)]
    assert _notes([part]) == {(64, 2, 4), (65, 6, 2)}


def test_gaps_are_rests_and_overlapping_notes_are_voices() -> None:
    score, _ = _score({"other": BAND["other"]})
    treble, _ = score.parts
    m1 = treble.getElementsByClass(stream.Measure)[0]
    voices = m1.getElementsByClass(stream.Voice)
    assert len(voices) == 2  # F4 (2 beats) and C5 (half a beat), overlapping
    first = voices[0]
    assert [type(e).__name__ for e in first.notesAndRests] == ["Chord", "Note"]  # C-E-G chord, then F4
    second = [(e.offset, e.quarterLength, e.isRest) for e in voices[1].notesAndRests if not e.style.hideObjectOnPrint]
    assert (2.5, 0.5, False) in second
    m2 = treble.getElementsByClass(stream.Measure)[1]
    rests = [r for r in m2.recurse().notesAndRests if r.isRest]
    assert sum(r.quarterLength for r in rests) == 3.0  # D4 on beat 2 of bar 2, rests around it


def test_bar_one_is_the_pickup_with_its_own_time_signature() -> None:
    # 4/4, first tracked beat (a downbeat) at 0.5 s, beats 0.6 s apart: the 0.5 s before it is 3 sixteenths
    # (rhythm.py's pickup rule), so bar 1 is a 3/16 pickup and the first downbeat is bar 2, beat 1
    # (position 0.75), as in the MIDI and notes.json. The steps are counted from the beats (0.75 + k / 4).
    grid = BeatGrid.from_line(0.5, 0.6, 20)
    assert (grid.pickup_beats, grid.time_signatures()) == (0.75, [(0.0, 3, 16), (0.75, 4, 4)])
    downbeat = Note(0.5, 1.1, 60, 90)
    before = Note(0.25, 0.5, 62, 90)  # inside the pickup: positions 0.375 .. 0.75, quantized 0.5 .. 0.75
    score, data = _score({"vocals": [downbeat, before]}, grid)
    notes = {n.pitch.midi: n for n in score.recurse().notes}
    assert (notes[60].measureNumber, notes[60].offset, notes[60].quarterLength) == (2, 0.0, 1.0)
    assert grid.bar_and_beat(0.5) == (2, 1.0)
    assert (notes[62].measureNumber, notes[62].offset, notes[62].quarterLength) == (1, 0.5, 0.25)
    (part,) = score.parts
    m1, m2 = part.getElementsByClass(stream.Measure)[:2]
    assert (m1.number, m1.quarterLength, m1.timeSignature.ratioString) == (1, 0.75, "3/16")
    assert (m2.number, m2.offset, m2.timeSignature.ratioString) == (2, 0.75, "4/4")
    # A measure of its own, numbered 1, not a MusicXML anacrusis (number 0 or implicit): MuseScore counts it.
    measures = ET.fromstring(data).iter("measure")
    assert [(m.get("number"), m.get("implicit", "no")) for m in itertools.islice(measures, 2)] == [
        ("1", "no"), ("2", "no"),
    ]  # fmt: skip


def _midi_notes(stems: dict[str, list[Note]], grid: BeatGrid) -> dict[str, set[tuple[int, Fraction, Fraction]]]:
    """(pitch, start, duration) in beats of each stem's notes as transcription.quantized.mid has them."""
    midi = pretty_midi.PrettyMIDI(io.BytesIO(midi_bytes(build_midi(stems, grid))))
    beats = {
        i.name: {
            (n.pitch, Fraction(midi.time_to_tick(n.start), midi.resolution),
             Fraction(midi.time_to_tick(n.end) - midi.time_to_tick(n.start), midi.resolution))
            for n in i.notes
        }
        for i in midi.instruments
    }  # fmt: skip
    return beats


def _bar_and_beat(part: stream.Part, position: Fraction) -> tuple[int, float]:
    """The measure number a position falls in, and its beat there as notes.json counts it (the time
    signature's own note value: eighths in a 5/8 pickup)."""
    ts = None
    for m in part.getElementsByClass(stream.Measure):
        ts = m.timeSignature or ts
        if m.offset <= position < m.offset + m.quarterLength:
            return m.number, float((position - Fraction(m.offset)) * ts.denominator / 4 + 1)
    raise AssertionError(f"no measure at {position}")


# (beats per bar, first beat in seconds at 120 BPM, first downbeat's index, pickup in beats)
PICKUPS = [
    (4, 0.0, 0, 0.0),
    (4, 0.0, 1, 1.0),
    (4, 0.125, 2, 2.25),  # a sixteenth before the first beat, then two beats: 9/16
    (4, 1.0, 1, 3.0),  # two virtual beats before the first tracked one
    (3, 0.0, 0, 0.0),
    (3, 0.0, 1, 1.0),
    (3, 0.125, 2, 2.25),
    (3, 0.45, 2, 0.0),  # 4 sixteenths and 2 beats: 3 beats, a whole bar after all
]


@pytest.mark.parametrize(("beats_per_bar", "first_beat", "first_downbeat", "pickup"), PICKUPS)
def test_pickup_measures_follow_the_grid_and_notes_match_the_midi_and_notes_json(
    beats_per_bar: int, first_beat: float, first_downbeat: int, pickup: float
) -> None:
    grid = BeatGrid.from_line(first_beat, 0.5, 40, beats_per_bar, first_downbeat)
    assert grid.pickup_beats == pickup
    downbeat = grid.beats[first_downbeat]
    assert grid.beat_position(downbeat) == pickup or pickup == 0
    rng = random.Random(beats_per_bar * 10 + first_downbeat)
    t, vocals = 0.0, []
    while t < 12.0:
        length = rng.choice([0.06, 0.13, 0.25, 0.37, 0.5, 0.8, 1.1])
        vocals.append(Note(t, t + length, rng.randrange(60, 80), 90))
        t += length + rng.choice([0.0, 0.0, 0.12, 0.3])
    stems = {
        "vocals": vocals,
        "bass": [Note(downbeat, downbeat + 0.5, 40, 90)],  # the first downbeat
        "guitar": [Note(grid.time_at(pickup + beats_per_bar - 1), grid.time_at(pickup + beats_per_bar + 1), 52, 90)],
    }
    quantized = {stem: quantize(notes, grid, 4) for stem, notes in stems.items()}
    score = converter.parse(musicxml_bytes(quantized, grid, None, 4), format="musicxml")
    parts = _parts(score)
    # Bar 1 is the pickup with its own time signature (or a whole bar); the piece's meter from bar 2 on.
    (_, num, den), *later = grid.time_signatures()
    for part in score.parts:
        measures = list(part.getElementsByClass(stream.Measure))
        bar_one = pickup or beats_per_bar
        assert (measures[0].number, measures[0].quarterLength, measures[0].timeSignature.ratioString) == (
            1, bar_one, f"{num}/{den}",
        )  # fmt: skip
        assert (measures[1].timeSignature.ratioString if measures[1].timeSignature else None) == (
            f"{beats_per_bar}/4" if later else None
        )
        for m in measures[1:]:
            assert (m.offset, m.quarterLength) == (bar_one + (m.number - 2) * beats_per_bar, beats_per_bar)
    # The first downbeat: bar 2, beat 1 after a pickup (or after a whole first bar), else bar 1, beat 1.
    (bass,) = parts["Bass"]
    (first,) = bass.recurse().notes
    expected_bar = 1 if grid.beat_position(downbeat) == 0 else 2
    assert grid.bar_and_beat(downbeat) == (expected_bar, 1.0)
    assert (first.measureNumber, first.offset) == (expected_bar, 0.0)
    # Every note where transcription.quantized.mid has it, and in notes.json's bar and beat.
    midi = _midi_notes(quantized, grid)
    for stem in stems:
        assert _notes(parts[stem.capitalize()]) == midi[stem], stem
    document = notes_document(quantized, grid, None)
    part_of = {stem: parts[stem.capitalize()][0] for stem in stems}
    for row in document["notes"]:
        position = Fraction(round(grid.beat_position(row["start"]) * 480), 480)
        assert _bar_and_beat(part_of[row["stem"]], position) == (row["bar"], row["beat"]), row
    # The guitar's note crosses the first full bar's end: tied, and one note read back.
    (guitar,) = parts["Guitar"]
    pieces = [(n.measureNumber, n.offset, n.quarterLength, n.tie.type if n.tie else None)
              for n in guitar.recurse().notes]  # fmt: skip
    second = 3 if pickup else 2
    assert pieces == [(second - 1, beats_per_bar - 1, 1.0, "start"), (second, 0.0, 1.0, "stop")]


def test_a_note_across_the_pickups_bar_line_is_tied() -> None:
    grid = BeatGrid.from_line(0.125, 0.5, 40, 4, 2)  # a 9/16 pickup: the first downbeat at position 2.25
    score, _ = _score({"vocals": [Note(grid.time_at(1.25), grid.time_at(3.25), 64, 90)]}, grid)
    (part,) = score.parts
    pieces = [(n.measureNumber, n.offset, n.quarterLength, n.tie.type if n.tie else None) for n in part.recurse().notes]
    assert pieces == [(1, 1.25, 1.0, "start"), (2, 0.0, 1.0, "stop")]
    assert _notes([part]) == {(64, Fraction(5, 4), 2)}


@pytest.mark.parametrize("divisions", [3, 6])
@pytest.mark.parametrize(("first_beat", "fragment"), [(0.125, 0.25), (0.25, 0.5), (0.375, 0.75)])
def test_triplet_grids_after_a_pickup_fragment_land_on_their_steps(
    divisions: int, first_beat: float, fragment: float
) -> None:
    """Steps are counted from the beats (a fragment of 1/4..3/4 beat off position 0), so in the pickup's
    fragment they are counted back from its first beat: under their own triplet bracket, with a triplet
    32nd where the fragment starts between two steps. Every note comes back exactly, as in the MIDI."""
    grid = BeatGrid.from_line(first_beat, 0.5, 40, 4, 2)
    assert (grid.first_beat_position, grid.pickup_beats) == (fragment, fragment + 2)
    rng = random.Random(divisions)
    stems: dict[str, list[Note]] = {"vocals": [], "other": []}
    for stem, low in (("vocals", 60), ("other", 48)):
        t = 0.0
        while t < 8.0:
            length = rng.choice([0.03, 0.06, 0.1, 0.17, 0.3, 0.5, 0.75])
            for _ in range(rng.choice([1, 1, 2]) if stem == "other" else 1):
                stems[stem].append(Note(t, t + length, low + rng.randrange(24), 90))
            t += length
    score, data = _score(stems, grid, divisions=divisions)
    parts = _parts(score)
    quantized = {stem: quantize(notes, grid, divisions) for stem, notes in stems.items()}
    midi = _midi_notes(quantized, grid)
    for stem, notes in stems.items():
        assert _notes(parts[stem.capitalize()]) == midi[stem] == _expected(notes, grid, divisions), stem
    # The earliest step is in the fragment (counted back from its first beat), and the score has it.
    earliest = min(start for _, start, _ in midi["vocals"])
    assert earliest == Fraction(fragment) - Fraction(int(fragment * divisions), divisions)
    assert all(n.duration.type not in ("complex", "inexpressible") for n in score.recurse().notesAndRests)
    # Every triplet bracket opened is closed, in every measure, and spans a sixteenth, an eighth or a beat.
    for part in score.parts:
        for m in part.getElementsByClass(stream.Measure):
            for container in list(m.voices) or [m]:
                began = None
                for el in container.notesAndRests:
                    kind = el.duration.tuplets[0].type if el.duration.tuplets else None
                    if kind == "start":
                        assert began is None
                        began = Fraction(el.offset)
                    if kind == "stop":
                        assert began is not None
                        span = Fraction(el.offset) + Fraction(el.quarterLength) - began
                        assert span in (Fraction(1, 4), Fraction(1, 2), 1), (m.number, span)
                        began = None
                assert began is None
    assert b"<time-modification>" in data


def test_drums_are_unpitched_on_a_percussion_staff_with_their_instruments() -> None:
    score, data = _score({"drums": BAND["drums"]})
    (part,) = score.parts
    assert isinstance(part.recurse().getElementsByClass(clef.Clef)[0], clef.PercussionClef)
    hits = [(el.offset, n.displayName, n.notehead) for el in part.flatten().notes for n in getattr(el, "notes", [el])]
    assert all(isinstance(n, note.Unpitched) for el in part.flatten().notes for n in getattr(el, "notes", [el]))
    assert sorted(hits) == sorted([
        (0.0, "F4", "normal"), (0.0, "G5", "x"), (0.5, "G5", "x"), (1.0, "C5", "normal"), (1.0, "G5", "x"),
        (1.5, "G5", "circle-x"), (2.0, "F4", "normal"),
    ])  # fmt: skip
    # Each note names its MusicXML instrument, which plays its GM key (1-based) on channel 10.
    root = ET.fromstring(data)
    keys = {
        mi.get("id"): (int(mi.findtext("midi-unpitched")) - 1, mi.findtext("midi-channel"))
        for mi in root.iter("midi-instrument")
    }
    assert set(keys.values()) == {(36, "10"), (38, "10"), (42, "10"), (46, "10")}
    played = sorted(
        (n.findtext("unpitched/display-step"), keys[n.find("instrument").get("id")][0])
        for n in root.iter("note") if n.find("unpitched") is not None
    )  # fmt: skip
    assert played == [("C", 38), ("F", 36), ("F", 36), ("G", 42), ("G", 42), ("G", 42), ("G", 46)]
    # Hands and feet in two voices, stems up and down.
    m1 = part.getElementsByClass(stream.Measure)[0]
    assert len(m1.getElementsByClass(stream.Voice)) == 2


def test_no_notes_and_a_single_stem_still_make_a_score() -> None:
    score, _ = _score({"vocals": [], "other": [], "drums": []})
    assert [p.partName for p in score.parts] == ["Vocals", "Other", "Other", "Drums"]
    for part in score.parts:
        (m,) = part.getElementsByClass(stream.Measure)
        assert [r.quarterLength for r in m.recurse().notesAndRests if r.isRest] == [4.0]
    single, _ = _score({"bass": [_beats(1, 1, 40)]})
    assert _notes(list(single.parts)) == {(40, 1, 1)}


def test_very_short_notes_and_notes_beyond_the_last_beat() -> None:
    last_beat = GRID.beats[-1]
    stems = {"vocals": [Note(1.0, 1.01, 60, 90), Note(last_beat + 10.0, last_beat + 11.0, 62, 90)]}
    score, _ = _score(stems)
    found = _notes(list(score.parts))
    assert (60, 2, Fraction(1, 4)) in found  # 10 ms still takes one sixteenth
    far = GRID.beat_position(last_beat + 10.0)  # extrapolated past the last beat at the last interval
    assert (62, Fraction(round(far * 4), 4), 2) in found
    assert score.parts[0].getElementsByClass(stream.Measure)[-1].number == int(far // 4) + 1


@pytest.mark.parametrize("grid", list(QuantizeGrid))
def test_every_grid_round_trips(grid: QuantizeGrid) -> None:
    """Random lines and chords on every grid the service offers, triplets included, come back exactly."""
    rng = random.Random(7)
    divisions = grid.divisions_per_beat
    stems: dict[str, list[Note]] = {"vocals": [], "other": [], "bass": []}
    for stem, low in (("vocals", 60), ("other", 48), ("bass", 28)):
        t = 0.0
        while t < 16.0:
            length = rng.choice([0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.6])
            for _ in range(rng.choice([1, 1, 2, 3]) if stem == "other" else 1):
                stems[stem].append(Note(t, t + length, low + rng.randrange(24), 90))
            t += length
    score, _ = _score(stems, divisions=divisions)
    parts = _parts(score)
    for stem, notes in stems.items():
        expected = _expected(notes, GRID, divisions)
        assert _notes(parts[stem.capitalize()]) == expected, stem
    # No note value music21 had to invent: every piece is a single written value.
    assert all(n.duration.type not in ("complex", "inexpressible") for n in score.recurse().notesAndRests)


def test_a_songs_worth_of_notes_converts_in_seconds() -> None:
    # music21's own makeNotation/makeBeams took over a minute for this; the converter builds measures itself.
    rng = random.Random(3)
    grid = BeatGrid.steady(120.0, 180.0)
    stems = {
        "vocals": [Note(t * 0.25, t * 0.25 + 0.2, rng.randrange(60, 80), 90) for t in range(0, 720, 2)],
        "bass": [Note(t * 0.25, t * 0.25 + 0.45, rng.randrange(28, 50), 90) for t in range(0, 720, 2)],
        "other": [Note(t * 0.25, t * 0.25 + rng.choice([0.2, 0.7, 1.2]), rng.randrange(48, 84), 90)
                  for t in range(0, 720) for _ in range(2)],
        "drums": [Note(t * 0.25, t * 0.25 + 0.1, rng.choice([36, 38, 42, 46]), 90) for t in range(720)],
    }  # fmt: skip
    quantized = {stem: quantize(notes, grid, 4) for stem, notes in stems.items()}
    count = sum(len(n) for n in quantized.values())
    began = time.process_time()  # CPU time: the shared test machines' load does not count
    data = musicxml_bytes(quantized, grid, Key(0, "major", 0.9), 4)
    seconds = time.process_time() - began
    assert count > 2500 and data.startswith(b"<?xml")
    assert seconds < 15.0, f"{count} notes took {seconds:.1f} s of CPU"


def test_musescore_renders_the_score_to_png(tmp_path: Path) -> None:
    mscore = shutil.which("mscore3")
    if mscore is None:
        pytest.skip("MuseScore 3 (Debian package musescore3, binary mscore3) is not installed; .ci/run installs it")
    _, data = _score(BAND, key=Key(0, "major", 0.9))
    source = tmp_path / "transcription.musicxml"
    source.write_bytes(data)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(runtime), "HOME": str(tmp_path)}
    done = subprocess.run(
        [mscore, "-o", str(tmp_path / "page.png"), str(source)], env=env, capture_output=True, timeout=180
    )
    pages = sorted(tmp_path.glob("page*.png"))  # MuseScore numbers the pages: page-1.png, ...
    assert done.returncode == 0 and pages, done.stderr.decode(errors="replace")[-2000:]
    png = pages[0].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_musescore_reads_the_pickup_as_bar_one_with_every_note_in_place(tmp_path: Path) -> None:
    """MuseScore's own MusicXML of a score with an 11/16 pickup on the 1/8 triplet grid: the same measures
    (the pickup counted as bar 1, with its time signature) and every note where ours has it."""
    mscore = shutil.which("mscore3")
    if mscore is None:
        pytest.skip("MuseScore 3 (Debian package musescore3, binary mscore3) is not installed; .ci/run installs it")
    grid = BeatGrid.from_line(0.375, 0.5, 40, 4, 2)  # pickup 2.75 beats: a 3/4-beat fragment and two beats

    def at(start: float, end: float, pitch: int) -> Note:
        return Note(grid.time_at(start), grid.time_at(end), pitch, 90)

    stems = {
        "vocals": [at(1 / 12, 5 / 12, 60), at(5 / 12, 13 / 12, 62), at(13 / 12, 3.75, 64), at(4, 13 / 3, 65),
                   at(13 / 3, 5, 67)],
        "bass": [at(0.2, 0.5, 40), at(2, 3, 43)],
        "drums": [at(0.1, 0.2, 36), at(0.75, 0.9, 42), at(2.75, 2.9, 36), at(2.75, 2.9, 42)],
    }  # fmt: skip
    ours, data = _score(stems, grid, divisions=3)
    source = tmp_path / "transcription.musicxml"
    source.write_bytes(data)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(runtime), "HOME": str(tmp_path)}
    done = subprocess.run(
        [mscore, "-o", str(tmp_path / "musescore.musicxml"), str(source)],
        check=False, env=env, capture_output=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    exported = (tmp_path / "musescore.musicxml").read_bytes()
    assert [m.get("implicit", "no") for m in ET.fromstring(exported).iter("measure")][:2] == ["no", "no"]
    theirs = converter.parse(exported, format="musicxml")

    def measures(part: stream.Part) -> list[tuple[int, float, float, str | None]]:
        return [
            (m.number, m.offset, m.quarterLength, m.timeSignature.ratioString if m.timeSignature else None)
            for m in part.getElementsByClass(stream.Measure)
        ]

    assert measures(ours.parts[0])[:2] == [(1, 0.0, 2.75, "11/16"), (2, 2.75, 4.0, "4/4")]
    assert [measures(p) for p in theirs.parts] == [measures(p) for p in ours.parts]
    for name in ("Vocals", "Bass"):
        assert _notes(_parts(theirs)[name]) == _notes(_parts(ours)[name]), name
    hits = [sorted((el.getOffsetInHierarchy(p), len(getattr(el, "notes", [el]))) for el in p.recurse().notes)
            for p in (_parts(ours)["Drums"][0], _parts(theirs)["Drums"][0])]  # fmt: skip
    assert hits[0] == hits[1] and len(hits[0]) == 5  # the first kick's two tied pieces, and two voices at 2.75


def test_more_overlaps_than_voices_cut_the_earlier_notes_short() -> None:
    # Six notes entering a beat apart and all held: a staff shows four voices, so the overflow cuts the
    # voice that frees soonest where the next note starts. Every onset and pitch is kept.
    stems = {"vocals": [_beats(i, 8, 60 + i) for i in range(6)]}
    score, _ = _score(stems)
    (part,) = score.parts
    assert max(len(m.voices) for m in part.getElementsByClass(stream.Measure)) == 4
    found = _notes([part])
    assert {(p, start) for p, start, _ in found} == {(60 + i, i) for i in range(6)}
    assert (60, 0, 4) in found and (65, 5, 8) in found
