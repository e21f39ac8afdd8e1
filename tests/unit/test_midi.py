"""MIDI assembly: one named track per stem with its program, notes and bends where they belong."""

from __future__ import annotations

import io
from dataclasses import replace

import mido
import pretty_midi
import pytest

from music.key import Key
from music.midi import analysis_summary, build_midi, midi_bytes, notes_document  # fmt: skip
from music.notes import Note, PitchBend, notes_from_basic_pitch  # fmt: skip
from music.rhythm import BeatGrid
from serve_app.api.schemas import MusicAnalysis


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


def test_notes_document_lists_every_note_in_time_order_with_its_bar_and_beat() -> None:
    grid = BeatGrid.steady(120.0, 10.0)  # beats every 0.5 s from 0, 4/4
    key = Key(tonic=9, mode="minor", confidence=0.8)
    stems = {"bass": [Note(2.25, 3.0, 40, 90)], "vocals": [Note(0.5, 0.9, 70, 60, (PitchBend(0.5, 0.25),))]}
    document = notes_document(stems, grid, key)
    assert (document["tempo_bpm"], document["time_signature"], document["key"]) == (120.0, "4/4", "A minor")
    assert document["beats"][:3] == [0.0, 0.5, 1.0] and document["downbeats"][:2] == [0.0, 2.0]
    rows = document["notes"]
    assert [r["stem"] for r in rows] == ["vocals", "bass"]
    assert rows[0] == {
        "stem": "vocals", "start": 0.5, "end": 0.9, "pitch": 70, "velocity": 60,
        "pitch_bends": [{"time": 0.5, "semitones": 0.25}], "bar": 1, "beat": 2.0,
    }  # fmt: skip
    assert (rows[1]["bar"], rows[1]["beat"]) == (2, 1.5)  # 2.25 s: half a beat after bar 2
    assert Note.from_json(rows[0]) == stems["vocals"][0]


def test_the_file_carries_the_tempo_map_time_signature_and_key() -> None:
    grid = BeatGrid.steady(90.0, 20.0, beats_per_bar=3)
    midi = _reload(build_midi({"other": [Note(1.0, 2.0, 60, 80)]}, grid, Key(tonic=2, mode="major", confidence=0.9)))
    assert midi.resolution == 480
    _, tempi = midi.get_tempo_changes()
    assert tempi[0] == pytest.approx(90.0, rel=1e-4)
    assert [(t.numerator, t.denominator) for t in midi.time_signature_changes] == [(3, 4)]
    assert [k.key_number for k in midi.key_signature_changes] == [2]  # D major
    assert midi.instruments[0].notes[0].start == pytest.approx(1.0, abs=1e-3)


def test_drums_go_to_channel_ten_and_bends_to_their_stems_own_channel() -> None:
    bent = Note(0.0, 1.0, 60, 80, (PitchBend(0.0, 0.0), PitchBend(0.5, 1.0)))
    stems = {"vocals": [bent], "drums": [Note(0.0, 0.1, 36, 100)], "bass": [Note(0.0, 1.0, 40, 80)]}
    data = midi_bytes(build_midi(stems, BeatGrid.steady(120.0, 4.0)))
    channels: dict[str, set[tuple[str, int]]] = {}
    for track in mido.MidiFile(file=io.BytesIO(data)).tracks:
        name = next((m.name for m in track if m.type == "track_name"), None)
        if name:
            channels[name] = {(m.type, m.channel) for m in track if m.type in ("note_on", "pitchwheel")}
    assert {c for _, c in channels["drums"]} == {9}  # MIDI channel 10, General MIDI percussion
    vocal_channels = {c for _, c in channels["vocals"]}
    assert len(vocal_channels) == 1 and ("pitchwheel", vocal_channels.pop()) in channels["vocals"]
    assert not any(kind == "pitchwheel" for kind, _ in channels["bass"])
    assert {c for _, c in channels["vocals"]}.isdisjoint({c for _, c in channels["bass"]})


def test_analysis_says_where_the_tempo_came_from_and_how_sure_the_meter_is() -> None:
    tracked = replace(BeatGrid.steady(96.0, 30.0, 3), tempo_reason="steady beat: one tempo", meter_confidence=0.734)
    assert analysis_summary(tracked, None) == {
        "tempo_bpm": 96.0, "tempo_source": "tracked", "tempo_reason": "steady beat: one tempo",
        "time_signature": "3/4", "meter_confidence": 0.73, "key": None, "key_confidence": None,
    }  # fmt: skip
    fallback = replace(
        BeatGrid.steady(131.0, 30.0), tempo_source="steady_fallback", tempo_reason="no onsets at the beats",
        meter_confidence=0.0,
    )  # fmt: skip
    document = notes_document({"other": [Note(1.0, 2.0, 60, 80)]}, fallback, None)
    assert (document["tempo_source"], document["tempo_reason"], document["meter_confidence"]) == (
        "steady_fallback", "no onsets at the beats", 0.0,
    )  # fmt: skip
    assert {k: document[k] for k in analysis_summary(fallback, None)} == analysis_summary(fallback, None)
    # The job view's schema carries the new fields rather than dropping them.
    assert MusicAnalysis.model_validate(analysis_summary(fallback, None)).model_dump()["tempo_source"] == "steady_fallback"
