"""One attempt at a job, stage by stage: stems from the separation deployment, notes from the
transcription deployment, then the MIDI and JSON a client downloads. Runs inside the job tracker.

Work already in storage from an earlier attempt is reused: stems once separated, notes per stem."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Protocol

from serve_app.domain.jobs import Stage
from serve_app.domain.midi import Note, build_midi, midi_bytes, notes_document
from serve_app.domain.options import JobOptions, is_pitched
from serve_app.domain.storage import JobKeys, StorageBackend

logger = logging.getLogger(__name__)


class _Method(Protocol):
    def remote(self, *args: Any, **kwargs: Any) -> Any: ...


class SeparationHandle(Protocol):
    prepare_stems: _Method
    status: _Method


class TranscriptionHandle(Protocol):
    transcribe_stem: _Method
    status: _Method


class AttemptContext(Protocol):
    """What the pipeline needs from the attempt that runs it."""

    known_stems: list[str] | None

    async def report(self, stage: Stage, fraction: float) -> None: ...

    async def checkpoint(self) -> None:
        """Raise JobCanceled if the job was canceled (or handed to another attempt)."""

    async def stems_separated(self, stems: list[str]) -> None: ...


class JobPipeline:
    def __init__(
        self, storage: StorageBackend, separation: SeparationHandle, transcription: TranscriptionHandle
    ) -> None:
        self.storage = storage
        self.separation = separation
        self.transcription = transcription

    async def run(self, job_id: str, options: JobOptions, ctx: AttemptContext) -> list[str]:
        """Run every stage not yet done; returns the names of the job's results."""
        keys = JobKeys(job_id)
        stems = ctx.known_stems
        if stems is None or not await asyncio.to_thread(self._all_exist, [keys.stem(s) for s in stems]):
            await ctx.checkpoint()
            # Decoding and separating both happen on the separation replica, which reports both stages.
            await ctx.report(Stage.DECODING, 0.0)
            stems = list(await self.separation.prepare_stems.remote(job_id, options.separation.value))
            await ctx.stems_separated(stems)

        pitched = [stem for stem in stems if is_pitched(stem)]
        await ctx.checkpoint()
        await ctx.report(Stage.TRANSCRIBING, 0.0)
        done = 0

        async def transcribe(stem: str) -> None:
            nonlocal done
            if not await asyncio.to_thread(self.storage.exists, keys.stem_notes(stem)):
                await ctx.checkpoint()
                await self.transcription.transcribe_stem.remote(job_id, stem, options.notes.model_dump())
            done += 1
            await ctx.report(Stage.TRANSCRIBING, done / len(pitched))

        # Stems go out together so that several transcription replicas can share them.
        await asyncio.gather(*(transcribe(stem) for stem in pitched))

        await ctx.checkpoint()
        await ctx.report(Stage.PACKAGING, 0.0)
        await asyncio.to_thread(self._package, job_id, pitched)
        return result_names(stems, pitched)

    def _all_exist(self, keys: list[str]) -> bool:
        return all(self.storage.exists(key) for key in keys)

    def _package(self, job_id: str, pitched: list[str]) -> None:
        keys = JobKeys(job_id)
        notes: dict[str, list[Note]] = {}
        for stem in pitched:
            rows = json.loads(self.storage.get_bytes(keys.stem_notes(stem)))
            notes[stem] = [Note.from_json(row) for row in rows]
        self.storage.put_bytes(keys.result("transcription.mid"), midi_bytes(build_midi(notes)))
        self.storage.put_bytes(keys.result("notes.json"), json.dumps(notes_document(notes)).encode())


def result_names(stems: list[str], pitched: list[str]) -> list[str]:
    return (
        ["transcription.mid", "notes.json"]
        + [f"midi/{stem}.mid" for stem in pitched]
        + [f"stems/{stem}.wav" for stem in stems]
    )
