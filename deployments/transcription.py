"""The transcription deployment: a job's stem WAVs in storage to their notes in storage.

Pitched stems go to basic-pitch together, so that their windows share batched forward passes; the
drums stem goes to the drum transcriber. The notes are kept raw; cleaning, the tempo map and the
MIDI files are made when the job is packaged."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

import soundfile

from deployments import metrics
from deployments.fingerprints import transcription_fingerprint
from deployments.progress import CancelCheck
from music.engines.drum_net import DrumEngine, NetDrumTranscriber, make_drum_transcriber
from music.engines.drums import DrumTranscriber
from music.engines.threads import use_threads
from music.engines.transcriber import BasicPitchTranscriber, TranscriptionConfig, bundled_onnx_model
from music.notes import Note
from music.presets import NoteParameters, is_pitched, preset_for
from serve_app.domain.db import JobRepository
from serve_app.domain.errors import ModelUnavailable, ReplicaUnhealthy
from serve_app.domain.job_files import JobFiles
from serve_app.domain.storage import JobKeys, StorageBackend, storage_from_settings
from serve_app.logs import bind_job, configure_logging
from serve_app.settings import Settings

logger = logging.getLogger(__name__)


def _without_tensorflow() -> None:
    """basic-pitch imports TensorFlow whenever it is installed (to pick its default model format), though
    the ONNX model needs none of it: 0.4 GB and 4 s of every replica's start, measured. This replica
    process needs no TensorFlow, so basic-pitch is shown none, before its first import."""
    if "basic_pitch" not in sys.modules and "tensorflow" not in sys.modules:
        sys.modules["tensorflow"] = None  # type: ignore[assignment]  # makes `import tensorflow` fail


class Transcription:
    def __init__(
        self, settings: Settings, engine_cls: type[BasicPitchTranscriber] = BasicPitchTranscriber
    ) -> None:
        self.settings = settings
        configure_logging(settings)
        self.engine_cls = engine_cls
        self.storage: StorageBackend = storage_from_settings(settings)
        self.repo = JobRepository(settings.database_url.get_secret_value())  # asked whether a long transcription was canceled
        self.engine: BasicPitchTranscriber | None = None
        self.error: str | None = None
        self.model_path: Path | None = None  # the configured one; None: the model in basic-pitch's wheel
        self.melodia_trick = TranscriptionConfig().melodia_trick
        self.drum_engine: tuple[DrumEngine, Path | None] = ("net", None)
        self.drums: NetDrumTranscriber | DrumTranscriber = make_drum_transcriber(*self.drum_engine)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = TranscriptionConfig.model_validate(user_config)
        self.model_path, self.melodia_trick = config.model_path, config.melodia_trick
        use_threads(config.threads)
        if (config.drum_engine, config.drum_weights) != self.drum_engine:
            self.drum_engine = (config.drum_engine, config.drum_weights)
            self.drums = make_drum_transcriber(*self.drum_engine)
        if config.model_path is None or config.model_path.suffix == ".onnx":
            _without_tensorflow()
        # The drum engine is not basic-pitch's business: changing it alone reloads nothing.
        drums = {"drum_engine": config.drum_engine, "drum_weights": config.drum_weights}
        if self.engine is not None and self.engine.config.model_copy(update=drums) == config:
            return
        try:
            self.engine = metrics.timed_load("basic_pitch", self.engine_cls, config)
            self.error = None
            threading.Thread(target=self._warm_up, args=(self.engine,), name="transcriber-warm-up", daemon=True).start()
        except Exception as exc:  # keep the replica up so readiness can explain
            self.engine = None
            self.error = f"The basic-pitch model could not be loaded ({config.model_path or 'bundled'}): {exc}"
            logger.error("%s", self.error)

    @staticmethod
    def _warm_up(engine: BasicPitchTranscriber) -> None:
        try:
            engine.warm_up()
        except Exception:  # only a head start: the first job pays instead
            logger.warning("transcriber warm-up failed", exc_info=True)

    async def check_health(self) -> None:
        """Serve replaces a replica whose basic-pitch model failed to load although the file is there (the
        bundled one, or a `model_path` that exists): another replica may load it. A `model_path` that does
        not exist stays a healthy replica that is not ready, and says why: a new one would fail the same way."""
        error = self._sickness()
        if error is not None:
            logger.error("transcription replica cannot serve: %s", error)
            raise RuntimeError(error)

    def _sickness(self) -> str | None:
        """Why this replica must be replaced, or None (see `check_health`)."""
        if self.engine is None and self.error is not None and (self.model_path is None or self.model_path.exists()):
            return self.error
        return None

    async def status(self) -> dict[str, Any]:
        return {
            "model": str(self.engine.model_path) if self.engine else None,
            "state": "ready" if self.engine else "failed",
            "device": self.engine.device if self.engine else "cpu",
            "backend": self.engine.backend if self.engine else None,
            "error": self.error,
        }

    async def fingerprint(self) -> dict[str, Any]:
        """What this replica's notes depend on (the result cache's key); model files are hashed once."""
        model = self.model_path or bundled_onnx_model()
        return await asyncio.to_thread(transcription_fingerprint, model, self.melodia_trick, self.drums)

    async def transcribe_stems(
        self, job_id: str, stems: list[str], requested: dict[str, Any], attempt: int
    ) -> dict[str, int]:
        """Transcribe `stems` of attempt `attempt`'s job (all pitched, or the drums alone) and publish their
        notes; returns notes per stem (`LeaseLost` if the attempt no longer holds the job)."""
        return await asyncio.to_thread(self._transcribe_stems, job_id, stems, NoteParameters(**requested), attempt)

    def _transcribe_stems(
        self, job_id: str, stems: list[str], requested: NoteParameters, attempt: int
    ) -> dict[str, int]:
        bind_job(job_id)
        keys = JobKeys(job_id)
        found: dict[str, list[Note]] = {}
        with contextlib.ExitStack() as files:
            wavs: dict[str, Path] = {s: files.enter_context(self.storage.local_copy(keys.stem(s))) for s in stems}
            pitched = [s for s in stems if is_pitched(s)]
            if pitched:
                if self.engine is None:
                    sickness = self._sickness()
                    if sickness is not None:
                        # This replica's fault, not the job's: retried, on the replica Serve starts instead.
                        raise ReplicaUnhealthy(f"This transcription replica cannot serve: {sickness}")
                    raise ModelUnavailable(self.error or "The transcription model is not loaded.")
                items = [(wavs[s], requested.over(preset_for(s).notes)) for s in pitched]
                stop = CancelCheck(self.repo, job_id, attempt)
                found.update(zip(pitched, self.engine.transcribe_many(items, stop)))
            for stem in stems:
                if not is_pitched(stem):
                    samples, sample_rate = soundfile.read(wavs[stem], dtype="float32", always_2d=True)
                    found[stem] = self.drums.transcribe(samples.T, sample_rate)
        with JobFiles(self.storage, job_id, attempt, self.repo) as files:
            for stem, notes in found.items():
                # The notes file is the stem's only output: its presence tells a later attempt this stem is done.
                files.put_bytes(keys.stem_notes(stem), json.dumps([n.to_json(stem) for n in notes]).encode())
                logger.info("job %s: %d notes in stem %s", job_id, len(notes), stem)
            files.publish()
        metrics.gpu_memory("Transcription")
        return {stem: len(notes) for stem, notes in found.items()}
