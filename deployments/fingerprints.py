"""What a model replica's results depend on, for the result cache's key (`serve_app.domain.result_key`):
the weights it runs (hashes of their files), the settings that change its output, and the versions of
the libraries that compute it. Device, batch sizes, threads and mixed precision are left out: they
change results by float rounding only (Demucs' bf16 stays ~40 dB from fp32), not what a user hears.

A new engine, model file or result-changing setting of a replica belongs here, or the cache would hand
out results of the old one."""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

import yaml

from music.engines.downbeats import MODEL_PATH as DOWNBEAT_MODEL_PATH
from music.engines.drum_net import WEIGHTS_PATH, NetDrumTranscriber
from music.engines.drums import TEMPLATES_PATH, DrumTranscriber
from music.engines.separator import SeparationConfig
from serve_app.domain.result_key import library_versions

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
# path -> ((size, mtime_ns), sha256): a weights file is hashed once per replica unless it changes.
_digests: dict[Path, tuple[tuple[int, int], str]] = {}
_digests_lock = threading.Lock()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, or of every file under a folder (a TensorFlow SavedModel), by relative name."""
    if path.is_dir():
        digest = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{child.relative_to(path)}\0{file_sha256(child)}\0".encode())
        return digest.hexdigest()
    stat = path.stat()
    stamp = (stat.st_size, stat.st_mtime_ns)
    with _digests_lock:
        known = _digests.get(path)
    if known is not None and known[0] == stamp:
        return known[1]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    with _digests_lock:
        _digests[path] = (stamp, digest.hexdigest())
    return digest.hexdigest()


def demucs_weight_files(folder: Path, name: str) -> list[Path]:
    """The files `demucs.pretrained.get_model(name, repo=folder)` loads: `<name>[-<checksum>].th`, or a
    bag `<name>.yaml` and the `.th` of each signature it lists (Demucs' LocalRepo and BagOnlyRepo)."""
    by_signature = {(p.stem.rsplit("-", 1)[0] if "-" in p.stem else p.stem): p for p in folder.glob("*.th")}
    if name in by_signature:
        return [by_signature[name]]
    bag = folder / f"{name}.yaml"
    if not bag.is_file():
        return []
    signatures = (yaml.safe_load(bag.read_text()) or {}).get("models", [])
    return [bag] + [by_signature[s] for s in signatures if s in by_signature]


def separation_fingerprint(config: SeparationConfig, mode: str) -> dict[str, Any]:
    """What the separation replica's stems and beats depend on, for a job with separation `mode`."""
    # Every mode tracks beats, and the downbeats come from a trained model file.
    downbeats = config.downbeat_model or DOWNBEAT_MODEL_PATH
    found: dict[str, Any] = {
        "mode": mode, "libraries": library_versions("librosa", "numpy", "scipy"),
        "downbeats": file_sha256(downbeats) if downbeats.is_file() else "missing",
    }  # fmt: skip
    if mode != "demucs":
        return found  # none and hpss use no separation model: stemscribe's code and librosa decide
    demucs: dict[str, Any] = {
        "model": config.model, "segment": config.segment, "overlap": config.overlap, "shifts": config.shifts,
        "libraries": library_versions("demucs", "torch"),
    }  # fmt: skip
    if config.model_dir is None:
        # A pretrained name: the demucs release pins which checkpoint it downloads (their names carry their
        # checksums), so the name and the release identify the weights.
        demucs["weights"] = "pretrained"
    else:
        files = demucs_weight_files(config.model_dir, config.model) if config.model_dir.is_dir() else []
        # No file: the job fails with model_unavailable, so there is nothing to reuse either way.
        demucs["weights"] = {p.name: file_sha256(p) for p in files} or "missing"
    found["demucs"] = demucs
    return found


def transcription_fingerprint(
    model_path: Path, melodia_trick: bool, drums: NetDrumTranscriber | DrumTranscriber
) -> dict[str, Any]:
    """What the transcription replica's notes depend on: the basic-pitch model, the drum engine and its data."""
    if isinstance(drums, NetDrumTranscriber):
        data = drums.config.weights_path or WEIGHTS_PATH
        settings = {"net": drums.config.model_dump(mode="json"), "front_end": drums.front_end.model_dump(mode="json")}
        engine = "net"
    else:
        data, settings, engine = drums.config.templates_path or TEMPLATES_PATH, drums.config.model_dump(mode="json"), "nmfd"
    return {
        "basic_pitch": file_sha256(model_path) if model_path.exists() else "missing",
        "melodia_trick": melodia_trick,
        "drums": {"engine": engine, "data": file_sha256(data), "settings": settings},
        "libraries": library_versions("basic-pitch", "onnxruntime", "librosa", "torch", "numpy", "scipy"),
    }
