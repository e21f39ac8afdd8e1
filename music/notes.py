"""A note as stemscribe passes it around: a small value type every music module shares, with its
JSON form and the conversion from basic-pitch's note events. No MIDI library here, so code that
only reads or writes notes does not import one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

# basic-pitch's contour has 3 bins per semitone.
CONTOUR_BINS_PER_SEMITONE = 3


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
