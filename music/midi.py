"""The MIDI files built from a job's notes: one named track per stem, on the tempo map."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
import pretty_midi

from music.key import Key
from music.notes import Note
from music.presets import preset_for
from music.rhythm import DEFAULT_TICKS_PER_BEAT, BeatGrid
from music.tempo_map import new_midi

# MIDI's default bend range is +/-2 semitones.
BEND_RANGE_SEMITONES = 2
_BEND_MAX = 8191


def instrument_for(stem: str, notes: Sequence[Note]) -> pretty_midi.Instrument:
    preset = preset_for(stem)
    instrument = pretty_midi.Instrument(program=preset.program, is_drum=not preset.pitched, name=stem)
    for note in notes:
        instrument.notes.append(pretty_midi.Note(note.velocity, note.pitch, note.start, note.end))
        for bend in note.pitch_bends:
            value = int(round(bend.semitones / BEND_RANGE_SEMITONES * 8192))
            instrument.pitch_bends.append(pretty_midi.PitchBend(int(np.clip(value, -8192, _BEND_MAX)), bend.time))
        if note.pitch_bends:
            # Leave the channel centred so the next note does not inherit the bend.
            instrument.pitch_bends.append(pretty_midi.PitchBend(0, note.end))
    return instrument


def build_midi(
    stems: Mapping[str, Sequence[Note]], grid: BeatGrid | None = None, key: Key | None = None
) -> pretty_midi.PrettyMIDI:
    """One named track per stem, in the order given, each with its stem's General MIDI program (drums
    on channel 10), over the grid's tempo map and time signature, with the key's signature."""
    midi = new_midi(grid, DEFAULT_TICKS_PER_BEAT)
    if key is not None:
        midi.key_signature_changes.append(pretty_midi.KeySignature(key.midi_key_number, 0.0))
    for stem, notes in stems.items():
        midi.instruments.append(instrument_for(stem, notes))
    return midi


def midi_bytes(midi: pretty_midi.PrettyMIDI) -> bytes:
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


def notes_document(
    stems: Mapping[str, Sequence[Note]], grid: BeatGrid, key: Key | None
) -> dict[str, object]:
    """notes.json: the analysis (`analysis_summary`) and beats, then every note of every stem in time
    order, each with the bar and beat it starts on (as a DAW shows them for transcription.mid)."""
    rows = []
    for stem, notes in stems.items():
        for note in notes:
            bar, beat = grid.bar_and_beat(note.start, ticks_per_beat=DEFAULT_TICKS_PER_BEAT)
            rows.append({**note.to_json(stem), "bar": bar, "beat": round(beat, 3)})
    rows.sort(key=lambda r: (r["start"], r["stem"], r["pitch"]))
    return {
        **analysis_summary(grid, key),
        "beats": [round(t, 4) for t in grid.beats],
        "downbeats": [round(t, 4) for t in grid.downbeats()],
        "notes": rows,
    }


def analysis_summary(grid: BeatGrid, key: Key | None) -> dict[str, object]:
    """What the job view shows of the music: tempo and where it came from, time signature and how
    sure the tracker is of it, and key."""
    return {
        "tempo_bpm": round(grid.tempo_bpm, 2),
        "tempo_source": grid.tempo_source,
        "tempo_reason": grid.tempo_reason,
        "time_signature": grid.time_signature,
        "meter_confidence": None if grid.meter_confidence is None else round(grid.meter_confidence, 2),
        "key": key.name if key else None,
        "key_confidence": key.confidence if key else None,
    }
