"""Drum parts with known hits, for rendering test and benchmark drum stems.

`drum_part(style, ...)` writes a General MIDI percussion part (kick 36, snare 38, closed hi-hat 42,
open hi-hat 46, now and then a crash 49, pedal hi-hat 44 or a tom fill) with humanised velocities
(50..120) and timing (a few ms). Everything random comes from the `rng` passed in, so a part is
reproducible from its seed.
"""

from __future__ import annotations

import numpy as np
import pretty_midi

KICK, SNARE, HH_CLOSED, HH_PEDAL, HH_OPEN, CRASH = 36, 38, 42, 44, 46, 49
TOMS = (50, 48, 47, 45, 43, 41)  # high to low, as a fill runs down the kit

STYLES: tuple[str, ...] = ("rock", "disco", "sixteenths", "halftime", "waltz")

# Velocity levels before humanisation; everything is clipped to 50..120.
ACCENT, NORMAL, SOFT, GHOST = 110, 90, 70, 55
VELOCITY_RANGE = (50, 120)
NOTE_LENGTH = (0.05, 0.1)
JITTER_S = 0.004  # humanised timing: standard deviation, clipped at twice this


class _Part:
    """Accumulates hits on a bar/step grid, applying the rng's humanisation."""

    def __init__(self, start: float, tempo: float, beats_per_bar: int, rng: np.random.Generator) -> None:
        self.start = start
        self.beat = 60.0 / tempo
        self.beats_per_bar = beats_per_bar
        self.rng = rng
        self.instrument = pretty_midi.Instrument(program=0, is_drum=True, name="drums")

    def hit(self, bar: int, beat: float, pitch: int, velocity: float) -> None:
        jitter = float(np.clip(self.rng.normal(0.0, JITTER_S), -2 * JITTER_S, 2 * JITTER_S))
        t = max(self.start, self.start + (bar * self.beats_per_bar + beat) * self.beat + jitter)
        vel = int(np.clip(round(velocity + self.rng.normal(0.0, 6.0)), *VELOCITY_RANGE))
        length = float(self.rng.uniform(*NOTE_LENGTH))
        self.instrument.notes.append(pretty_midi.Note(vel, pitch, t, t + length))


def _eighth_hats(part: _Part, bar: int, pitch_on: int = HH_CLOSED, pitch_off: int = HH_CLOSED) -> None:
    for k in range(part.beats_per_bar * 2):
        on_beat = k % 2 == 0
        part.hit(bar, k / 2, pitch_on if on_beat else pitch_off, NORMAL if on_beat else SOFT)


def _rock(part: _Part, bar: int) -> None:
    n = part.beats_per_bar
    for b in range(n):
        part.hit(bar, b, KICK if b % 2 == 0 else SNARE, ACCENT if b % 2 else NORMAL)
    if n >= 4 and part.rng.random() < 0.4:  # the common "and of 3" kick variation
        part.hit(bar, 2.5, KICK, SOFT)
    _eighth_hats(part, bar)


def _disco(part: _Part, bar: int) -> None:
    for b in range(part.beats_per_bar):
        part.hit(bar, b, KICK, ACCENT)
        if b % 2 == 1:
            part.hit(bar, b, SNARE, NORMAL)
    _eighth_hats(part, bar, HH_CLOSED, HH_OPEN)


def _sixteenths(part: _Part, bar: int) -> None:
    n = part.beats_per_bar
    for k in range(n * 4):
        # Accent on the beat, medium on the "and", soft on the "e"/"a".
        level = ACCENT if k % 4 == 0 else NORMAL - 10 if k % 2 == 0 else SOFT - 10
        part.hit(bar, k / 4, HH_CLOSED, level)
    kicks = [0.0, 0.75, 2.5] if n >= 4 else [0.0, 0.75]
    if part.rng.random() < 0.5:
        kicks.append(1.75 if n >= 4 else 2.5)
    for beat in kicks:
        if beat < n:
            part.hit(bar, beat, KICK, NORMAL + 5)
    for b in range(1, n, 2):
        part.hit(bar, b, SNARE, ACCENT)
    # Ghost notes on the snare, as in funk playing.
    for k in range(n * 4):
        if k % 4 in (1, 3) and part.rng.random() < 0.15:
            part.hit(bar, k / 4, SNARE, GHOST)


def _halftime(part: _Part, bar: int) -> None:
    n = part.beats_per_bar
    part.hit(bar, 0, KICK, ACCENT)
    if part.rng.random() < 0.6:
        part.hit(bar, 1.5 if n >= 3 else 0.5, KICK, SOFT + 10)
    part.hit(bar, n // 2, SNARE, ACCENT)
    for k in range(n * 2):
        if k % 2 == 1 and part.rng.random() < 0.25:
            part.hit(bar, k / 2, HH_PEDAL, SOFT)  # foot hat in place of a stick hit
        else:
            part.hit(bar, k / 2, HH_CLOSED, NORMAL if k % 2 == 0 else SOFT)


def _waltz(part: _Part, bar: int) -> None:
    n = part.beats_per_bar
    part.hit(bar, 0, KICK, ACCENT)
    for b in range(1, n):
        part.hit(bar, b, SNARE, NORMAL)
    for k in range(n * 2):
        part.hit(bar, k / 2, HH_CLOSED, NORMAL if k % 2 == 0 else SOFT - 5)
    if part.rng.random() < 0.3:
        part.hit(bar, n - 0.5, HH_OPEN, NORMAL)


_PATTERNS = {"rock": _rock, "disco": _disco, "sixteenths": _sixteenths, "halftime": _halftime, "waltz": _waltz}


def _tom_fill(part: _Part, bar: int) -> None:
    """Replace the last beat of `bar` with four 16th-note tom hits running down the kit."""
    last = part.beats_per_bar - 1
    # Drop the groove's hits on that beat (a little before it too, for the timing jitter).
    t0 = part.start + (bar * part.beats_per_bar + last - 0.1) * part.beat
    t1 = part.start + (bar + 1) * part.beats_per_bar * part.beat - 0.1 * part.beat
    part.instrument.notes = [n for n in part.instrument.notes if not t0 <= n.start < t1]
    first = int(part.rng.integers(0, len(TOMS) - 3))
    for k in range(4):
        part.hit(bar, last + k / 4, TOMS[first + k], NORMAL + 10)


def drum_part(
    style: str, bars: int, tempo: float, beats_per_bar: int, start: float, rng: np.random.Generator
) -> pretty_midi.Instrument:
    """A GM drum part of `bars` bars from `start` seconds; deterministic given `rng`'s state.

    Bar 1 gets a crash (with the kick) half of the time; every 4th bar that is not the last gets a
    tom fill on its last beat a third of the time.
    """
    if style not in _PATTERNS:
        raise ValueError(f"unknown drum style {style!r}; choose from {STYLES}")
    if bars < 1 or beats_per_bar < 1 or tempo <= 0:
        raise ValueError("bars and beats_per_bar must be >= 1 and tempo > 0")
    part = _Part(start, tempo, beats_per_bar, rng)
    pattern = _PATTERNS[style]
    for bar in range(bars):
        pattern(part, bar)
        if bar == 0 and rng.random() < 0.5:
            part.hit(0, 0, CRASH, ACCENT)
        if bar % 4 == 3 and bar < bars - 1 and rng.random() < 1 / 3:
            _tom_fill(part, bar)
    part.instrument.notes.sort(key=lambda n: (n.start, n.pitch))
    return part.instrument
