"""One attempt at a job, stage by stage: stems from the separation deployment, notes from the
transcription deployment, then the MIDI and JSON a client downloads (cleaned notes over the tempo map
tracked from the mix, with the key estimated from the notes). Runs inside the job tracker.

Work already in storage from an earlier attempt is reused: stems once separated, notes per stem. Every
stage writes attempt-scoped temporaries and publishes them only while its attempt holds the job's lease
(`serve_app.domain.job_files`), so what is found under the final names is whole and was published by an
attempt that owned the job at the time."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from music.cleaning import clean
from music.key import estimate_key
from music.midi import analysis_summary, build_midi, midi_bytes, notes_document
from music.musicxml import musicxml_bytes
from music.notes import Note
from music.presets import is_pitched, preset_for
from music.quantize import quantize
from music.rhythm import BeatGrid
from serve_app.domain.job_files import JobFiles, Leases
from serve_app.domain.jobs import JobOptions, Stage
from serve_app.domain.storage import JobKeys, StorageBackend

logger = logging.getLogger(__name__)


class _Method(Protocol):
    def remote(self, *args: Any, **kwargs: Any) -> Any: ...


class SeparationHandle(Protocol):
    prepare_stems: _Method
    status: _Method
    fingerprint: _Method  # for the result cache (serve_app.domain.cached_pipeline)


class TranscriptionHandle(Protocol):
    transcribe_stems: _Method
    status: _Method
    fingerprint: _Method


class AttemptContext(Protocol):
    """What the pipeline needs from the attempt that runs it."""

    number: int  # the attempt number: it scopes every file the attempt writes
    known_stems: list[str] | None

    async def report(self, stage: Stage, fraction: float) -> None: ...

    async def checkpoint(self) -> None:
        """Raise JobCanceled if the job was canceled (or handed to another attempt)."""

    async def stems_separated(self, stems: list[str]) -> None: ...


@dataclass(frozen=True)
class JobOutput:
    results: list[str]  # result names, as the results route serves them
    analysis: dict[str, Any]  # tempo, time signature and key, for the job view
    cache_hit: bool = False  # the files are a copy of another job's (serve_app.domain.cached_pipeline)


class JobPipeline:
    def __init__(
        self,
        storage: StorageBackend,
        separation: SeparationHandle,
        transcription: TranscriptionHandle,
        leases: Leases,
    ) -> None:
        self.storage = storage
        self.separation = separation
        self.transcription = transcription
        self.leases = leases

    async def run(self, job_id: str, options: JobOptions, ctx: AttemptContext) -> JobOutput:
        """Run every stage not yet done."""
        keys = JobKeys(job_id)
        stems = ctx.known_stems or await asyncio.to_thread(self._separated, keys)
        if stems is not None and ctx.known_stems is None:
            await ctx.stems_separated(stems)  # published by an attempt whose tracker died before it heard
        if stems is None or not await asyncio.to_thread(
            self._all_exist, [keys.beats] + [keys.stem(s) for s in stems]
        ):
            await ctx.checkpoint()
            # Decoding and separating both happen on the separation replica, which reports both stages.
            await ctx.report(Stage.DECODING, 0.0)
            stems = list(await self.separation.prepare_stems.remote(job_id, options.separation.value, ctx.number))
            await ctx.stems_separated(stems)

        await ctx.checkpoint()
        await ctx.report(Stage.TRANSCRIBING, 0.0)
        todo = [s for s in stems if not await asyncio.to_thread(self.storage.exists, keys.stem_notes(s))]
        done = len(stems) - len(todo)

        async def transcribe(group: list[str]) -> None:
            nonlocal done
            await ctx.checkpoint()
            await self.transcription.transcribe_stems.remote(job_id, group, options.notes.model_dump(), ctx.number)
            done += len(group)
            await ctx.report(Stage.TRANSCRIBING, done / len(stems))

        # Pitched stems go in one call, so their windows share batched forward passes on one replica;
        # the drums (a different engine) go beside them, to another replica where there is one.
        groups = [[s for s in todo if is_pitched(s)], [s for s in todo if not is_pitched(s)]]
        await asyncio.gather(*(transcribe(group) for group in groups if group))

        await ctx.checkpoint()
        await ctx.report(Stage.PACKAGING, 0.0)
        analysis = await asyncio.to_thread(self._package, job_id, stems, options, ctx.number)
        return JobOutput(result_names(stems), analysis)

    def _separated(self, keys: JobKeys) -> list[str] | None:
        if not self.storage.exists(keys.separated):
            return None
        return list(json.loads(self.storage.get_bytes(keys.separated))["stems"])

    def _all_exist(self, keys: list[str]) -> bool:
        return all(self.storage.exists(key) for key in keys)

    def _package(self, job_id: str, stems: list[str], options: JobOptions, attempt: int) -> dict[str, Any]:
        with JobFiles(self.storage, job_id, attempt, self.leases) as files:
            analysis = self._write_results(files, stems, options)
            files.publish()
        return analysis

    def _write_results(self, files: JobFiles, stems: list[str], options: JobOptions) -> dict[str, Any]:
        keys = files.keys
        grid = BeatGrid.from_json(json.loads(self.storage.get_bytes(keys.beats)))
        notes: dict[str, list[Note]] = {}
        for stem in stems:
            raw = [Note.from_json(row) for row in json.loads(self.storage.get_bytes(keys.stem_notes(stem)))]
            notes[stem] = clean(raw, options.midi, preset_for(stem).cleaning) if is_pitched(stem) else raw
        key = estimate_key(note for stem in stems if is_pitched(stem) for note in notes[stem])
        divisions = options.midi.quantize_grid.divisions_per_beat
        quantized = {stem: quantize(stem_notes, grid, divisions) for stem, stem_notes in notes.items()}

        def put_midi(name: str, tracks: dict[str, list[Note]]) -> None:
            files.put_bytes(keys.result(name), midi_bytes(build_midi(tracks, grid, key)))

        put_midi("transcription.mid", notes)
        put_midi("transcription.quantized.mid", quantized)
        # The score is of the quantized notes: notation needs note values, which the raw times are not.
        files.put_bytes(keys.result("transcription.musicxml"), musicxml_bytes(quantized, grid, key, divisions))
        for stem in stems:
            put_midi(f"midi/{stem}.mid", {stem: notes[stem]})
        files.put_bytes(keys.result("notes.json"), json.dumps(notes_document(notes, grid, key)).encode())
        return analysis_summary(grid, key)


def result_names(stems: list[str]) -> list[str]:
    return (
        ["transcription.mid", "transcription.quantized.mid", "transcription.musicxml", "notes.json"]
        + [f"midi/{stem}.mid" for stem in stems]
        + [f"stems/{stem}.wav" for stem in stems]
    )
