"""Demucs source separation as a plain class: load a model once, split audio into stems.

No Ray in here, so it can be tested and reused directly; `deployments.separation` wraps it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from serve_app.domain.audio import DecodedAudio
from serve_app.domain.errors import JobCanceled, ModelUnavailable

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
    in `error` so the service can start and say what is missing."""

    def __init__(self, config: SeparationConfig) -> None:
        self.config = config
        self.device = pick_device(config.device)
        self.state = ModelState.LOADING
        self.error: str | None = None
        self._separator = None
        self._ready = threading.Event()
        self._lock = threading.Lock()

    @property
    def sources(self) -> list[str]:
        return list(self._separator.model.sources) if self._separator is not None else []

    def load(self) -> None:
        from demucs.api import Separator

        name, folder = self.config.model, self.config.model_dir
        try:
            if folder is not None and not folder.is_dir():
                raise FileNotFoundError(f"model folder {folder} does not exist")
            self._separator = Separator(
                model=name,
                repo=folder,
                device=self.device,
                shifts=self.config.shifts,
                overlap=self.config.overlap,
                segment=self.config.segment,
                split=True,
                progress=False,
            )
            self.state = ModelState.READY
            logger.info("Demucs model %s loaded on %s (sources %s)", name, self.device, self.sources)
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
        """Split `audio` into stems with the input's sample rate, channel count and length."""
        from demucs.audio import convert_audio

        assert self._separator is not None, "call load() first"
        separator = self._separator
        model_rate, model_channels = separator.samplerate, separator.audio_channels
        channels, frames = audio.samples.shape
        wav = convert_audio(torch.from_numpy(audio.samples), audio.sample_rate, model_rate, model_channels)

        def on_chunk(info: dict) -> None:
            # Called by Demucs before and after every chunk: a place to report and to stop.
            if should_stop is not None and should_stop():
                raise JobCanceled("The job was canceled.")
            if progress is not None and info.get("state") == "end":
                # A chunk that ended at offset o covers at least o samples of the track.
                done = (info["segment_offset"] + 1) / max(info["audio_length"], 1)
                models = max(int(info.get("models", 1)), 1)
                progress(min((info.get("model_idx_in_bag", 0) + min(done, 1.0)) / models, 1.0))

        # One separation at a time per model: Demucs' parameters live on the shared Separator.
        with self._lock, torch.inference_mode():
            separator.update_parameter(callback=on_chunk)
            _, stems = separator.separate_tensor(wav)
        result: dict[str, np.ndarray] = {}
        for name, stem in stems.items():
            back = convert_audio(stem.cpu(), model_rate, audio.sample_rate, channels).numpy()
            fitted = np.zeros((channels, frames), dtype=np.float32)
            n = min(frames, back.shape[1])
            fitted[:, :n] = back[:, :n]
            result[name] = fitted
        return result
