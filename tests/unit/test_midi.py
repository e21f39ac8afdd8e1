"""MIDI assembly: one named track per stem with its program, notes and bends where they belong."""

from __future__ import annotations

import io

import pretty_midi
import pytest

from serve_app.domain.midi import Note, PitchBend, build_midi, midi_bytes, notes_document, notes_from_basic_pitch


def _reload(midi: pretty_midi.PrettyMIDI) -> pretty_midi.PrettyMIDI:
    return pretty_midi.PrettyMIDI(io.BytesIO(midi_bytes(midi)))


def test_one_named_track_per_stem_with_general_midi_programs() -> None:
    stems = {
        "vocals": [Note(0.5, 1.0, 67, 90)],
        "bass": [Note(0.0, 2.0, 36, 100)],
        "other": [Note(1.0, 1.5, 60, 70), Note(1.0, 1.5, 64, 70)],
    }
    midi = _reload(build_midi(stems))
    by_name = {inst.name: inst for inst in midi.instruments}
    assert set(by_name) == {"vocals", "bass", "other"}
    assert by_name["vocals"].program == pretty_midi.instrument_name_to_program("Voice Oohs")
    assert by_name["bass"].program == pretty_midi.instrument_name_to_program("Electric Bass (finger)")
    assert by_name["other"].program == pretty_midi.instrument_name_to_program("Acoustic Grand Piano")
    assert [(n.pitch, n.velocity) for n in by_name["bass"].notes] == [(36, 100)]
    assert by_name["bass"].notes[0].start == pytest.approx(0.0)
    assert by_name["bass"].notes[0].end == pytest.approx(2.0, abs=0.01)
    assert len(by_name["other"].notes) == 2


def test_pitch_bends_stay_on_their_stems_track_and_reset_after_the_note() -> None:
    bent = Note(0.0, 1.0, 60, 80, (PitchBend(0.0, 0.0), PitchBend(0.5, 1.0)))
    midi = _reload(build_midi({"vocals": [bent], "bass": [Note(0.0, 1.0, 40, 80)]}))
    vocals = next(i for i in midi.instruments if i.name == "vocals")
    bass = next(i for i in midi.instruments if i.name == "bass")
    assert [b.pitch for b in vocals.pitch_bends] == [0, 4096, 0]  # +1 semitone of a +/-2 range
    assert bass.pitch_bends == []


def test_basic_pitch_events_become_notes_and_overlapping_bends_are_dropped() -> None:
    events = [
        (0.0, 1.0, 60, 0.5, [0, 3, 3]),  # overlaps the next note: bends dropped
        (0.5, 1.5, 64, 1.0, [0, -3]),
        (2.0, 3.0, 67, 0.0, [0, 3]),  # alone: bends kept, velocity floors at 1
    ]
    notes = notes_from_basic_pitch(events)
    assert [(n.pitch, n.velocity) for n in notes] == [(60, 64), (64, 127), (67, 1)]
    assert notes[0].pitch_bends == () and notes[1].pitch_bends == ()
    assert [(b.time, b.semitones) for b in notes[2].pitch_bends] == [(2.0, 0.0), (3.0, 1.0)]


def test_notes_document_lists_every_note_in_time_order_and_round_trips() -> None:
    stems = {"bass": [Note(1.0, 2.0, 40, 90)], "vocals": [Note(0.5, 0.9, 70, 60, (PitchBend(0.5, 0.25),))]}
    rows = notes_document(stems)
    assert [r["stem"] for r in rows] == ["vocals", "bass"]
    assert rows[0] == {
        "stem": "vocals", "start": 0.5, "end": 0.9, "pitch": 70, "velocity": 60,
        "pitch_bends": [{"time": 0.5, "semitones": 0.25}],
    }  # fmt: skip
    assert Note.from_json(rows[0]) == stems["vocals"][0]
