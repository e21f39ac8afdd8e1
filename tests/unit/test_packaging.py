"""Packaging a job: the per-job MIDI options reach the files a client downloads.

The stems and raw notes are already in storage (as a later attempt finds them), so the pipeline goes
straight to packaging; the model deployments must not be called at all."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import music21
import pretty_midi

from music.notes import Note
from music.presets import MidiOptions, QuantizeGrid
from music.rhythm import BeatGrid
from serve_app.domain.jobs import JobOptions, Stage
from serve_app.domain.pipeline import JobPipeline
from serve_app.domain.storage import JobKeys, LocalStorage

JOB = "0" * 32
MELODY = [Note(i * 0.5, i * 0.5 + 0.4, 60 + (i % 3) * 2, 90) for i in range(12)]
GHOST = Note(2.1, 2.15, 71, 20)  # short and far quieter than the stem's notes
HARMONIC = Note(1.0, 1.3, 76, 80)  # an octave above the note starting at 1.0 s (64), a little quieter


class _NotCalled:
    def remote(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("packaging must not call a model deployment")


class _Handle:
    prepare_stems = transcribe_stems = status = _NotCalled()


class _Attempt:
    number = 1
    known_stems = ["other", "drums"]

    async def report(self, stage: Stage, fraction: float) -> None: ...

    async def checkpoint(self) -> None: ...

    async def stems_separated(self, stems: list[str]) -> None: ...


class _Leases:
    """The attempt holds its job throughout."""

    def holds_lease(self, job_id: str, attempt: int) -> bool:
        return True

    def cancel_requested(self, job_id: str) -> bool:
        return False


def _package(tmp_path: Path, midi: MidiOptions) -> tuple[LocalStorage, list[str]]:
    storage = LocalStorage(tmp_path / "store")
    keys = JobKeys(JOB)
    for stem in _Attempt.known_stems:
        storage.put_bytes(keys.stem(stem), b"wav")
    grid = BeatGrid.steady(120.0, 8.0)
    storage.put_bytes(keys.beats, json.dumps(grid.to_json()).encode())
    other = [n.to_json("other") for n in MELODY + [GHOST, HARMONIC]]
    storage.put_bytes(keys.stem_notes("other"), json.dumps(other).encode())
    storage.put_bytes(keys.stem_notes("drums"), json.dumps([Note(0.0, 0.1, 36, 100).to_json("drums")]).encode())
    pipeline = JobPipeline(storage, _Handle(), _Handle(), _Leases())  # type: ignore[arg-type]
    output = asyncio.run(pipeline.run(JOB, JobOptions(midi=midi), _Attempt()))
    return storage, output.results


def _notes(storage: LocalStorage, stem: str) -> set[tuple[float, int]]:
    document = json.loads(storage.get_bytes(JobKeys(JOB).result("notes.json")))
    return {(n["start"], n["pitch"]) for n in document["notes"] if n["stem"] == stem}


def test_cleaning_follows_the_jobs_switches(tmp_path: Path) -> None:
    cleaned, _ = _package(tmp_path / "on", MidiOptions())
    assert _notes(cleaned, "other") == {(n.start, n.pitch) for n in MELODY}
    raw, _ = _package(tmp_path / "off", MidiOptions(clean_ghost_notes=False, clean_octave_duplicates=False))
    assert _notes(raw, "other") == {(n.start, n.pitch) for n in MELODY + [GHOST, HARMONIC]}
    only_ghosts, _ = _package(tmp_path / "ghosts", MidiOptions(clean_octave_duplicates=False))
    assert (HARMONIC.start, HARMONIC.pitch) in _notes(only_ghosts, "other")
    assert (GHOST.start, GHOST.pitch) not in _notes(only_ghosts, "other")


def test_every_result_is_written_and_the_quantized_file_uses_the_jobs_grid(tmp_path: Path) -> None:
    storage, results = _package(tmp_path, MidiOptions(quantize_grid=QuantizeGrid.QUARTER))
    keys = JobKeys(JOB)
    assert all(storage.exists(keys.result(name)) for name in results)
    assert {"midi/drums.mid", "midi/other.mid", "transcription.quantized.mid", "transcription.musicxml"} <= set(results)
    midi = pretty_midi.PrettyMIDI(io.BytesIO(storage.get_bytes(keys.result("transcription.quantized.mid"))))
    other = next(i for i in midi.instruments if i.name == "other")
    assert all(midi.time_to_tick(n.start) % midi.resolution == 0 for n in other.notes)  # on quarter notes
    drums = next(i for i in midi.instruments if i.name == "drums")
    assert drums.is_drum and [n.pitch for n in drums.notes] == [36]
    # The score is of the same quantized notes: on quarter notes, in whole beats.
    score = music21.converter.parse(storage.get_bytes(keys.result("transcription.musicxml")), format="musicxml")
    assert [p.partName for p in score.parts] == ["Other", "Other", "Drums"]  # a grand staff, then the kit
    assert all(n.offset == int(n.offset) for p in score.parts for n in p.flatten().notes)
