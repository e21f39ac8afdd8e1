"""The key of a piece, estimated from its transcribed notes.

Krumhansl-Schmuckler (1990): correlate the piece's duration-weighted pitch-class profile with a major and a
minor key profile rotated to each of the 12 tonics, and take the best of the 24. Working on notes rather
than audio means the estimate sees what the user gets (and costs nothing); drums are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from music.notes import Note

PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

# Krumhansl & Kessler's (1982) probe-tone profiles. On the evaluation set's basic-pitch notes (16 pitched
# pieces, duration-weighted) they named every key right, where Temperley's (2007) and Albrecht &
# Shanahan's (2013) corpus profiles each got 75%: those mistook pieces for their relative major or
# subdominant (`README`, "Key").
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@dataclass(frozen=True)
class Key:
    tonic: int  # pitch class, 0 = C
    mode: str  # "major" or "minor"
    confidence: float  # correlation of the winning profile, -1..1

    @property
    def name(self) -> str:
        """mir_eval's spelling, e.g. "Eb major", "F# minor"."""
        return f"{PITCH_CLASSES[self.tonic]} {self.mode}"

    @property
    def midi_key_number(self) -> int:
        """pretty_midi's key number: 0-11 major, 12-23 minor."""
        return self.tonic + (12 if self.mode == "minor" else 0)


def pitch_class_profile(notes: Iterable[Note]) -> np.ndarray:
    profile = np.zeros(12)
    for note in notes:
        profile[note.pitch % 12] += max(note.end - note.start, 0.0)
    return profile


def estimate_key(notes: Iterable[Note]) -> Key | None:
    """None when there is nothing pitched to judge by."""
    profile = pitch_class_profile(notes)
    if profile.sum() <= 0 or np.count_nonzero(profile) < 2:
        return None
    best: Key | None = None
    for mode, template in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)):
        for tonic in range(12):
            score = float(np.corrcoef(profile, np.roll(template, tonic))[0, 1])
            if best is None or score > best.confidence:
                best = Key(tonic, mode, round(score, 4))
    return best
