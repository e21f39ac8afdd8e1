"""An empty MIDI file whose tempo map and time signature follow a `BeatGrid`.

Every knot of the grid (time 0, then each beat after it; see `serve_app.domain.rhythm`) is put on a
whole beat, i.e. a multiple of the resolution (PPQ), and each beat gets the tempo that makes it last
exactly as long as in the grid. A MIDI tempo is a whole number of microseconds per quarter note, so
the tempo of beat k is the difference of the knot times rounded to microseconds: beat times in the
file are then within 0.5 us of the grid's, with no drift. Consecutive beats with the same tempo share
one set_tempo event, so a steady grid (`BeatGrid.steady` and the tracker's regularised grids are on
whole microseconds) gets one tempo after the pickup.

pretty_midi has no public API for tempo changes. Its `write()` emits one set_tempo per entry of
`_tick_scales` ((tick, seconds per tick), as its reader fills it) and places notes with
`time_to_tick`, which reads the table `_update_tick_to_time` builds from `_tick_scales`. Both are
private but have been stable since pretty_midi 0.2.0; the tests write a file and read it back with
pretty_midi and with mido, so a change there fails loudly rather than silently.
"""

from __future__ import annotations

import logging

import pretty_midi

from serve_app.domain.rhythm import DEFAULT_TICKS_PER_BEAT, BeatGrid

logger = logging.getLogger(__name__)

DEFAULT_TEMPO_BPM = 120.0
# set_tempo holds 24 bits of microseconds per quarter note.
MAX_US_PER_BEAT = 0xFFFFFF


def tempo_events(grid: BeatGrid, resolution: int = DEFAULT_TICKS_PER_BEAT) -> list[tuple[int, int]]:
    """(tick, microseconds per quarter note) of each tempo change, the first at tick 0."""
    knots = grid.tempo_knots()
    # Every whole position up to the last knot, with its time; positions inside the pickup segment
    # are spread evenly over it (the map is linear there).
    times: list[float] = []
    for (t0, p0), (t1, p1) in zip(knots, knots[1:]):
        for k in range(p1 - p0):
            times.append(t0 + (t1 - t0) * k / (p1 - p0))
    times.append(knots[-1][0])
    events: list[tuple[int, int]] = []
    written_us = 0  # time of the current position in the file, whole microseconds
    for position, t_next in enumerate(times[1:]):
        target_us = round(t_next * 1e6)
        us = min(max(target_us - written_us, 1), MAX_US_PER_BEAT)
        if us != target_us - written_us:
            logger.warning("beat %d of %.6f s does not fit a MIDI tempo; clamped", position, t_next)
        written_us += us
        if not events or events[-1][1] != us:
            events.append((position * resolution, us))
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
    """An empty PrettyMIDI with the grid's tempo map and time signature (120 BPM 4/4 for None)."""
    midi = pretty_midi.PrettyMIDI(resolution=resolution, initial_tempo=DEFAULT_TEMPO_BPM)
    if grid is None:
        events = [(0, round(60e6 / DEFAULT_TEMPO_BPM))]
        numerator = 4
    else:
        events = tempo_events(grid, resolution)
        numerator = grid.beats_per_bar
    midi._tick_scales = [(tick, seconds_per_tick(us, resolution)) for tick, us in events]
    midi._update_tick_to_time(events[-1][0] + 1)
    midi.time_signature_changes = [pretty_midi.TimeSignature(numerator, 4, 0.0)]
    return midi
