"""Which tracked beat starts the bar: a learned linear model over beat-synchronous features.

The tracker (beat_tracker.py) knows the beats and the meter; what remains is the phase, which of the m
beats of a bar is "1". A hand-weighted rule (kicks and bass roots on 1) gets it wrong on half the real
recordings of the development set: a rock groove's kick falls on 1 and 3 alike, its snare on 2 and 4,
and only the bar's small variations (the kick on "and of 3", a crash after a fill, a chord change, the
bass moving to a new root) tell 1 from 3. So each beat is described by what happens around it and a
logistic regression, trained on real multitracks and renders with known bars
(benchmarks/train_downbeats.py), says how likely it is a downbeat; the phase whose beats are likeliest
wins. That is the shape of madmom's bar tracker (beat-synchronous features, a learned downbeat
activation, the best phase), shrunk to a linear model that needs no framework.

Features of beat j (each z-scored over the piece, so loudness and mix balance do not matter): the onset
strength in four bands (below 150 Hz, 150-600 Hz, 600-3000 Hz, above 3 kHz) at the beat and at the half
beat after it, how much the harmony's and the bass line's chroma change from the m beats before j to
the m beats from j (the bar novelty), and from the beat before to j; whether j is the first beat the
music plays (songs mostly start on a bar line or a beat or two before one: how much that counts is
learned, and it is one beat among the many of a phase); and the same of the beats j-2 .. j+3, so a
pattern of a bar and a half is seen at once. Missing neighbours (the ends) read 0, the mean.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

MODEL_PATH = Path(__file__).with_name("data") / "downbeats.json"
BASE_FEATURES = (
    "onset0", "onset1", "onset2", "onset3", "half0", "half1", "half2", "half3",
    "harmony_bar", "bass_bar", "harmony_beat", "bass_beat", "first",
)  # fmt: skip
# Indicators, not measurements: never z-scored.
INDICATORS = ("first",)
OFFSETS = (-2, -1, 0, 1, 2, 3)


def zscore(x: np.ndarray) -> np.ndarray:
    """Column-wise z-scores ignoring NaN (indicator columns kept as they are); NaN becomes 0, the mean."""
    with np.errstate(all="ignore"):
        mean = np.nanmean(x, axis=0) if x.size else 0.0
        std = np.nanstd(x, axis=0) if x.size else 1.0
    z = (x - mean) / np.where(np.asarray(std) > 1e-9, std, 1.0)
    for name in INDICATORS:
        k = BASE_FEATURES.index(name)
        z[:, k] = x[:, k]
    return np.nan_to_num(z, nan=0.0)


def with_context(base: np.ndarray, offsets: tuple[int, ...] = OFFSETS) -> np.ndarray:
    """(n, F) base features -> (n, F * len(offsets)): each beat with its neighbours' features."""
    n, f = base.shape
    out = np.zeros((n, f * len(offsets)), dtype=np.float64)
    for k, offset in enumerate(offsets):
        lo, hi = max(0, -offset), min(n, n - offset)
        if hi > lo:
            out[lo:hi, k * f : (k + 1) * f] = base[lo + offset : hi + offset]
    return out


@dataclass(frozen=True)
class LinearModel:
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def logits(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept


@dataclass(frozen=True)
class DownbeatModel:
    """One linear model per meter (beats per bar), with a record of what it was trained on."""

    models: dict[int, LinearModel]
    trained_on: dict

    def phase_scores(self, base: np.ndarray, meter: int) -> list[float] | None:
        """The mean downbeat log-odds of each phase of `meter`, or None if there is no model for it."""
        model = self.models.get(meter)
        if model is None or base.shape[0] < meter:
            return None
        logits = model.logits(with_context(zscore(base)))
        return [float(np.mean(logits[p::meter])) for p in range(meter)]

    def to_json(self) -> dict:
        return {
            "base_features": list(BASE_FEATURES),
            "offsets": list(OFFSETS),
            "models": {str(m): {"mean": v.mean.tolist(), "scale": v.scale.tolist(), "coef": v.coef.tolist(),
                                "intercept": v.intercept} for m, v in self.models.items()},  # fmt: skip
            "trained_on": self.trained_on,
        }

    @classmethod
    def from_json(cls, doc: dict) -> DownbeatModel:
        if tuple(doc["base_features"]) != BASE_FEATURES or tuple(doc["offsets"]) != OFFSETS:
            raise ValueError("the downbeat model was made for other features than this code computes")
        models = {
            int(m): LinearModel(np.asarray(v["mean"]), np.asarray(v["scale"]), np.asarray(v["coef"]), float(v["intercept"]))
            for m, v in doc["models"].items()
        }
        return cls(models, dict(doc.get("trained_on", {})))


@lru_cache(maxsize=4)
def load_model(path: Path = MODEL_PATH) -> DownbeatModel | None:
    """The model in `path`, or None where there is none (the tracker then uses its rule)."""
    if not path.is_file():
        return None
    return DownbeatModel.from_json(json.loads(path.read_text()))
