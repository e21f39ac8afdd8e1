"""basic-pitch transcription as a plain class: load the model once, turn stems into notes.

The audio is windowed and unwrapped exactly as basic-pitch's `run_inference` does, but the windows
of all the stems of a call go through the model together, `batch_windows` at a time. The model runs
on onnxruntime's CPU provider (basic-pitch's own path) on a CPU, and on a CUDA GPU through
onnxruntime's CUDA provider where onnxruntime-gpu is installed, else through the native torch port
in music/engines/basic_pitch_torch.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from music.engines.threads import available_cpus
from music.errors import Canceled
from music.notes import Note, notes_from_basic_pitch
from music.presets import NoteParameters

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
Backend = Literal["onnxruntime-cpu", "onnxruntime-cuda", "torch-cuda", "basic-pitch"]
# A WAV (any file librosa reads) or mono float32 samples already at 22050 Hz.
Audio = Path | np.ndarray
Outputs = dict[str, np.ndarray]
StopCheck = Callable[[], bool]

N_OVERLAPPING_FRAMES = 30  # basic_pitch.inference.run_inference's overlap
CUDA_PROVIDER = "CUDAExecutionProvider"


def bundled_onnx_model() -> Path:
    """The ICASSP 2022 model that ships inside the basic-pitch wheel."""
    from basic_pitch import FilenameSuffix, build_icassp_2022_model_path

    return build_icassp_2022_model_path(FilenameSuffix.onnx)


class TranscriptionConfig(BaseModel):
    """The transcription deployment's `user_config`."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_path: Path | None = Field(default=None, description="basic-pitch model file; None = bundled ONNX")
    melodia_trick: bool = True
    device: Device = Field(
        default="auto", description="auto = CUDA when torch sees a GPU, else CPU; cuda without a GPU falls back to CPU"
    )
    threads: int | None = Field(
        default=None, ge=1, description="CPU threads for the model; None = every CPU the replica may run on"
    )
    drum_engine: Literal["net", "nmfd"] = Field(
        default="net",
        description="drums stem to notes: net = the learned transcriber (music/engines/drum_net.py), nmfd = templates",
    )
    drum_weights: Path | None = Field(
        default=None, description="the drum network's weights file; None = the one in the package (music/engines/data)"
    )
    batch_windows: int = Field(
        default=64,
        ge=1,
        description=(
            "Most 2 s windows (of all the stems of a call together) per forward pass; each needs about "
            "10 MB of activations, so 64 take ~0.7 GB. Larger keeps a GPU busier; outputs change only by "
            "float rounding (1e-7 on onnxruntime's CPU provider with several threads, none with one)"
        ),
    )


def choose_backend(device: Device, cuda_available: bool, ort_providers: Sequence[str]) -> tuple[str, Backend]:
    """(device, backend) for an ONNX model, given what this machine has."""
    if device == "cuda" and not cuda_available:
        logger.warning("CUDA asked for but not available; transcribing on the CPU")
    if device != "cpu" and cuda_available:
        return "cuda", "onnxruntime-cuda" if CUDA_PROVIDER in ort_providers else "torch-cuda"
    return "cpu", "onnxruntime-cpu"


def load_audio(audio: Audio) -> np.ndarray:
    """Mono float32 samples at 22050 Hz; a file is read as basic-pitch's `get_audio_input` reads it."""
    if isinstance(audio, np.ndarray):
        if audio.ndim != 1:
            raise ValueError(f"expected mono samples (one dimension), got shape {audio.shape}")
        return audio.astype(np.float32, copy=False)
    import librosa
    from basic_pitch.constants import AUDIO_SAMPLE_RATE

    samples, _ = librosa.load(str(audio), sr=AUDIO_SAMPLE_RATE, mono=True)
    return samples


def window(samples: np.ndarray) -> np.ndarray:
    """(n_windows, AUDIO_N_SAMPLES, 1), the windows basic-pitch's `get_audio_input` yields: half the
    overlap of zeros in front, a window every hop, the last one zero-padded."""
    from basic_pitch.constants import AUDIO_N_SAMPLES, FFT_HOP

    overlap = N_OVERLAPPING_FRAMES * FFT_HOP
    hop = AUDIO_N_SAMPLES - overlap
    padded = np.concatenate([np.zeros(overlap // 2, np.float32), samples])
    n_windows = -(-len(padded) // hop)  # one per start in range(0, len(padded), hop)
    padded = np.pad(padded, (0, (n_windows - 1) * hop + AUDIO_N_SAMPLES - len(padded)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, AUDIO_N_SAMPLES)[::hop]
    return np.ascontiguousarray(windows)[:, :, None]


class BasicPitchTranscriber:
    def __init__(self, config: TranscriptionConfig) -> None:
        self.config = config
        self.model_path = config.model_path or bundled_onnx_model()
        self.threads = config.threads or available_cpus()
        self.session: Any = None  # the onnxruntime session, on the onnxruntime backends
        self.device: str
        self.backend: Backend
        self._predict: Callable[[np.ndarray], Outputs]
        if self.model_path.suffix == ".onnx":
            self._load_onnx()
        else:
            self._load_other()
        logger.info(
            "basic-pitch model %s on %s via %s (%d threads, %d windows per pass)",
            self.model_path, self.device, self.backend, self.threads, config.batch_windows,
        )  # fmt: skip

    def _load_onnx(self) -> None:
        import onnxruntime
        import torch

        self.device, self.backend = choose_backend(
            self.config.device, torch.cuda.is_available(), onnxruntime.get_available_providers()
        )
        if self.backend.startswith("onnxruntime"):
            self._load_ort(cuda=self.device == "cuda")
        if self.backend == "torch-cuda":
            from music.engines.basic_pitch_torch import BasicPitchTorch

            port = BasicPitchTorch.from_onnx(self.model_path).to(self.device)
            self._predict = port.predict

    def _load_ort(self, cuda: bool) -> None:
        import onnxruntime

        from music.engines.basic_pitch_torch import ONNX_INPUT, ONNX_OUTPUTS

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1  # the graph is one chain of convolutions: nothing to run beside it
        # Idle threads sleep instead of spinning: on a small machine they would take the cores from a
        # separation running beside this transcription.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = [CUDA_PROVIDER, "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        session = onnxruntime.InferenceSession(str(self.model_path), sess_options=options, providers=providers)
        if cuda and session.get_providers()[0] != CUDA_PROVIDER:
            # onnxruntime falls back to the CPU quietly when its CUDA libraries do not load.
            logger.warning("onnxruntime could not start its CUDA provider; using the torch port on the GPU")
            self.backend = "torch-cuda"
            return
        self.session = session
        names = list(ONNX_OUTPUTS.values())

        def predict(windows: np.ndarray) -> Outputs:
            return dict(zip(ONNX_OUTPUTS, session.run(names, {ONNX_INPUT: windows})))

        self._predict = predict

    def _load_other(self) -> None:
        """A TensorFlow, TFLite or CoreML model: basic-pitch's own loader, on the CPU."""
        from basic_pitch.inference import Model

        if self.config.device == "cuda":
            logger.warning("only ONNX models run on CUDA here; %s stays with basic-pitch's loader", self.model_path)
        model = Model(self.model_path)
        self.device, self.backend = "cpu", "basic-pitch"
        self._predict = model.predict

    def warm_up(self) -> None:
        """Pay the first call's one-off costs (librosa's lazy imports, the runtime's first pass: about
        3 s) now, rather than in the first job."""
        import tempfile

        import soundfile

        with tempfile.TemporaryDirectory(prefix="stemscribe-warm-up-") as folder:
            path = Path(folder) / "silence.wav"
            soundfile.write(str(path), np.zeros(22050, dtype=np.float32), 22050)
            self.predict_many([path])

    def transcribe(self, wav_path: Path, parameters: NoteParameters) -> list[Note]:
        return self.transcribe_many([(wav_path, parameters)])[0]

    def transcribe_many(
        self, items: Sequence[tuple[Audio, NoteParameters]], should_stop: StopCheck | None = None
    ) -> list[list[Note]]:
        """Notes of each (audio, parameters) item, in order; the windows of all items share forward passes.
        `should_stop` is asked between passes; when it says yes, `Canceled` is raised."""
        outputs = self.predict_many([audio for audio, _ in items], should_stop)
        return [self._notes(output, parameters) for output, (_, parameters) in zip(outputs, items)]

    def predict_many(self, audios: Sequence[Audio], should_stop: StopCheck | None = None) -> list[Outputs]:
        """Each audio's "note", "onset" and "contour" posteriorgrams, as basic-pitch's `run_inference`
        returns them (one row per 11.6 ms frame of the audio)."""
        from basic_pitch.inference import unwrap_output

        samples = [load_audio(audio) for audio in audios]
        windows = [window(s) for s in samples]
        if not windows:
            return []
        outputs = self._run(np.concatenate(windows), should_stop)
        bounds = np.cumsum([0] + [len(w) for w in windows])
        return [
            {k: unwrap_output(v[start:stop], len(s), N_OVERLAPPING_FRAMES) for k, v in outputs.items()}
            for s, start, stop in zip(samples, bounds[:-1], bounds[1:])
        ]

    def _run(self, windows: np.ndarray, should_stop: StopCheck | None = None) -> Outputs:
        batch = self.config.batch_windows
        parts = []
        for i in range(0, len(windows), batch):
            # A long song is one call of many passes: between them is where a canceled job can stop.
            if should_stop is not None and should_stop():
                raise Canceled("The job was canceled.")
            parts.append(self._predict(windows[i : i + batch]))
        return {k: np.concatenate([p[k] for p in parts]) for k in ("note", "onset", "contour")}

    def _notes(self, output: Outputs, parameters: NoteParameters) -> list[Note]:
        # What basic-pitch's `predict` does after `run_inference`, minus its print() per file.
        from basic_pitch import note_creation
        from basic_pitch.constants import AUDIO_SAMPLE_RATE, FFT_HOP

        assert parameters.minimum_note_length_ms is not None
        _, events = note_creation.model_output_to_notes(
            output,
            onset_thresh=parameters.onset_threshold,
            frame_thresh=parameters.frame_threshold,
            min_note_len=int(round(parameters.minimum_note_length_ms / 1000 * (AUDIO_SAMPLE_RATE / FFT_HOP))),
            min_freq=parameters.minimum_frequency,
            max_freq=parameters.maximum_frequency,
            multiple_pitch_bends=False,
            melodia_trick=self.config.melodia_trick,
        )
        return notes_from_basic_pitch(events)
