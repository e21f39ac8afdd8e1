"""basic-pitch's ICASSP-2022 network as a native PyTorch module, with its weights read from the ONNX file.

basic-pitch 0.4.0 runs its model through onnxruntime's CPUExecutionProvider only; this port lets the
same trained network run on a CUDA GPU with nothing but torch, numpy and onnx installed (no
onnxruntime-gpu, no TensorFlow, no basic-pitch). `BasicPitchTorch.from_onnx(path)` reads every
weight, and the constant CQT kernels, low-pass filter and CQT length scales of the frontend, from
the initializers of the wheel's `saved_models/icassp_2022/nmp.onnx`, and the 2-D convolutions'
strides and paddings from its nodes; the rest of the architecture (nnAudio's CQT2010v2,
NormalizedLog, harmonic stacking, the three heads of `basic_pitch/models.py`) is written out here.

Input: (batch, 43844) or (batch, 43844, 1) float32 audio at 22050 Hz, one 2 s window per row, as
basic-pitch's `window_audio_file` makes them. Output: {"note": (batch, 172, 88), "onset": (batch, 172,
88), "contour": (batch, 172, 264)}, the same three posteriorgrams as the ONNX graph.

    model = BasicPitchTorch.from_onnx("nmp.onnx").to("cuda")  # no path: the installed wheel's
    outputs = model.predict(windows)  # numpy (n, 43844, 1) float32 -> {name: numpy array}

Verified (CPU, torch 2.13, onnxruntime 1.32, onnx 1.18) on a 60 s FluidSynth render of
tests/music.py's `ensemble` (39 windows plus an all-zero one): largest absolute difference from
onnxruntime's outputs 1.3e-6 (note), 1.4e-6 (onset), 1.4e-6 (contour), 2.3e-7 on the silent window;
the 589 notes from `model_output_to_notes` at basic-pitch's default thresholds have note-onset F1
1.000 (mir_eval, 50 ms, no offsets) against the ONNX path. Not yet run on a GPU. On CUDA, cuDNN's
TF32 convolutions are switched off for the forward pass (`full_precision`), because the frontend's
per-window min/max normalisation could magnify TF32's rounding of the CQT (not measured).
tests/unit/test_basic_pitch_torch.py repeats the comparison on a shorter piece.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

logger = logging.getLogger(__name__)

AUDIO_SAMPLE_RATE = 22050
FFT_HOP = 256
AUDIO_N_SAMPLES = 2 * AUDIO_SAMPLE_RATE - FFT_HOP  # basic_pitch.constants.AUDIO_N_SAMPLES
N_FRAMES = 172  # frames per window (ANNOT_N_FRAMES)
N_CONTOUR_BINS = 264  # 88 semitones x 3 bins
OUTPUTS = ("note", "onset", "contour")
# The graph's tensor names for each output, as basic_pitch.inference.Model.predict reads them.
ONNX_INPUT = "serving_default_input_2:0"
ONNX_OUTPUTS = {
    "note": "StatefulPartitionedCall:1",
    "onset": "StatefulPartitionedCall:2",
    "contour": "StatefulPartitionedCall:0",
}

# CQT2010v2 settings of models.get_cqt: 309 bins (103 semitones x 3) over 9 octaves of 36 bins.
N_CQT_BINS = 309
N_OCTAVES = 9
CQT_KERNEL = 256  # taps of each top-octave CQT kernel and of the half-band low-pass filter
# HarmonicStacking: round(36 * log2(h)) bins for harmonics 0.5, 1, 2, ..., 7.
HARMONIC_SHIFTS = (-36, 0, 36, 57, 72, 84, 93, 101)
LOG_EPSILON = 1e-10  # NormalizedLog adds this before the log

# The 2-D convolutions (batch norms folded in by the TF->ONNX export), by their weight shapes.
CONV_SHAPES = {
    "contour_hidden": (8, 8, 3, 39),
    "contour_out": (1, 8, 5, 5),
    "note_hidden": (32, 1, 7, 7),
    "note_out": (1, 32, 7, 3),
    "onset_hidden": (32, 8, 5, 5),
    "onset_out": (1, 33, 3, 3),
}
# One lock for the process-wide cuDNN precision flag that `full_precision` flips.
_PRECISION_LOCK = threading.Lock()


def bundled_onnx_path() -> Path:
    """The nmp.onnx inside an installed basic-pitch wheel, found without importing basic-pitch
    (whose __init__ imports TensorFlow when it is there)."""
    spec = importlib.util.find_spec("basic_pitch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("basic-pitch is not installed; pass the path of its nmp.onnx")
    return Path(next(iter(spec.submodule_search_locations))) / "saved_models" / "icassp_2022" / "nmp.onnx"


@dataclass(frozen=True)
class Conv2dSpec:
    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class OnnxWeights:
    """The arrays the port needs, found in the graph by what they do rather than by their
    generated names (`const_fold_opt__707` and the like)."""

    cqt_real: np.ndarray  # (36, 256)
    cqt_imag: np.ndarray  # (36, 256)
    lowpass: np.ndarray  # (256,)
    cqt_scale: np.ndarray  # (309,) sqrt of each bin's kernel length (librosa normalisation)
    bn_scale: float  # the batch norm after NormalizedLog, folded to x * scale + shift
    bn_shift: float
    convs: dict[str, Conv2dSpec]


def _attributes(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def read_onnx_weights(path: Path | str) -> OnnxWeights:
    graph = onnx.load(str(path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    found: dict[str, np.ndarray] = {}
    convs: dict[str, Conv2dSpec] = {}
    scalars: dict[str, float] = {}
    for node in graph.node:
        constants = [init[name] for name in node.input if name in init]
        if node.op_type == "Conv":
            weight = init[node.input[1]]
            if weight.shape[-2:] == (1, CQT_KERNEL):  # a 1-D convolution of the CQT frontend
                if weight.shape[0] == 1:
                    found["lowpass"] = weight.reshape(CQT_KERNEL)
                elif any(c.op_type == "Neg" for c in consumers.get(node.output[0], [])):
                    found["cqt_imag"] = weight.reshape(-1, CQT_KERNEL)  # CQT2010v2 negates the imaginary part
                else:
                    found["cqt_real"] = weight.reshape(-1, CQT_KERNEL)
                continue
            name = next((k for k, shape in CONV_SHAPES.items() if weight.shape == shape), None)
            if name is None:
                raise ValueError(f"{path}: unexpected convolution weight {weight.shape}")
            attrs = _attributes(node)
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            if pads[:2] != pads[2:]:
                raise ValueError(f"{path}: asymmetric padding {pads} in {name}")
            bias = init[node.input[2]] if len(node.input) > 2 else np.zeros(weight.shape[0], np.float32)
            strides = list(attrs.get("strides", [1, 1]))
            convs[name] = Conv2dSpec(weight, bias, (int(strides[0]), int(strides[1])), (int(pads[0]), int(pads[1])))
        elif node.op_type == "Mul" and constants:
            if constants[0].shape == (N_CQT_BINS, 1, 1):
                found["cqt_scale"] = constants[0].reshape(N_CQT_BINS)
            elif constants[0].shape == (1,):
                scalars["bn_scale"] = float(constants[0][0])
        elif node.op_type == "Add" and constants and constants[0].shape == (1,):
            scalars["bn_shift"] = float(constants[0][0])

    missing = {"cqt_real", "cqt_imag", "lowpass", "cqt_scale"} - found.keys()
    missing |= {"bn_scale", "bn_shift"} - scalars.keys()
    missing |= CONV_SHAPES.keys() - convs.keys()
    if missing:
        raise ValueError(f"{path} is not basic-pitch's ICASSP-2022 graph: no {sorted(missing)}")
    return OnnxWeights(convs=convs, **found, **scalars)  # type: ignore[arg-type]


def _conv(spec: Conv2dSpec) -> nn.Conv2d:
    out_ch, in_ch, kh, kw = spec.weight.shape
    conv = nn.Conv2d(in_ch, out_ch, (kh, kw), stride=spec.stride, padding=spec.padding)
    conv.weight.data.copy_(torch.from_numpy(spec.weight.copy()))
    conv.bias.data.copy_(torch.from_numpy(spec.bias.copy()))
    return conv


class BasicPitchTorch(nn.Module):
    """The whole basic-pitch graph, CQT frontend included. Build with `from_onnx`."""

    def __init__(self, weights: OnnxWeights, full_precision: bool = True) -> None:
        super().__init__()
        # The real and imaginary kernels run as one convolution of 72 output channels per octave.
        kernels = np.concatenate([weights.cqt_real, weights.cqt_imag])[:, None, :]
        self.register_buffer("cqt_kernels", torch.from_numpy(kernels.astype(np.float32)))
        self.register_buffer("lowpass", torch.from_numpy(weights.lowpass.astype(np.float32).reshape(1, 1, -1)))
        self.register_buffer("cqt_scale", torch.from_numpy(weights.cqt_scale.astype(np.float32).reshape(1, -1, 1)))
        self.bn_scale = weights.bn_scale
        self.bn_shift = weights.bn_shift
        self.contour_hidden = _conv(weights.convs["contour_hidden"])
        self.contour_out = _conv(weights.convs["contour_out"])
        self.note_hidden = _conv(weights.convs["note_hidden"])
        self.note_out = _conv(weights.convs["note_out"])
        self.onset_hidden = _conv(weights.convs["onset_hidden"])
        self.onset_out = _conv(weights.convs["onset_out"])
        self.full_precision = full_precision
        self.eval()

    @classmethod
    def from_onnx(cls, path: Path | str | None = None, full_precision: bool = True) -> BasicPitchTorch:
        path = Path(path) if path is not None else bundled_onnx_path()
        model = cls(read_onnx_weights(path), full_precision=full_precision)
        logger.info("basic-pitch torch port loaded from %s", path)
        return model

    @property
    def device(self) -> torch.device:
        return self.cqt_kernels.device

    def cqt_magnitude(self, audio: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, frames, 309): CQT2010v2, one top-octave kernel set applied to
        the signal halved in rate 8 times (`match_torch_exactly` padding, reflect-padded frames)."""
        x = audio.unsqueeze(1)
        n_bins = self.cqt_kernels.shape[0] // 2
        real, imag = [], []
        hop = FFT_HOP
        for octave in range(N_OCTAVES):
            if octave:
                half = (CQT_KERNEL - 1) // 2
                x = F.conv1d(F.pad(x, (half, half)), self.lowpass, stride=2)
                hop //= 2
            padded = F.pad(x, (CQT_KERNEL // 2, CQT_KERNEL // 2), mode="reflect")
            frames = F.conv1d(padded, self.cqt_kernels, stride=hop)
            real.insert(0, frames[:, :n_bins])  # lower octaves go below
            imag.insert(0, frames[:, n_bins:])
        # Same operation order as the graph: scale, then magnitude.
        re = torch.cat(real, dim=1)[:, -N_CQT_BINS:] * self.cqt_scale
        im = torch.cat(imag, dim=1)[:, -N_CQT_BINS:] * self.cqt_scale
        return torch.sqrt(re * re + im * im).transpose(1, 2)

    @staticmethod
    def normalized_log(magnitude: torch.Tensor) -> torch.Tensor:
        """dB of the power, scaled to 0..1 per window (0 where the window is flat, as div_no_nan)."""
        log_power = torch.log(magnitude * magnitude + LOG_EPSILON) * (1.0 / np.log(10.0)) * 10.0
        offset = log_power - log_power.amin(dim=(1, 2), keepdim=True)
        peak = offset.amax(dim=(1, 2), keepdim=True)
        return torch.where(peak == 0, torch.zeros_like(offset), offset / peak)

    @staticmethod
    def harmonic_stack(x: torch.Tensor) -> torch.Tensor:
        """(batch, frames, 309) -> (batch, 8, frames, 264): the spectrum shifted down by each harmonic."""
        channels = []
        for shift in HARMONIC_SHIFTS:
            if shift > 0:
                channels.append(F.pad(x[..., shift:], (0, shift)))
            elif shift < 0:
                channels.append(F.pad(x[..., :shift], (-shift, 0)))
            else:
                channels.append(x)
        return torch.stack(channels, dim=1)[..., :N_CONTOUR_BINS]

    def forward(self, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        if audio.dim() == 3:
            audio = audio.squeeze(-1)
        if audio.dim() != 2 or audio.shape[1] != AUDIO_N_SAMPLES:
            raise ValueError(f"expected (batch, {AUDIO_N_SAMPLES}[, 1]) audio, got {tuple(audio.shape)}")
        x = self.normalized_log(self.cqt_magnitude(audio)) * self.bn_scale + self.bn_shift
        x = self.harmonic_stack(x)
        if x.device.type == "cpu":
            # oneDNN runs the wide (3, 39) contour kernel ~6x faster on NHWC than on NCHW.
            x = x.contiguous(memory_format=torch.channels_last)

        contour = torch.sigmoid(self.contour_out(F.relu(self.contour_hidden(x))))
        note_pre = torch.sigmoid(self.note_out(F.relu(self.note_hidden(contour))))
        onset_hidden = F.relu(self.onset_hidden(x))
        onset = torch.sigmoid(self.onset_out(torch.cat([note_pre, onset_hidden], dim=1)))
        return {"note": note_pre.squeeze(1), "onset": onset.squeeze(1), "contour": contour.squeeze(1)}

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        if not (self.full_precision and self.device.type == "cuda"):
            yield
            return
        with _PRECISION_LOCK:
            conv = getattr(torch.backends.cudnn, "conv", None)
            if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9's API
                before = conv.fp32_precision
                conv.fp32_precision = "ieee"
                try:
                    yield
                finally:
                    conv.fp32_precision = before
            else:
                before_tf32 = torch.backends.cudnn.allow_tf32
                torch.backends.cudnn.allow_tf32 = False
                try:
                    yield
                finally:
                    torch.backends.cudnn.allow_tf32 = before_tf32

    def predict(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """Numpy in, numpy out, on whatever device the module is on (one forward pass)."""
        with torch.inference_mode(), self._precision():
            audio = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(self.device)
            out = self(audio)
            return {k: out[k].float().cpu().numpy() for k in OUTPUTS}
