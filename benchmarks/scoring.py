"""Scores of one transcription against its ground truth, with mir_eval. Pure functions, no I/O.

Conventions (they decide what the numbers mean, so they are fixed here):

- Notes: onsets must be within 50 ms (mir_eval's default) and pitches within 50 cents. "No offsets"
  ignores where notes end (`offset_ratio=None`); "with offsets" also needs the end within 20 % of the
  reference note's length or 50 ms, whichever is larger (mir_eval's defaults).
- A score against an empty reference is undefined and comes back as None ("n/a"), never as 0 or 1:
  there is nothing to find. An empty estimate against a non-empty reference scores 0.
- Tempo is right when the estimate is within 4 % of the reference or of 2x, 3x, 1/2x or 1/3x it
  (the usual tempo-octave allowance, both directions); the strict variant allows only 1x.
- Beats: mir_eval's F-measure with its 70 ms window. mir_eval's convention trims the first 5 s of
  both beat lists (trackers need a few beats to lock on); the evaluation pieces are 10 to 20 s long,
  so trimming 5 s would throw away a third to half of them. We do not trim (trim_seconds=0): a
  tracker that needs time to lock on is scored for it.
- Key: exact match (tonic and mode, enharmonics equal) and mir_eval.key.weighted_score (fifth 0.5,
  relative 0.3, parallel 0.2). An estimate that is not a key mir_eval can read scores 0.
- Drums: onset F-measure per class (mir_eval.onset.f_measure, 50 ms window), classes from
  music.drum_kit.drum_class; "hihat" pools closed and open hi-hats (was a hi-hat hit
  found at all). Notes in no class (congas...) and classes nobody reports (toms, cymbals) are not scored.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import mir_eval
import numpy as np

from music.drum_kit import HIHAT_CLOSED, HIHAT_OPEN, KICK, SNARE
from music.drum_kit import drum_onsets as kit_onsets

logger = logging.getLogger(__name__)

ONSET_TOLERANCE_S = 0.05
OFFSET_RATIO = 0.2
OFFSET_MIN_TOLERANCE_S = 0.05
TEMPO_TOLERANCE = 0.04
TEMPO_FACTORS = (1.0, 2.0, 3.0)
BEAT_WINDOW_S = 0.07
DRUM_WINDOW_S = 0.05
HIHAT = "hihat"
# Scored drum classes, in table order; "hihat" is closed and open together.
DRUM_SCORE_CLASSES: tuple[str, ...] = (KICK, SNARE, HIHAT_CLOSED, HIHAT_OPEN, HIHAT)
_DRUM_MEMBERS: dict[str, frozenset[str]] = {
    KICK: frozenset({KICK}),
    SNARE: frozenset({SNARE}),
    HIHAT_CLOSED: frozenset({HIHAT_CLOSED}),
    HIHAT_OPEN: frozenset({HIHAT_OPEN}),
    HIHAT: frozenset({HIHAT_CLOSED, HIHAT_OPEN}),
}


class TimedNote(Protocol):
    """Anything with a start, an end and a MIDI pitch: ground-truth notes, service notes, pretty_midi notes."""

    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...

    @property
    def pitch(self) -> int: ...


@dataclass(frozen=True)
class PRF:
    precision: float
    recall: float
    f1: float
    n_ref: int
    n_est: int


def _intervals_pitches(notes: Sequence[TimedNote]) -> tuple[np.ndarray, np.ndarray]:
    # mir_eval wants strictly positive durations and non-negative times; service notes are rounded
    # to 0.1 ms, so a degenerate one is given the smallest length rather than rejected.
    starts = np.array([max(0.0, float(n.start)) for n in notes], dtype=float)
    ends = np.array([float(n.end) for n in notes], dtype=float)
    ends = np.maximum(ends, starts + 1e-3)
    intervals = np.stack([starts, ends], axis=1) if len(notes) else np.zeros((0, 2))
    pitches = mir_eval.util.midi_to_hz(np.array([float(n.pitch) for n in notes], dtype=float))
    return intervals, pitches


def note_prf(
    reference: Sequence[TimedNote],
    estimate: Sequence[TimedNote],
    *,
    with_offsets: bool = False,
    onset_tolerance: float = ONSET_TOLERANCE_S,
    offset_ratio: float = OFFSET_RATIO,
) -> PRF | None:
    """Note precision/recall/F1; None when the reference has no notes."""
    if not reference:
        return None
    if not estimate:
        return PRF(0.0, 0.0, 0.0, len(reference), 0)
    ref_i, ref_p = _intervals_pitches(reference)
    est_i, est_p = _intervals_pitches(estimate)
    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ref_i, ref_p, est_i, est_p,
        onset_tolerance=onset_tolerance,
        offset_ratio=offset_ratio if with_offsets else None,
        offset_min_tolerance=OFFSET_MIN_TOLERANCE_S,
    )  # fmt: skip
    return PRF(float(p), float(r), float(f), len(reference), len(estimate))


def tempo_ratio(reference_bpm: float, estimate_bpm: float) -> float:
    return estimate_bpm / reference_bpm


def tempo_correct(
    reference_bpm: float,
    estimate_bpm: float | None,
    *,
    tolerance: float = TEMPO_TOLERANCE,
    factors: Iterable[float] = TEMPO_FACTORS,
) -> bool:
    """Within `tolerance` of the reference times or divided by any of `factors`."""
    if estimate_bpm is None or not math.isfinite(estimate_bpm) or estimate_bpm <= 0:
        return False
    ratio = tempo_ratio(reference_bpm, estimate_bpm)
    return any(abs(ratio / f - 1.0) <= tolerance or abs(ratio * f - 1.0) <= tolerance for f in factors)


def tempo_error(reference_bpm: float, estimate_bpm: float | None) -> float | None:
    """Signed relative error (0.05 = 5 % fast), without tempo-octave allowance."""
    if estimate_bpm is None or not math.isfinite(estimate_bpm) or estimate_bpm <= 0:
        return None
    return tempo_ratio(reference_bpm, estimate_bpm) - 1.0


def beat_f1(
    reference: Sequence[float], estimate: Sequence[float] | None, *, trim_seconds: float = 0.0
) -> float | None:
    """mir_eval beat F-measure; None without reference beats, 0 for a missing estimate."""
    ref = np.asarray(reference, dtype=float)
    if trim_seconds > 0:
        ref = ref[ref >= trim_seconds]
    if ref.size == 0:
        return None
    est = np.sort(np.asarray(estimate if estimate is not None else [], dtype=float))
    if trim_seconds > 0:
        est = est[est >= trim_seconds]
    if est.size == 0:
        return 0.0
    return float(mir_eval.beat.f_measure(np.sort(ref), est, f_measure_threshold=BEAT_WINDOW_S))


@dataclass(frozen=True)
class KeyScore:
    exact: bool
    weighted: float


def key_score(reference: str | None, estimate: str | None) -> KeyScore | None:
    """None when the piece has no key (drums alone); a missing or unreadable estimate scores 0."""
    if reference is None:
        return None
    if not estimate:
        return KeyScore(False, 0.0)
    try:
        weighted = float(mir_eval.key.weighted_score(reference, estimate.strip()))
    except ValueError:
        logger.warning("key %r is not a key mir_eval can read; scored 0", estimate)
        return KeyScore(False, 0.0)
    return KeyScore(weighted == 1.0, weighted)


def meter_correct(reference: str, estimate: str | None) -> bool:
    return estimate is not None and estimate.replace(" ", "") == reference


def drum_onsets(notes: Iterable[TimedNote], score_class: str) -> np.ndarray:
    """Onset times of a scored class ("hihat": closed and open together)."""
    return kit_onsets(notes, _DRUM_MEMBERS[score_class])


def onset_prf(reference: np.ndarray, estimate: np.ndarray, window: float = DRUM_WINDOW_S) -> PRF | None:
    if reference.size == 0:
        return None
    if estimate.size == 0:
        return PRF(0.0, 0.0, 0.0, int(reference.size), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mir_eval warns about events closer than its window; harmless here
        f, p, r = mir_eval.onset.f_measure(reference, estimate, window=window)
    return PRF(float(p), float(r), float(f), int(reference.size), int(estimate.size))


def drum_prf(
    reference: Sequence[TimedNote], estimate: Sequence[TimedNote], *, window: float = DRUM_WINDOW_S
) -> dict[str, PRF | None]:
    """Onset P/R/F per drum class (see DRUM_SCORE_CLASSES); None for a class the reference lacks."""
    return {
        cls: onset_prf(drum_onsets(reference, cls), drum_onsets(estimate, cls), window)
        for cls in DRUM_SCORE_CLASSES
    }


def mean_defined(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are defined; None when none is."""
    defined = [float(v) for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None
