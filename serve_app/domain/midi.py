"""Notes as stemscribe passes them around, and the MIDI files built from them."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pretty_midi

from serve_app.domain.options import preset_for
from serve_app.domain.rhythm import DEFAULT_TICKS_PER_BEAT, BeatGrid
from serve_app.domain.tempo_map import new_midi

if TYPE_CHECKING:
    from serve_app.domain.key import Key  # key.py builds on Note

# basic-pitch's contour has 3 bins per semitone; MIDI's default bend range is +/-2 semitones.
CONTOUR_BINS_PER_SEMITONE = 3
BEND_RANGE_SEMITONES = 2
_BEND_MAX = 8191


@dataclass(frozen=True)
class PitchBend:
    time: float
    semitones: float


@dataclass(frozen=True)
class Note:
    start: float
    end: float
    pitch: int
    velocity: int
    pitch_bends: tuple[PitchBend, ...] = field(default_factory=tuple)

    def to_json(self, stem: str) -> dict[str, object]:
        data = asdict(self)
        data["pitch_bends"] = [asdict(b) for b in self.pitch_bends]
        return {"stem": stem, **data}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Note:
        bends = tuple(PitchBend(**b) for b in data.get("pitch_bends") or [])  # type: ignore[arg-type]
        return cls(
            start=float(data["start"]),  # type: ignore[arg-type]
            end=float(data["end"]),  # type: ignore[arg-type]
            pitch=int(data["pitch"]),  # type: ignore[call-overload]
            velocity=int(data["velocity"]),  # type: ignore[call-overload]
            pitch_bends=bends,
        )


BasicPitchEvent = tuple[float, float, int, float, "Sequence[int] | None"]


def notes_from_basic_pitch(events: Iterable[BasicPitchEvent]) -> list[Note]:
    """Convert basic-pitch note events; bends of notes that overlap another are dropped,
    as basic-pitch itself does, because MIDI bends apply to the whole channel."""
    ordered = sorted(events, key=lambda e: (e[0], e[2]))
    overlapping: set[int] = set()
    for i, current in enumerate(ordered):
        for j in range(i + 1, len(ordered)):
            if ordered[j][0] >= current[1]:
                break
            overlapping.update((i, j))
    notes = []
    for i, (start, end, pitch, amplitude, bends) in enumerate(ordered):
        velocity = int(np.clip(np.round(127 * amplitude), 1, 127))
        pitch_bends: tuple[PitchBend, ...] = ()
        if bends and i not in overlapping:
            times = np.linspace(start, end, len(bends))
            pitch_bends = tuple(
                PitchBend(round(float(t), 4), round(b / CONTOUR_BINS_PER_SEMITONE, 3)) for t, b in zip(times, bends)
            )
        notes.append(Note(round(float(start), 4), round(float(end), 4), int(pitch), velocity, pitch_bends))
    return notes


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
    """notes.json: the piece's tempo, meter, key and beats, then every note of every stem in time
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
    """What the job view shows of the music: tempo, time signature and key."""
    return {
        "tempo_bpm": round(grid.tempo_bpm, 2),
        "time_signature": grid.time_signature,
        "key": key.name if key else None,
        "key_confidence": key.confidence if key else None,
    }
