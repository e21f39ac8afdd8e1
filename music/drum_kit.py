"""The General MIDI percussion map shared by the drum transcriber and its evaluation.

GM has ~47 percussion keys; a transcriber (and a listener) can only tell a handful of classes apart,
so every key maps onto one class and each class is written back as one representative key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import numpy as np

KICK = "kick"
SNARE = "snare"
HIHAT_CLOSED = "hihat_closed"
HIHAT_OPEN = "hihat_open"
TOM = "tom"
CYMBAL = "cymbal"

# The classes the transcriber reports, in output order, with the GM key each is written as.
CLASS_PITCH: dict[str, int] = {
    KICK: 36,
    SNARE: 38,
    HIHAT_CLOSED: 42,
    HIHAT_OPEN: 46,
}
DRUM_CLASSES: tuple[str, ...] = tuple(CLASS_PITCH)
# Both hi-hat classes: for scoring "was a hi-hat hit found" regardless of open/closed.
HIHAT_CLASSES: tuple[str, ...] = (HIHAT_CLOSED, HIHAT_OPEN)

# Every GM percussion key that belongs to a class. Toms and crash/ride cymbals have classes so an
# evaluation can name them, but the transcriber does not report them (see music/engines/drums.py).
_GM_CLASS: dict[int, str] = {
    35: KICK,  # acoustic bass drum
    36: KICK,  # bass drum 1
    37: SNARE,  # side stick
    38: SNARE,  # acoustic snare
    39: SNARE,  # hand clap: same role and spectrum as a snare in pop music
    40: SNARE,  # electric snare
    42: HIHAT_CLOSED,
    44: HIHAT_CLOSED,  # pedal hi-hat: a closed "chick"
    46: HIHAT_OPEN,
    41: TOM,
    43: TOM,
    45: TOM,
    47: TOM,
    48: TOM,
    50: TOM,
    49: CYMBAL,  # crash 1
    51: CYMBAL,  # ride 1
    52: CYMBAL,  # chinese
    53: CYMBAL,  # ride bell
    55: CYMBAL,  # splash
    57: CYMBAL,  # crash 2
    59: CYMBAL,  # ride 2
}


def drum_class(gm_pitch: int) -> str | None:
    """The class of a GM percussion key, or None for keys outside the kit (cowbell, congas, ...)."""
    return _GM_CLASS.get(int(gm_pitch))


def class_pitch(cls: str) -> int:
    """The GM key a reported class is written as."""
    return CLASS_PITCH[cls]


class _HasStartPitch(Protocol):
    @property
    def start(self) -> float: ...

    @property
    def pitch(self) -> int: ...


def drum_onsets(notes: Iterable[_HasStartPitch], cls: str | Iterable[str]) -> np.ndarray:
    """Sorted onset times (seconds) of the notes whose GM key belongs to `cls` (a class or several).

    Works for both `music.midi.Note` and `pretty_midi.Note`; the result is what
    `mir_eval.onset.f_measure` expects.
    """
    wanted = {cls} if isinstance(cls, str) else set(cls)
    return np.sort(np.asarray([float(n.start) for n in notes if drum_class(n.pitch) in wanted], dtype=float))
