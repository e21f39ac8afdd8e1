"""Beats, bars and the mapping between seconds and musical position: plain data and arithmetic.

A `BeatGrid` holds the beat times tracked in a piece, its meter (beats per bar, the beat being a
quarter note) and which tracked beat is a downbeat. It defines the *position* of any time: a
continuous beat count that is 0.0 at time 0, which is tick 0 (bar 1, beat 1) of the MIDI file
`serve_app.domain.tempo_map.new_midi` writes for the grid; position * PPQ is the MIDI tick.

The pickup rule (what happens before the first tracked beat)
------------------------------------------------------------
A MIDI file starts at tick 0 = time 0 = bar 1, beat 1, but the music's first bar line is rarely at
time 0. The grid is extended backwards from the first tracked beat at the first beat interval
("virtual" beats), back to the last bar line at or before time 0. That bar line is bar 1 of the
file. Time 0 itself must sit on bar 1's line, so the stretch from time 0 to the first beat after
time 0 (virtual or tracked) is a short, faster *pickup segment*: it carries the whole beats between
that bar line and that beat. From that beat on every beat, virtual or tracked, is one beat
(one PPQ of ticks) at its own time. So:

* every tracked beat is at a whole position (a multiple of PPQ ticks) and every tracked downbeat at
  a whole bar (position multiple of beats_per_bar);
* times are kept exactly: position is a strictly increasing, piecewise linear function of time;
* `beat_position(t)` is linear between consecutive beats, linear inside the pickup segment, and
  extrapolated with the edge segment before time 0 and with the last beat interval after the last
  beat.

Example: 4/4, first tracked beat (a downbeat) at 0.5 s, beats 0.6 s apart. The virtual beats are
at -0.1, -0.7, -1.3 and -1.9 s; -1.9 s is the last bar line <= 0, so bar 1 is the pickup: time 0 ..
0.5 s holds its 4 beats, and the first tracked downbeat is bar 2, beat 1 (position 4.0).

In a DAW, bar 1 then shows as a short bar at a fast tempo (the lead-in), and the music's first
bar line is bar 2 (bar 1 when a tracked downbeat is at time 0). A tracked beat at exactly time 0
has to be a downbeat (nothing else can sit on tick 0), which the constructor checks.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

# Ticks per quarter note the service writes; 480 keeps every grid of options.QuantizeGrid on whole ticks
# and, down to 62.5 BPM, every note within 1 ms of its time (half a tick).
DEFAULT_TICKS_PER_BEAT = 480
MAX_BEATS_PER_BAR = 32
# Float noise allowed when deciding that a position is a whole beat or a virtual beat is at time 0.
_EPS = 1e-9


@dataclass(frozen=True)
class BeatGrid:
    beats: tuple[float, ...]  # beat times in seconds, strictly ascending, >= 0, at least 2
    beats_per_bar: int = 4  # time signature numerator; the denominator is 4
    first_downbeat: int = 0  # index in beats of a downbeat; 0 <= first_downbeat < beats_per_bar

    def __post_init__(self) -> None:
        beats = tuple(float(b) for b in self.beats)
        object.__setattr__(self, "beats", beats)
        if len(beats) < 2:
            raise ValueError("a beat grid needs at least 2 beats")
        if not all(math.isfinite(b) for b in beats):
            raise ValueError("beat times must be finite")
        if beats[0] < 0:
            raise ValueError("beat times must be >= 0")
        if any(b <= a for a, b in zip(beats, beats[1:])):
            raise ValueError("beat times must be strictly ascending")
        if not 1 <= self.beats_per_bar <= MAX_BEATS_PER_BAR:
            raise ValueError(f"beats_per_bar must be 1..{MAX_BEATS_PER_BAR}")
        if not 0 <= self.first_downbeat < self.beats_per_bar:
            raise ValueError("first_downbeat must be in [0, beats_per_bar)")
        if beats[0] == 0.0 and self.first_downbeat != 0:
            raise ValueError("a beat at time 0 must be a downbeat: time 0 is bar 1, beat 1 of the MIDI")

    # --- summary ------------------------------------------------------------------------------

    @property
    def tempo_bpm(self) -> float:
        """60 / the median beat interval: robust to a few odd intervals in a tracked grid."""
        intervals = sorted(b - a for a, b in zip(self.beats, self.beats[1:]))
        n = len(intervals)
        median = intervals[n // 2] if n % 2 else 0.5 * (intervals[n // 2 - 1] + intervals[n // 2])
        return 60.0 / median

    @property
    def time_signature(self) -> str:
        return f"{self.beats_per_bar}/4"

    def downbeats(self) -> list[float]:
        """The tracked beats that are bar lines."""
        return list(self.beats[self.first_downbeat :: self.beats_per_bar])

    @property
    def first_beat_position(self) -> int:
        """Position of beats[0]: the whole beats of the pickup (0 when beats[0] is a downbeat at 0)."""
        return self._layout[0]

    # --- the piecewise linear map -----------------------------------------------------------------

    @cached_property
    def _layout(self) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
        """(first_beat_position, knot times, knot positions); knots start at (0.0, 0.0)."""
        b0, d0 = self.beats[0], self.beats[1] - self.beats[0]
        n, f = self.beats_per_bar, self.first_downbeat
        if b0 == 0.0:
            lead = 0  # f == 0 here (checked): the first beat is bar 1's line
        else:
            # The last bar line at or before time 0 is virtual beat f - m*n with the smallest m
            # for which b0 + (f - m*n) * d0 <= 0, i.e. m >= (f + b0/d0) / n.
            m = max(1, math.ceil((f + b0 / d0) / n - _EPS))
            lead = m * n - f  # beats from that bar line to beats[0]
        times = [0.0]
        positions = [0.0]
        # Virtual beats after time 0 (the ones before it fall inside the pickup segment).
        for k in range(lead, 0, -1):
            t = b0 - k * d0
            if t > _EPS * max(1.0, d0):
                times.append(t)
                positions.append(float(lead - k))
        for i, t in enumerate(self.beats):
            if t > 0.0:
                times.append(t)
                positions.append(float(lead + i))
        return lead, tuple(times), tuple(positions)

    def tempo_knots(self) -> list[tuple[float, int]]:
        """(time, whole position) of every knot of the map: time 0 (position 0), then each beat,
        virtual or tracked, after time 0. Beyond the last knot the last interval continues."""
        _, times, positions = self._layout
        return [(t, int(p)) for t, p in zip(times, positions)]

    def beat_position(self, t: float) -> float:
        """Continuous beat count from bar 1's line (time 0); see the module docstring."""
        _, times, positions = self._layout
        j = bisect.bisect_right(times, t) - 1
        j = min(max(j, 0), len(times) - 2)  # edge segments extrapolate
        t0, t1, p0, p1 = times[j], times[j + 1], positions[j], positions[j + 1]
        if t == t0:
            return p0  # exact at knots: beats are whole positions
        return p0 + (t - t0) * (p1 - p0) / (t1 - t0)

    def time_at(self, position: float) -> float:
        """Seconds at a position: the inverse of `beat_position`."""
        _, times, positions = self._layout
        j = bisect.bisect_right(positions, position) - 1
        j = min(max(j, 0), len(positions) - 2)
        t0, t1, p0, p1 = times[j], times[j + 1], positions[j], positions[j + 1]
        if position == p0:
            return t0
        return t0 + (position - p0) * (t1 - t0) / (p1 - p0)

    def bar_and_beat(self, t: float, ticks_per_beat: int | None = None) -> tuple[int, float]:
        """(bar, beat), both 1-based, as a DAW shows them for the MIDI written with this grid.

        With `ticks_per_beat` (the file's PPQ) the position is first rounded to the nearest tick,
        exactly as the note would be written; without it the position is continuous.
        """
        position = self.beat_position(t)
        if ticks_per_beat is not None:
            # Whole ticks, in integers, so the beat is exactly the file's tick / PPQ.
            tick = math.floor(position * ticks_per_beat + 0.5)
            bar_ticks = self.beats_per_bar * ticks_per_beat
            return tick // bar_ticks + 1, (tick % bar_ticks) / ticks_per_beat + 1.0
        if abs(position - round(position)) < _EPS:
            position = float(round(position))  # float noise must not move a beat to the previous bar
        bar = math.floor(position / self.beats_per_bar)
        return bar + 1, position - bar * self.beats_per_bar + 1.0

    # --- (de)serialisation and construction --------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "beats": list(self.beats),
            "beats_per_bar": self.beats_per_bar,
            "first_downbeat": self.first_downbeat,
            # Derived, for readers of the JSON; from_json ignores them.
            "tempo_bpm": round(self.tempo_bpm, 3),
            "time_signature": self.time_signature,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BeatGrid:
        return cls(
            beats=tuple(float(b) for b in data["beats"]),
            beats_per_bar=int(data.get("beats_per_bar", 4)),
            first_downbeat=int(data.get("first_downbeat", 0)),
        )

    @classmethod
    def steady(cls, tempo_bpm: float, duration: float, beats_per_bar: int = 4, offset: float = 0.0) -> BeatGrid:
        """A constant-tempo grid with a downbeat at `offset`, covering [offset, duration].

        The period and offset are rounded to whole microseconds (what a MIDI tempo can hold), so the
        written file has one tempo and its beats fall exactly where this grid says.
        """
        if not (math.isfinite(tempo_bpm) and tempo_bpm > 0):
            raise ValueError("tempo_bpm must be > 0")
        if not (math.isfinite(offset) and offset >= 0 and math.isfinite(duration)):
            raise ValueError("offset must be >= 0 and duration finite")
        period_us = max(1, round(60e6 / tempo_bpm))
        start_us = round(offset * 1e6)
        count = max(2, math.ceil((duration - offset) * 1e6 / period_us) + 1)
        beats = tuple((start_us + k * period_us) / 1e6 for k in range(count))
        return cls(beats, beats_per_bar, 0)

    @classmethod
    def from_line(
        cls, first_beat: float, period: float, count: int, beats_per_bar: int = 4, first_downbeat: int = 0
    ) -> BeatGrid:
        """`count` beats `period` apart from `first_beat`, on whole microseconds like `steady`."""
        if count < 2 or not period > 0 or first_beat < 0:
            raise ValueError("need count >= 2, period > 0 and first_beat >= 0")
        period_us = max(1, round(period * 1e6))
        start_us = round(first_beat * 1e6)
        if start_us == 0 and first_downbeat:
            # Tick 0 can only hold a downbeat: drop that beat and add one at the end instead.
            start_us, first_downbeat = period_us, first_downbeat - 1
        beats = tuple((start_us + k * period_us) / 1e6 for k in range(count))
        return cls(beats, beats_per_bar, first_downbeat)
