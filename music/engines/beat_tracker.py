"""Tempo, beats, meter and downbeats of a piece, from its audio: a plain class around librosa.

How it decides
--------------
1. Onset envelope. The mix is downmixed to mono at 22.05 kHz; a 128-band log-mel spectrogram
   (hop 256, about 11.6 ms) gives a spectral-flux onset envelope per frequency band (below 150 Hz,
   150-600 Hz, 600-3000 Hz, above 3 kHz), each with a 3-band maximum filter across frequency
   (SuperFlux) so vibrato and slow swells of voices and strings do not read as onsets. Each band is
   clipped at its 99.5th percentile (the silence-to-sound jump at the start would otherwise dwarf
   everything, and librosa's trimming then drops every later beat) and scaled to unit mean, then
   the bands are averaged: a clean bass line then counts as much as busy, noisy mid-range parts.
2. Beats. librosa's tempo estimate (autocorrelation, log-normal prior around 120 BPM) seeds
   librosa's dynamic-programming beat tracker (`librosa.beat.beat_track`, tightness 200). Beats
   librosa trimmed at the ends are put back where onsets support them.
3. Tempo. librosa's tempo is quantised by its lag bins (several % at 120+ BPM), so the tempo comes
   from the tracked beats instead: each beat gets an integer index (a skipped beat counts two), and
   a robust straight-line fit of time against index gives the period. When the beats sit on that
   line (median residual under 3% of a beat and no stretch of 8 beats drifting more than 8%), the
   piece is steady and the beats are *replaced* by the line, on whole microseconds, so the MIDI
   tempo map is one exact tempo. Otherwise gaps are filled and the beat times smoothed (Savitzky-
   Golay over 9 beats), so the per-beat tempo map follows the music without frame jitter.
4. Confidence. The beats are trusted (`tempo_source` "tracked") only if onsets mark them: the median
   onset envelope at the tracked beats must be at least 5 times the envelope's median (rendered
   pieces tracked at their tempo measure 6.6 (a legato flute) to over 1000, sustained pads and organ
   chords 1.8-2.7, a duo tracked at 3/2 of its tempo 3.9); and, for a tempo per beat, if the tracked
   beats stray from the smoothed curve by under 0.05 beat (median; tracked renders, rubato included,
   measure up to 0.02) and no smoothed interval is outside x0.5..x2 of the median one, so the MIDI's
   tempi stay within x0.5..x2 of the piece's. Otherwise (pads, held chords, beats the tracker only
   guesses) the grid is the straight line at the estimated tempo (`tempo_source` "steady_fallback",
   in 4/4, meter confidence 0): a steady grid is wrong in a way a user can see and fix, a jittery map
   is not. A tempo that changes with clear onsets (a ramp, rubato the tracker follows) keeps its
   per-beat map.
5. Meter (3 or 4 beats per bar). Four beat-level features: low-band (< 150 Hz: kick, bass) and
   mid-band (600-3000 Hz) onset strength at each beat, and the bar-window novelty of the chroma of
   the harmony (above 300 Hz) and of the bass line (below 300 Hz): how different the m beats from
   beat j sound from the m beats before it, which peaks where chords and bass roots change, i.e. at
   bar lines when the window is one bar long. For each meter m the features are folded by beat
   index modulo m and an F statistic (variance between the m phases over variance within) measures
   how much of each is explained by the bar position; the sums over the features both meters can
   measure are e3 and e4 (a short piece has too few beats for the 4-beat bar windows, and F values
   of chance would otherwise favour 3). Folding by 4 also explains 2-beat patterns (kick/snare),
   folding by 3 only 3-beat ones. 3/4 needs a lead, (e3 - e4) / (e3 + e4) >= 0.2 (e3 at least 1.5
   times e4), since 4/4 is much the likelier meter and sparse 4/4 pieces lean a little to 3 by
   chance; anything less is 4/4. The meter confidence is that lead for the meter chosen (0 when 4/4
   was chosen against a small lead of 3/4). The 0.2 lies in the gap between the 4/4 pieces (leads
   up to 0.06) and the 3/4 ones (from 0.38) among the evaluation set's "tune" pieces, four more
   pieces composed the same way for tuning only, and the unit tests' renders (see the README).
6. Downbeat. For the chosen meter, the learned model of music/engines/downbeats.py (a logistic
   regression over beat-synchronous onset, bar-novelty and position features, trained on real MDB
   multitracks and renders by benchmarks/train_downbeats.py) scores every beat; the phase whose beats
   are likeliest downbeats wins. Without a model for the meter (or with `learned_downbeats` off) the
   hand-weighted rule of before decides: the phase with the most low-band + mid-band onset + half
   the harmonic bar novelty. The rule put the real development set's downbeats right on half its
   items (downbeat F1 0.52-0.57); the model, cross-validated by song, 0.70 (benchmarks/results/real.md).
   Fewer than `min_beats_for_meter` (16) beats are 4/4 without a comparison: a 7 s clip of a 4/4
   song, 12 beats, came out 3/4 before this (set on that clip; no other value was tried).

Silence (RMS under -80 dBFS), audio shorter than one FFT, no onsets, or fewer than 4 beats give
`BeatGrid.steady(120, duration)` (`tempo_source` "default").

Cost: about 1.3 s of one core for a 3-minute song (STFT at hop 256 is half of it); the first call in
a process also pays about 5 s of librosa imports and numba compilation, see `warm_up`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from music.engines.downbeats import BASE_FEATURES, MODEL_PATH, DownbeatModel, load_model
from music.rhythm import BeatGrid

logger = logging.getLogger(__name__)


class BeatTrackerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_rate: int = Field(default=22050, ge=8000)
    hop_length: int = Field(default=256, ge=32)
    n_fft: int = Field(default=2048, ge=256)
    n_mels: int = Field(default=128, ge=16)
    # Onset bands: low (kick, bass) | low-mid | mid (the downbeat features use the first and third) | high.
    band_edges_hz: tuple[float, float, float] = (150.0, 600.0, 3000.0)
    max_filter_bands: int = Field(default=3, ge=1)  # SuperFlux: vibrato suppression across mel bands
    clip_percentile: float = Field(default=99.5, gt=50, le=100)
    start_bpm: float = Field(default=120.0, gt=0)  # centre of librosa's log-normal tempo prior
    std_octaves: float = Field(default=1.0, gt=0)
    # librosa defaults to 100, which lets a syncopated line pull the beats off; 300 cannot follow a ramp.
    tightness: float = Field(default=200.0, gt=0)
    # The flux of an uncentred frame peaks about 10 ms before the note's onset (measured on rendered
    # General MIDI, both soundfonts); beats are moved by this much.
    latency_s: float = 0.010
    steady_residual: float = Field(default=0.03, gt=0)  # median |residual| / period
    steady_drift: float = Field(default=0.08, gt=0)  # max 8-beat mean residual / period
    smoothing_beats: int = Field(default=9, ge=3)
    extend_support: float = Field(default=0.3, ge=0)  # onset at an added edge beat / median at beats
    fallback_bpm: float = Field(default=120.0, gt=0)
    min_bpm: float = Field(default=62.5, gt=0)  # slower tracked tempos are doubled
    silence_rms: float = Field(default=1e-4, gt=0)  # about -80 dBFS
    min_beats: int = Field(default=4, ge=2)
    bass_cutoff_hz: float = Field(default=300.0, gt=0)
    # Confidence (module docstring, step 4): below these the grid is a steady fallback.
    min_beat_support: float = Field(default=5.0, ge=0)  # median onset at beats / median onset
    max_jitter: float = Field(default=0.05, gt=0)  # median |tracked - smoothed| / period
    max_tempo_ratio: float = Field(default=2.0, gt=1)  # of any interval to the median, either way
    # (e3 - e4) / (e3 + e4) that 3/4 needs (module docstring, step 5).
    meter_margin: float = Field(default=0.2, ge=0, le=1)
    # Fewer beats than four bars of 4/4 are too few to fold by 3 and by 4 and compare: 4/4, the default.
    # (Set after a 7 s real clip of a 4/4 song, 12 beats, came out 3/4; no other value was tried.)
    min_beats_for_meter: int = Field(default=16, ge=0)
    # The downbeat phase from the learned model (music/engines/downbeats.py; step 6); off, or without a
    # model for the meter, the hand-weighted rule.
    learned_downbeats: bool = True
    downbeat_model: Path | None = None  # None: the one in the package


@dataclass
class BeatAnalysis:
    """The grid and what led to it (for logs, benchmarks and tuning)."""

    grid: BeatGrid  # carries tempo_source, tempo_reason and meter_confidence
    fallback: str | None = None  # why the 120 BPM default grid was used (no beat at all), or None
    librosa_bpm: float = 0.0
    steady: bool = False  # the grid has one tempo (tracked steady, or a steady fallback)
    residual: float = 0.0  # median |residual| of the straight-line fit, in beats
    jitter: float = 0.0  # median |tracked - smoothed beat|, in beats (0 for a steady fit)
    beat_support: float = 0.0  # median onset at the tracked beats / median onset
    doubt: str | None = None  # why the tracked beats were not trusted (a steady fallback), or None
    meter_evidence: dict[int, float] = field(default_factory=dict)
    phase_scores: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    # The beats the grid was built on and their features (beat_features), for training and tooling.
    beats: np.ndarray | None = field(default=None, repr=False)
    features: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


class BeatTracker:
    def __init__(self, config: BeatTrackerConfig | None = None) -> None:
        self.config = config or BeatTrackerConfig()
        cfg = self.config
        self.downbeats: DownbeatModel | None = (
            load_model(cfg.downbeat_model or MODEL_PATH) if cfg.learned_downbeats else None
        )

    def warm_up(self) -> None:
        """Run once on a few seconds of clicks: the first call in a process loads librosa's modules and
        JIT-compiles its numba code (about 5 s), which a deployment should pay at start, not on a job."""
        sr = self.config.sample_rate
        clicks = np.zeros(4 * sr, dtype=np.float32)
        for k in range(8):
            start = int((0.25 + 0.5 * k) * sr)
            clicks[start : start + 200] = np.hanning(200)
        self.analyse(clicks, sr)

    def track(self, samples: np.ndarray, sample_rate: int) -> BeatGrid:
        """Samples shaped (channels, n) or (n,), float, any rate."""
        return self.analyse(samples, sample_rate).grid

    def analyse(self, samples: np.ndarray, sample_rate: int) -> BeatAnalysis:
        started = time.process_time()
        cfg = self.config
        y = _mono(samples, sample_rate, cfg)
        duration = y.size / cfg.sample_rate if y.size else 0.0

        def fallback(reason: str) -> BeatAnalysis:
            logger.info("no beat found (%s): steady %g BPM", reason, cfg.fallback_bpm)
            grid = replace(
                BeatGrid.steady(cfg.fallback_bpm, duration),
                tempo_source="default",
                tempo_reason=f"no beat found ({reason}): {cfg.fallback_bpm:g} BPM",
                meter_confidence=0.0,
            )
            return BeatAnalysis(grid, fallback=reason, steady=True, cpu_seconds=time.process_time() - started)

        if y.size < cfg.n_fft:
            return fallback("too short")
        if float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) < cfg.silence_rms:
            return fallback("silence")
        onsets = _onsets(y, cfg)
        if onsets is None:
            return fallback("no onsets")
        fps = cfg.sample_rate / cfg.hop_length
        times, librosa_bpm = _track(onsets.envelope, cfg)
        if times.size < cfg.min_beats:
            return fallback(f"{times.size} beats")

        fit = _regularise(times, cfg)
        support = _beat_support(onsets.envelope, fit.beats, fps)
        doubt = _doubt(fit, support, cfg)
        if doubt is None:
            beats, period, steady = fit.beats, fit.period, fit.steady
            source, reason = "tracked", "steady beat: one tempo" if fit.steady else "the tempo varies: a tempo per beat"
        else:
            # Not confident: the straight line at the estimated tempo rather than a jittery map.
            beats, period, steady = fit.line, fit.line_period, True
            source, reason = "steady_fallback", f"one tempo at the estimate, since {doubt}"
        beats = _extend(beats, onsets.envelope, fps, duration, cfg)
        if 60.0 / period < cfg.min_bpm:
            # Slower than this is nearly always half the felt tempo (a bass on 1 and 3, a pad), and at
            # 480 PPQ a tick would exceed 2 ms: count the half beats instead.
            beats = np.sort(np.concatenate([beats, 0.5 * (beats[1:] + beats[:-1])]))
            period /= 2
        beats = beats[beats >= 0.0]
        if beats.size < cfg.min_beats:
            return fallback(f"{beats.size} beats")

        features = beat_features(beats, onsets, cfg)
        # Beats the tracker does not trust, or too few of them, say nothing reliable about the meter: 4/4.
        sure = doubt is None and beats.size >= cfg.min_beats_for_meter
        bpb, first, evidence, phases, meter_confidence = _meter_and_downbeat(
            features, beats.size, cfg.meter_margin, forced=None if sure else 4, model=self.downbeats
        )
        if steady:
            grid = BeatGrid.from_line(float(beats[0]), period, int(beats.size), bpb, first)
        else:
            grid = _grid_from_times(beats, bpb, first)
        grid = replace(grid, tempo_source=source, tempo_reason=reason, meter_confidence=meter_confidence)
        analysis = BeatAnalysis(
            grid=grid,
            librosa_bpm=librosa_bpm,
            steady=steady,
            residual=fit.residual,
            jitter=fit.jitter,
            beat_support=support,
            doubt=doubt,
            meter_evidence=evidence,
            phase_scores=phases,
            cpu_seconds=time.process_time() - started,
            beats=beats,
            features=features,
        )
        _log(analysis)
        return analysis


def _log(analysis: BeatAnalysis) -> None:
    grid = analysis.grid
    logger.info(
        "beats: %.2f BPM %s (%s; residual %.3f, jitter %.3f beat, onset support %.1f), %d beats from %.2f s, "
        "%s (evidence 3:%.1f 4:%.1f, confidence %.2f), first downbeat %.2f s, %.2f s CPU",
        grid.tempo_bpm, grid.tempo_source, grid.tempo_reason, analysis.residual, analysis.jitter,
        analysis.beat_support, len(grid.beats), grid.beats[0], grid.time_signature,
        analysis.meter_evidence.get(3, 0.0), analysis.meter_evidence.get(4, 0.0), grid.meter_confidence or 0.0,
        grid.beats[grid.first_downbeat], analysis.cpu_seconds,
    )  # fmt: skip


# --- onsets ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Onsets:
    """What the tracker reads off the audio: the power spectrogram, the per-band onset envelopes and
    their mean (the envelope the beats are tracked on)."""

    power: np.ndarray  # (bins, frames)
    bands: np.ndarray  # (4, frames)
    envelope: np.ndarray  # (frames,)
    sample_rate: int
    fps: float


def _mono(samples: np.ndarray, sample_rate: int, cfg: BeatTrackerConfig) -> np.ndarray:
    """Mono float32 at the analysis rate."""
    import librosa

    if sample_rate <= 0:
        raise ValueError("sample_rate must be > 0")
    y = np.nan_to_num(np.asarray(samples, dtype=np.float32))
    if y.ndim == 2:
        y = y.mean(axis=0)
    elif y.ndim != 1:
        raise ValueError("samples must be shaped (channels, n) or (n,)")
    if sample_rate != cfg.sample_rate and y.size:
        y = librosa.resample(y, orig_sr=sample_rate, target_sr=cfg.sample_rate, res_type="soxr_mq")
    return y


def _onsets(y: np.ndarray, cfg: BeatTrackerConfig) -> Onsets | None:
    """Per-band SuperFlux onset envelopes (module docstring, step 1); None if nothing has an onset."""
    import librosa

    sr, hop = cfg.sample_rate, cfg.hop_length
    power = np.abs(librosa.stft(y, n_fft=cfg.n_fft, hop_length=hop)) ** 2
    mel_db = librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=sr, n_mels=cfg.n_mels), ref=np.max)
    mel_hz = librosa.mel_frequencies(n_mels=cfg.n_mels, fmax=sr / 2)
    edges = [0] + [int(np.searchsorted(mel_hz, e)) for e in cfg.band_edges_hz] + [cfg.n_mels]
    # center=False: librosa's centring shifts the envelope half a window (46 ms) late.
    bands = librosa.onset.onset_strength_multi(
        S=mel_db, sr=sr, hop_length=hop, center=False, max_size=cfg.max_filter_bands, channels=edges
    )
    clipped = np.stack([np.minimum(b, np.percentile(b, cfg.clip_percentile)) for b in bands])
    scale = clipped.mean(axis=1, keepdims=True)
    if not np.any(scale > 0):
        return None
    envelope = (clipped / np.where(scale > 0, scale, 1.0)).mean(axis=0)
    return Onsets(power, bands, envelope, sr, sr / hop)


def _track(envelope: np.ndarray, cfg: BeatTrackerConfig) -> tuple[np.ndarray, float]:
    """(beat times, librosa's tempo): librosa's DP tracker seeded by its tempo estimate (step 2)."""
    import librosa

    sr, hop = cfg.sample_rate, cfg.hop_length
    # librosa's tempo on a half-rate envelope: only a seed, and its tempogram is the costliest step.
    half = envelope[: envelope.size // 2 * 2].reshape(-1, 2).max(axis=1)
    librosa_bpm = float(
        librosa.feature.tempo(
            onset_envelope=half, sr=sr, hop_length=2 * hop, start_bpm=cfg.start_bpm, std_bpm=cfg.std_octaves
        )[0]
    )
    _, frames = librosa.beat.beat_track(
        onset_envelope=envelope, sr=sr, hop_length=hop, bpm=librosa_bpm, tightness=cfg.tightness
    )
    return frames / (sr / hop) + cfg.latency_s, librosa_bpm


# --- beats -------------------------------------------------------------------------------------------


class _Fit(NamedTuple):
    beats: np.ndarray  # the line (steady) or the filled, smoothed tracked beats
    period: float
    steady: bool
    residual: float  # median |residual| of the straight-line fit, in beats
    jitter: float  # median |tracked - smoothed|, in beats; 0 when steady
    line: np.ndarray  # the straight line through the beats, one per beat index
    line_period: float


def _regularise(times: np.ndarray, cfg: BeatTrackerConfig) -> _Fit:
    """The beats, steady or per beat, and the straight line through them, from the tracker's beat times."""
    intervals = np.diff(times)
    period = float(np.median(intervals))
    # A skipped beat shows as a double interval: give every beat its index on the beat grid.
    steps = np.maximum(1, np.round(intervals / period)).astype(int)
    index = np.concatenate([[0], np.cumsum(steps)])
    keep = np.ones(times.size, dtype=bool)
    slope, offset = period, float(times[0])
    for _ in range(3):
        # Iteratively trimmed least squares: a few misplaced beats must not tilt the line.
        slope, offset = np.polyfit(index[keep], times[keep], 1)
        res = times - (offset + slope * index)
        spread = float(np.median(np.abs(res[keep])))
        new_keep = np.abs(res) <= max(4 * spread, 0.02 * slope)
        if new_keep.sum() < max(2, times.size // 2) or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    res = times - (offset + slope * index)
    residual = float(np.median(np.abs(res)) / slope)
    window = min(8, res.size)
    drift = float(np.max(np.abs(np.convolve(res, np.ones(window) / window, mode="valid"))) / slope)
    line = offset + slope * np.arange(index[-1] + 1)
    if residual < cfg.steady_residual and drift < cfg.steady_drift:
        return _Fit(line, float(slope), True, residual, 0.0, line, float(slope))
    # Varying tempo: fill skipped beats, then smooth away the tracker's frame-sized jitter.
    filled = np.interp(np.arange(index[-1] + 1), index, times)
    jitter = 0.0
    window = min(cfg.smoothing_beats, filled.size)
    window -= 1 - window % 2  # Savitzky-Golay needs an odd window
    if window >= 5:
        from scipy.signal import savgol_filter

        smooth = savgol_filter(filled, window, polyorder=2)
        # Only tracked beats count: filled ones sit on the interpolation by construction.
        jitter = float(np.median(np.abs(filled[index] - smooth[index])) / slope)
        if np.all(np.diff(smooth) > 0):
            filled = smooth
    return _Fit(filled, float(np.median(np.diff(filled))), False, residual, jitter, line, float(slope))


def _beat_support(envelope: np.ndarray, beats: np.ndarray, fps: float) -> float:
    """How much onsets mark the beats: the median onset at them over the envelope's median."""
    typical = float(np.median(envelope))
    at_beats = float(np.median(_at_beats(envelope, beats, fps)))
    return at_beats / typical if typical > 0 else float("inf")


def _doubt(fit: _Fit, support: float, cfg: BeatTrackerConfig) -> str | None:
    """Why the tracked beats should not make the tempo map (module docstring, step 4), or None."""
    if support < cfg.min_beat_support:
        return (
            f"onsets hardly mark the beats (onset at beats {support:.1f}x the typical level, "
            f"{cfg.min_beat_support:g}x needed)"
        )
    if fit.steady:
        return None
    if fit.jitter > cfg.max_jitter:
        return f"the beats jitter by {fit.jitter:.2f} beat around a smooth tempo ({cfg.max_jitter:g} allowed)"
    intervals = np.diff(fit.beats)
    ratios = intervals / np.median(intervals)
    if ratios.max() > cfg.max_tempo_ratio or ratios.min() < 1.0 / cfg.max_tempo_ratio:
        return f"the tempo per beat would leave x{1 / cfg.max_tempo_ratio:g}..x{cfg.max_tempo_ratio:g} of its median"
    return None


def _extend(beats: np.ndarray, envelope: np.ndarray, fps: float, duration: float, cfg: BeatTrackerConfig) -> np.ndarray:
    """Continue the beats at the edge intervals while onsets support them.

    librosa trims end beats whose onsets are weaker than the piece's typical beat, which often drops
    the first beat or two of a soft entry.
    """
    support = _at_beats(envelope, beats, fps)
    needed = cfg.extend_support * float(np.median(support))
    before: list[float] = []
    step = beats[1] - beats[0]
    t = beats[0] - step
    while t >= 0.0 and _at_beats(envelope, np.array([t]), fps)[0] >= needed:
        before.append(t)
        t -= step
    after: list[float] = []
    step = beats[-1] - beats[-2]
    t = beats[-1] + step
    while t < duration and _at_beats(envelope, np.array([t]), fps)[0] >= needed:
        after.append(t)
        t += step
    return np.concatenate([before[::-1], beats, after])


def _grid_from_times(beats: np.ndarray, bpb: int, first: int) -> BeatGrid:
    rounded = np.round(beats * 1e6) / 1e6  # whole microseconds: what a MIDI tempo can hold
    return BeatGrid(tuple(float(t) for t in rounded), bpb, first)


# --- meter and downbeat ---------------------------------------------------------------------------------

METERS = (3, 4)
# Feature weights of the downbeat phase (see the module docstring); the bar novelty is named per meter.
PHASE_WEIGHTS = {"low": 1.0, "mid": 1.0, "harmony_bar": 0.5}


def _at_beats(envelope: np.ndarray, beats: np.ndarray, fps: float, before: float = 0.03, after: float = 0.05) -> np.ndarray:
    """The envelope's peak near each beat (the beat times are accurate to a few frames)."""
    out = np.zeros(beats.size)
    for j, t in enumerate(beats):
        a = max(0, int((t - before) * fps))
        b = min(envelope.size, int((t + after) * fps) + 1)
        out[j] = envelope[a:b].max() if b > a else 0.0
    return out


def _bar_novelty(chroma: np.ndarray, m: int) -> np.ndarray:
    """1 - cosine(chroma of beats j..j+m-1, chroma of beats j-m..j-1); NaN where a window is short."""
    n = chroma.shape[1]
    cum = np.concatenate([np.zeros((12, 1)), np.cumsum(chroma, axis=1)], axis=1)
    out = np.full(n, np.nan)
    if n >= 2 * m:
        j = np.arange(m, n - m + 1)
        after = cum[:, j + m] - cum[:, j]
        before = cum[:, j] - cum[:, j - m]
        cos = np.sum(after * before, axis=0) / (np.linalg.norm(after, axis=0) * np.linalg.norm(before, axis=0) + 1e-9)
        out[j] = 1.0 - cos
    return out


def beat_features(beats: np.ndarray, onsets: Onsets, cfg: BeatTrackerConfig) -> dict[str, np.ndarray]:
    """Per-beat features: onset strength per band at the beat ("onset0".."onset3"; "low" and "mid" are
    bands 0 and 2, the meter's) and at the half beat after it ("half0".."half3"), and per meter m the
    harmony's and the bass line's chroma novelty over m beats ("harmony_bar{m}", "bass_bar{m}") and over
    one ("harmony_beat", "bass_beat"); the harmony ones are missing where beats are closer than a frame."""
    import librosa

    fps, bands, power, sr = onsets.fps, onsets.bands, onsets.power, onsets.sample_rate
    features = {f"onset{k}": _at_beats(bands[k], beats, fps) for k in range(bands.shape[0])}
    halves = np.append(0.5 * (beats[1:] + beats[:-1]), beats[-1] + 0.5 * (beats[-1] - beats[-2]) if beats.size > 1 else 0.0)
    features |= {f"half{k}": _at_beats(bands[k], halves, fps) for k in range(bands.shape[0])}
    features["low"], features["mid"] = features["onset0"], features["onset2"]
    # The first beat where the music plays: its broadband onset reaches a third of the typical beat's.
    strength = sum(features[f"onset{k}"] for k in range(bands.shape[0]))
    first = np.zeros(beats.size)
    loud = np.flatnonzero(strength >= np.median(strength) / 3)
    if loud.size:
        first[loud[0]] = 1.0
    features["first"] = first
    frames = np.clip(np.round(beats * fps).astype(int), 0, power.shape[1] - 1)
    frames = np.unique(frames)
    if frames.size != beats.size:  # beats closer than a frame: no meaningful harmony features
        return features
    sync = np.add.reduceat(power, frames, axis=1) / np.diff(np.append(frames, power.shape[1]))[None, :]
    freqs = librosa.fft_frequencies(sr=sr, n_fft=cfg.n_fft)
    bass = freqs < cfg.bass_cutoff_hz
    chroma_filter = librosa.filters.chroma(sr=sr, n_fft=cfg.n_fft, tuning=0.0)
    for name, rows in (("harmony", ~bass), ("bass", bass)):
        chroma = chroma_filter[:, rows] @ sync[rows]
        # Log-compressed and unit-norm per beat: loud low notes must not swamp the rest.
        chroma = np.log1p(100.0 * chroma / (chroma.max() + 1e-12))
        chroma = chroma / (np.linalg.norm(chroma, axis=0, keepdims=True) + 1e-9)
        for m in METERS:
            features[f"{name}_bar{m}"] = _bar_novelty(chroma, m)
        features[f"{name}_beat"] = _bar_novelty(chroma, 1)
    return features


def downbeat_inputs(features: dict[str, np.ndarray], meter: int) -> np.ndarray:
    """The downbeat model's base features (downbeats.BASE_FEATURES) for `meter`, (beats, features)."""
    n = features["onset0"].size
    columns = []
    for name in BASE_FEATURES:
        key = f"{name}{meter}" if name.endswith("_bar") else name
        columns.append(features.get(key, np.full(n, np.nan)))
    return np.stack(columns, axis=1)


def _zscore(x: np.ndarray) -> np.ndarray:
    valid = ~np.isnan(x)
    if valid.sum() < 2:
        return np.full_like(x, np.nan)
    return (x - np.nanmean(x)) / (np.nanstd(x) + 1e-9)


def _f_statistic(x: np.ndarray, index: np.ndarray, m: int) -> float | None:
    """Between-phase over within-phase variance of x grouped by index mod m (one-way ANOVA F); None
    where a phase has under 2 values."""
    groups = [x[index % m == p] for p in range(m)]
    if any(g.size < 2 for g in groups):
        return None
    mean = x.mean()
    between = sum(g.size * (g.mean() - mean) ** 2 for g in groups) / (m - 1)
    within = sum(((g - g.mean()) ** 2).sum() for g in groups) / (x.size - m)
    return float(between / (within + 1e-12))


def _meter_and_downbeat(
    features: dict[str, np.ndarray], n: int, margin: float, forced: int | None = None,
    model: DownbeatModel | None = None,
) -> tuple[int, int, dict[int, float], list[float], float]:
    """(beats per bar, index of the first downbeat, meter evidence, phase scores of the meter,
    meter confidence 0..1); `forced` fixes the meter (confidence 0); the phase is `model`'s where it has
    one for the meter, else the hand-weighted rule's."""
    index = np.arange(n)
    stats: dict[int, dict[str, float | None]] = {}
    for m in METERS:
        stats[m] = {}
        for name in ("low", "mid", "harmony_bar", "bass_bar"):
            key = f"{name}{m}" if name.endswith("_bar") else name
            if key not in features:
                stats[m][name] = None
                continue
            z = _zscore(features[key])
            valid = ~np.isnan(z)
            stats[m][name] = _f_statistic(z[valid], index[valid], m)
    # Like with like: a feature that one meter cannot measure (a bar window longer than a short
    # piece allows, no harmony features) counts for neither, or the shorter meter would collect the
    # chance F of features the longer one lacks.
    usable = [name for name in stats[METERS[0]] if all(stats[m][name] is not None for m in METERS)]
    evidence = {m: float(sum(stats[m][name] or 0.0 for name in usable)) for m in METERS}
    bpb, confidence = _choose_meter(evidence, margin)
    if forced is not None:
        bpb, confidence = forced, 0.0
    learned = model.phase_scores(downbeat_inputs(features, bpb), bpb) if model is not None else None
    if learned is not None:
        return bpb, int(np.argmax(learned)), evidence, learned, confidence
    scores = np.zeros(bpb)
    for name, weight in PHASE_WEIGHTS.items():
        key = f"{name}{bpb}" if name.endswith("_bar") else name
        if key not in features:
            continue
        z = _zscore(features[key])
        for p in range(bpb):
            values = z[p::bpb]
            values = values[~np.isnan(values)]
            if values.size:
                scores[p] += weight * float(values.mean())
    return bpb, int(np.argmax(scores)), evidence, [float(s) for s in scores], confidence


def _choose_meter(evidence: dict[int, float], margin: float) -> tuple[int, float]:
    """(beats per bar, confidence): 3 only on a clear lead of its evidence, else the safer 4."""
    e3, e4 = evidence.get(3, 0.0), evidence.get(4, 0.0)
    lead = (e3 - e4) / (e3 + e4) if e3 + e4 > 0 else 0.0  # -1 (all 4/4) .. 1 (all 3/4)
    if lead >= margin:
        return 3, float(lead)
    return 4, float(max(0.0, -lead))
