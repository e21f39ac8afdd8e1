"""Beats, bars and the mapping between seconds and musical position: plain data and arithmetic.

A `BeatGrid` holds the beat times tracked in a piece, its meter (beats per bar, the beat being a
quarter note), which tracked beat is a downbeat, and where the grid came from (`tempo_source`,
`tempo_reason`, `meter_confidence`, which the job's analysis reports). It defines the *position* of
any time: a continuous count of beats (quarter notes) that is 0.0 at time 0, which is tick 0 of the
MIDI file `music.tempo_map.new_midi` writes for the grid; position * PPQ is the MIDI tick.

The pickup rule (what happens before the first tracked beat)
------------------------------------------------------------
A MIDI file starts at tick 0 = time 0, but the music's first beat is rarely at time 0, and a DAW
must see neither a silly tempo nor a bar of odd length there. So:

1. Before the first tracked beat the grid goes on backwards in *virtual* beats, at the first beat
   interval held to within 10% of the piece's tempo (`tempo_bpm`), as far as they fit after time 0.
2. What is left between time 0 and the first beat (virtual or tracked) is a *fragment* shorter than
   a beat. Shorter than 0.15 beat, it is merged into the beat after it: that beat counts as the beat
   at time 0 and its knot is dropped, so the first beat of the file is up to 15% longer. Otherwise the
   fragment becomes the nearest whole number (1 to 4) of sixteenth notes, so its tempo is within
   ×0.6..×1.9 of the piece's.
3. Bar lines fall on the tracked downbeats and every `beats_per_bar` beats before and after them.
   Whatever comes before the first bar line after time 0 (the fragment and the beats before that
   line) is bar 1, a *pickup* with a time signature of its own that says its musical length: n/4
   for n whole beats, n/8 or n/16 when a fragment makes it end on an eighth or a sixteenth. From
   the first bar line on, the piece's meter holds. No pickup (a bar line at time 0, or a pickup that
   adds up to a whole bar) means one time signature from bar 1.

So every tempo of the file is within ×0.5..×2 of the piece's tempo as long as the tracked beat
intervals are (the tracker sees to that, see `music.engines.beat_tracker`; only a merged first
tracked beat adds up to 0.17 beat to its interval); every tracked beat is at a whole beat from the
bar lines (position minus `first_beat_position` is a whole number) and every tracked downbeat on a
bar line, except a first tracked beat merged into time 0 (step 2), which sits less than 0.15 beat
after tick 0; times are kept exactly: position is a strictly increasing, piecewise linear function
of time, linear between knots (time 0, the fragment's end, every beat after it), extrapolated with
the first segment before time 0 and the last beat interval after the last beat.

Example: 4/4 at 120 BPM (0.5 s beats). A first tracked beat at 0.2 s that is a downbeat: no virtual
beat fits, the 0.2 s fragment is 0.4 beat, so 2 sixteenths: bar 1 is a 1/8 bar at 150 BPM, and the
first downbeat is bar 2, beat 1 (position 0.5, tick 240). A first tracked beat at 0.7 s followed by
a downbeat at 1.2 s: a virtual beat at 0.2 s, the same fragment before it, so bar 1 is 5/8 (the
fragment and two beats) and 1.2 s is bar 2, beat 1 (position 2.5). A first beat at 0.003 s is
merged: it counts as tick 0, and 0.003 s is tick 3.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

# Ticks per quarter note the service writes; 480 keeps every grid of options.QuantizeGrid on whole ticks
# and, down to 62.5 BPM, every note within 1 ms of its time (half a tick).
DEFAULT_TICKS_PER_BEAT = 480
MAX_BEATS_PER_BAR = 32
# Float noise allowed when deciding that a position is a whole beat or a virtual beat fits after time 0.
_EPS = 1e-9
# The pickup rule's numbers (module docstring): the virtual beats' period stays within 10% of the
# piece's beat, and a fragment under 0.15 beat is merged. Together they keep the fragment's tempo
# (1 to 4 sixteenths) within x0.6..x1.9 and a merged first beat under 1.3 beats long.
_VIRTUAL_PERIOD_RANGE = (0.9, 1.1)
_MERGE_FRAGMENT_BELOW = 0.15
_SIXTEENTHS_PER_BEAT = 4

# Where a grid's beats came from (the job's analysis reports it):
TEMPO_SOURCES = (
    "tracked",  # the tracker's beats (steady or a tempo per beat); also any grid built by hand
    "steady_fallback",  # the tracker was not confident: one tempo at its estimate, 4/4
    "default",  # no beat at all (silence, too short, no onsets): 120 BPM, 4/4
)


@dataclass(frozen=True)
class _Layout:
    times: tuple[float, ...]  # knot times: 0.0, then the fragment's end and every beat after it
    positions: tuple[float, ...]  # their positions, multiples of 1/4 beat
    first_beat_position: float  # position of beats[0]
    pickup_beats: float  # length of bar 1 when it is a pickup, else 0.0


@dataclass(frozen=True)
class BeatGrid:
    beats: tuple[float, ...]  # beat times in seconds, strictly ascending, >= 0, at least 2
    beats_per_bar: int = 4  # time signature numerator; the denominator is 4
    first_downbeat: int = 0  # index in beats of a downbeat; 0 <= first_downbeat < beats_per_bar
    tempo_source: str = "tracked"  # one of TEMPO_SOURCES
    tempo_reason: str = ""  # why that source, in words
    meter_confidence: float | None = field(default=None)  # 0..1 for the tracker's meter; None: not judged

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
        if self.tempo_source not in TEMPO_SOURCES:
            raise ValueError(f"tempo_source must be one of {TEMPO_SOURCES}")
        if self.meter_confidence is not None and not 0.0 <= self.meter_confidence <= 1.0:
            raise ValueError("meter_confidence must be in [0, 1]")

    # --- summary ------------------------------------------------------------------------------

    @property
    def tempo_bpm(self) -> float:
        """60 / the median beat interval: robust to a few odd intervals in a tracked grid."""
        return 60.0 / self._median_interval

    @cached_property
    def _median_interval(self) -> float:
        intervals = sorted(b - a for a, b in zip(self.beats, self.beats[1:]))
        n = len(intervals)
        return intervals[n // 2] if n % 2 else 0.5 * (intervals[n // 2 - 1] + intervals[n // 2])

    @property
    def time_signature(self) -> str:
        """The piece's meter (from the first bar line on; a pickup bar 1 has its own, see time_signatures)."""
        return f"{self.beats_per_bar}/4"

    def downbeats(self) -> list[float]:
        """The tracked beats that are bar lines."""
        return list(self.beats[self.first_downbeat :: self.beats_per_bar])

    @property
    def first_beat_position(self) -> float:
        """Position of beats[0], a multiple of 1/4 beat; every tracked beat is a whole number of beats
        after it (0 when beats[0] is, or is merged into, time 0)."""
        return self._layout.first_beat_position

    @property
    def pickup_beats(self) -> float:
        """Length of bar 1 in beats when it is a pickup (shorter than a bar), else 0.0."""
        return self._layout.pickup_beats

    def time_signatures(self) -> list[tuple[float, int, int]]:
        """(position, numerator, denominator) of each time signature: a pickup bar 1's own, then the
        piece's meter from the first bar line after time 0."""
        pickup = self._layout.pickup_beats
        if not pickup:
            return [(0.0, self.beats_per_bar, 4)]
        sixteenths = round(pickup * _SIXTEENTHS_PER_BEAT)
        if sixteenths % 4 == 0:
            numerator, denominator = sixteenths // 4, 4
        elif sixteenths % 2 == 0:
            numerator, denominator = sixteenths // 2, 8
        else:
            numerator, denominator = sixteenths, 16
        return [(0.0, numerator, denominator), (pickup, self.beats_per_bar, 4)]

    # --- the piecewise linear map -----------------------------------------------------------------

    @cached_property
    def _layout(self) -> _Layout:
        """The knots of the map and the pickup, by the pickup rule of the module docstring."""
        b0, n = self.beats[0], self.beats_per_bar
        low, high = _VIRTUAL_PERIOD_RANGE
        median = self._median_interval
        period = min(max(self.beats[1] - b0, low * median), high * median)  # of the virtual beats
        virtual = math.floor(b0 / period + _EPS)  # whole virtual beats between time 0 and beats[0]
        fragment = max(0.0, b0 - virtual * period)  # what is left before the first of them
        # Beats from time 0 on, virtual then tracked: beat k is at `lead_times[k]` (virtual) or
        # beats[k - virtual].
        lead_times = [b0 - (virtual - k) * period for k in range(virtual)]
        merged = fragment < _MERGE_FRAGMENT_BELOW * period
        if merged:
            base = 0.0  # beat 0 counts as the beat at time 0: its own knot is dropped
        else:
            # Beat 0 ends the fragment, which holds the nearest whole number of sixteenths.
            sixteenths = min(max(math.floor(_SIXTEENTHS_PER_BEAT * fragment / period + 0.5), 1), 4)
            base = sixteenths / _SIXTEENTHS_PER_BEAT
        all_times = lead_times + list(self.beats)
        knots = [(0.0, 0.0)] + [(all_times[k], base + k) for k in range(1 if merged else 0, len(all_times))]
        # Bar lines are at beat virtual + first_downbeat and every n beats around it.
        first_bar_line = (virtual + self.first_downbeat) % n
        pickup = base + first_bar_line
        if pickup == n:
            pickup = 0.0  # a sixteenth-rounded fragment and n - 1 beats: a whole bar after all
        return _Layout(
            times=tuple(t for t, _ in knots),
            positions=tuple(p for _, p in knots),
            first_beat_position=base + virtual,
            pickup_beats=float(pickup),
        )

    def tempo_knots(self) -> list[tuple[float, float]]:
        """(time, position) of every knot of the map: time 0 (position 0), the end of a pickup
        fragment, then each beat, virtual or tracked, after it. Positions are multiples of 1/4 beat;
        beyond the last knot the last interval continues."""
        layout = self._layout
        return list(zip(layout.times, layout.positions))

    def beat_position(self, t: float) -> float:
        """Continuous beat count from time 0 (tick 0); see the module docstring."""
        times, positions = self._layout.times, self._layout.positions
        j = bisect.bisect_right(times, t) - 1
        j = min(max(j, 0), len(times) - 2)  # edge segments extrapolate
        t0, t1, p0, p1 = times[j], times[j + 1], positions[j], positions[j + 1]
        if t == t0:
            return p0  # exact at knots: beats are whole positions
        return p0 + (t - t0) * (p1 - p0) / (t1 - t0)

    def time_at(self, position: float) -> float:
        """Seconds at a position: the inverse of `beat_position`."""
        times, positions = self._layout.times, self._layout.positions
        j = bisect.bisect_right(positions, position) - 1
        j = min(max(j, 0), len(positions) - 2)
        t0, t1, p0, p1 = times[j], times[j + 1], positions[j], positions[j + 1]
        if position == p0:
            return t0
        return t0 + (position - p0) * (t1 - t0) / (p1 - p0)

    def bar_and_beat(self, t: float, ticks_per_beat: int | None = None) -> tuple[int, float]:
        """(bar, beat), both 1-based, as a DAW shows them for the MIDI written with this grid: in a
        pickup bar 1 the beat counts that bar's own note value (eighths in 5/8), elsewhere quarters.

        With `ticks_per_beat` (the file's PPQ) the position is first rounded to the nearest tick,
        exactly as the note would be written; without it the position is continuous.
        """
        position = self.beat_position(t)
        pickup = self._layout.pickup_beats
        (_, _, pickup_denominator), *_ = self.time_signatures()
        if ticks_per_beat is not None:
            # Whole ticks, in integers, so the beat is exactly the file's tick / PPQ.
            tick = math.floor(position * ticks_per_beat + 0.5)
            pickup_ticks = round(pickup * ticks_per_beat)
            if pickup_ticks and tick < pickup_ticks:
                return 1, tick / (ticks_per_beat * 4 // pickup_denominator) + 1.0
            bar, rest = divmod(tick - pickup_ticks, self.beats_per_bar * ticks_per_beat)
            return bar + (2 if pickup_ticks else 1), rest / ticks_per_beat + 1.0
        sixteenths = round(position * 16)
        if abs(position - sixteenths / 16) < _EPS:
            position = sixteenths / 16  # float noise must not move a beat to the previous bar
        if pickup and position < pickup:
            return 1, position * pickup_denominator / 4 + 1.0
        bar = math.floor((position - pickup) / self.beats_per_bar)
        return bar + (2 if pickup else 1), position - pickup - bar * self.beats_per_bar + 1.0

    # --- (de)serialisation and construction --------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "beats": list(self.beats),
            "beats_per_bar": self.beats_per_bar,
            "first_downbeat": self.first_downbeat,
            "tempo_source": self.tempo_source,
            "tempo_reason": self.tempo_reason,
            "meter_confidence": self.meter_confidence,
            # Derived, for readers of the JSON; from_json ignores them.
            "tempo_bpm": round(self.tempo_bpm, 3),
            "time_signature": self.time_signature,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BeatGrid:
        confidence = data.get("meter_confidence")
        return cls(
            beats=tuple(float(b) for b in data["beats"]),
            beats_per_bar=int(data.get("beats_per_bar", 4)),
            first_downbeat=int(data.get("first_downbeat", 0)),
            # Grids stored before these fields existed were the tracker's, fallbacks included.
            tempo_source=str(data.get("tempo_source", "tracked")),
            tempo_reason=str(data.get("tempo_reason", "")),
            meter_confidence=None if confidence is None else float(confidence),
        )

    @classmethod
    def steady(cls, tempo_bpm: float, duration: float, beats_per_bar: int = 4, offset: float = 0.0) -> BeatGrid:
        """A constant-tempo grid with a downbeat at `offset`, covering [offset, duration].

        The period and offset are rounded to whole microseconds (what a MIDI tempo can hold), so the
        written file has one tempo (after a pickup fragment) and its beats fall exactly where this
        grid says.
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
        beats = tuple((start_us + k * period_us) / 1e6 for k in range(count))
        return cls(beats, beats_per_bar, first_downbeat)
