"""Separation without model weights: harmonic/percussive source separation (Fitzgerald 2010).

Median filtering across time keeps sustained partials (harmonic), across frequency keeps broadband
transients (percussive). It needs nothing downloaded and runs in seconds on any CPU, so air-gapped and
CPU-only users still get a drums stem. The harmonic part carries everything pitched (bass included):
it is a mix without its drums, so its stem, "harmonic", is transcribed with the mix's preset.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from serve_app.domain.audio import DecodedAudio
from serve_app.domain.errors import JobCanceled

HARMONIC_STEM = "harmonic"
PERCUSSIVE_STEM = "drums"


class HpssConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n_fft: int = Field(default=2048, ge=256)
    hop_length: int = Field(default=512, ge=64)
    # librosa's default median-filter length (31 frames, about 0.36 s at 44.1 kHz).
    kernel_size: int = Field(default=31, ge=3)
    # 1.0 splits every bin between the two parts, so the stems still add up to the mix.
    margin: float = Field(default=1.0, ge=1.0)


def hpss_stems(
    audio: DecodedAudio,
    config: HpssConfig | None = None,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, np.ndarray]:
    """{"drums": percussive, "harmonic": harmonic}, each with the input's rate, channels and length."""
    import librosa

    config = config or HpssConfig()
    channels, frames = audio.samples.shape
    harmonic = np.zeros_like(audio.samples)
    percussive = np.zeros_like(audio.samples)
    for channel in range(channels):
        if should_stop is not None and should_stop():
            raise JobCanceled("The job was canceled.")
        spectrum = librosa.stft(audio.samples[channel], n_fft=config.n_fft, hop_length=config.hop_length)
        h, p = librosa.decompose.hpss(spectrum, kernel_size=config.kernel_size, margin=config.margin)
        harmonic[channel] = librosa.istft(h, hop_length=config.hop_length, length=frames)
        percussive[channel] = librosa.istft(p, hop_length=config.hop_length, length=frames)
        if progress is not None:
            progress((channel + 1) / channels)
    return {PERCUSSIVE_STEM: percussive, HARMONIC_STEM: harmonic}
