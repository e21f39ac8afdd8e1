"""Demucs source separation as a plain class: load a model once, split audio into stems.

No Ray in here, so it can be tested and reused directly; `deployments.separation` wraps it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from music.engines.demucs_batched import (
    CPU_BATCH_SIZE,
    BatchStats,
    apply_batched,
    batch_size_for_budget,
    cap_gpu_memory,
    resolve_autocast,
)
from music.errors import Canceled, ModelUnavailable

if TYPE_CHECKING:  # the decoder (PyAV) is not needed to separate, e.g. in benchmarks/gpu_check.py
    from music.audio import DecodedAudio

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float], None]


class SeparationConfig(BaseModel):
    """The separation deployment's `user_config`."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model: str = Field(default="htdemucs", description="Demucs pretrained name or signature in model_dir")
    model_dir: Path | None = Field(default=None, description="Local folder with <name>.th / <name>.yaml")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    segment: float | None = Field(default=None, gt=0, description="Seconds per chunk; None = model's own")
    overlap: float = Field(default=0.25, ge=0, lt=1)
    shifts: int = Field(default=1, ge=0, le=20)
    threads: int | None = Field(
        default=None, ge=1, description="CPU threads for the model; None = every CPU the replica may run on"
    )
    batch_memory_gb: float = Field(
        default=3.0, gt=0, description="CUDA: activation memory for one batch of segments (sets the batch size)"
    )
    cpu_batch_segments: int = Field(
        default=CPU_BATCH_SIZE,
        ge=1,
        description="CPU: segments per forward pass; more was slower on every CPU run measured (3x under bf16)",
    )
    autocast: Literal["auto", "none", "bf16", "fp16"] = Field(
        default="auto", description="Mixed precision of the model's layers; auto = bf16 on CUDA, fp32 on the CPU"
    )
    gpu_memory_fraction: float | None = Field(
        default=None, gt=0, le=1, description="Share of the card this replica may use; None = its num_gpus share"
    )
    downbeat_model: Path | None = Field(
        default=None, description="The beat tracker's downbeat model (music/engines/downbeats.py); None = the packaged one"
    )


class ModelState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


def pick_device(preference: str) -> str:
    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cuda" and not torch.cuda.is_available():
        logger.warning("CUDA asked for but not available; separating on the CPU")
        return "cpu"
    return preference


class DemucsSeparator:
    """Holds one Demucs model. Loading happens in `load()`, which never raises: a failure is kept
    in `error` so the service can start and say what is missing.

    Separating normalises the mix as Demucs' own `Separator` does and runs `apply_batched`: on CUDA
    all segments in batches sized to `batch_memory_gb` under autocast, on the CPU in fp32."""

    def __init__(self, config: SeparationConfig) -> None:
        self.config = config
        self.device = pick_device(config.device)
        self.state = ModelState.LOADING
        self.error: str | None = None
        self.load_seconds: float | None = None
        self.batch_size = config.cpu_batch_segments
        self.full_batch_size = config.cpu_batch_segments  # what load() sized; a halved batch grows back to it
        self.autocast_dtype: torch.dtype | None = None
        self._model: torch.nn.Module | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()

    @property
    def sources(self) -> list[str]:
        return list(self._model.sources) if self._model is not None else []

    @property
    def samplerate(self) -> int:
        assert self._model is not None, "call load() first"
        return int(self._model.samplerate)

    def load(self) -> None:
        from demucs.pretrained import get_model

        name, folder = self.config.model, self.config.model_dir
        started = time.monotonic()
        try:
            if folder is not None and not folder.is_dir():
                raise FileNotFoundError(f"model folder {folder} does not exist")
            model = get_model(name=name, repo=folder).eval()
            _check_segment(model, self.config.segment)
            if self.device == "cuda":
                cap_gpu_memory(self.config.gpu_memory_fraction or 1.0, self.device)
                model.to(self.device)
            self.autocast_dtype = resolve_autocast(self._autocast_choice(), self.device)
            if self.device == "cuda":
                budget = int(self.config.batch_memory_gb * 2**30)
                self.batch_size = batch_size_for_budget(
                    model, budget, segment=self.config.segment, autocast_dtype=self.autocast_dtype
                )
            self.full_batch_size = self.batch_size
            self._model = model
            self.load_seconds = time.monotonic() - started
            self.state = ModelState.READY
            logger.info(
                "Demucs model %s loaded on %s in %.1f s (sources %s, %d segments a batch, autocast %s)",
                name, self.device, self.load_seconds, self.sources, self.batch_size, self.autocast_dtype,
            )  # fmt: skip
        except (Exception, SystemExit) as exc:  # demucs calls sys.exit for some bad repos
            where = f"the folder {folder}" if folder else "the Demucs model download (needs internet)"
            self.error = (
                f"The separation model '{name}' could not be loaded from {where}: {exc}. "
                "Provide it with the separation deployment's user_config model/model_dir "
                "(or STEMSCRIBE_DEMUCS_MODEL / STEMSCRIBE_DEMUCS_MODEL_DIR), or submit with separation=none."
            )
            self.state = ModelState.FAILED
            logger.error("%s", self.error)
        finally:
            self._ready.set()

    def _autocast_choice(self) -> str:
        if self.config.autocast != "auto":
            return self.config.autocast
        # bf16 halves Demucs' time on CPUs with bf16 instructions (measured: benchmarks/README.md) and
        # keeps the stems within ~40 dB SDR of fp32; elsewhere bf16 is emulated and fp32 is faster.
        return "bf16" if self.device == "cuda" or cpu_has_native_bf16() else "none"

    def wait_ready(self, timeout: float) -> None:
        if not self._ready.wait(timeout):
            raise ModelUnavailable(
                f"The separation model '{self.config.model}' is still loading after {timeout:g} seconds."
            )
        if self.state is ModelState.FAILED:
            raise ModelUnavailable(self.error or "The separation model is unavailable.")

    def separate(
        self,
        audio: DecodedAudio,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> dict[str, np.ndarray]:
        """Split `audio` into stems with the input's sample rate, channel count and length (float32; where the
        rate and channels are the model's, each stem is a view of one output buffer, not a copy)."""
        from demucs.audio import convert_audio

        model = self._model
        assert model is not None, "call load() first"
        channels, frames = audio.samples.shape
        wav = convert_audio(torch.from_numpy(audio.samples), audio.sample_rate, model.samplerate, model.audio_channels)
        # Demucs' own normalisation (demucs.api.Separator.separate_tensor), so stems match its CLI's. In place
        # where the tensor is ours: every pass over a whole song is host time the network does not get.
        ref = wav.mean(0)
        mean, std = ref.mean(), ref.std() + 1e-8
        normalised = (wav - mean).div_(std)[None]

        def on_segment(done: int, total: int) -> None:
            # After every batch: a place to stop and to report.
            if should_stop is not None and should_stop():
                raise Canceled("The job was canceled.")
            if progress is not None:
                progress(done / max(total, 1))

        stats = BatchStats()
        # One separation at a time per model: a second would only compete for the same memory.
        with self._lock:
            out = apply_batched(
                model, normalised, shifts=self.config.shifts, overlap=self.config.overlap,
                segment=self.config.segment, batch_size=self.batch_size, device=self.device,
                autocast_dtype=self.autocast_dtype, on_segment=on_segment, stats=stats,
            )  # fmt: skip
            if stats.batch_size < self.batch_size:
                logger.warning("keeping %d segments a batch after running out of memory", stats.batch_size)
                self.batch_size = stats.batch_size
            elif stats.out_of_memory_retries == 0 and self.batch_size < self.full_batch_size:
                # A job went through at the smaller batch: the memory that ran out may have been another
                # replica's for a moment. Try twice as many again, up to what load() sized.
                self.batch_size = min(self.full_batch_size, 2 * self.batch_size)
                logger.info("a job succeeded without running out of memory; %d segments a batch again", self.batch_size)
        del normalised
        out = out.mul_(std).add_(mean)  # apply_batched's output is this call's own
        result: dict[str, np.ndarray] = {}
        for name, stem in zip(model.sources, out[0]):
            back = convert_audio(stem, model.samplerate, audio.sample_rate, channels).numpy()
            if back.shape == (channels, frames) and back.dtype == np.float32:
                result[name] = back  # same rate and channels: a view of the output, no copy
                continue
            fitted = np.zeros((channels, frames), dtype=np.float32)
            n = min(frames, back.shape[1])
            fitted[:, :n] = back[:, :n]
            result[name] = fitted
        return result


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX), read from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _check_segment(model: torch.nn.Module, segment: float | None) -> None:
    """Transformer models cannot take longer segments than they were trained on (Demucs' CLI check)."""
    from demucs.apply import BagOfModels
    from demucs.htdemucs import HTDemucs

    if segment is None:
        return
    limit = float("inf")
    if isinstance(model, HTDemucs):
        limit = float(model.segment)
    elif isinstance(model, BagOfModels):
        limit = model.max_allowed_segment
    if segment > limit:
        raise ValueError(f"segment {segment:g} s is longer than the model allows ({limit:g} s)")
