"""Decoded audio as the engines take it (decoding and validating uploads is the service's job)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32, shape (channels, frames)
    sample_rate: int
