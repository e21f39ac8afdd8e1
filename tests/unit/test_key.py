"""Key estimation from notes."""

from __future__ import annotations

import pytest

from music.key import estimate_key
from music.notes import Note

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)


def _cadence(tonic: int, scale: tuple[int, ...]) -> list[Note]:
    """Scale up and down, then I-IV-V-I chords: enough for a listener to hear the key."""
    notes, t = [], 0.0
    for degree in list(range(7)) + list(range(6, -1, -1)):
        notes.append(Note(t, t + 0.4, 60 + tonic + scale[degree], 80))
        t += 0.5
    for chord in ((0, 2, 4), (3, 5, 0), (4, 6, 1), (0, 2, 4)):
        for degree in chord:
            notes.append(Note(t, t + 1.0, 48 + tonic + scale[degree], 80))
        t += 1.0
    notes.append(Note(t, t + 2.0, 36 + tonic, 90))
    return notes


@pytest.mark.parametrize("tonic", range(12))
@pytest.mark.parametrize(("scale", "mode"), [(MAJOR_SCALE, "major"), (HARMONIC_MINOR, "minor")])
def test_every_major_and_minor_key_is_found(tonic: int, scale: tuple[int, ...], mode: str) -> None:
    key = estimate_key(_cadence(tonic, scale))
    assert key is not None
    assert (key.tonic, key.mode) == (tonic, mode), key.name


def test_names_and_midi_key_numbers_follow_mir_eval_and_pretty_midi() -> None:
    a_minor = estimate_key(_cadence(9, HARMONIC_MINOR))
    assert a_minor is not None and a_minor.name == "A minor" and a_minor.midi_key_number == 21
    e_flat = estimate_key(_cadence(3, MAJOR_SCALE))
    assert e_flat is not None and e_flat.name == "Eb major" and e_flat.midi_key_number == 3


def test_no_key_without_pitched_notes() -> None:
    assert estimate_key([]) is None
    assert estimate_key([Note(0.0, 1.0, 60, 80)]) is None  # one pitch class says nothing
