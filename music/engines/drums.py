"""Drum transcription: a drums stem's audio to General MIDI percussion notes.

Approach: non-negative matrix factor deconvolution (NMFD; Smaragdis 2004, as used for drums by
Lindsay-Smith et al. 2012 and Dittmar & Gaertner 2014) of a mel-band magnitude spectrogram with a
fixed dictionary of two-dimensional (frequency x 209 ms) drum templates, then peak picking on each
drum class's activation.

Why this rather than per-band onset detection: drum hits overlap in frequency (a snare has as much
low end as a kick, a hi-hat sits on top of both) and very often sound at the same instant (kick +
hat, snare + hat). Explaining every frame as a non-negative sum of drum templates gives each
simultaneous hit its own activation. Why templates that span time (NMFD) rather than one spectrum
per drum (plain NMF): a kick starts with a broadband click and a snare with a low thump, so a single
average spectrum leaves the first frames of one drum to be explained by another, which reads as
phantom hits (measured on the TimGM6mb tuning renders: snare F1 0.6-0.8 with plain NMF, ~0.98
with NMFD, and faster, since the templates need no adapting).

The templates (music/engines/data/drum_templates.npz, made by benchmarks/make_drum_templates.py) are
measured on isolated hits of five kits of the TimGM6mb soundfont, never on FluidR3 (the kit the
project evaluates on), so the dictionary holds a few variants of each drum and the activations of a
class's variants are summed. Toms (low, mid, high) and cymbals have templates too, to take those
hits (so a floor tom is not read as a kick, a crash not as a hi-hat), and are not reported. Two
free components, adapted to the recording but held flat over time, soak up sustained sound no drum
explains (pitched bleed in an HPSS or Demucs stem).

Peak picking: a hit is a local maximum of the class activation that reaches a fraction of that
class's typical loud hit in the same recording (relative, so any mix level works; an absolute
floor keeps near-silence out) and where that class's part of the signal (a soft mask from the
factorisation) gets louder, so the tail of a drum that rings longer than its template is not a new
hit. A kick and a snare at the same instant must both be substantial, since each leaks into the
other's activation. Velocity: GM synths play amplitude ~ (velocity/127)^2, so velocity ~
sqrt(activation / typical loud hit). Open or closed hi-hat: how much of the hat's part of the
signal still rings 70-120 ms after the hit, or, when the next hat comes sooner or a kick or snare
is struck with it, how much of the hat activation the open-hat templates took. An open hat's noise
burst also leaks into the snare's activation, so a snare struck with an open hat must be substantial,
as a kick struck with a snare must.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import librosa
import numpy as np
import scipy.signal
from pydantic import BaseModel, ConfigDict, Field

from music.drum_kit import HIHAT_CLOSED, HIHAT_OPEN, KICK, SNARE, class_pitch
from music.notes import Note

logger = logging.getLogger(__name__)

TEMPLATES_PATH = Path(__file__).with_name("data") / "drum_templates.npz"

TEMPLATE_NAMES: tuple[str, ...] = (
    "kick",
    "snare",
    "hihat_closed",
    "hihat_open",
    "tom_low",
    "tom_mid",
    "tom_high",
    "cymbal",
)
# Reported groups and the templates whose activations add up to each.
GROUPS: dict[str, tuple[str, ...]] = {
    KICK: ("kick",),
    SNARE: ("snare",),
    "hihat": ("hihat_closed", "hihat_open"),
}
_EPS = 1e-10


class DrumConfig(BaseModel):
    """Analysis and peak-picking parameters.

    The defaults were chosen on TimGM6mb renders (five kits, drums alone and inside an HPSS split of a
    mix, benchmarks/drums_in_mixes.py's "tune" split); none were tuned on FluidR3 or sf_GMbank, the
    kits the project evaluates on.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Front end; must match the templates file. 22.05 kHz keeps a hi-hat's energy up to 11 kHz and
    # makes any input rate give the same spectrum; 46 ms windows every 11.6 ms (onsets are placed
    # to a frame, well inside a 50 ms tolerance).
    analysis_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    n_bands: int = 64
    fmin: float = 30.0

    iterations: int = Field(default=30, ge=1)
    free_components: int = Field(default=2, ge=0)

    # A hit must reach this fraction of its class's typical loud hit (the median of the peaks
    # within 10 dB of the loudest). Leakage between kick and snare reaches ~0.1 on the tuning kits;
    # snare ghost notes (velocity 50 against accents of 110-120) sit at ~0.17-0.2 by the velocity^2
    # law and lower on kits with soft velocity layers, so the snare's bar is lower than the kick's
    # (a lower kick bar let bass bleed through in the HPSS tests). Hi-hats get the lowest bar: soft
    # 16ths are quieter still and their template overlaps little with the others.
    threshold_kick: float = Field(default=0.18, gt=0.0, lt=1.0)
    threshold_snare: float = Field(default=0.13, gt=0.0, lt=1.0)
    threshold_hihat: float = Field(default=0.08, gt=0.0, lt=1.0)
    # ...and its class's part of the signal must be `rise_db` louder at the attack than in the
    # `rise_window_s` before it (a hit, not the tail of one).
    rise_db: float = Field(default=6.0, ge=0.0)
    rise_window_s: float = Field(default=0.035, gt=0.0)
    min_interval_s: float = Field(default=0.05, gt=0.0)
    # Nothing quieter than this (dB re a full-scale sine) counts as a hit.
    floor_db: float = -60.0
    # A kick and a snare within `coincidence_window_s`: the smaller one (relative to its class's
    # loud hits) is kept only if it reaches this fraction, because each leaks into the other.
    coincidence_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    coincidence_window_s: float = Field(default=0.025, ge=0.0)

    # Open hi-hat: the hat's part of the signal from `min_decay_s` to `open_decay_s` after the hit
    # (up to the next hat) still holds `open_decay_level` of its peak (median); a closed hat has
    # fallen ~20 dB by then, an open one ~3 dB. When that span is too short, or a kick or snare
    # struck with the hat rings into the hat's part, the open templates' share of the activation
    # decides. (0.15 raised open-hat F1 on the TimGM6mb "tune" band mixes through hpss, 0.66 -> 0.68,
    # and on those drums alone, 0.87 -> 0.93, but not on the held-out FluidR3 / sf_GMbank mixes:
    # open +0.01 / -0.02, closed -0.02 / -0.01; so 0.25 stays.)
    min_decay_s: float = Field(default=0.07, gt=0.0)
    open_decay_s: float = Field(default=0.12, gt=0.0)
    open_decay_level: float = Field(default=0.25, gt=0.0, lt=1.0)
    open_share: float = Field(default=0.6, gt=0.0, lt=1.0)

    # The class's typical loud hit plays at this velocity.
    reference_velocity: int = Field(default=100, ge=1, le=127)
    note_length_s: float = Field(default=0.1, gt=0.0)
    # Seconds subtracted from every onset; the templates already place the attack (see below).
    latency_s: float = 0.0
    templates_path: Path | None = None


@dataclass(frozen=True)
class DrumTemplates:
    """The NMFD dictionary: `templates[k]` is a (bands, frames) spectrogram patch of drum `names[k]`
    that sums to 1; the hit's onset is `onset_frame` frames into the patch."""

    names: tuple[str, ...]
    templates: np.ndarray
    onset_frame: int
    analysis_rate: int
    n_fft: int
    hop_length: int
    n_bands: int
    fmin: float

    @classmethod
    def load(cls, path: Path) -> DrumTemplates:
        return _load_templates(path)

    def save(self, path: Path, **extra: object) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            names=np.array(self.names),
            templates=self.templates.astype(np.float32),
            onset_frame=self.onset_frame,
            analysis_rate=self.analysis_rate,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            n_bands=self.n_bands,
            fmin=self.fmin,
            **extra,  # type: ignore[arg-type]
        )

    def check(self, config: DrumConfig) -> None:
        ours = (self.analysis_rate, self.n_fft, self.hop_length, self.n_bands, self.fmin)
        theirs = (config.analysis_rate, config.n_fft, config.hop_length, config.n_bands, config.fmin)
        if ours != theirs:
            raise ValueError(f"drum templates were made for front end {ours}, the config asks for {theirs}")


@lru_cache(maxsize=4)
def _load_templates(path: Path) -> DrumTemplates:
    with np.load(path, allow_pickle=False) as data:
        return DrumTemplates(
            names=tuple(str(n) for n in data["names"]),
            templates=np.asarray(data["templates"], dtype=np.float64),
            onset_frame=int(data["onset_frame"]),
            analysis_rate=int(data["analysis_rate"]),
            n_fft=int(data["n_fft"]),
            hop_length=int(data["hop_length"]),
            n_bands=int(data["n_bands"]),
            fmin=float(data["fmin"]),
        )


@lru_cache(maxsize=4)
def _mel_bank(sample_rate: int, n_fft: int, n_bands: int, fmin: float) -> np.ndarray:
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_bands, fmin=fmin, fmax=sample_rate / 2)


def band_spectrogram(samples: np.ndarray, sample_rate: int, config: DrumConfig) -> np.ndarray:
    """Mono mel-band magnitude spectrogram at the analysis rate, shape (bands, frames)."""
    audio = np.asarray(samples, dtype=np.float32)
    if audio.ndim == 2:
        if audio.shape[0] > 8 and audio.shape[1] <= 8:
            raise ValueError(f"samples look like (n, channels) {audio.shape}; pass (channels, n)")
        audio = audio.mean(axis=0)
    if audio.ndim != 1:
        raise ValueError(f"samples must be shaped (channels, n) or (n,), not {np.shape(samples)}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, not {sample_rate}")
    if sample_rate != config.analysis_rate and audio.size:
        audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=config.analysis_rate)
    if audio.size < config.n_fft:
        audio = np.pad(audio, (0, config.n_fft - audio.size))
    stft = np.abs(librosa.stft(audio, n_fft=config.n_fft, hop_length=config.hop_length, center=True))
    return _mel_bank(config.analysis_rate, config.n_fft, config.n_bands, config.fmin) @ stft


@lru_cache(maxsize=4)
def _full_scale(analysis_rate: int, n_fft: int, n_bands: int, fmin: float) -> float:
    """Band-summed magnitude of one frame of a full-scale 1 kHz sine: the 0 dB reference."""
    t = np.arange(n_fft * 4) / analysis_rate
    sine = np.sin(2 * np.pi * 1000.0 * t).astype(np.float32)
    stft = np.abs(librosa.stft(sine, n_fft=n_fft, hop_length=n_fft, center=False))
    return float((_mel_bank(analysis_rate, n_fft, n_bands, fmin) @ stft).sum(axis=0).max())


def _shifted_stack(h: np.ndarray, lags: int) -> np.ndarray:
    """Rows tau*K + k hold activation k delayed by tau frames."""
    k, frames = h.shape
    stack = np.zeros((lags, k, frames), dtype=h.dtype)
    for tau in range(min(lags, frames)):
        stack[tau, :, tau:] = h[:, : frames - tau]
    return stack.reshape(lags * k, frames)


def _flat(w: np.ndarray) -> np.ndarray:
    """(K, bands, lags) templates as a (bands, lags*K) matrix matching `_shifted_stack`."""
    k, bands, lags = w.shape
    return w.transpose(2, 0, 1).reshape(lags * k, bands).T


def nmfd(
    spectrogram: np.ndarray, templates: np.ndarray, iterations: int, free_components: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """KL-divergence NMFD with fixed `templates` (K, bands, lags) plus adaptive free components.

    The free components are held flat over time (a sustained sound, like pitched bleed): left free
    in time they learn a hi-hat's burst and steal soft hits from the hat template. Returns (W, H):
    all templates (K + free, bands, lags) and activations (K + free, frames). float32 throughout:
    twice as fast as float64 and the notes do not change.
    """
    fixed, bands, lags = templates.shape
    eps = np.float32(_EPS)
    v = spectrogram.astype(np.float32) + eps
    frames = v.shape[1]
    rng = np.random.default_rng(0)  # the same audio always gives the same notes
    free = np.repeat(1.0 + 0.1 * rng.random((free_components, bands, 1)), lags, axis=2)
    w = np.concatenate([templates, free], axis=0).astype(np.float32)
    w /= w.sum(axis=(1, 2), keepdims=True)
    k = w.shape[0]
    h = np.full((k, frames), v.mean() * bands / k, dtype=np.float32)
    for _ in range(iterations):
        wf = _flat(w)
        ratio = v / (wf @ _shifted_stack(h, lags) + eps)
        grad = (wf.T @ ratio).reshape(lags, k, frames)
        num = np.zeros((k, frames), dtype=np.float32)
        for tau in range(min(lags, frames)):
            num[:, : frames - tau] += grad[tau, :, tau:]
        if free_components:
            # Only the free components learn (from the same ratio); the drum templates stay as
            # measured. A flat template acts on the activation summed over the template's length.
            spread = np.cumsum(np.pad(h[fixed:], ((0, 0), (lags, 0))), axis=1)
            spread = spread[:, lags:] - spread[:, :-lags]
            spectra = w[fixed:].sum(axis=2)
            spectra *= (ratio @ spread.T).T / (spread.sum(axis=1)[:, None] + eps)
            spectra /= spectra.sum(axis=1, keepdims=True) + eps
            w[fixed:] = spectra[:, :, None] / lags
        h *= num / (w.sum(axis=(1, 2))[:, None] + eps)
    return w, h


def _reconstruct(w: np.ndarray, h: np.ndarray) -> np.ndarray:
    return _flat(w) @ _shifted_stack(h, w.shape[2])


@dataclass
class _Peaks:
    frames: np.ndarray  # activation frames of the hits
    relative: np.ndarray  # height over the class's typical loud hit


class DrumTranscriber:
    """Audio of a drums stem to GM percussion notes: kick 36, snare 38, closed 42 / open 46 hi-hat."""

    def __init__(self, config: DrumConfig | None = None) -> None:
        self.config = config or DrumConfig()
        self.dictionary = DrumTemplates.load(self.config.templates_path or TEMPLATES_PATH)
        self.dictionary.check(self.config)
        unknown = {m for g in GROUPS.values() for m in g} - set(self.dictionary.names)
        if unknown:
            raise ValueError(f"drum templates lack {sorted(unknown)}")

    def transcribe(self, samples: np.ndarray, sample_rate: int) -> list[Note]:
        """Notes sorted by (start, pitch); times in seconds from the start of `samples`."""
        cfg = self.config
        spec = band_spectrogram(samples, sample_rate, cfg)
        frame_rate = cfg.analysis_rate / cfg.hop_length
        floor = _full_scale(cfg.analysis_rate, cfg.n_fft, cfg.n_bands, cfg.fmin) * 10 ** (cfg.floor_db / 20)
        if float(spec.sum(axis=0).max(initial=0.0)) < floor:
            return []  # silence, or as good as
        w, h = self._factorise(spec)
        names = self.dictionary.names
        rows = {g: [i for i, n in enumerate(names) if n in members] for g, members in GROUPS.items()}
        # Each class's part of the signal, by a soft mask from the factorisation: (frames,) energy.
        total = _reconstruct(w, h) + _EPS
        parts = {g: spec * _reconstruct(w[r], h[r]) / total for g, r in rows.items()}
        # A hit's level is its activation times the template's peak frame: compare with the floor.
        peak_frame = {g: float(self.dictionary.templates[r].sum(axis=1).max()) for g, r in rows.items()}
        thresholds = {KICK: cfg.threshold_kick, SNARE: cfg.threshold_snare, "hihat": cfg.threshold_hihat}
        found = {
            g: self._pick(h[r].sum(axis=0), parts[g].sum(axis=0), thresholds[g], floor / peak_frame[g], frame_rate)
            for g, r in rows.items()
        }
        self._drop_coincident(found, frame_rate)

        notes: list[Note] = []
        onset_shift = self.dictionary.onset_frame / frame_rate - cfg.latency_s
        ringing = parts["hihat"][spec.shape[0] // 2 :].sum(axis=0)
        hat_pitches = self._hat_pitches(found["hihat"].frames, ringing, h, rows["hihat"], found, frame_rate)
        self._drop_snares_under_open_hats(found, hat_pitches, frame_rate)
        for group, peaks in found.items():
            # GM synths: amplitude ~ (velocity / 127)^2.
            velocities = np.clip(np.round(cfg.reference_velocity * np.sqrt(peaks.relative)), 1, 127).astype(int)
            for i, (frame, velocity) in enumerate(zip(peaks.frames, velocities)):
                pitch = hat_pitches[i] if group == "hihat" else class_pitch(group)
                start = max(0.0, frame / frame_rate + onset_shift)
                notes.append(Note(round(start, 4), round(start + cfg.note_length_s, 4), int(pitch), int(velocity)))
        notes.sort(key=lambda n: (n.start, n.pitch))
        logger.debug(
            "drums: %s in %.1f s",
            ", ".join(f"{len(p.frames)} {g}" for g, p in found.items()),
            spec.shape[1] / frame_rate,
        )
        return notes

    def _factorise(self, spec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return nmfd(spec, self.dictionary.templates, self.config.iterations, self.config.free_components)

    def _pick(
        self, activation: np.ndarray, energy: np.ndarray, threshold: float, floor: float, frame_rate: float
    ) -> _Peaks:
        """Hits of one class from its activation, checked against its part's energy envelope."""
        cfg = self.config
        distance = max(1, int(round(cfg.min_interval_s * frame_rate)))
        frames, _ = scipy.signal.find_peaks(activation, distance=distance)
        frames = frames[activation[frames] >= floor]
        if frames.size == 0:
            return _Peaks(frames, np.zeros(0))
        heights = activation[frames]
        # Typical loud hit: robust to a few outliers (a crash on top) and to many small bumps.
        loud = float(np.median(heights[heights >= heights.max() * 10 ** (-10 / 20)]))
        # The class's part must get louder at the attack than just before it. Activations alone are
        # sparse, so a template that decays faster than the real drum leaves its tail to a second,
        # "new" activation; the part's energy shows that tail as a decay, not an attack.
        at = frames + self.dictionary.onset_frame
        back = max(2, int(round(cfg.rise_window_s * frame_rate)))
        before = np.array([energy[max(0, t - back) : max(1, t - 1)].min() for t in at])
        after = np.array([energy[t : t + 2].max() if t < energy.size else 0.0 for t in at])
        rises = after >= before * 10 ** (cfg.rise_db / 20)
        keep = (heights >= threshold * loud) & rises
        return _Peaks(frames[keep], heights[keep] / loud)

    def _drop_coincident(self, found: dict[str, _Peaks], frame_rate: float) -> None:
        """Kick and snare at once: the smaller (relative) one must be substantial to count."""
        cfg = self.config
        window = int(round(cfg.coincidence_window_s * frame_rate))
        kick, snare = found[KICK], found[SNARE]
        drop: dict[str, np.ndarray] = {}
        for name, mine, other in ((KICK, kick, snare), (SNARE, snare, kick)):
            keep = np.ones(mine.frames.size, dtype=bool)
            for i, (frame, rel) in enumerate(zip(mine.frames, mine.relative)):
                near = np.abs(other.frames - frame) <= window
                if near.any() and rel < cfg.coincidence_threshold and other.relative[near].max() > rel:
                    keep[i] = False
            drop[name] = keep
        for name, keep in drop.items():
            found[name] = _Peaks(found[name].frames[keep], found[name].relative[keep])

    def _drop_snares_under_open_hats(self, found: dict[str, _Peaks], hat_pitches: list[int], frame_rate: float) -> None:
        """An open hat's noise burst leaks into the snare's activation as a kick's into the snare's: a
        snare struck with an open hat counts only if it reaches `coincidence_threshold`."""
        cfg = self.config
        opens = found["hihat"].frames[np.asarray(hat_pitches, dtype=int) == class_pitch(HIHAT_OPEN)]
        snare = found[SNARE]
        if opens.size == 0 or snare.frames.size == 0:
            return
        window = int(round(cfg.coincidence_window_s * frame_rate))
        near = np.abs(snare.frames[:, None] - opens[None, :]).min(axis=1) <= window
        keep = ~near | (snare.relative >= cfg.coincidence_threshold)
        found[SNARE] = _Peaks(snare.frames[keep], snare.relative[keep])

    def _hat_pitches(
        self,
        frames: np.ndarray,
        ringing: np.ndarray,
        h: np.ndarray,
        hat_rows: list[int],
        found: dict[str, _Peaks],
        frame_rate: float,
    ) -> list[int]:
        """Open or closed for each hi-hat hit; `ringing` is the hat part's upper-band energy."""
        if frames.size == 0:
            return []
        cfg = self.config
        names = self.dictionary.names
        open_rows = [i for i in hat_rows if names[i] == "hihat_open"]
        onset = self.dictionary.onset_frame
        hats = np.sort(frames) + onset
        first, last = (int(round(t * frame_rate)) for t in (cfg.min_decay_s, cfg.open_decay_s))
        drums = np.concatenate([found[KICK].frames, found[SNARE].frames])
        near = int(round(cfg.coincidence_window_s * frame_rate))
        pitches = []
        for frame in frames:
            at = frame + onset  # spectrogram frame of the attack
            top = float(ringing[max(0, at - 1) : at + 2].max())
            later = hats[hats > at]
            # Measure the ring from min_decay_s to open_decay_s after the hit, up to the next hat.
            until = min(at + last, int(later[0]) - 1 if later.size else at + last, ringing.size - 1)
            # A kick or snare struck with the hat leaks its ring into the hat's part of the signal
            # (a snare's rattle, a kick's beater click where the templates fit the kit less well):
            # then only the templates can tell.
            with_drum = bool(np.any(np.abs(drums - frame) <= near))
            if until - (at + first) >= 1 and top > 0 and not with_drum:
                is_open = float(np.median(ringing[at + first : until + 1])) >= cfg.open_decay_level * top
            else:
                span = slice(max(0, frame - 1), frame + 3)
                share = h[open_rows, span].sum() / (h[hat_rows, span].sum() + _EPS)
                is_open = share >= cfg.open_share
            pitches.append(class_pitch(HIHAT_OPEN if is_open else HIHAT_CLOSED))
        return pitches
