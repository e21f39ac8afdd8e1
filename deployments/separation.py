"""The separation deployment: decodes a job's upload and writes its stems to storage."""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ray

from deployments import metrics
from deployments.fingerprints import separation_fingerprint
from deployments.numba_cache import publish_numba_cache
from deployments.progress import CancelCheck, TrackerReporter
from music.engines.beat_tracker import BeatTracker, BeatTrackerConfig
from music.engines.hpss import hpss_stems
from music.engines.separator import DemucsSeparator, ModelState, SeparationConfig
from music.engines.threads import use_threads
from serve_app.domain import audio
from serve_app.domain.db import JobRepository
from serve_app.domain.errors import ModelUnavailable, ReplicaUnhealthy
from serve_app.domain.job_files import JobFiles
from serve_app.domain.jobs import SeparationMode, Stage
from serve_app.domain.storage import JobKeys, StorageBackend, storage_from_settings
from serve_app.logs import bind_job, configure_logging
from serve_app.settings import Settings

logger = logging.getLogger(__name__)


class Separation:
    def __init__(self, settings: Settings, engine_cls: type[DemucsSeparator] = DemucsSeparator) -> None:
        self.settings = settings
        configure_logging(settings)
        self.engine_cls = engine_cls
        self.storage: StorageBackend = storage_from_settings(settings)
        self.report = TrackerReporter()
        self.repo = JobRepository(settings.database_url.get_secret_value())
        self.engine: DemucsSeparator | None = None
        self.beat_tracker = BeatTracker()
        # librosa's first call compiles its numba code for seconds: pay that at start, beside the replica.
        threading.Thread(target=self._warm_up_beats, name="beat-tracker-warm-up", daemon=True).start()

    def _warm_up_beats(self) -> None:
        self.beat_tracker.warm_up()
        # What the warm-up compiled seeds the next replica's numba cache (deployments/numba_cache.py).
        publish_numba_cache()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = _with_gpu_share(SeparationConfig.model_validate(user_config))
        use_threads(config.threads)
        if config.downbeat_model != self.beat_tracker.config.downbeat_model:
            self.beat_tracker = BeatTracker(BeatTrackerConfig(downbeat_model=config.downbeat_model))
        # The beat tracker's model is not Demucs' business: changing it alone reloads nothing.
        if self.engine is not None and self.engine.config.model_copy(update={"downbeat_model": config.downbeat_model}) == config:
            return
        self.engine = self.engine_cls(config)
        # Loading (maybe downloading) runs beside the replica so it starts and can say what is missing.
        threading.Thread(target=metrics.load_demucs, args=(self.engine,), name="demucs-load", daemon=True).start()

    async def check_health(self) -> None:
        """Serve replaces a replica whose model failed to load although it is there (a broken file, the
        device, memory): another replica may load it. A model that is missing from its configuration
        stays a healthy replica that is not ready: a new one would fail the same way, and this one still
        serves `none` and `hpss` and fails `demucs` jobs at once with the reason. Loading is healthy."""
        error = self._sickness()
        if error is not None:
            logger.error("separation replica cannot serve: %s", error)
            raise RuntimeError(error)

    def _sickness(self) -> str | None:
        """Why this replica must be replaced, or None (see `check_health`)."""
        engine = self.engine
        if engine is not None and engine.state is ModelState.FAILED and _model_files_present(engine.config):
            return engine.error or "The separation model failed to load."
        return None

    async def status(self) -> dict[str, Any]:
        # Answered from memory on the replica's event loop: inference runs in threads, so this never
        # waits for a separation.
        engine = self._engine()
        return {
            "model": engine.config.model,
            "state": engine.state.value,
            "device": engine.device,
            "sources": engine.sources,
            "batch_segments": engine.batch_size,
            "autocast": str(engine.autocast_dtype).removeprefix("torch.") if engine.autocast_dtype else "none",
            "error": engine.error,
        }

    async def fingerprint(self, mode: str) -> dict[str, Any]:
        """What this replica's stems for a `mode` job depend on (the result cache's key); the weights are
        hashed once, in a thread, so this never waits for a separation."""
        return await asyncio.to_thread(separation_fingerprint, self._engine().config, mode)

    async def prepare_stems(self, job_id: str, mode: str, attempt: int) -> list[str]:
        """Separate attempt `attempt`'s job and publish its stems and beats (`LeaseLost` if it no longer holds the job)."""
        return await asyncio.to_thread(self._prepare_stems, job_id, SeparationMode(mode), attempt)

    def _prepare_stems(self, job_id: str, mode: SeparationMode, attempt: int) -> list[str]:
        bind_job(job_id)
        engine = self._engine()
        should_stop = CancelCheck(self.repo, job_id, attempt)
        if mode is SeparationMode.DEMUCS:
            sickness = self._sickness()
            if sickness is not None:
                # This replica's fault, not the job's: the job is retried, on the replica Serve starts instead.
                raise ReplicaUnhealthy(f"This separation replica cannot serve: {sickness}")
            # Fail before decoding when the model is missing: the message is what the user needs.
            engine.wait_ready(self.settings.model_wait_seconds)
        keys = JobKeys(job_id)
        with self.storage.local_copy(keys.upload) as upload:
            mix = audio.decode(upload, self.settings.max_duration_seconds, self.settings.max_decoded_bytes)
        self.report(job_id, Stage.DECODING, 1.0)
        # Beats come from the whole mix (every instrument helps, and it is there in every mode); they
        # are tracked beside the separation, which leaves a core idle now and then.
        pool = ThreadPoolExecutor(1, thread_name_prefix="beats")
        try:
            beats = pool.submit(self.beat_tracker.track, mix.samples, mix.sample_rate)
            if mode is SeparationMode.NONE:
                stems = {"mix": mix.samples}
            else:
                self.report(job_id, Stage.SEPARATING, 0.0)
                split = engine.separate if mode is SeparationMode.DEMUCS else hpss_stems
                stems = split(
                    mix,
                    progress=lambda f: self.report(job_id, Stage.SEPARATING, f),
                    should_stop=should_stop,
                )
                self.report(job_id, Stage.SEPARATING, 1.0)
            grid = beats.result()
        finally:
            # Canceled or failed: the beats are not needed, so answer now instead of after the tracking
            # (seconds on a long song; a `with` block would wait for it). A stopping replica (Ctrl-C on
            # `serve run`, a redeploy) then drains at the next segment; the thread ends on its own.
            pool.shutdown(wait=False, cancel_futures=True)
        with JobFiles(self.storage, job_id, attempt, self.repo) as files:
            with tempfile.TemporaryDirectory(prefix="stemscribe-stems-") as folder:
                for name, samples in stems.items():
                    path = Path(folder) / f"{name}.wav"
                    audio.write_wav(path, samples, mix.sample_rate)
                    files.put_file(keys.stem(name), path)
            files.put_bytes(keys.beats, json.dumps(grid.to_json()).encode())
            # The stem names go last: a later attempt reuses the stems only when they are there.
            files.put_bytes(keys.separated, json.dumps({"stems": list(stems)}).encode())
            files.publish()
        metrics.gpu_memory("Separation")
        return list(stems)

    def _engine(self) -> DemucsSeparator:
        if self.engine is None:
            raise ModelUnavailable("The separation deployment has no configuration yet.")
        return self.engine


def _model_files_present(config: SeparationConfig) -> bool:
    """Whether the configured model folder holds the model's own file(s); a download (no folder) counts
    as missing, since a replica without the network would only fail again."""
    folder = config.model_dir
    return folder is not None and folder.is_dir() and any(
        (folder / f"{config.model}{suffix}").is_file() for suffix in (".th", ".yaml")
    )


def _with_gpu_share(config: SeparationConfig) -> SeparationConfig:
    """`num_gpus: 0.5` is only a label to Ray; the replica caps its own GPU memory to that share."""
    if config.gpu_memory_fraction is not None:
        return config
    share = ray.get_runtime_context().get_assigned_resources().get("GPU")
    return config.model_copy(update={"gpu_memory_fraction": min(share, 1.0)}) if share else config
