"""Quantization: notes snapped to a grid of the beat, following the piece's tempo map.

Snapping happens in beat positions (`BeatGrid.beat_position`), not in seconds, so a 1/16 grid stays a
1/16 grid where the tempo drifts, and the snapped notes land on whole ticks of the MIDI file written
with the same grid (480 PPQ holds every grid of options.QuantizeGrid). The steps are counted from the
beats, not from tick 0: after a pickup fragment of a sixteenth or two (see the pickup rule in
`music.rhythm`) the beats are off tick 0's grid of whole beats, and a triplet grid from
tick 0 would miss them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from music.notes import Note
from music.rhythm import BeatGrid


def _snap(position: float, divisions: int) -> int:
    # Half up rather than Python's half-to-even, so a note exactly between two steps always goes the
    # same way whatever step number it is.
    return math.floor(position * divisions + 0.5)


def quantize(notes: Sequence[Note], grid: BeatGrid, divisions_per_beat: int) -> list[Note]:
    """Snap onsets and offsets to the nearest 1/divisions_per_beat of a beat.

    * Every note keeps at least one grid step.
    * Pitch and velocity are kept. Pitch bends are dropped: a quantized part is for editing and
      notation, and bends timed to the played note would be misplaced on the snapped one.
    * Notes of one pitch that snap to the same onset become one note (the longest end, the loudest
      velocity); a note that would then still sound when the next note of its pitch starts is cut
      there, as a MIDI channel cannot hold two of the same pitch at once.

    The result is ordered by onset, then pitch; times are rounded to microseconds.
    """
    if divisions_per_beat < 1:
        raise ValueError("divisions_per_beat must be >= 1")
    # Steps are counted from the beats' offset within a beat (a multiple of 1/4), and none is before
    # time 0 (a note there would start before the file does).
    origin = grid.first_beat_position % 1.0
    first_step = math.ceil(-origin * divisions_per_beat - 1e-9)
    merged: dict[tuple[int, int], tuple[int, int]] = {}  # (pitch, onset step) -> (end step, velocity)
    for note in notes:
        onset = max(_snap(grid.beat_position(note.start) - origin, divisions_per_beat), first_step)
        end = max(_snap(grid.beat_position(note.end) - origin, divisions_per_beat), onset + 1)
        key = (note.pitch, onset)
        if key in merged:
            other_end, other_velocity = merged[key]
            end, velocity = max(end, other_end), max(note.velocity, other_velocity)
        else:
            velocity = note.velocity
        merged[key] = (end, velocity)
    steps = sorted((onset, pitch, end, velocity) for (pitch, onset), (end, velocity) in merged.items())
    next_onset: dict[int, int] = {}
    result: list[Note] = []
    # Walk backwards so each note knows where the next note of its pitch starts.
    for onset, pitch, end, velocity in reversed(steps):
        if pitch in next_onset:
            end = min(end, next_onset[pitch])  # still >= onset + 1: onsets of a pitch are distinct
        next_onset[pitch] = onset
        start_s = grid.time_at(origin + onset / divisions_per_beat)
        end_s = grid.time_at(origin + end / divisions_per_beat)
        result.append(Note(round(start_s, 6), round(end_s, 6), pitch, velocity))
    result.reverse()
    return result
