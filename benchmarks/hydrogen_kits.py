"""Hydrogen drum kits (Debian `hydrogen-drumkits`, `hydrogen-data`): read a kit's `drumkit.xml` and play
hits on it, the way Hydrogen's sampler does (a layer per velocity range, instrument and layer gains,
an open hi-hat choked by the next closed or pedal one).

Instruments are given a drum class from their names ("Kick (Tama Superstar 22\")" -> kick, "Sabian Hat
Semi-Open" -> hihat_open, "Paiste Ride" -> ride, "Cowbell" -> other); rolls, swishes and chokes, which are
not one hit, get no class and are never played.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

_RULES: tuple[tuple[str, str | None], ...] = (
    (r"roll|swish|choke|flam|fx|zap|whistle|strum", None),
    (r"side ?stick|rim ?click|\bstick\b|cross ?stick|cowbell|clap|tambourine|shaker|conga|bongo|clave|agogo", "other"),
    (r"kick|bass ?drum|\bbd\b", "kick"),
    (r"snare|\bsd\b", "snare"),
    (r"(hat|hh|hi-?hat).*(semi|open|\bop\b)|open.*(hat|hh)", "hihat_open"),
    (r"(hat|hh|hi-?hat).*(pedal|foot|\bpd\b)|pedal.*(hat|hh)", "hihat_pedal"),
    (r"hat|\bhh\b|hi-?hat", "hihat_closed"),
    (r"tom", "tom"),
    (r"crash|splash|china", "crash"),
    (r"ride|bell|cup", "ride"),
)


def drum_class_of_name(name: str) -> str | None:
    """The class of an instrument called `name`; 'other' for percussion outside the kit classes."""
    lowered = name.lower()
    for pattern, cls in _RULES:
        if re.search(pattern, lowered):
            return cls
    return "other"


@dataclass(frozen=True)
class Layer:
    path: Path
    low: float  # velocity range of the layer, 0..1
    high: float
    gain: float


@dataclass(frozen=True)
class Instrument:
    name: str
    drum_class: str | None
    gain: float
    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class HydrogenKit:
    name: str
    folder: Path
    instruments: tuple[Instrument, ...]

    def of_class(self, cls: str) -> list[Instrument]:
        return [i for i in self.instruments if i.drum_class == cls and i.layers]


def _strip(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element, name: str) -> str | None:
    for child in element:
        if _strip(child.tag) == name:
            return (child.text or "").strip()
    return None


def _float(text: str | None, default: float) -> float:
    try:
        return float(text) if text not in (None, "") else default
    except ValueError:
        return default


@lru_cache(maxsize=64)
def hydrogen_kit(folder: Path) -> HydrogenKit:
    root = ET.parse(folder / "drumkit.xml").getroot()
    instruments = []
    for element in root.iter():
        if _strip(element.tag) != "instrument":
            continue
        name = _child(element, "name") or ""
        layers = []
        for node in element.iter():
            tag = _strip(node.tag)
            if tag == "layer":
                file = _child(node, "filename")
                if file and (folder / file).is_file():
                    layers.append(Layer(folder / file, _float(_child(node, "min"), 0.0), _float(_child(node, "max"), 1.0),
                                        _float(_child(node, "gain"), 1.0)))  # fmt: skip
        direct = _child(element, "filename")  # the old format: one sample, no layers
        if not layers and direct and (folder / direct).is_file():
            layers.append(Layer(folder / direct, 0.0, 1.0, 1.0))
        if name or layers:
            instruments.append(Instrument(name, drum_class_of_name(name), _float(_child(element, "gain"), 1.0),
                                          tuple(layers)))  # fmt: skip
    return HydrogenKit(_child(root, "name") or folder.name, folder, tuple(instruments))


@lru_cache(maxsize=4096)
def _sample(path: Path, sample_rate: int) -> np.ndarray:
    """(channels=2, n) float32 at `sample_rate`."""
    import soundfile
    import soxr

    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    if audio.shape[1] == 1:
        audio = np.repeat(audio, 2, axis=1)
    audio = audio[:, :2]
    if rate != sample_rate:
        audio = soxr.resample(audio, rate, sample_rate)
    return np.ascontiguousarray(audio.T, dtype=np.float32)


def layer_for(instrument: Instrument, velocity: float) -> Layer:
    for layer in instrument.layers:
        if layer.low <= velocity <= layer.high:
            return layer
    return min(instrument.layers, key=lambda lay: min(abs(lay.low - velocity), abs(lay.high - velocity)))


def play(
    kit: HydrogenKit,
    hits: list[tuple[float, str, float]],
    seconds: float,
    sample_rate: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[tuple[float, str, float]]]:
    """Render (time s, class, velocity 0..1) hits on `kit`: (2, n) float32 audio and the hits played (a
    class the kit lacks is skipped). Each class uses one of the kit's instruments of that class, drawn once
    per call; an open hi-hat rings until the next closed or pedal one (Hydrogen's mute group)."""
    out = np.zeros((2, int(seconds * sample_rate)), dtype=np.float32)
    chosen: dict[str, Instrument | None] = {}
    played = []
    hat_times = sorted(t for t, c, _ in hits if c in ("hihat_closed", "hihat_pedal"))
    for t, cls, velocity in sorted(hits):
        if cls not in chosen:
            options = kit.of_class(cls) or (kit.of_class("hihat_closed") if cls == "hihat_pedal" else [])
            chosen[cls] = options[int(rng.integers(len(options)))] if options else None
        instrument = chosen[cls]
        if instrument is None:
            continue
        layer = layer_for(instrument, velocity)
        audio = _sample(layer.path, sample_rate)
        start = int(t * sample_rate)
        if start >= out.shape[1]:
            continue
        length = min(audio.shape[1], out.shape[1] - start)
        gain = instrument.gain * layer.gain * (0.25 + 0.75 * velocity)
        chunk = audio[:, :length] * gain
        if cls == "hihat_open":
            later = [h for h in hat_times if h > t + 0.01]
            if later:
                stop = int((later[0] - t) * sample_rate)
                if stop < length:
                    fade = min(int(0.01 * sample_rate), length - stop)
                    chunk = chunk.copy()
                    chunk[:, stop : stop + fade] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
                    chunk[:, stop + fade :] = 0.0
        out[:, start : start + length] += chunk
        played.append((t, cls, velocity))
    return out, played
