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
4. Meter (3 or 4 beats per bar). Four beat-level features: low-band (< 150 Hz: kick, bass) and
   mid-band (600-3000 Hz) onset strength at each beat, and the bar-window novelty of the chroma of
   the harmony (above 300 Hz) and of the bass line (below 300 Hz): how different the m beats from
   beat j sound from the m beats before it, which peaks where chords and bass roots change, i.e. at
   bar lines when the window is one bar long. For each meter m the features are folded by beat
   index modulo m and an F statistic (variance between the m phases over variance within) measures
   how much of each is explained by the bar position; the meter with the larger sum wins (ties go
   to 4/4). Folding by 4 also explains 2-beat patterns (kick/snare), folding by 3 only 3-beat ones.
5. Downbeat. For the chosen meter, the phase whose beats have the most low-band onset + mid-band
   onset + half the harmonic bar novelty (all z-scored) is the downbeat: kicks and bass roots land
   on 1, melodies start phrases there and chords change there. The broadband onset is left out:
   with drums it favours the accented backbeat (2 and 4). The weights were chosen on pieces
   rendered with FluidR3 and checked on the same pieces rendered with TimGM6mb.

Silence (RMS under -80 dBFS), audio shorter than one FFT, or fewer than 4 beats give
`BeatGrid.steady(120, duration)`.

Cost: about 1.3 s of one core for a 3-minute song (STFT at hop 256 is half of it); the first call in
a process also pays about 5 s of librosa imports and numba compilation, see `warm_up`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from serve_app.domain.rhythm import BeatGrid

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


@dataclass
class BeatAnalysis:
    """The grid and what led to it (for logs, benchmarks and tuning)."""

    grid: BeatGrid
    fallback: str | None = None  # why the steady fallback grid was used, or None
    librosa_bpm: float = 0.0
    steady: bool = False
    residual: float = 0.0  # median |residual| of the straight-line fit, in beats
    meter_evidence: dict[int, float] = field(default_factory=dict)
    phase_scores: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0


class BeatTracker:
    def __init__(self, config: BeatTrackerConfig | None = None) -> None:
        self.config = config or BeatTrackerConfig()

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
        import librosa

        started = time.process_time()
        cfg = self.config
        if sample_rate <= 0:
            raise ValueError("sample_rate must be > 0")
        y = np.nan_to_num(np.asarray(samples, dtype=np.float32))
        if y.ndim == 2:
            y = y.mean(axis=0)
        elif y.ndim != 1:
            raise ValueError("samples must be shaped (channels, n) or (n,)")
        duration = y.size / sample_rate

        def fallback(reason: str) -> BeatAnalysis:
            logger.info("no beat found (%s): steady %g BPM", reason, cfg.fallback_bpm)
            grid = BeatGrid.steady(cfg.fallback_bpm, duration)
            return BeatAnalysis(grid, fallback=reason, cpu_seconds=time.process_time() - started)

        if sample_rate != cfg.sample_rate and y.size:
            y = librosa.resample(y, orig_sr=sample_rate, target_sr=cfg.sample_rate, res_type="soxr_mq")
        sr, hop = cfg.sample_rate, cfg.hop_length
        fps = sr / hop
        if y.size < cfg.n_fft:
            return fallback("too short")
        if float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) < cfg.silence_rms:
            return fallback("silence")

        power = np.abs(librosa.stft(y, n_fft=cfg.n_fft, hop_length=hop)) ** 2
        mel_db = librosa.power_to_db(
            librosa.feature.melspectrogram(S=power, sr=sr, n_mels=cfg.n_mels), ref=np.max
        )
        mel_hz = librosa.mel_frequencies(n_mels=cfg.n_mels, fmax=sr / 2)
        edges = [0] + [int(np.searchsorted(mel_hz, e)) for e in cfg.band_edges_hz] + [cfg.n_mels]
        # center=False: librosa's centring shifts the envelope half a window (46 ms) late.
        bands = librosa.onset.onset_strength_multi(
            S=mel_db, sr=sr, hop_length=hop, center=False, max_size=cfg.max_filter_bands, channels=edges
        )
        clipped = np.stack([np.minimum(b, np.percentile(b, cfg.clip_percentile)) for b in bands])
        scale = clipped.mean(axis=1, keepdims=True)
        if not np.any(scale > 0):
            return fallback("no onsets")
        envelope = (clipped / np.where(scale > 0, scale, 1.0)).mean(axis=0)

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
        times = frames / fps + cfg.latency_s
        if times.size < cfg.min_beats:
            return fallback(f"{times.size} beats")

        beats, period, steady, residual = _regularise(times, cfg)
        beats = _extend(beats, envelope, fps, y.size / sr, cfg)
        if 60.0 / period < cfg.min_bpm:
            # Slower than this is nearly always half the felt tempo (a bass on 1 and 3, a pad), and at
            # 480 PPQ a tick would exceed 2 ms: count the half beats instead.
            beats = np.sort(np.concatenate([beats, 0.5 * (beats[1:] + beats[:-1])]))
            period /= 2
        beats = beats[beats >= 0.0]
        if beats.size < cfg.min_beats:
            return fallback(f"{beats.size} beats")

        features = _beat_features(beats, fps, bands, power, sr, cfg)
        bpb, first, evidence, phases = _meter_and_downbeat(features, beats.size)
        if steady:
            grid = BeatGrid.from_line(float(beats[0]), period, int(beats.size), bpb, first)
        else:
            grid = _grid_from_times(beats, bpb, first)
        analysis = BeatAnalysis(
            grid=grid,
            librosa_bpm=librosa_bpm,
            steady=steady,
            residual=residual,
            meter_evidence=evidence,
            phase_scores=phases,
            cpu_seconds=time.process_time() - started,
        )
        logger.info(
            "beats: %.2f BPM %s, %d beats from %.2f s, %s (evidence 3:%.1f 4:%.1f), first downbeat %.2f s, %.2f s CPU",
            grid.tempo_bpm,
            "steady" if steady else f"varying (residual {residual:.3f} beat)",
            len(grid.beats),
            grid.beats[0],
            grid.time_signature,
            evidence.get(3, 0.0),
            evidence.get(4, 0.0),
            grid.beats[grid.first_downbeat],
            analysis.cpu_seconds,
        )
        return analysis


# --- beats -------------------------------------------------------------------------------------------


def _regularise(times: np.ndarray, cfg: BeatTrackerConfig) -> tuple[np.ndarray, float, bool, float]:
    """(beats, period, steady, median residual in beats) from the tracker's beat times."""
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
    if residual < cfg.steady_residual and drift < cfg.steady_drift:
        return offset + slope * np.arange(index[-1] + 1), float(slope), True, residual
    # Varying tempo: fill skipped beats, then smooth away the tracker's frame-sized jitter.
    filled = np.interp(np.arange(index[-1] + 1), index, times)
    window = min(cfg.smoothing_beats, filled.size)
    window -= 1 - window % 2  # Savitzky-Golay needs an odd window
    if window >= 5:
        from scipy.signal import savgol_filter

        smooth = savgol_filter(filled, window, polyorder=2)
        if np.all(np.diff(smooth) > 0):
            filled = smooth
    return filled, float(np.median(np.diff(filled))), False, residual


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
    if rounded[0] == 0.0 and first:
        rounded, first = rounded[1:], first - 1  # tick 0 can only hold a downbeat
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


def _beat_features(
    beats: np.ndarray, fps: float, bands: np.ndarray, power: np.ndarray, sr: int, cfg: BeatTrackerConfig
) -> dict[str, np.ndarray]:
    import librosa

    features = {"low": _at_beats(bands[0], beats, fps), "mid": _at_beats(bands[2], beats, fps)}
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
    return features


def _zscore(x: np.ndarray) -> np.ndarray:
    valid = ~np.isnan(x)
    if valid.sum() < 2:
        return np.full_like(x, np.nan)
    return (x - np.nanmean(x)) / (np.nanstd(x) + 1e-9)


def _f_statistic(x: np.ndarray, index: np.ndarray, m: int) -> float:
    """Between-phase over within-phase variance of x grouped by index mod m (one-way ANOVA F)."""
    groups = [x[index % m == p] for p in range(m)]
    if any(g.size < 2 for g in groups):
        return 0.0
    mean = x.mean()
    between = sum(g.size * (g.mean() - mean) ** 2 for g in groups) / (m - 1)
    within = sum(((g - g.mean()) ** 2).sum() for g in groups) / (x.size - m)
    return float(between / (within + 1e-12))


def _meter_and_downbeat(features: dict[str, np.ndarray], n: int) -> tuple[int, int, dict[int, float], list[float]]:
    """(beats per bar, index of the first downbeat, meter evidence, phase scores of the meter)."""
    index = np.arange(n)
    evidence: dict[int, float] = {}
    for m in METERS:
        total = 0.0
        for name in ("low", "mid", f"harmony_bar{m}", f"bass_bar{m}"):
            if name not in features:
                continue
            z = _zscore(features[name])
            valid = ~np.isnan(z)
            total += _f_statistic(z[valid], index[valid], m)
        evidence[m] = total
    bpb = 3 if evidence[3] > evidence[4] else 4
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
    return bpb, int(np.argmax(scores)), evidence, [float(s) for s in scores]
