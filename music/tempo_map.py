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

pretty_midi has no public API for tempo changes. Its `write()` emits one set_tempo per entry of
`_tick_scales` ((tick, seconds per tick), as its reader fills it) and places notes with
`time_to_tick`, which reads the table `_update_tick_to_time` builds from `_tick_scales`. Both are
private but have been stable since pretty_midi 0.2.0; the tests write a file and read it back with
pretty_midi and with mido, so a change there fails loudly rather than silently.
"""

from __future__ import annotations

import logging

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


def seconds_per_tick(us_per_beat: int, resolution: int) -> float:
    """pretty_midi's tick scale for a tempo, nudged so that its `write()` (which truncates
    6e7 / bpm to an int) writes back exactly `us_per_beat`."""
    scale = us_per_beat / (1e6 * resolution)
    for _ in range(8):
        written = int(6e7 / (60.0 / (scale * resolution)))
        if written == us_per_beat:
            return scale
        scale = scale * (1 + 1e-15) if written < us_per_beat else scale * (1 - 1e-15)
    raise AssertionError(f"cannot represent {us_per_beat} us per beat in pretty_midi")  # pragma: no cover


def new_midi(grid: BeatGrid | None, resolution: int = DEFAULT_TICKS_PER_BEAT) -> pretty_midi.PrettyMIDI:
    """An empty PrettyMIDI with the grid's tempo map and time signatures (120 BPM 4/4 for None)."""
    midi = pretty_midi.PrettyMIDI(resolution=resolution, initial_tempo=DEFAULT_TEMPO_BPM)
    if grid is None:
        events = [(0, round(60e6 / DEFAULT_TEMPO_BPM))]
        signatures = [(0, 4, 4)]
    else:
        events = tempo_events(grid, resolution)
        signatures = [(round(p * resolution), num, den) for p, num, den in grid.time_signatures()]
    midi._tick_scales = [(tick, seconds_per_tick(us, resolution)) for tick, us in events]
    midi._update_tick_to_time(max(events[-1][0], signatures[-1][0]) + 1)
    # Signature times from the file's own map, so write() puts them back on exactly these ticks.
    midi.time_signature_changes = [
        pretty_midi.TimeSignature(num, den, float(midi.tick_to_time(tick))) for tick, num, den in signatures
    ]
    return midi
