"""Separation without model weights: harmonic/percussive source separation (Fitzgerald 2010).

Median filtering across time keeps sustained partials (harmonic), across frequency keeps broadband
transients (percussive). It needs nothing downloaded and runs in seconds on any CPU, so air-gapped and
CPU-only users still get a drums stem. The harmonic part carries everything pitched (bass included):
it is a mix without its drums, so its stem, "harmonic", is transcribed with the mix's preset.

The defaults are librosa's (margin 1: every bin split between the two). A stricter percussive margin
and a high-band residual (an open hi-hat's ring above a few kHz kept with the drums) are options,
measured on drums in band mixes (benchmarks/drums_in_mixes.py, TimGM6mb "tune" split, drum onset F1):
`margin_percussive=2` found a few more hats (all hats 0.885 -> 0.902, open 0.655 -> 0.636, snare
0.867 -> 0.854), adding `margin=3, residual_above_hz=6000` more still (0.920; 4000 Hz: 0.931) at more
snare false hits (0.82-0.83) and no gain on open hats; kick within 0.01. They are off because they
also change the harmonic stem (the mix less the percussive one), which the pitched transcription and
its presets were measured on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from music.audio import DecodedAudio
from music.errors import Canceled

HARMONIC_STEM = "harmonic"
PERCUSSIVE_STEM = "drums"


class HpssConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n_fft: int = Field(default=2048, ge=256)
    hop_length: int = Field(default=512, ge=64)
    # librosa's default median-filter length (31 frames, about 0.36 s at 44.1 kHz).
    kernel_size: int = Field(default=31, ge=3)
    # Time-median length for the harmonic estimate; None: kernel_size.
    harmonic_kernel: int | None = Field(default=None, ge=3)
    # 1.0 splits every bin between the two parts. Whatever the margins, the harmonic stem is the mix
    # less the percussive one, so the stems always add up to the mix.
    margin: float = Field(default=1.0, ge=1.0)
    # A bin goes to the percussive stem only where it is this much more percussive than harmonic.
    margin_percussive: float = Field(default=1.0, ge=1.0)
    # Above this frequency the percussive stem also keeps what is not clearly harmonic (the residual
    # of the margins): a hi-hat's or cymbal's sustained ring. None: no such band.
    residual_above_hz: float | None = Field(default=None, gt=0.0)


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
            raise Canceled("The job was canceled.")
        spectrum = librosa.stft(audio.samples[channel], n_fft=config.n_fft, hop_length=config.hop_length)
        p = spectrum * _percussive_mask(np.abs(spectrum), audio.sample_rate, config)
        percussive[channel] = librosa.istft(p, hop_length=config.hop_length, length=frames)
        harmonic[channel] = librosa.istft(spectrum - p, hop_length=config.hop_length, length=frames)
        if progress is not None:
            progress((channel + 1) / channels)
    return {PERCUSSIVE_STEM: percussive, HARMONIC_STEM: harmonic}


def _percussive_mask(magnitude: np.ndarray, sample_rate: int, config: HpssConfig) -> np.ndarray:
    import librosa

    kernel = (config.harmonic_kernel or config.kernel_size, config.kernel_size)
    mask_h, mask_p = librosa.decompose.hpss(
        magnitude, kernel_size=kernel, margin=(config.margin, config.margin_percussive), mask=True
    )
    if config.residual_above_hz is not None:
        high = librosa.fft_frequencies(sr=sample_rate, n_fft=config.n_fft) >= config.residual_above_hz
        mask_p[high] = 1.0 - mask_h[high]
    return mask_p
