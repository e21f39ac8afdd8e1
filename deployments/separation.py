"""The separation deployment: decodes a job's upload and writes its stems to storage."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from deployments.beat_tracker import BeatTracker
from deployments.hpss import hpss_stems
from deployments.progress import CancelCheck, TrackerReporter
from deployments.separator import DemucsSeparator, SeparationConfig
from serve_app.domain import audio
from serve_app.domain.db import JobRepository
from serve_app.domain.errors import ModelUnavailable
from serve_app.domain.jobs import Stage
from serve_app.domain.options import SeparationMode
from serve_app.domain.storage import JobKeys, StorageBackend, storage_from_settings
from serve_app.settings import Settings

logger = logging.getLogger(__name__)


class Separation:
    def __init__(self, settings: Settings, engine_cls: type[DemucsSeparator] = DemucsSeparator) -> None:
        self.settings = settings
        self.engine_cls = engine_cls
        self.storage: StorageBackend = storage_from_settings(settings)
        self.report = TrackerReporter(settings)
        self.repo = JobRepository(settings.database_url)
        self.engine: DemucsSeparator | None = None
        self.beat_tracker = BeatTracker()
        # librosa's first call compiles its numba code for seconds: pay that at start, beside the replica.
        threading.Thread(target=self.beat_tracker.warm_up, name="beat-tracker-warm-up", daemon=True).start()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = SeparationConfig.model_validate(user_config)
        if self.engine is not None and self.engine.config == config:
            return
        self.engine = self.engine_cls(config)
        # Loading (maybe downloading) runs beside the replica so it starts and can say what is missing.
        threading.Thread(target=self.engine.load, name="demucs-load", daemon=True).start()

    async def status(self) -> dict[str, Any]:
        engine = self._engine()
        return {
            "model": engine.config.model,
            "state": engine.state.value,
            "device": engine.device,
            "sources": engine.sources,
            "error": engine.error,
        }

    async def prepare_stems(self, job_id: str, mode: str) -> list[str]:
        return await asyncio.to_thread(self._prepare_stems, job_id, SeparationMode(mode))

    def _prepare_stems(self, job_id: str, mode: SeparationMode) -> list[str]:
        engine = self._engine()
        if mode is SeparationMode.DEMUCS:
            # Fail before decoding when the model is missing: the message is what the user needs.
            engine.wait_ready(self.settings.model_wait_seconds)
        keys = JobKeys(job_id)
        with self.storage.local_copy(keys.upload) as upload:
            self._maybe_crash(upload)
            mix = audio.decode(upload, self.settings.max_duration_seconds, self.settings.max_decoded_bytes)
        # Beats come from the whole mix: every instrument helps, and it is there in every mode.
        grid = self.beat_tracker.track(mix.samples, mix.sample_rate)
        self.report(job_id, Stage.DECODING, 1.0)
        if mode is SeparationMode.NONE:
            stems = {"mix": mix.samples}
        else:
            self.report(job_id, Stage.SEPARATING, 0.0)
            split = engine.separate if mode is SeparationMode.DEMUCS else hpss_stems
            stems = split(
                mix,
                progress=lambda f: self.report(job_id, Stage.SEPARATING, f),
                should_stop=CancelCheck(self.repo, job_id),
            )
            self.report(job_id, Stage.SEPARATING, 1.0)
        with tempfile.TemporaryDirectory(prefix="stemscribe-stems-") as folder:
            for name, samples in stems.items():
                path = Path(folder) / f"{name}.wav"
                audio.write_wav(path, samples, mix.sample_rate)
                self.storage.put_file(keys.stem(name), path)
        self.storage.put_bytes(keys.beats, json.dumps(grid.to_json()).encode())
        return list(stems)

    def _maybe_crash(self, upload: Path) -> None:
        marker = self.settings.fault_crash_marker
        if marker and marker.encode() in upload.read_bytes():
            logger.critical("fault injection: upload carries %r; this replica exits now", marker)
            os._exit(1)

    def _engine(self) -> DemucsSeparator:
        if self.engine is None:
            raise ModelUnavailable("The separation deployment has no configuration yet.")
        return self.engine
