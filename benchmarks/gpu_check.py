"""The separation and transcription engines on a GPU: speed, memory and agreement with the stock paths.

Sized for a lent machine with one NVIDIA GPU (H100/H200) to finish in under 8 minutes, with nothing of
ours installed there (no Ray, no registry): only torch, numpy, scipy, numba, onnx and onnxruntime (CPU),
plus the wheels `benchmarks/gpu_check.sh prepare` puts in `.gpu/` beside the 3-minute test piece.

    bash benchmarks/gpu_check.sh prepare     # here: .gpu/ (wheels + piece.flac), prints the device call
    # then the device tool: run(command="bash benchmarks/gpu_check.sh run", carry=[".gpu"], timeout_s=540)

`gpu_check.sh run` installs the wheels into /tmp/site and runs this script with a timeout. Without a GPU
it runs the same checks on the CPU (the fallback, clearly marked), e.g. a short smoke run here:

    .venv/bin/python benchmarks/gpu_check.py --piece .gpu/piece.flac --seconds 20 --songs 1 --out /tmp/gpucheck

What it measures, on a random-weight HTDemucs of the pretrained `htdemucs` architecture (41.5 M
parameters: the compute of the real one; its stems are noise, so SDR here means numerical agreement
between implementations, not separation quality) and basic-pitch's bundled ONNX model:

1. Separation: Demucs' own `apply_model` (batch 1, fp32, as the `demucs` CLI runs) against our
   `DemucsSeparator` (batched, autocast as configured by default) and the same engine in fp32; seconds,
   real-time factor, peak GPU memory, batch size, and SDR per stem against the stock output.
2. Transcription of three 3-minute signals (the mix in mono, its left and its right channel):
   onnxruntime on the CPU (all cores) against the GPU backend (the torch port); seconds and note-onset
   F1 of the GPU notes against the CPU notes.
3. Two processes sharing the card as two replicas would (each capped at half of it): songs per minute.
4. gpu_check.md and gpu_check.json in --out, rewritten after every section (a timeout keeps what was done).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file (benchmarks/gpu_check.py), not only as a module
    sys.path.insert(0, str(ROOT))

from music.engines.demucs_models import write_random_htdemucs  # noqa: E402
from music.engines.separator import DemucsSeparator, SeparationConfig  # noqa: E402
from music.engines.threads import available_cpus, use_threads  # noqa: E402
from music.engines.transcriber import BasicPitchTranscriber, TranscriptionConfig  # noqa: E402
from music.notes import Note  # noqa: E402
from music.presets import NoteParameters, preset_for  # noqa: E402

logger = logging.getLogger("gpu_check")
T = TypeVar("T")

MODEL = "htdemucs"
TRANSCRIBE_RATE = 22050  # basic-pitch's AUDIO_SAMPLE_RATE
PITCHED = ("vocals", "bass", "other")
REPLICAS = 2
GB = 2**30
# Targets printed beside the numbers (for the 3-minute piece on the GPU).
TARGET_SEPARATE_S = 0.5
TARGET_TRANSCRIBE_S = 0.2
TARGET_SONGS_PER_MIN = 60.0
TARGET_PEAK_GB = 4.0
TARGET_F1 = 0.99
TARGET_PIECE_S = 180.0


@dataclass(frozen=True)
class Clip:
    """What `DemucsSeparator.separate` reads of a DecodedAudio (serve_app.domain.audio needs PyAV)."""

    samples: np.ndarray  # float32 (channels, frames)
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.samples.shape[1] / self.sample_rate

    def head(self, seconds: float) -> Clip:
        return Clip(np.ascontiguousarray(self.samples[:, : int(seconds * self.sample_rate)]), self.sample_rate)


@dataclass(frozen=True)
class Timed:
    seconds: float
    peak_allocated_gb: float | None  # None off CUDA
    peak_reserved_gb: float | None


@dataclass(frozen=True)
class Row:
    section: str
    what: str
    value: str
    target: str = ""
    met: bool | None = None  # None: no verdict (no target, or the CPU fallback / a shortened piece)


@dataclass
class Report:
    out: Path
    device: str
    data: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)

    def add(self, section: str, what: str, value: str, target: str = "", met: bool | None = None) -> None:
        self.rows.append(Row(section, what, value, target, met))

    def save(self) -> None:
        """Write gpu_check.json and gpu_check.md now, so a timeout still leaves the finished sections."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        (self.out / "gpu_check.md").write_text(self.markdown())

    def markdown(self) -> str:
        machine = self.data.get("machine", {})
        title = "GPU check" if self.device == "cuda" else "GPU check: CPU FALLBACK (no CUDA device; not GPU numbers)"
        lines = [f"# {title}", "", f"Machine: {machine.get('summary', '?')}", ""]
        lines += ["| section | what | value | target | |", "| --- | --- | --- | --- | --- |"]
        for row in self.rows:
            verdict = {True: "met", False: "MISSED", None: ""}[row.met]
            lines.append(f"| {row.section} | {row.what} | {row.value} | {row.target} | {verdict} |")
        notes = self.data.get("notes", [])
        if notes:
            lines += ["", *[f"- {note}" for note in notes]]
        return "\n".join(lines) + "\n"

    def note(self, text: str) -> None:
        self.data.setdefault("notes", []).append(text)
        logger.info("note: %s", text)


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


# --- measuring ---------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _fresh_peaks(device: str) -> None:
    """Forget earlier peaks and cached blocks, so the next figures are that run's alone."""
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peaks(device: str) -> tuple[float | None, float | None]:
    if device != "cuda":
        return None, None
    return torch.cuda.max_memory_allocated() / GB, torch.cuda.max_memory_reserved() / GB


def timed(fn: Callable[[], T], device: str) -> tuple[T, Timed]:
    """Run `fn` once with Python's `random` at seed 0 (the same random shift for every separation)."""
    _fresh_peaks(device)
    random.seed(0)
    started = time.perf_counter()
    result = fn()
    _sync(device)
    seconds = time.perf_counter() - started
    return result, Timed(seconds, *_peaks(device))


def sdr_db(reference: np.ndarray, estimate: np.ndarray) -> float | str:
    """10 log10(|ref|^2 / |ref - est|^2), to 0.1 dB; "inf" (JSON has no infinity) when they are equal."""
    error = float(np.sum((reference.astype(np.float64) - estimate) ** 2))
    power = float(np.sum(reference.astype(np.float64) ** 2))
    return "inf" if error == 0 else round(10 * float(np.log10(power / error)), 1)


def _gb(value: float | None) -> str:
    return "n/a (CPU)" if value is None else f"{value:.2f} GB"


# --- the machine and the piece -------------------------------------------------------------------------


def machine_info(device: str) -> dict[str, Any]:
    import onnxruntime

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "cpus": available_cpus(),
        "device": device,
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info |= {
            "gpu": props.name,
            "gpu_memory_gb": round(props.total_memory / GB, 1),
            "cudnn": torch.backends.cudnn.version(),
            "bf16": torch.cuda.is_bf16_supported(),
            # Stock "fp32" runs with PyTorch's defaults, where cuDNN convolutions may use TF32.
            "fp32_precision": _fp32_precision(),
            "driver": _driver_version(),
        }
        info["summary"] = (
            f"{props.name} ({info['gpu_memory_gb']} GB, driver {info['driver']}), torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}, cuDNN {info['cudnn']}, {info['cpus']} CPUs, Python {info['python']}"
        )
    else:
        info["summary"] = (
            f"CPU FALLBACK: {platform.processor() or platform.machine()}, {info['cpus']} CPUs, "
            f"torch {torch.__version__}, Python {info['python']}"
        )
    return info


def _fp32_precision() -> dict[str, str]:
    """What fp32 convolutions and matmuls run in (torch >= 2.9's API; the legacy flags before it)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return {"cudnn_conv": conv.fp32_precision, "cuda_matmul": torch.backends.cuda.matmul.fp32_precision}
    return {
        "cudnn_conv": "tf32" if torch.backends.cudnn.allow_tf32 else "ieee",
        "cuda_matmul": "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee",
    }


def _driver_version() -> str:
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
        return done.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


def load_piece(path: Path, seconds: float | None) -> Clip:
    import soundfile

    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    clip = Clip(np.ascontiguousarray(samples.T), int(rate))
    return clip.head(seconds) if seconds else clip


def to_transcriber_input(samples: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 at 22050 Hz, resampled as basic-pitch's librosa.load does (soxr_hq)."""
    import librosa

    mono = samples if samples.ndim == 1 else samples.mean(axis=0)
    return librosa.resample(mono.astype(np.float32), orig_sr=rate, target_sr=TRANSCRIBE_RATE).astype(np.float32)


@contextlib.contextmanager
def _quiet_imports() -> Iterator[None]:
    # basic-pitch's __init__ logs a warning for each runtime it lacks (TensorFlow, CoreML, TFLite).
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


# --- 1. separation -----------------------------------------------------------------------------------


def stock_separation(model: Any, clip: Clip, device: str) -> dict[str, np.ndarray]:  # a Demucs model
    """What `demucs` (its Separator) computes: apply_model at batch 1 in fp32, the mix on the host."""
    from demucs.apply import apply_model
    from demucs.audio import convert_audio

    wav = convert_audio(torch.from_numpy(clip.samples), clip.sample_rate, model.samplerate, model.audio_channels)
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    out = apply_model(model, ((wav - mean) / std)[None], shifts=1, split=True, overlap=0.25, device=device)
    out = out * std + mean
    channels, frames = clip.samples.shape
    stems = {}
    for name, stem in zip(model.sources, out[0], strict=True):
        back = convert_audio(stem.cpu(), model.samplerate, clip.sample_rate, channels).numpy()
        stems[name] = back[:, :frames]
    return stems


def _warm_clip(clip: Clip, device: str) -> Clip:
    # On CUDA the whole piece (every batch shape the timed run will see); on the CPU one segment's worth.
    return clip if device == "cuda" else clip.head(min(clip.seconds, 8.0))


def run_stock(folder: Path, clip: Clip, device: str) -> tuple[dict[str, np.ndarray], Timed]:
    from demucs.pretrained import get_model

    model = get_model(MODEL, repo=folder).eval().to(device)
    random.seed(0)
    stock_separation(model, _warm_clip(clip, device), device)
    return timed(lambda: stock_separation(model, clip, device), device)


def run_engine(config: SeparationConfig, clip: Clip, device: str) -> tuple[dict[str, np.ndarray], Timed, Settings]:
    engine = DemucsSeparator(config)
    engine.load()
    if engine.error:
        raise RuntimeError(engine.error)
    random.seed(0)
    engine.separate(_warm_clip(clip, device))  # type: ignore[arg-type]  # Clip has what DecodedAudio has
    stems, timing = timed(lambda: engine.separate(clip), device)  # type: ignore[arg-type]
    dtype = engine.autocast_dtype
    return stems, timing, Settings(engine.batch_size, "fp32" if dtype is None else str(dtype).removeprefix("torch."))


@dataclass(frozen=True)
class Settings:
    batch_size: int
    autocast: str


ENGINE_VARIANTS = (
    ("engine (default: batched, autocast auto)", "auto"),
    ("engine fp32 (batched, autocast none)", "none"),
)


def separation_section(report: Report, folder: Path, clip: Clip, device: str, verdicts: bool) -> None:
    section = "1 separation"
    report.note(f"separation: {clip.seconds:.0f} s of audio; warm-up pass first, then one timed pass each")
    reference, stock = run_stock(folder, clip, device)
    results: dict[str, Any] = {"stock_apply_model": _timing_dict(stock, clip, Settings(1, "fp32"))}
    report.add(section, "stock apply_model (batch 1, fp32)", _speed(stock, clip))
    if device == "cuda":
        report.add(section, "stock: peak GPU memory (allocated / reserved)", _memory(stock))
    for label, autocast in ENGINE_VARIANTS:
        if device != "cuda" and autocast == "none":
            report.note("engine fp32 skipped: on the CPU autocast auto already is fp32 (the same run as the default)")
            continue
        config = SeparationConfig.model_validate(
            {"model": MODEL, "model_dir": folder, "device": device, "autocast": autocast}
        )
        stems, timing, settings = run_engine(config, clip, device)
        sdr = {name: sdr_db(reference[name], stems[name]) for name in reference}
        results[f"engine_{autocast}"] = _timing_dict(timing, clip, settings) | {"sdr_db_vs_stock": sdr}
        _engine_rows(report, label, timing, settings, stock, clip, sdr, verdicts if autocast == "auto" else None)
    report.data["separation"] = results
    report.save()


def _engine_rows(
    report: Report,
    label: str,
    timing: Timed,
    settings: Settings,
    stock: Timed,
    clip: Clip,
    sdr: dict[str, float | str],
    verdicts: bool | None,  # None: no targets for this variant
) -> None:
    section = "1 separation"
    targeted, judged = verdicts is not None, bool(verdicts)
    speed_met = timing.seconds <= TARGET_SEPARATE_S if judged else None
    speed_target = f"<= {TARGET_SEPARATE_S} s for 3 min" if targeted else ""
    report.add(section, f"{label}, batch {settings.batch_size}, {settings.autocast}", _speed(timing, clip),
               speed_target, speed_met)  # fmt: skip
    report.add(section, f"{label}: speed-up over stock", f"{stock.seconds / timing.seconds:.2f}x")
    if timing.peak_reserved_gb is not None:
        memory_met = timing.peak_reserved_gb <= TARGET_PEAK_GB if judged else None
        memory_target = f"<= {TARGET_PEAK_GB:g} GB reserved" if targeted else ""
        report.add(section, f"{label}: peak GPU memory (allocated / reserved)", _memory(timing),
                   memory_target, memory_met)  # fmt: skip
    report.add(section, f"{label}: SDR vs stock per stem", ", ".join(f"{k} {v} dB" for k, v in sdr.items()))


def _timing_dict(timing: Timed, clip: Clip, settings: Settings) -> dict[str, Any]:
    return {
        "seconds": round(timing.seconds, 3),
        "real_time_factor": round(timing.seconds / clip.seconds, 4),
        "peak_allocated_gb": None if timing.peak_allocated_gb is None else round(timing.peak_allocated_gb, 3),
        "peak_reserved_gb": None if timing.peak_reserved_gb is None else round(timing.peak_reserved_gb, 3),
        "batch_size": settings.batch_size,
        "autocast": settings.autocast,
    }


def _speed(timing: Timed, clip: Clip) -> str:
    factor = timing.seconds / clip.seconds
    return f"{timing.seconds:.2f} s (RTF {factor:.4f}, {1 / factor:.1f}x real time)"


def _memory(timing: Timed) -> str:
    return f"{_gb(timing.peak_allocated_gb)} / {_gb(timing.peak_reserved_gb)}"


# --- 2. transcription --------------------------------------------------------------------------------


def cpu_transcriber(batch_windows: int) -> BasicPitchTranscriber:
    return BasicPitchTranscriber(TranscriptionConfig(device="cpu", threads=None, batch_windows=batch_windows))


def second_transcriber(device: str, batch_windows: int) -> BasicPitchTranscriber:
    """The GPU backend on CUDA. On the CPU fallback, the torch port on the CPU (swapped into a CPU
    engine), so the port's agreement with onnxruntime is still checked."""
    engine = BasicPitchTranscriber(
        TranscriptionConfig.model_validate({"device": device, "batch_windows": batch_windows})
    )
    if device != "cuda":
        from music.engines.basic_pitch_torch import BasicPitchTorch

        port = BasicPitchTorch.from_onnx(engine.model_path)
        engine._predict = port.predict  # a benchmark's shortcut: the engine has no CPU switch for the port
        engine.backend = "torch-cpu (port; CPU fallback)"  # type: ignore[assignment]
    return engine


def onset_f1(reference: Sequence[Note], estimate: Sequence[Note]) -> float:
    """mir_eval's note-onset F1 (50 ms, offsets ignored), pitches in Hz."""
    import mir_eval

    if not reference or not estimate:
        return 1.0 if not reference and not estimate else 0.0

    def arrays(notes: Sequence[Note]) -> tuple[np.ndarray, np.ndarray]:
        intervals = np.array([[n.start, n.end] for n in notes], dtype=np.float64)
        return intervals, mir_eval.util.midi_to_hz(np.array([n.pitch for n in notes], dtype=np.float64))

    (ri, rp), (ei, ep) = arrays(reference), arrays(estimate)
    _, _, f1, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ri, rp, ei, ep, onset_tolerance=0.05, offset_ratio=None
    )
    return float(f1)


def measure_transcriber(
    engine: BasicPitchTranscriber, signals: dict[str, np.ndarray], parameters: NoteParameters, device: str
) -> tuple[list[list[Note]], Timed, Timed]:
    """Warm up, then time the model alone (predict_many) and the whole call (transcribe_many)."""
    engine.transcribe_many([(next(iter(signals.values()))[: 5 * TRANSCRIBE_RATE], parameters)])
    audios = list(signals.values())
    _, model_only = timed(lambda: engine.predict_many(audios), device)
    notes, whole = timed(lambda: engine.transcribe_many([(a, parameters) for a in audios]), device)
    return notes, model_only, whole


def test_signals(clip: Clip) -> dict[str, np.ndarray]:
    """Three pitched "stems" of real music: the mix in mono, its left and its right channel."""
    samples = clip.samples if clip.samples.shape[0] > 1 else np.repeat(clip.samples, 2, axis=0)
    named = (("mix mono", samples.mean(axis=0)), ("left", samples[0]), ("right", samples[1]))
    return {name: to_transcriber_input(signal, clip.sample_rate) for name, signal in named}


def transcription_section(report: Report, clip: Clip, device: str, batch_windows: int, verdicts: bool) -> None:
    section = "2 transcription"
    signals = test_signals(clip)
    parameters = NoteParameters().over(preset_for("mix").notes)  # how the service fills a request
    results: dict[str, Any] = {"signals": list(signals), "seconds_each": round(clip.seconds, 1)}
    notes: dict[str, list[list[Note]]] = {}
    makers = {"cpu": lambda: cpu_transcriber(batch_windows), "gpu": lambda: second_transcriber(device, batch_windows)}
    for key, make in makers.items():
        engine = make()
        notes[key], model_only, whole = measure_transcriber(engine, signals, parameters, device)
        results[key] = {
            "backend": engine.backend,
            "threads": engine.threads,
            "batch_windows": batch_windows,
            "predict_many_s": round(model_only.seconds, 3),
            "transcribe_many_s": round(whole.seconds, 3),
            "peak_allocated_gb": model_only.peak_allocated_gb,
            "notes": [len(n) for n in notes[key]],
        }
        target = f"<= {TARGET_TRANSCRIBE_S} s for 3 x 3 min" if key == "gpu" else ""
        met = whole.seconds <= TARGET_TRANSCRIBE_S if verdicts and key == "gpu" else None
        label = f"{engine.backend} ({engine.threads} threads)" if key == "cpu" else engine.backend
        report.add(
            section, f"{label}: transcribe_many, 3 signals (model + notes)", f"{whole.seconds:.2f} s", target, met
        )
        report.add(section, f"{label}: predict_many (model only)", f"{model_only.seconds:.2f} s")
    pairs = list(zip(signals, notes["cpu"], notes["gpu"], strict=True))
    f1 = {name: round(onset_f1(ref, est), 4) for name, ref, est in pairs}
    results["onset_f1_gpu_vs_cpu"] = f1
    for name, ref, est in pairs:
        what = f"onset F1 ({name}): {len(est)} vs {len(ref)} notes"
        report.add(section, what, f"{f1[name]:.4f}", f">= {TARGET_F1}", f1[name] >= TARGET_F1)
    report.data["transcription"] = results
    report.save()


# --- 3. two processes sharing the card ---------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    """One "replica": load both engines, wait for the start file, process songs, write a JSON result."""
    device = args.device
    use_threads(max(1, available_cpus() // REPLICAS))
    clip = load_piece(args.piece, args.seconds)
    separator = DemucsSeparator(
        SeparationConfig(model=MODEL, model_dir=args.model_dir, device=device, gpu_memory_fraction=args.fraction)
    )
    separator.load()
    if separator.error:
        raise RuntimeError(separator.error)
    transcriber = BasicPitchTranscriber(
        TranscriptionConfig(device=device, threads=max(1, available_cpus() // REPLICAS))
    )
    one_song(separator, transcriber, clip.head(min(clip.seconds, 10.0)))  # warm-up
    _touch(args.ready)
    _wait_for(args.start, timeout=300)
    started = time.perf_counter()
    times: list[tuple[float, float]] = []
    while len(times) < args.songs and time.perf_counter() - started < args.budget_s:
        times.append(one_song(separator, transcriber, clip))
    seconds = time.perf_counter() - started
    allocated, reserved = _peaks(device)
    result = {
        "songs": len(times),
        "seconds": round(seconds, 3),
        "separate_s": [round(s, 3) for s, _ in times],
        "transcribe_s": [round(t, 3) for _, t in times],
        "peak_allocated_gb": allocated,
        "peak_reserved_gb": reserved,
        "batch_size": separator.batch_size,
        "transcriber_backend": transcriber.backend,
    }
    args.result.write_text(json.dumps(result))


def one_song(separator: DemucsSeparator, transcriber: BasicPitchTranscriber, clip: Clip) -> tuple[float, float]:
    """Separate, then transcribe the pitched stems together, with their presets: (seconds, seconds)."""
    started = time.perf_counter()
    stems = separator.separate(clip)  # type: ignore[arg-type]
    _sync(separator.device)
    separated = time.perf_counter()
    items = [
        (to_transcriber_input(stems[s], clip.sample_rate), NoteParameters().over(preset_for(s).notes)) for s in PITCHED
    ]
    transcriber.transcribe_many(items)
    return separated - started, time.perf_counter() - separated


def _touch(path: Path) -> None:
    path.with_suffix(".tmp").write_text("1")
    path.with_suffix(".tmp").replace(path)


def _wait_for(path: Path, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > end:
            raise TimeoutError(f"no {path} after {timeout:g} s")
        time.sleep(0.005)


def replicas_section(
    report: Report, args: argparse.Namespace, folder: Path, deadline: Deadline, verdicts: bool
) -> None:
    left = deadline.left()
    if left < 90:
        report.note(f"two-process run skipped: {left:.0f} s left of the deadline")
        report.save()
        return
    budget = min(args.replica_seconds, left - 75)  # start-up, warm-up and shut-down fit in the rest
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        procs = [_spawn(args, folder, work, i, budget) for i in range(REPLICAS)]
        try:
            results = _drive(procs, work, ready_timeout=min(200.0, left - budget - 20), run_timeout=budget + 60)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    wall = max(r["seconds"] for r in results)
    songs = sum(r["songs"] for r in results)
    per_minute = 60 * songs / wall
    report.data["replicas"] = {
        "workers": results,
        "songs": songs,
        "wall_s": round(wall, 3),
        "songs_per_minute": round(per_minute, 2),
    }
    _replica_rows(report, results, songs, wall, per_minute, args.piece_seconds, verdicts)
    report.save()


def _replica_rows(
    report: Report,
    results: list[dict[str, Any]],
    songs: int,
    wall: float,
    per_minute: float,
    piece_seconds: float,
    verdicts: bool,
) -> None:
    section = "3 two processes"
    what = f"songs per minute ({songs} songs of {piece_seconds:.0f} s in {wall:.1f} s)"
    met = per_minute >= TARGET_SONGS_PER_MIN if verdicts else None
    report.add(section, what, f"{per_minute:.1f}", f">= {TARGET_SONGS_PER_MIN:g}", met)
    for i, r in enumerate(results):
        separate = np.mean(r["separate_s"]) if r["separate_s"] else float("nan")
        transcribe = np.mean(r["transcribe_s"]) if r["transcribe_s"] else float("nan")
        what = f"process {i}: {r['songs']} songs, batch {r['batch_size']}, {r['transcriber_backend']}"
        report.add(
            section, what, f"{r['seconds']:.1f} s (a song: separate {separate:.2f} s + transcribe {transcribe:.2f} s)"
        )
        reserved = r["peak_reserved_gb"]
        if reserved is not None:
            memory = f"{_gb(r['peak_allocated_gb'])} / {_gb(reserved)}"
            met = reserved <= TARGET_PEAK_GB if verdicts else None
            what = f"process {i}: peak GPU memory (allocated / reserved), both engines"
            report.add(section, what, memory, f"<= {TARGET_PEAK_GB:g} GB", met)


def _spawn(args: argparse.Namespace, folder: Path, work: Path, index: int, budget: float) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, str(Path(__file__).resolve()), "--worker", "--device", args.device,
        "--piece", str(args.piece), "--model-dir", str(folder), "--songs", str(args.songs),
        "--fraction", str(1.0 / REPLICAS), "--budget-s", f"{budget:.0f}",
        "--ready", str(work / f"ready-{index}"), "--start", str(work / "start"),
        "--result", str(work / f"result-{index}.json"),
    ]  # fmt: skip
    if args.seconds:
        command += ["--seconds", str(args.seconds)]
    env = os.environ | {"GPU_CHECK_WORKER": str(index)}
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)


def _drive(
    procs: list[subprocess.Popen[bytes]], work: Path, ready_timeout: float, run_timeout: float
) -> list[dict[str, Any]]:
    """Wait until every worker is loaded, start them together, collect their results."""
    end = time.monotonic() + ready_timeout
    while not all((work / f"ready-{i}").exists() for i in range(len(procs))):
        failed = [i for i, p in enumerate(procs) if p.poll() is not None]
        if failed:
            raise RuntimeError(f"worker {failed[0]} exited with {procs[failed[0]].returncode} while loading")
        if time.monotonic() > end:
            raise TimeoutError(f"workers not ready after {ready_timeout:.0f} s")
        time.sleep(0.05)
    logger.info("both workers loaded and warmed up; starting them together")
    _touch(work / "start")
    for i, proc in enumerate(procs):
        if proc.wait(timeout=run_timeout) != 0:
            raise RuntimeError(f"worker {i} exited with {proc.returncode}")
    return [json.loads((work / f"result-{i}.json").read_text()) for i in range(len(procs))]


# --- the command ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--piece", type=Path, default=ROOT / ".gpu" / "piece.flac")
    parser.add_argument("--out", type=Path, default=Path("/tmp"))
    parser.add_argument("--seconds", type=float, default=None, help="cut the piece (quick CPU runs)")
    parser.add_argument("--songs", type=int, default=10, help="songs each of the two processes runs (~60 s on a GPU)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch-windows", type=int, default=TranscriptionConfig().batch_windows)
    parser.add_argument("--deadline-s", type=float, default=420.0, help="skip what would not finish by then")
    parser.add_argument("--replica-seconds", type=float, default=120.0, help="most seconds each process runs songs")
    parser.add_argument("--small-model", action="store_true", help="a small random HTDemucs: a smoke test only")
    parser.add_argument("--skip", nargs="*", default=[], choices=("separation", "transcription", "replicas"))
    # The two-process run starts this script again as workers.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--fraction", type=float, default=0.5, help=argparse.SUPPRESS)
    parser.add_argument("--budget-s", type=float, default=120.0, help=argparse.SUPPRESS)
    parser.add_argument("--ready", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    name = f"gpu_check[w{os.environ['GPU_CHECK_WORKER']}]" if args.worker else "gpu_check"
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")
    with _quiet_imports():
        import basic_pitch  # noqa: F401  # its import-time warnings, once and silently
    if args.worker:
        worker(args)
        return 0
    deadline = Deadline(args.deadline_s)
    use_threads(None)  # every core, as a replica would
    report = Report(args.out, args.device)
    report.data["machine"] = machine_info(args.device)
    logger.info("%s", report.data["machine"]["summary"])
    clip = load_piece(args.piece, args.seconds)
    args.piece_seconds = clip.seconds
    # Verdicts only where the targets apply: the GPU and the whole 3-minute piece.
    verdicts = args.device == "cuda" and clip.seconds >= TARGET_PIECE_S - 1
    report.data["piece"] = {"path": str(args.piece), "seconds": round(clip.seconds, 2), "sample_rate": clip.sample_rate}
    if args.device != "cuda":
        report.note(
            "CPU FALLBACK: no CUDA device, all numbers are from the CPU (no GPU memory); the targets are the GPU's"
        )
    if not verdicts:
        report.note("no verdicts: the targets are for the 3-minute piece on the GPU")
    if args.device == "cuda":
        precision = report.data["machine"]["fp32_precision"]
        report.note(f"fp32 runs use PyTorch's default precision here: cuDNN convolutions {precision['cudnn_conv']}, "
                    f"CUDA matmuls {precision['cuda_matmul']}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="gpu-check-model-") as tmp:
        folder = Path(tmp)
        write_random_htdemucs(folder, name=MODEL, full_size=not args.small_model)
        if args.small_model:
            report.note("SMALL random model (--small-model): a smoke test, the separation numbers mean nothing")
        sections: list[tuple[str, Callable[[], None]]] = [
            ("separation", lambda: separation_section(report, folder, clip, args.device, verdicts)),
            ("transcription", lambda: transcription_section(report, clip, args.device, args.batch_windows, verdicts)),
            ("replicas", lambda: replicas_section(report, args, folder, deadline, verdicts)),
        ]
        failures = 0
        for key, run in sections:
            if key in args.skip:
                continue
            if deadline.left() < 30:
                report.note(f"{key} skipped: the deadline is near")
                continue
            logger.info("--- %s (%.0f s left)", key, deadline.left())
            try:
                run()
            except Exception as error:  # one section's failure should not lose the others
                failures += 1
                logger.exception("%s failed", key)
                report.note(f"{key} FAILED: {type(error).__name__}: {error}")
            _fresh_peaks(args.device)
    report.save()
    print("\n" + report.markdown(), flush=True)
    print(f"wrote {args.out / 'gpu_check.md'} and {args.out / 'gpu_check.json'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
