"""Drum transcription by a small learned network: a drums stem's audio to GM kick, snare and hi-hats.

Why a network next to the NMFD transcriber (drums.py): fixed templates describe the kits they were
measured on, and inside a band mix through HPSS the drums stem also carries the attacks of bass,
guitar and keys. A frame-wise classifier learns from many kits and mixes what a kick, a snare, a closed
and an open hat look like under that bleed (the approach of Vogl et al. 2017 and of the ADTOF models,
shrunk to a couple of hundred thousand weights so it runs in well under a second per minute of audio on
one CPU core: benchmarks.real_drums measures it).

Front end: the same 64-band mel magnitude spectrogram as the NMFD transcriber (22.05 kHz, hop 256,
11.6 ms frames), log-compressed after dividing by the recording's loud level, so any mix level gives
the same input. Network: 2-D convolutions over (band, time) that pool away frequency, then either 1-D
convolutions over time (the first network) or a bidirectional GRU (`rnn`, the current one), and one
sigmoid per class and frame: "a hit of this class starts here". The current network also has outputs
for toms, crashes and rides, which the service does not report: learning them is how it learns not to
call a ride a hi-hat or a floor tom a kick. Peak picking: a local maximum of a class's curve above that
class's threshold, one hit per `min_interval_s`.

The weights (data/drum_net.pt) and thresholds are made by benchmarks/train_drum_net.py from recorded
drums (MDB Drums' multitracks) and sampled kits, with rooms, equalisers, compressors and bands around
them; the thresholds come from held-back parts of the training songs. The weights record what they
trained on (real songs, kits, soundfonts), and the evaluations check that record before they call a
recording or a kit held out.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.signal
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from music.drum_kit import HIHAT_CLOSED, HIHAT_OPEN, KICK, SNARE, class_pitch
from music.engines.drums import DrumConfig, DrumTranscriber, _full_scale, band_spectrogram
from music.notes import Note

logger = logging.getLogger(__name__)

WEIGHTS_PATH = Path(__file__).with_name("data") / "drum_net.pt"
# The classes the service reports, in the order of the first network's outputs. A network may have more
# outputs (toms and cymbals, learned so that they are not taken for these); its weights file lists them.
NET_CLASSES: tuple[str, ...] = (KICK, SNARE, HIHAT_CLOSED, HIHAT_OPEN)
_EPS = 1e-8
DrumEngine = Literal["net", "nmfd"]


class DrumNetConfig(BaseModel):
    """Peak picking on the network's curves; the front end is DrumConfig's (it must match training)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # None: the thresholds stored with the weights (chosen on the training soundfonts' validation pieces).
    thresholds: dict[str, float] | None = None
    min_interval_s: float = Field(default=0.04, gt=0.0)
    note_length_s: float = Field(default=0.1, gt=0.0)
    weights_path: Path | None = None


def features(spectrogram: np.ndarray) -> np.ndarray:
    """(bands, frames) mel magnitudes -> log-compressed, level-normalised (bands, frames) float32."""
    frame_energy = spectrogram.sum(axis=0)
    loud = float(np.percentile(frame_energy, 99)) if frame_energy.size else 0.0
    scale = loud / spectrogram.shape[0] + _EPS
    return np.log1p(100.0 * spectrogram / scale).astype(np.float32)


class DrumNet(nn.Module):
    """(batch, 1, bands, frames) features -> (batch, classes, frames) logits.

    `rnn` > 0 replaces the dilated time convolutions by a bidirectional GRU of that size: a hit is told
    from bleed and cymbal wash by what comes seconds before and after it, not 100 ms (Vogl et al.'s
    CRNN, which the ADTOF models also use)."""

    def __init__(self, n_bands: int = 64, n_classes: int = len(NET_CLASSES), width: int = 16, rnn: int = 0) -> None:
        super().__init__()
        self.rnn = rnn

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

        w = width
        self.conv = nn.Sequential(
            *block(1, w), *block(w, w), nn.MaxPool2d((2, 1)),
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d((2, 1)),
            *block(2 * w, 4 * w), nn.MaxPool2d((2, 1)),
        )  # fmt: skip
        flat = 4 * w * (n_bands // 8)
        if rnn:
            self.project = nn.Sequential(nn.Conv1d(flat, 2 * rnn, 3, padding=1), nn.ReLU(), nn.Dropout(0.2))
            self.gru = nn.GRU(2 * rnn, rnn, batch_first=True, bidirectional=True)
            self.head = nn.Conv1d(2 * rnn, n_classes, 1)
            return
        self.time = nn.Sequential(
            nn.Conv1d(flat, 128, 3, padding=1),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Conv1d(128, 128, 3, padding=4, dilation=4),  # reaches ~100 ms either side: the hat's ring
            nn.ReLU(),
            nn.Conv1d(128, n_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).flatten(1, 2)
        if not self.rnn:
            return self.time(y)
        z, _ = self.gru(self.project(y).transpose(1, 2))
        return self.head(z.transpose(1, 2))


@lru_cache(maxsize=2)
def _load(path: Path) -> tuple[DrumNet, dict[str, float], dict[str, object], tuple[str, ...]]:
    """(network, thresholds, front end, output classes) of a weights file."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    net = DrumNet(**saved["shape"])
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in saved["state"].items()})
    net.eval()
    return net, dict(saved["thresholds"]), dict(saved["front_end"]), tuple(saved.get("classes", NET_CLASSES))


def activations(net: DrumNet, feats: np.ndarray) -> np.ndarray:
    """(classes, frames) probabilities for (bands, frames) features."""
    with torch.inference_mode():
        logits = net(torch.from_numpy(feats)[None, None])
    return torch.sigmoid(logits[0]).numpy()


def pick_peaks(curve: np.ndarray, threshold: float, distance: int) -> np.ndarray:
    """Frames of the local maxima of `curve` that reach `threshold`, at least `distance` apart."""
    frames, _ = scipy.signal.find_peaks(curve, height=threshold, distance=max(1, distance))
    return frames


class NetDrumTranscriber:
    """Audio of a drums stem to GM percussion notes: kick 36, snare 38, closed 42 / open 46 hi-hat."""

    def __init__(self, config: DrumNetConfig | None = None, front_end: DrumConfig | None = None) -> None:
        self.config = config or DrumNetConfig()
        self.net, stored, trained_front_end, self.classes = _load(self.config.weights_path or WEIGHTS_PATH)
        self.front_end = front_end or DrumConfig()
        ours = {k: getattr(self.front_end, k) for k in trained_front_end}
        if ours != trained_front_end:
            raise ValueError(f"the drum network was trained on front end {trained_front_end}, not {ours}")
        self.thresholds = {**stored, **(self.config.thresholds or {})}

    def transcribe(self, samples: np.ndarray, sample_rate: int) -> list[Note]:
        """Notes sorted by (start, pitch); times in seconds from the start of `samples`."""
        fe = self.front_end
        frame_rate = fe.analysis_rate / fe.hop_length
        spec = band_spectrogram(samples, sample_rate, fe)
        energy = spec.sum(axis=0)
        # The features are normalised to the recording's level, so hiss would look like a kit:
        # nothing quieter than the NMFD transcriber's absolute floor counts.
        floor = _full_scale(fe.analysis_rate, fe.n_fft, fe.n_bands, fe.fmin) * 10 ** (fe.floor_db / 20)
        if float(energy.max(initial=0.0)) < floor:
            return []
        outputs = activations(self.net, features(spec))
        probs = np.stack([outputs[self.classes.index(cls)] for cls in NET_CLASSES])
        distance = int(round(self.config.min_interval_s * frame_rate))
        found = {
            cls: np.array(
                [f for f in pick_peaks(probs[row], self.thresholds[cls], distance) if energy[f : f + 2].max() >= floor],
                dtype=int,
            )
            for row, cls in enumerate(NET_CLASSES)
        }
        _one_hat_per_instant(found, probs)
        notes: list[Note] = []
        for cls, frames in found.items():
            for frame, velocity in zip(frames, _velocities(spec, frames, cls, fe.reference_velocity)):
                start = round(frame / frame_rate, 4)
                notes.append(Note(start, round(start + self.config.note_length_s, 4), class_pitch(cls), velocity))
        notes.sort(key=lambda n: (n.start, n.pitch))
        return notes


# Where in the 64 mel bands (30 Hz - 11 kHz) each class's attack is loudest, for its velocity:
# a hat's level is not to be read off a kick's low end struck with it.
_CLASS_BANDS: dict[str, slice] = {KICK: slice(0, 16), SNARE: slice(8, 48), HIHAT_CLOSED: slice(32, None),
                                  HIHAT_OPEN: slice(32, None)}  # fmt: skip


def _velocities(spec: np.ndarray, frames: np.ndarray, cls: str, reference: int) -> list[int]:
    """Velocities from the attacks' levels in the class's bands, against the class's typical loud hit
    (the median of the hits within 10 dB of its loudest), as the NMFD transcriber reads them; GM
    synths play amplitude ~ (velocity / 127)^2, so velocity ~ sqrt(level)."""
    if frames.size == 0:
        return []
    band = spec[_CLASS_BANDS[cls]].sum(axis=0)
    levels = np.array([band[f : f + 2].max() for f in frames])
    loud = float(np.median(levels[levels >= levels.max() * 10 ** (-10 / 20)])) + _EPS
    return [int(v) for v in np.clip(np.round(reference * np.sqrt(levels / loud)), 1, 127)]


def _one_hat_per_instant(found: dict[str, np.ndarray], probs: np.ndarray, window: int = 2) -> None:
    """A hi-hat is open or closed, not both: where both fired within `window` frames, the class the
    network is surer of keeps the hit."""
    closed, opened = found[HIHAT_CLOSED], found[HIHAT_OPEN]
    if closed.size == 0 or opened.size == 0:
        return
    p_closed, p_open = probs[NET_CLASSES.index(HIHAT_CLOSED)], probs[NET_CLASSES.index(HIHAT_OPEN)]
    near = np.abs(closed[:, None] - opened[None, :]) <= window
    keep_closed = np.ones(closed.size, dtype=bool)
    keep_open = np.ones(opened.size, dtype=bool)
    for i, j in zip(*np.nonzero(near)):
        if p_closed[closed[i]] >= p_open[opened[j]]:
            keep_open[j] = False
        else:
            keep_closed[i] = False
    found[HIHAT_CLOSED], found[HIHAT_OPEN] = closed[keep_closed], opened[keep_open]


def make_drum_transcriber(engine: DrumEngine = "net", weights: Path | None = None) -> NetDrumTranscriber | DrumTranscriber:
    """The service's drum transcriber: the network (the default since it won on the held-out kits,
    README "Drums"), with its packaged weights unless told, or the NMFD templates."""
    return NetDrumTranscriber(DrumNetConfig(weights_path=weights)) if engine == "net" else DrumTranscriber()
