"""The systems that produce transcripts for the evaluation: basic-pitch alone (Baseline), the service's
engines on isolated parts (Oracle) and the running service over HTTP (ServiceClient), with what they
produce (Transcript, EstNote) and what each claims to produce (Capabilities)."""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.evalset import ROLE_STEM, RenderedPiece

BASELINE = "baseline"
LIBROSA = "librosa"  # librosa's beat tracker: the baseline for tempo and beats
ORACLE = "oracle"
SERVICE = "service"
DRUMS = "drums"
FINAL = {"succeeded", "failed", "canceled"}


# --- what a system produced for one piece ----------------------------------------------------------


@dataclass(frozen=True)
class EstNote:
    start: float
    end: float
    pitch: int
    velocity: int = 0


@dataclass
class Transcript:
    notes: dict[str, list[EstNote]] = field(default_factory=dict)  # stem -> notes; drums with GM keys
    tempo_bpm: float | None = None
    beats: list[float] | None = None
    downbeats: list[float] | None = None
    time_signature: str | None = None
    key: str | None = None
    seconds: float = 0.0  # wall time to produce it
    job_id: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a system claims to produce; a metric it does not claim is n/a, one it claims is scored."""

    tempo: bool  # tempo and beats
    key: bool
    drums: bool
    per_stem: bool  # its stems are the Demucs ones (vocals, bass, other), so per-stem F1 means something
    notes: bool = True  # pitched notes
    bars: bool = True  # downbeats and meter (with tempo)


def capabilities(system: str) -> Capabilities:
    if system == BASELINE:
        return Capabilities(tempo=True, key=False, drums=False, per_stem=False)
    if system == ORACLE:
        return Capabilities(tempo=False, key=False, drums=True, per_stem=True)
    if system == LIBROSA:  # beats and a tempo; no downbeats, no meter, no notes
        return Capabilities(tempo=True, key=False, drums=False, per_stem=False, notes=False, bars=False)
    separation = system.removeprefix(f"{SERVICE}/")
    return Capabilities(tempo=True, key=True, drums=separation != "none", per_stem=separation == "demucs")


def transcript_from_notes_json(doc: Any) -> Transcript:
    """The service's notes.json: {"tempo_bpm", "time_signature", "key", "beats", "downbeats", "notes": [...]}."""
    if not isinstance(doc, dict) or "notes" not in doc:
        raise ValueError("notes.json is not the analysis document (an object with tempo_bpm, key, beats, notes)")
    notes: dict[str, list[EstNote]] = {}
    for row in doc["notes"]:
        notes.setdefault(str(row["stem"]), []).append(
            EstNote(float(row["start"]), float(row["end"]), int(row["pitch"]), int(row.get("velocity", 0)))
        )
    tempo = doc.get("tempo_bpm")
    return Transcript(
        notes=notes,
        tempo_bpm=float(tempo) if tempo is not None else None,
        beats=[float(b) for b in doc.get("beats") or []],
        downbeats=[float(b) for b in doc.get("downbeats") or []],
        time_signature=doc.get("time_signature"),
        key=doc.get("key"),
    )


# --- the systems -------------------------------------------------------------------------------------


class Baseline:
    """basic-pitch's `predict()` as a user would call it, defaults and all, with the bundled ONNX model."""

    def __init__(self) -> None:
        from basic_pitch.inference import Model

        from music.engines.transcriber import bundled_onnx_model

        self.model = Model(bundled_onnx_model())

    def run(self, piece: RenderedPiece) -> Transcript:
        from basic_pitch.inference import predict

        started = time.monotonic()
        with contextlib.redirect_stdout(io.StringIO()):  # predict() prints a line per file
            _, _, events = predict(piece.mix, model_or_model_path=self.model)
        notes = [EstNote(float(s), float(e), int(p), int(round(127 * a))) for s, e, p, a, _ in events]
        # What its MIDI file says: 120 BPM, 4/4 (MIDI's default), beats from 0 s.
        beats = list(np.arange(0.0, piece.truth.duration, 0.5))
        return Transcript(
            notes={"mix": notes}, tempo_bpm=120.0, beats=beats, downbeats=beats[::4], time_signature="4/4",
            seconds=time.monotonic() - started,
        )  # fmt: skip


def librosa_beats(audio: Path) -> Transcript:
    """librosa's beat tracker as its documentation shows it: load, beat_track, frames to times."""
    import librosa

    started = time.monotonic()
    y, sr = librosa.load(str(audio))
    tempo, frames = librosa.beat.beat_track(y=y, sr=sr)
    beats = librosa.frames_to_time(frames, sr=sr)
    return Transcript(
        tempo_bpm=float(np.atleast_1d(tempo)[0]), beats=[float(b) for b in beats], seconds=time.monotonic() - started
    )


class LibrosaBeats:
    """librosa's tracker on a rendered piece's mix."""

    def run(self, piece: RenderedPiece) -> Transcript:
        return librosa_beats(piece.mix)


class Oracle:
    """Each part's isolated render through the engine the service runs on that stem, then the
    service's cleaning with that stem's rules: perfect separation, everything else as the service."""

    def __init__(self, requested: dict[str, float] | None = None) -> None:
        from music.engines.transcriber import BasicPitchTranscriber, TranscriptionConfig
        from music.presets import NoteParameters

        self.pitched = BasicPitchTranscriber(TranscriptionConfig())
        self.requested = NoteParameters(**(requested or {}))
        self._drums: Any = None

    def _drum_engine(self) -> Any:
        if self._drums is None:
            from music.engines.drum_net import make_drum_transcriber

            self._drums = make_drum_transcriber()  # the service's default engine
        return self._drums

    def run(self, piece: RenderedPiece) -> Transcript:
        import soundfile

        from music.cleaning import clean
        from music.presets import MidiOptions, preset_for

        started = time.monotonic()
        notes: dict[str, list[EstNote]] = {}
        for role, wav in piece.parts.items():
            stem = ROLE_STEM[role]
            if stem == DRUMS:
                samples, rate = soundfile.read(wav, dtype="float32", always_2d=True)
                found = self._drum_engine().transcribe(samples.T, rate)
            else:
                found = self.pitched.transcribe(wav, self.requested.over(preset_for(stem).notes))
                found = clean(found, MidiOptions(), preset_for(stem).cleaning)
            notes[stem] = [EstNote(n.start, n.end, n.pitch, n.velocity) for n in found]
        return Transcript(notes=notes, seconds=time.monotonic() - started)


class ServiceClient:
    """The HTTP flow a client follows: upload, poll the job, download notes.json."""

    def __init__(self, url: str, api_key: str | None = None, job_timeout: float = 1800.0) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.client = httpx.Client(base_url=url, headers=headers, timeout=120)
        self.job_timeout = job_timeout

    def close(self) -> None:
        self.client.close()

    def _submit(self, wav: Path, form: dict[str, str]) -> str:
        for _ in range(60):
            with open(wav, "rb") as fh:
                files = {"file": (wav.name, fh, "audio/wav")}
                response = self.client.post("/api/v1/transcribe", files=files, data=form)
            if response.status_code in (429, 503):  # rate limit, full queue: wait as told
                time.sleep(float(response.headers.get("Retry-After", "2")))
                continue
            if response.status_code != 202:
                raise RuntimeError(f"upload refused: {response.status_code} {response.text[:500]}")
            return str(response.json()["job_id"])
        raise RuntimeError("upload refused again and again (429/503)")

    def run(self, wav: Path, form: dict[str, str]) -> Transcript:
        started = time.monotonic()
        job_id = self._submit(wav, form)
        deadline = started + self.job_timeout
        while True:
            response = self.client.get(f"/api/v1/jobs/{job_id}")
            if response.status_code == 503:  # database away for a moment
                time.sleep(float(response.headers.get("Retry-After", "2")))
                continue
            response.raise_for_status()
            job = response.json()
            if job["status"] in FINAL:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} unfinished after {self.job_timeout:g} s")
            # Polled faster than Retry-After: a job here takes seconds, and latency is part of the report.
            time.sleep(0.25)
        if job["status"] != "succeeded":
            raise RuntimeError(f"job {job_id} {job['status']}: {job.get('error')}")
        (link,) = [r["url"] for r in job["results"] if r["name"] == "notes.json"]
        download = self.client.get(link)
        download.raise_for_status()
        transcript = transcript_from_notes_json(download.json())
        transcript.seconds = time.monotonic() - started
        transcript.job_id = job_id
        return transcript
