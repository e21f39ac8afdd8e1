"""Cleaning rules: what they remove, what they must leave alone, and that each can be switched off."""

from __future__ import annotations

from music.cleaning import clean, remove_ghost_notes, remove_octave_duplicates
from music.notes import Note
from music.presets import MidiOptions


def _line(velocity: int = 90) -> list[Note]:
    return [Note(i * 0.5, i * 0.5 + 0.4, 60 + i % 5, velocity) for i in range(8)]


def test_short_quiet_notes_go_but_quiet_long_and_loud_short_notes_stay() -> None:
    ghost = Note(1.1, 1.15, 72, 20)
    quiet_long = Note(2.0, 3.0, 48, 20)
    loud_short = Note(3.1, 3.15, 72, 110)
    kept = remove_ghost_notes(_line() + [ghost, quiet_long, loud_short])
    assert ghost not in kept
    assert quiet_long in kept and loud_short in kept and set(_line()) <= set(kept)


def test_ghost_threshold_follows_the_stems_own_dynamics() -> None:
    # A stem played softly throughout keeps its soft short notes: they are not quieter than the rest.
    soft = _line(velocity=25) + [Note(4.0, 4.05, 65, 22)]
    assert remove_ghost_notes(soft) == soft


def test_a_quieter_harmonic_starting_with_a_note_is_removed() -> None:
    root = Note(0.0, 1.0, 48, 100)
    octave = Note(0.02, 0.8, 60, 60)
    twelfth = Note(0.0, 0.9, 67, 50)
    assert remove_octave_duplicates([root, octave, twelfth]) == [root]


def test_real_octaves_and_later_notes_are_kept() -> None:
    root = Note(0.0, 1.0, 48, 80)
    louder_octave = Note(0.0, 1.0, 60, 100)  # a played octave, the top voice leading
    later = Note(0.5, 1.0, 60, 50)  # starts well after: a new note, not a harmonic
    below = Note(0.0, 1.0, 36, 40)  # an octave below is not a harmonic of the root
    notes = [root, louder_octave, later, below]
    assert sorted(remove_octave_duplicates(notes), key=lambda n: (n.start, n.pitch)) == sorted(
        notes, key=lambda n: (n.start, n.pitch)
    )


def test_each_step_can_be_switched_off() -> None:
    notes = _line() + [Note(1.1, 1.15, 72, 20), Note(0.0, 0.4, 72, 30)]
    assert len(clean(notes, MidiOptions())) == len(_line())
    assert len(clean(notes, MidiOptions(clean_ghost_notes=False, clean_octave_duplicates=False))) == len(notes)
    assert Note(1.1, 1.15, 72, 20) in clean(notes, MidiOptions(clean_ghost_notes=False))
    assert Note(0.0, 0.4, 72, 30) in clean(notes, MidiOptions(clean_octave_duplicates=False))
