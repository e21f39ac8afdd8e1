"""An empty MIDI file whose tempo map and time signatures follow a `BeatGrid`.

Every knot of the grid (time 0, the end of a pickup fragment, then each beat after it; see the pickup
rule in `music.rhythm`) is put on its position's tick (positions are multiples of a
sixteenth, so any PPQ divisible by 4 holds them), and each stretch between knots gets the tempo that
makes it last exactly as long as in the grid. A MIDI tempo is a whole number of microseconds per
quarter note, so each tempo is rounded to microseconds against the time the file has reached so far:
beat times in the file are then within a microsecond of the grid's, with no drift. Consecutive
stretches with the same tempo share one set_tempo event, so a steady grid (`BeatGrid.steady` and the
tracker's regularised grids are on whole microseconds) gets one tempo after a pickup fragment.
No tempo here is far from the piece's: the fragment's is within x0.6..x1.9 by the pickup rule, and
the beats' are as the tracker made them (within x0.5..x2 of its median beat, see
`music.engines.beat_tracker`). A pickup bar 1 gets its own time signature, then the piece's meter.

The tempo map is written with mido (the MIDI library under pretty_midi): set_tempo and time_signature
messages in a tempo track, which pretty_midi reads through its public constructor (`mido_object`) to
place the notes. pretty_midi's own `write()` turns each tempo back into microseconds by way of a float
BPM and truncates, which writes about one tempo in five a microsecond short (591,329 of the 3,000,000
values up to 3 s a beat at 480 PPQ); a microsecond a beat is a drift of 0.1 ms a minute at 120 BPM.
So `TempoMappedMidi.write` puts the exact tempos back into the file pretty_midi wrote, with mido.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import mido
import pretty_midi

from music.rhythm import DEFAULT_TICKS_PER_BEAT, BeatGrid

logger = logging.getLogger(__name__)

DEFAULT_TEMPO_BPM = 120.0
# set_tempo holds 24 bits of microseconds per quarter note.
MAX_US_PER_BEAT = 0xFFFFFF


def tempo_events(grid: BeatGrid, resolution: int = DEFAULT_TICKS_PER_BEAT) -> list[tuple[int, int]]:
    """(tick, microseconds per quarter note) of each tempo change, the first at tick 0."""
    if resolution % 4:
        raise ValueError("resolution must be a multiple of 4: a pickup fragment ends on a sixteenth")
    knots = grid.tempo_knots()
    events: list[tuple[int, int]] = []
    written_us = 0.0  # time of the current knot in the file, microseconds
    for (_, p0), (t1, p1) in zip(knots, knots[1:]):
        tick = round(p0 * resolution)
        ticks = round(p1 * resolution) - tick
        target_us = round(t1 * 1e6) - written_us
        us = min(max(round(target_us * resolution / ticks), 1), MAX_US_PER_BEAT)
        if abs(us * ticks / resolution - target_us) > ticks / resolution:  # more than rounding can explain
            logger.warning("the beat at %.6f s does not fit a MIDI tempo; clamped", t1)
        written_us += us * ticks / resolution
        if not events or events[-1][1] != us:
            events.append((tick, us))
    return events


@dataclass(frozen=True)
class TempoMap:
    """Tempo changes (tick, microseconds per quarter note) and time signatures (tick, numerator,
    denominator) of a file with `resolution` ticks per quarter note."""

    resolution: int
    tempos: tuple[tuple[int, int], ...]
    signatures: tuple[tuple[int, int, int], ...]

    @classmethod
    def for_grid(cls, grid: BeatGrid | None, resolution: int = DEFAULT_TICKS_PER_BEAT) -> TempoMap:
        """The grid's map; 120 BPM in 4/4 for None."""
        if grid is None:
            return cls(resolution, ((0, round(60e6 / DEFAULT_TEMPO_BPM)),), ((0, 4, 4),))
        signatures = tuple((round(p * resolution), num, den) for p, num, den in grid.time_signatures())
        return cls(resolution, tuple(tempo_events(grid, resolution)), signatures)

    def track(self) -> mido.MidiTrack:
        """The tempo track (on one tick, a tempo before a time signature, as pretty_midi's writer orders them)."""
        events = sorted(
            [(tick, 1, mido.MetaMessage("set_tempo", tempo=us)) for tick, us in self.tempos]
            + [(tick, 2, mido.MetaMessage("time_signature", numerator=n, denominator=d)) for tick, n, d in self.signatures],
            key=lambda event: event[:2],
        )
        track = mido.MidiTrack()
        previous = 0
        for tick, _, message in events:
            track.append(message.copy(time=tick - previous))
            previous = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        return track

    def with_exact_tempos(self, data: bytes) -> bytes:
        """`data` (a file written on this map) with each set_tempo message's exact value."""
        midi = mido.MidiFile(file=io.BytesIO(data))
        exact = dict(self.tempos)
        tick = 0
        for index, message in enumerate(midi.tracks[0]):
            tick += message.time
            if message.type == "set_tempo":
                midi.tracks[0][index] = message.copy(tempo=exact[tick])
        buffer = io.BytesIO()
        midi.save(file=buffer)
        return buffer.getvalue()


class TempoMappedMidi(pretty_midi.PrettyMIDI):
    """A PrettyMIDI on a tempo map, whose `write()` keeps the map's tempos exact."""

    def __init__(self, tempo_map: TempoMap) -> None:
        super().__init__(mido_object=mido.MidiFile(ticks_per_beat=tempo_map.resolution, tracks=[tempo_map.track()]))
        self.tempo_map = tempo_map

    def write(self, filename: str | Path | BinaryIO) -> None:
        buffer = io.BytesIO()
        super().write(buffer)
        data = self.tempo_map.with_exact_tempos(buffer.getvalue())
        if isinstance(filename, str | Path):
            Path(filename).write_bytes(data)
        else:
            filename.write(data)


def new_midi(grid: BeatGrid | None, resolution: int = DEFAULT_TICKS_PER_BEAT) -> TempoMappedMidi:
    """An empty MIDI file with the grid's tempo map and time signatures (120 BPM 4/4 for None)."""
    return TempoMappedMidi(TempoMap.for_grid(grid, resolution))
