"""The transcription deployment: one stem's WAV in storage to its notes in storage.

Pitched stems go to basic-pitch, the drums stem to the drum transcriber. The notes are kept raw;
cleaning, the tempo map and the MIDI files are made when the job is packaged."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import soundfile

from deployments.drums import DrumTranscriber
from deployments.transcriber import BasicPitchTranscriber, TranscriptionConfig
from serve_app.domain.errors import ModelUnavailable
from serve_app.domain.midi import Note
from serve_app.domain.options import NoteParameters, is_pitched, preset_for
from serve_app.domain.storage import JobKeys, StorageBackend, storage_from_settings
from serve_app.settings import Settings

logger = logging.getLogger(__name__)


class Transcription:
    def __init__(
        self, settings: Settings, engine_cls: type[BasicPitchTranscriber] = BasicPitchTranscriber
    ) -> None:
        self.settings = settings
        self.engine_cls = engine_cls
        self.storage: StorageBackend = storage_from_settings(settings)
        self.engine: BasicPitchTranscriber | None = None
        self.error: str | None = None
        self.drums = DrumTranscriber()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = TranscriptionConfig.model_validate(user_config)
        if self.engine is not None and self.engine.config == config:
            return
        try:
            self.engine = self.engine_cls(config)
            self.error = None
        except Exception as exc:  # keep the replica up so readiness can explain
            self.engine = None
            self.error = f"The basic-pitch model could not be loaded ({config.model_path or 'bundled'}): {exc}"
            logger.error("%s", self.error)

    async def status(self) -> dict[str, Any]:
        return {
            "model": str(self.engine.model_path) if self.engine else None,
            "state": "ready" if self.engine else "failed",
            "device": "cpu",
            "error": self.error,
        }

    async def transcribe_stem(self, job_id: str, stem: str, requested: dict[str, Any]) -> int:
        return await asyncio.to_thread(self._transcribe_stem, job_id, stem, NoteParameters(**requested))

    def _transcribe_stem(self, job_id: str, stem: str, requested: NoteParameters) -> int:
        keys = JobKeys(job_id)
        notes: list[Note]
        with self.storage.local_copy(keys.stem(stem)) as wav:
            if is_pitched(stem):
                if self.engine is None:
                    raise ModelUnavailable(self.error or "The transcription model is not loaded.")
                notes = self.engine.transcribe(wav, requested.over(preset_for(stem).notes))
            else:
                samples, sample_rate = soundfile.read(wav, dtype="float32", always_2d=True)
                notes = self.drums.transcribe(samples.T, sample_rate)
        # The notes file is the stage's only output: its presence tells a later attempt this stem is done.
        self.storage.put_bytes(keys.stem_notes(stem), json.dumps([n.to_json(stem) for n in notes]).encode())
        logger.info("job %s: %d notes in stem %s", job_id, len(notes), stem)
        return len(notes)
