"""The evaluation harness: how well stemscribe transcribes, against basic-pitch alone and a ceiling.

    python -m benchmarks.evaluate                        # full set, separations none and hpss, local service
    python -m benchmarks.evaluate --subset ci            # the three short CI pieces
    python -m benchmarks.evaluate --url http://host:8000 --api-key $KEY --separations none,hpss,demucs
    python -m benchmarks.evaluate --form clean_ghost_notes=false --form onset_threshold=0.6

It renders the evaluation set (benchmarks/evalset.py; cached), then scores, per piece:

- baseline: basic-pitch's own `predict()` with its default parameters on the mix. Its MIDI file is
  120 BPM in 4/4 whatever the music, so that is its tempo, beat grid (from 0 s) and meter, scored as
  they are; it has no key and no drums (n/a).
- service/<separation>: the mix POSTed to the running service over HTTP, the job polled, notes.json
  downloaded (notes per stem, tempo, beats, downbeats, time signature, key).
- oracle: the ceiling for the service's transcription engines: every part's own isolated render
  transcribed in-process with the engine the service uses for its stem (basic-pitch with the stem's
  preset, the drum transcriber for drums), i.e. perfect separation, then the service's note cleaning
  with the stem's rules. It has no tempo, beat or key analysis (n/a): those are the service's own
  analysis, measured on service/* rows.

Without --url it starts Ray and the application on this machine (benchmarks/local_service.py) with a
small random Demucs model (separation=none and hpss need no weights); for --separations ...,demucs give
--demucs-model-dir with real weights (and --demucs-model, default htdemucs).

Metrics and their conventions are in benchmarks/scoring.py. Per system, each metric is the mean of
the per-piece values over the pieces where it is defined (note F1 over pieces with pitched notes,
key over pieces with a key, drum classes over pieces whose drums play that class); accuracies are
the share of such pieces. Writes <out>/evaluation.md and <out>/evaluation.json (with every piece).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks import scoring
from benchmarks.evalset import (
    DEFAULT_CACHE,
    EVALSET_VERSION,
    ROLE_STEM,
    GroundTruth,
    RenderedPiece,
    build,
    cache_folder,
    describe,
    select,
)

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results"
BASELINE = "baseline"
ORACLE = "oracle"
SERVICE = "service"
SEPARATIONS = ("none", "hpss", "demucs")
PITCHED_STEMS = ("vocals", "bass", "other")
DRUMS = "drums"
FINAL = {"succeeded", "failed", "canceled"}
# Form fields the harness sets itself for each run.
RESERVED_FORM = {"separation", "file"}
# Service form fields that are note-creation parameters; the oracle applies them too, so that an
# experiment with --form onset_threshold=0.6 moves the ceiling with the service.
NOTE_FIELDS = {"onset_threshold", "frame_threshold", "minimum_note_length_ms", "minimum_frequency", "maximum_frequency"}
# Differences below this count as ties: basic-pitch's ONNX output varies in the last digits between
# machines, and a note or two on a small set is not a difference worth a claim.
TIE = 0.005


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

    tempo: bool  # tempo, beats, downbeats and meter
    key: bool
    drums: bool
    per_stem: bool  # its stems are the Demucs ones (vocals, bass, other), so per-stem F1 means something


def capabilities(system: str) -> Capabilities:
    if system == BASELINE:
        return Capabilities(tempo=True, key=False, drums=False, per_stem=False)
    if system == ORACLE:
        return Capabilities(tempo=False, key=False, drums=True, per_stem=True)
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

        from deployments.transcriber import bundled_onnx_model

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


class Oracle:
    """Each part's isolated render through the engine the service runs on that stem, then the
    service's cleaning with that stem's rules: perfect separation, everything else as the service."""

    def __init__(self, requested: dict[str, float] | None = None) -> None:
        from deployments.transcriber import BasicPitchTranscriber, TranscriptionConfig
        from serve_app.domain.options import NoteParameters

        self.pitched = BasicPitchTranscriber(TranscriptionConfig())
        self.requested = NoteParameters(**(requested or {}))
        self._drums: Any = None

    def _drum_engine(self) -> Any:
        if self._drums is None:
            from deployments.drums import DrumTranscriber

            self._drums = DrumTranscriber()
        return self._drums

    def run(self, piece: RenderedPiece) -> Transcript:
        import soundfile

        from serve_app.domain.cleaning import clean
        from serve_app.domain.options import MidiOptions, preset_for

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


# --- scoring one piece -------------------------------------------------------------------------------


def _prf(value: scoring.PRF | None) -> dict[str, Any] | None:
    return None if value is None else asdict(value)


def score_piece(truth: GroundTruth, transcript: Transcript, caps: Capabilities) -> dict[str, Any]:
    """Every metric for one piece; None where the system does not claim it or the piece lacks it."""
    pitched = [n for stem, notes in transcript.notes.items() if stem != DRUMS for n in notes]
    reference = truth.pitched_notes()
    result: dict[str, Any] = {
        "seconds": round(transcript.seconds, 3),
        "error": transcript.error,
        "job_id": transcript.job_id,
        "n_est_pitched": len(pitched),
        "notes": _prf(scoring.note_prf(reference, pitched)),
        "notes_offsets": _prf(scoring.note_prf(reference, pitched, with_offsets=True)),
        "stems": None,
        "tempo": None,
        "beat_f1": None,
        "downbeat_f1": None,
        "meter": None,
        "key": None,
        "drums": None,
    }
    if caps.per_stem:
        result["stems"] = {
            stem: _prf(scoring.note_prf(truth.stem_notes(stem), transcript.notes.get(stem, [])))
            for stem in PITCHED_STEMS
        }
    if caps.tempo:
        result["tempo"] = {
            "ref": truth.tempo_bpm,
            "est": transcript.tempo_bpm,
            "correct": scoring.tempo_correct(truth.tempo_bpm, transcript.tempo_bpm),
            "correct_strict": scoring.tempo_correct(truth.tempo_bpm, transcript.tempo_bpm, factors=(1.0,)),
            "error": scoring.tempo_error(truth.tempo_bpm, transcript.tempo_bpm),
        }
        result["beat_f1"] = scoring.beat_f1(truth.beats, transcript.beats)
        result["downbeat_f1"] = scoring.beat_f1(truth.downbeats, transcript.downbeats)
        result["meter"] = {
            "ref": truth.time_signature,
            "est": transcript.time_signature,
            "correct": scoring.meter_correct(truth.time_signature, transcript.time_signature),
        }
    if caps.key and truth.key is not None:
        key = scoring.key_score(truth.key, transcript.key)
        assert key is not None
        result["key"] = {"ref": truth.key, "est": transcript.key, "exact": key.exact, "weighted": key.weighted}
    if caps.drums and truth.drum_notes():
        per_class = scoring.drum_prf(truth.drum_notes(), transcript.notes.get(DRUMS, []))
        result["drums"] = {cls: _prf(v) for cls, v in per_class.items()}
    return result


# --- aggregation ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    get: Callable[[dict[str, Any]], float | None]
    percent: bool = False


def _f1(path: str, *keys: str) -> Callable[[dict[str, Any]], float | None]:
    def get(score: dict[str, Any]) -> float | None:
        value: Any = score.get(path)
        for key in keys:
            value = None if value is None else value.get(key)
        return None if value is None else float(value["f1"])

    return get


def _flag(path: str, key: str) -> Callable[[dict[str, Any]], float | None]:
    def get(score: dict[str, Any]) -> float | None:
        value = score.get(path)
        return None if value is None else float(bool(value[key]))

    return get


def _plain(path: str, key: str | None = None) -> Callable[[dict[str, Any]], float | None]:
    def get(score: dict[str, Any]) -> float | None:
        value = score.get(path)
        if value is not None and key is not None:
            value = value[key]
        return None if value is None else float(value)

    return get


METRICS: tuple[Metric, ...] = (
    Metric("note_f1", "note F1", _f1("notes")),
    Metric("note_f1_offsets", "note F1 +offsets", _f1("notes_offsets")),
    Metric("f1_vocals", "vocals F1", _f1("stems", "vocals")),
    Metric("f1_bass", "bass F1", _f1("stems", "bass")),
    Metric("f1_other", "other F1", _f1("stems", "other")),
    Metric("tempo_acc", "tempo acc", _flag("tempo", "correct"), percent=True),
    Metric("tempo_acc_strict", "tempo acc 1x", _flag("tempo", "correct_strict"), percent=True),
    Metric("beat_f1", "beat F1", _plain("beat_f1")),
    Metric("downbeat_f1", "downbeat F1", _plain("downbeat_f1")),
    Metric("meter_acc", "meter acc", _flag("meter", "correct"), percent=True),
    Metric("key_acc", "key acc", _flag("key", "exact"), percent=True),
    Metric("key_weighted", "key score", _plain("key", "weighted")),
    Metric("drum_kick", "kick F1", _f1("drums", "kick")),
    Metric("drum_snare", "snare F1", _f1("drums", "snare")),
    Metric("drum_hihat_closed", "hh closed F1", _f1("drums", "hihat_closed")),
    Metric("drum_hihat_open", "hh open F1", _f1("drums", "hihat_open")),
    Metric("drum_hihat", "hi-hat F1", _f1("drums", scoring.HIHAT)),
)
METRIC = {m.key: m for m in METRICS}
SPLIT_METRICS = (
    "note_f1", "note_f1_offsets", "tempo_acc", "beat_f1", "key_acc", "drum_kick", "drum_snare", "drum_hihat",
)  # fmt: skip


def aggregate(scores: Sequence[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        metric.key: scoring.mean_defined(metric.get(s) for s in scores) for metric in METRICS
    }
    summary["pieces"] = len(scores)
    summary["errors"] = sum(1 for s in scores if s["error"])
    summary["seconds"] = round(sum(s["seconds"] for s in scores), 2)
    return summary


def _fmt(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.0f}%" if percent else f"{value:.3f}"


# --- comparisons and quality bars ---------------------------------------------------------------------


def _compare(a: float, b: float) -> str:
    return "ties" if abs(a - b) < TIE else ("beats" if a > b else "is below")


def vs_baseline(report: dict[str, Any]) -> list[str]:
    """One line per metric the baseline has: where each service mode beats basic-pitch and where not."""
    systems = report["systems"]
    if BASELINE not in systems:
        return []
    services = [s for s in systems if s.startswith(f"{SERVICE}/")]
    base = systems[BASELINE]["all"]
    lines = []
    for key in ("note_f1", "note_f1_offsets", "tempo_acc", "tempo_acc_strict", "beat_f1", "downbeat_f1", "meter_acc"):
        metric = METRIC[key]
        if base[key] is None:
            continue
        parts = []
        for name in services:
            value = systems[name]["all"][key]
            if value is None:
                parts.append(f"{name} n/a")
                continue
            delta = value - base[key]
            scale, unit = (100, " pt") if metric.percent else (1, "")
            parts.append(
                f"{name} {_compare(value, base[key])} it ({_fmt(value, metric.percent)} vs "
                f"{_fmt(base[key], metric.percent)}, {scale * delta:+.3g}{unit})"
            )
        if parts:
            lines.append(f"{metric.label}: " + "; ".join(parts))
    # Per piece, on the metric the presets are chosen by.
    for name in services:
        wins = ties = losses = 0
        below = []
        for piece, row in report["pieces"].items():
            b, s = METRIC["note_f1"].get(row["systems"].get(BASELINE, {})), None
            if name in row["systems"]:
                s = METRIC["note_f1"].get(row["systems"][name])
            if b is None or s is None:
                continue
            verdict = _compare(s, b)
            wins += verdict == "beats"
            ties += verdict == "ties"
            losses += verdict == "is below"
            if verdict == "is below":
                below.append(f"{piece} ({s:.3f} vs {b:.3f})")
        lines.append(
            f"note F1 per piece, {name}: beats basic-pitch on {wins}, ties on {ties}, is below on {losses}"
            + (f": {', '.join(below)}" if below else "")
        )
    if services:
        lines.append("key and drums: basic-pitch reports neither, so the service has no baseline to beat there")
    return lines


def quality_bars(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's bars, reported (never enforced): pass/fail with the numbers, or skipped if not run."""
    systems = report["systems"]
    bars: list[dict[str, Any]] = []

    def add(bar: str, system: str, value: float | None, threshold: float | None, percent: bool = False) -> None:
        passed = None if value is None or threshold is None else value >= threshold - 1e-9
        bars.append({
            "bar": bar, "system": system, "value": value, "threshold": threshold, "passed": passed,
            "shown": f"{_fmt(value, percent)} vs {_fmt(threshold, percent)}",
        })  # fmt: skip

    none = systems.get(f"{SERVICE}/none", {}).get("all")
    base = systems.get(BASELINE, {}).get("all")
    if none is not None and base is not None:
        add(
            "note F1 with separation=none >= basic-pitch's on the same audio",
            f"{SERVICE}/none", none["note_f1"], base["note_f1"],
        )  # fmt: skip
    for name, data in systems.items():
        if not name.startswith(f"{SERVICE}/"):
            continue
        add("tempo within 4 % (or x2, x3) on >= 90 % of pieces", name, data["all"]["tempo_acc"], 0.9, percent=True)
        add("key right on >= 80 % of pieces", name, data["all"]["key_acc"], 0.8, percent=True)
    if ORACLE in systems:
        for key, label in (("drum_kick", "kick"), ("drum_snare", "snare"), ("drum_hihat", "hi-hat")):
            add(f"drum onset F1 >= 0.85 on rendered drum stems: {label}", ORACLE, systems[ORACLE]["all"][key], 0.85)
    return bars


# --- the report ----------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = "no GPU"
    if shutil.which("nvidia-smi"):
        found = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
        if found.returncode == 0 and found.stdout.strip():
            gpu = "; ".join(found.stdout.strip().splitlines())
    return f"{cpu}, {os.cpu_count()} cores, {gpu}"


def git_commit() -> str:
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

        head, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(report: dict[str, Any]) -> str:
    head = report["header"]
    systems = report["systems"]
    lines = [
        "# stemscribe evaluation",
        "",
        f"{head['date']} · {head['machine']} · commit {head['commit']}",
        "",
        f"Evaluation set {head['evalset']} ({head['subset']}: {head['pieces']} pieces), service "
        f"{head['service_url'] or 'not run'}, separations {', '.join(head['separations']) or '-'}"
        + (f", form {head['form']}" if head["form"] else "") + ".",
        "",
        "Note F1: onsets within 50 ms and pitch, all pitched stems pooled; +offsets: ends too (20 % / 50 ms). "
        "Per piece, then the mean over pieces; n/a: the system does not produce it (see the notes below).",
        "",
        "## All pieces",
        "",
    ]
    header = ["system", "pieces", *[m.label for m in METRICS], "errors", "seconds"]
    rows = []
    for name, data in systems.items():
        agg = data["all"]
        rows.append([name, str(agg["pieces"]), *[_fmt(agg[m.key], m.percent) for m in METRICS],
                     str(agg["errors"]), f"{agg['seconds']:.1f}"])  # fmt: skip
    lines += _table(header, rows)
    lines += ["", "## By split (presets may be tuned on `tune`; `test` is the held-out half)", ""]
    rows = []
    for name, data in systems.items():
        for split in ("tune", "test"):
            agg = data.get(split)
            if agg and agg["pieces"]:
                cells = [_fmt(agg[k], METRIC[k].percent) for k in SPLIT_METRICS]
                rows.append([name, split, str(agg["pieces"]), *cells])
    lines += _table(["system", "split", "pieces", *[METRIC[k].label for k in SPLIT_METRICS]], rows)
    lines += ["", "## Against the baseline (basic-pitch on the same audio)", ""]
    lines += [f"- {line}" for line in report["vs_baseline"]] or ["- no baseline or no service run"]
    lines += ["", "## Quality bars (reported, not enforced)", ""]
    rows = [[b["bar"], b["system"], b["shown"], {True: "pass", False: "FAIL", None: "n/a"}[b["passed"]]]
            for b in report["quality_bars"]]  # fmt: skip
    lines += _table(["bar", "system", "value vs threshold", "result"], rows)
    names = list(systems)
    lines += ["", "## Per piece: note F1 (no offsets)", ""]
    rows = []
    for piece, row in report["pieces"].items():
        cells = []
        for name in names:
            score = row["systems"].get(name)
            if not score:
                cells.append("n/a")
            elif score["error"]:
                cells.append("error")
            elif score["notes"] is None:
                # Nothing pitched to find (drums alone): what was found anyway is all false.
                cells.append(f"n/a ({score['n_est_pitched']} false notes)" if score["n_est_pitched"] else "n/a")
            else:
                cells.append(_fmt(METRIC["note_f1"].get(score)))
        rows.append([piece, row["truth"]["split"], *cells])
    lines += _table(["piece", "split", *names], rows)
    services = [n for n in names if n.startswith(f"{SERVICE}/")]
    if services:
        lines += ["", "## Per piece: tempo, meter and key found by the service", ""]
        rows = []
        for piece, row in report["pieces"].items():
            truth = row["truth"]
            cells = [f"{truth['tempo_bpm']:g} · {truth['time_signature']} · {truth['key'] or '-'}"]
            for name in services:
                score = row["systems"].get(name)
                if not score or score["error"] or score["tempo"] is None:
                    cells.append("error" if score and score["error"] else "n/a")
                    continue
                tempo, key = score["tempo"], score["key"]
                est = tempo["est"]
                cell = f"{est:.1f}" if est is not None else "none"
                cell += " ✓" if tempo["correct"] else " ✗"
                cell += f" · {score['meter']['est'] or 'none'}"
                if key is not None:
                    cell += f" · {key['est'] or 'none'} {'✓' if key['exact'] else '✗'}"
                cells.append(cell)
            rows.append([piece, *cells])
        lines += _table(["piece", "truth: tempo · meter · key", *services], rows)
    errors = [
        (p, n, s["error"]) for p, row in report["pieces"].items() for n, s in row["systems"].items() if s["error"]
    ]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {p}, {n}: {e}" for p, n, e in errors]
    lines += [
        "",
        "## Notes",
        "",
        "- baseline: `basic_pitch.inference.predict` with its defaults on the mix; its MIDI is always 120 BPM 4/4,"
        " scored as such (tempo, beats from 0 s, downbeats, meter); no key, no drums.",
        "- oracle: each instrument's isolated render through the service's own engines (basic-pitch with the"
        " stem's preset and cleaning, the drum transcriber): the ceiling for perfect separation."
        " No tempo/beat/key analysis of its own.",
        "- Per-stem F1 only where a system's stems are vocals/bass/other (oracle, separation=demucs);"
        " drum F1 only where it transcribes drums (hpss, demucs, oracle). hi-hat = closed and open together.",
        "- Tempo right: within 4 % of the truth or of 2x, 3x, 1/2x, 1/3x it (`tempo acc 1x`: 1x only)."
        " Beats: mir_eval F-measure, 70 ms, no 5 s trim (the pieces are 10-20 s long).",
    ]
    return "\n".join(lines) + "\n"


# --- the run -------------------------------------------------------------------------------------------


@dataclass
class Options:
    subset: str = "full"
    url: str | None = None
    api_key: str | None = None
    separations: tuple[str, ...] = ("none", "hpss")
    form: dict[str, str] = field(default_factory=dict)
    out: Path = DEFAULT_OUT
    cache: Path = DEFAULT_CACHE
    baseline: bool = True
    oracle: bool = True
    demucs_model: str = "htdemucs"
    demucs_model_dir: Path | None = None
    job_timeout: float = 1800.0


@contextlib.contextmanager
def _service_url(options: Options) -> Iterator[str | None]:
    if not options.separations:
        yield None
    elif options.url:
        yield options.url.rstrip("/")
    else:
        from benchmarks.local_service import local_service

        with tempfile.TemporaryDirectory(prefix="stemscribe-eval-") as work:
            if "demucs" in options.separations:
                model, model_dir = options.demucs_model, options.demucs_model_dir
            else:
                # none/hpss need no weights; a small random model keeps the service healthy and quick.
                from deployments.demucs_models import DEFAULT_TEST_MODEL, write_random_htdemucs

                model, model_dir = DEFAULT_TEST_MODEL, Path(work) / "models"
                write_random_htdemucs(model_dir)
            settings: dict[str, Any] = {"data_dir": str(Path(work) / "data"), "demucs_model": model}
            if model_dir is not None:
                settings["demucs_model_dir"] = str(model_dir)
            with local_service(settings) as url:
                yield url


def run_evaluation(options: Options) -> dict[str, Any]:
    """Render the set, run every system on every piece, score; the report as a JSON-able dict."""
    bad = RESERVED_FORM & set(options.form)
    if bad:
        raise ValueError(f"--form cannot set {sorted(bad)}: the harness sets them per run")
    unknown = set(options.separations) - set(SEPARATIONS)
    if unknown:
        raise ValueError(f"unknown separations {sorted(unknown)}; choose from {SEPARATIONS}")
    started = time.monotonic()
    pieces = build(select(options.subset), options.cache)
    logger.info("evaluation set ready: %d pieces (%.1f s)", len(pieces), time.monotonic() - started)
    transcripts: dict[str, dict[str, Transcript]] = {}

    with _service_url(options) as url:
        if url is not None:
            client = ServiceClient(url, options.api_key, options.job_timeout)
            try:
                for separation in options.separations:
                    name = f"{SERVICE}/{separation}"
                    transcripts[name] = {}
                    for piece in pieces:
                        try:
                            form = {"separation": separation, **options.form}
                            transcripts[name][piece.spec.name] = client.run(piece.mix, form)
                        except (RuntimeError, TimeoutError, ValueError, httpx.HTTPError) as exc:
                            # A failed job scores as an empty answer (that is what the user got), and is listed.
                            logger.error("%s on %s: %s", name, piece.spec.name, exc)
                            transcripts[name][piece.spec.name] = Transcript(error=str(exc))
                        logger.info("%s %s: %.1f s", name, piece.spec.name, transcripts[name][piece.spec.name].seconds)
            finally:
                client.close()
    # In-process systems after the service is down, so they do not compete with it for the CPU.
    if options.baseline:
        baseline = Baseline()
        transcripts[BASELINE] = {p.spec.name: baseline.run(p) for p in pieces}
        logger.info("baseline done (%.1f s)", sum(t.seconds for t in transcripts[BASELINE].values()))
    if options.oracle:
        requested = {k: float(v) for k, v in options.form.items() if k in NOTE_FIELDS}
        oracle = Oracle(requested)
        transcripts[ORACLE] = {p.spec.name: oracle.run(p) for p in pieces}
        logger.info("oracle done (%.1f s)", sum(t.seconds for t in transcripts[ORACLE].values()))

    order = [BASELINE, *[f"{SERVICE}/{s}" for s in options.separations], ORACLE]
    names = [n for n in order if n in transcripts]
    report: dict[str, Any] = {
        "header": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "commit": git_commit(),
            "evalset": f"{EVALSET_VERSION} ({cache_folder(options.cache).name})",
            "subset": options.subset,
            "pieces": len(pieces),
            "service_url": (options.url or "local") if options.separations else None,
            "separations": list(options.separations),
            "form": options.form,
        },
        "systems": {},
        "pieces": {},
    }
    for piece in pieces:
        truth = piece.truth
        report["pieces"][piece.spec.name] = {
            "truth": {
                "split": truth.split, "subset": truth.subset, "tempo_bpm": truth.tempo_bpm,
                "time_signature": truth.time_signature, "key": truth.key, "duration": truth.duration,
                "instruments": describe(piece.spec),
                "notes": {role: len(notes) for role, notes in truth.notes.items()},
            },
            "systems": {
                name: score_piece(truth, transcripts[name][piece.spec.name], capabilities(name)) for name in names
            },
        }  # fmt: skip
    for name in names:
        by_split: dict[str, list[dict[str, Any]]] = {"all": [], "tune": [], "test": []}
        for piece in pieces:
            score = report["pieces"][piece.spec.name]["systems"][name]
            by_split["all"].append(score)
            by_split[piece.spec.split].append(score)
        report["systems"][name] = {split: aggregate(scores) for split, scores in by_split.items()}
    report["vs_baseline"] = vs_baseline(report)
    report["quality_bars"] = quality_bars(report)
    report["header"]["wall_seconds"] = round(time.monotonic() - started, 1)
    return report


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "evaluation.md", out / "evaluation.json"
    md.write_text(markdown(report))
    js.write_text(json.dumps(report, indent=1))
    return md, js


def _form_field(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--form wants key=value, got {text!r}")
    return key.strip(), value.strip()


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subset", choices=("full", "ci"), default="full", help="the whole set or the 3 CI pieces")
    parser.add_argument("--url", help="a running service; without it one is started on this machine")
    parser.add_argument("--api-key", default=os.environ.get("STEMSCRIBE_KEY"), help="X-API-Key ($STEMSCRIBE_KEY)")
    parser.add_argument("--separations", default="none,hpss", help="comma-separated: none,hpss,demucs ('' = none)")
    parser.add_argument("--form", action="append", type=_form_field, default=[], metavar="KEY=VALUE",
                        help="extra form field for every job, e.g. clean_ghost_notes=false (repeatable)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where renders are kept")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-oracle", action="store_true")
    parser.add_argument("--demucs-model", default="htdemucs", help="with a local service and demucs")
    parser.add_argument("--demucs-model-dir", type=Path, help="folder with the model's weights (offline)")
    parser.add_argument("--job-timeout", type=float, default=1800.0, help="seconds per job")
    args = parser.parse_args(argv)
    return Options(
        subset=args.subset,
        url=args.url,
        api_key=args.api_key,
        separations=tuple(s.strip() for s in args.separations.split(",") if s.strip()),
        form=dict(args.form),
        out=args.out,
        cache=args.cache,
        baseline=not args.no_baseline,
        oracle=not args.no_oracle,
        demucs_model=args.demucs_model,
        demucs_model_dir=args.demucs_model_dir,
        job_timeout=args.job_timeout,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll drowns the progress
    options = parse_args(argv)
    report = run_evaluation(options)
    md, js = write_report(report, options.out)
    sys.stdout.write(markdown(report))
    logger.info("wrote %s and %s", md, js)
    return report


if __name__ == "__main__":
    main()
