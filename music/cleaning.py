"""Rules that clean a stem's transcribed notes before they become MIDI.

basic-pitch leaves two kinds of debris that users delete by hand: short, quiet "ghost" notes (bleed,
reverb tails, note-on noise) and octave duplicates (a strong note's harmonic read as a second, quieter
note an octave or a twelfth above it, starting with it). Each rule is a pure function so the evaluation
harness can measure it on its own; the thresholds are per stem preset, chosen with the harness (README, "Presets").
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from music.notes import Note
from music.presets import CleaningRules, MidiOptions

# An octave, an octave and a fifth, two octaves: the first harmonics above a note's fundamental.
HARMONIC_INTERVALS = (12, 19, 24)


DEFAULT_RULES = CleaningRules()


def remove_ghost_notes(notes: Sequence[Note], rules: CleaningRules = DEFAULT_RULES) -> list[Note]:
    if not notes:
        return []
    median = float(np.median([n.velocity for n in notes]))
    floor = rules.ghost_velocity_ratio * median
    return [n for n in notes if n.end - n.start >= rules.ghost_max_seconds or n.velocity >= floor]


def remove_octave_duplicates(notes: Sequence[Note], rules: CleaningRules = DEFAULT_RULES) -> list[Note]:
    """Drop a note that starts with a louder note a harmonic interval below it."""
    ordered = sorted(notes, key=lambda n: (n.start, n.pitch))
    starts = [n.start for n in ordered]
    kept = []
    for note in ordered:
        lo = bisect.bisect_left(starts, note.start - rules.duplicate_onset_window)
        hi = bisect.bisect_right(starts, note.start + rules.duplicate_onset_window)
        duplicate = any(
            note.pitch - other.pitch in HARMONIC_INTERVALS
            and note.velocity <= rules.duplicate_velocity_ratio * other.velocity
            for other in ordered[lo:hi]
        )
        if not duplicate:
            kept.append(note)
    return kept


def clean(notes: Sequence[Note], options: MidiOptions, rules: CleaningRules = DEFAULT_RULES) -> list[Note]:
    """The cleaning steps the job asked for, in a fixed order (ghosts first: they are not fundamentals)."""
    result = list(notes)
    if options.clean_ghost_notes:
        result = remove_ghost_notes(result, rules)
    if options.clean_octave_duplicates:
        result = remove_octave_duplicates(result, rules)
    return sorted(result, key=lambda n: (n.start, n.pitch))
