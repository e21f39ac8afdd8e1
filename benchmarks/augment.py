"""What happens to drums between the kit and an upload, as random audio effects for training material:
a room, an equaliser, a compressor, saturation, level, and the other instruments bleeding in.

Every function takes (channels, n) float32 audio at `rate` and an `rng`, and returns new audio of the
same shape; nothing here shifts onsets (no look-ahead, no pre-delay beyond what a room's first
reflection adds after the direct sound), so hit times stay the annotations' times.
"""

from __future__ import annotations

import numpy as np
import scipy.signal


def _biquad(kind: str, freq: float, gain_db: float, q: float, rate: int) -> np.ndarray:
    """An RBJ-cookbook biquad as second-order sections."""
    a_gain = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * min(freq, 0.45 * rate) / rate
    alpha = np.sin(w0) / (2 * q)
    cos = np.cos(w0)
    if kind == "peak":
        b = [1 + alpha * a_gain, -2 * cos, 1 - alpha * a_gain]
        a = [1 + alpha / a_gain, -2 * cos, 1 - alpha / a_gain]
    else:
        sq = 2 * np.sqrt(a_gain) * alpha
        if kind == "low":
            b = [a_gain * ((a_gain + 1) - (a_gain - 1) * cos + sq), 2 * a_gain * ((a_gain - 1) - (a_gain + 1) * cos),
                 a_gain * ((a_gain + 1) - (a_gain - 1) * cos - sq)]
            a = [(a_gain + 1) + (a_gain - 1) * cos + sq, -2 * ((a_gain - 1) + (a_gain + 1) * cos),
                 (a_gain + 1) + (a_gain - 1) * cos - sq]  # fmt: skip
        else:
            b = [a_gain * ((a_gain + 1) + (a_gain - 1) * cos + sq), -2 * a_gain * ((a_gain - 1) + (a_gain + 1) * cos),
                 a_gain * ((a_gain + 1) + (a_gain - 1) * cos - sq)]
            a = [(a_gain + 1) - (a_gain - 1) * cos + sq, 2 * ((a_gain - 1) - (a_gain + 1) * cos),
                 (a_gain + 1) - (a_gain - 1) * cos - sq]  # fmt: skip
    return np.array([[*(np.array(b) / a[0]), 1.0, a[1] / a[0], a[2] / a[0]]])


def equalise(x: np.ndarray, rate: int, rng: np.random.Generator, spread_db: float = 8.0) -> np.ndarray:
    """A low shelf, a high shelf and a bell at random frequencies and gains within +-spread_db."""
    sos = np.concatenate([
        _biquad("low", rng.uniform(60, 250), rng.uniform(-spread_db, spread_db), 0.7, rate),
        _biquad("high", rng.uniform(3000, 9000), rng.uniform(-spread_db, spread_db), 0.7, rate),
        _biquad("peak", np.exp(rng.uniform(np.log(200), np.log(5000))), rng.uniform(-spread_db, spread_db),
                rng.uniform(0.5, 2.5), rate),
    ])  # fmt: skip
    return scipy.signal.sosfilt(sos, x, axis=-1).astype(np.float32)


def compress(x: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A feed-forward compressor on the summed level: threshold -35..-12 dB of the peak, ratio 2-10, a
    release of 40-300 ms (the attack follows the signal at once, so transients pass as on a fast bus)."""
    level = np.abs(x).max(axis=0)
    peak = float(level.max()) + 1e-9
    release = rng.uniform(0.04, 0.3)
    pole = np.exp(-1.0 / (release * rate))
    # Peak envelope: instant attack, exponential release, as a running maximum of a decaying level.
    env = scipy.signal.lfilter([1 - pole], [1, -pole], level)
    env = np.maximum(env, level)
    threshold = peak * 10 ** (rng.uniform(-35, -12) / 20)
    ratio = rng.uniform(2, 10)
    over = np.maximum(env / threshold, 1.0)
    gain = over ** (1 / ratio - 1)
    makeup = 1.0 / float(gain.min() ** 0.5)
    return (x * gain * makeup).astype(np.float32)


def room(rate: int, rng: np.random.Generator, channels: int) -> np.ndarray:
    """A synthetic room impulse response: the direct sound, a few early reflections and a decaying
    diffuse tail (RT60 0.15-1.6 s), decorrelated per channel."""
    rt60 = float(np.exp(rng.uniform(np.log(0.15), np.log(1.6))))
    n = int(min(rt60 * 1.2, 2.0) * rate)
    t = np.arange(n) / rate
    ir = np.zeros((channels, n), dtype=np.float32)
    ir[:, 0] = 1.0
    for _ in range(int(rng.integers(3, 9))):
        at = int(rng.uniform(0.002, 0.05) * rate)
        ir[:, at] += rng.uniform(-0.6, 0.6, size=channels)
    onset = int(rng.uniform(0.005, 0.03) * rate)
    tail = rng.normal(0.0, 1.0, size=(channels, n)) * np.exp(-6.9 * t / rt60)
    tail[:, :onset] = 0.0
    wet = 10 ** (rng.uniform(-18, -3) / 20)
    # The tail's energy is wet^2 of the direct sound's: -18 dB (a dry booth) to -3 dB (a live hall).
    ir += (wet * tail / (np.sqrt((tail**2).sum(axis=1, keepdims=True)) + 1e-9)).astype(np.float32)
    return ir


def reverberate(x: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    ir = room(rate, rng, x.shape[0])
    wet = scipy.signal.fftconvolve(x, ir, axes=-1)[:, : x.shape[1]]
    peak_in, peak_out = float(np.abs(x).max()) + 1e-9, float(np.abs(wet).max()) + 1e-9
    return (wet * (peak_in / peak_out)).astype(np.float32)


def saturate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    drive = float(rng.uniform(1.5, 6.0))
    peak = float(np.abs(x).max()) + 1e-9
    return (np.tanh(drive * x / peak) * peak / np.tanh(drive)).astype(np.float32)


def drum_bus(x: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """What a mix engineer and a room do to a kit: each effect with its own chance."""
    if rng.random() < 0.6:
        x = reverberate(x, rate, rng)
    if rng.random() < 0.7:
        x = equalise(x, rate, rng)
    if rng.random() < 0.5:
        x = compress(x, rate, rng)
    if rng.random() < 0.15:
        x = saturate(x, rng)
    return x


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) + 1e-12


def mix(drums: np.ndarray, other: np.ndarray | None, drums_db: float) -> np.ndarray:
    """drums + other with the drums `drums_db` dB above the other's RMS, peak-normalised to 0.9."""
    out = drums.copy()
    if other is not None and other.size and rms(other) > 1e-6:
        n = min(out.shape[1], other.shape[1])
        other = other[: out.shape[0], :n] if other.shape[0] >= out.shape[0] else np.repeat(other[:1, :n], out.shape[0], 0)
        out[:, :n] += other * (rms(drums) / rms(other)) * 10 ** (-drums_db / 20)
    return (out * (0.9 / (float(np.abs(out).max()) + 1e-9))).astype(np.float32)
