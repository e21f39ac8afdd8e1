"""The real-recording evaluation: the service and what a user would use instead, on real recordings.

    python -m benchmarks.real                          # starts the service here, every item of the set
    python -m benchmarks.real --url http://host:8000 --api-key $KEY
    python -m benchmarks.real --folds benchmarks/.evalset/folds.json   # the cross-validated numbers

The items are `../shared/real-dev` (benchmarks/real_dev.py; other people's recordings, never committed).
Per item, every system that claims a metric is scored on it:

- service/none and service/hpss: the item POSTed to the running service over HTTP, the job polled,
  notes.json downloaded (as benchmarks.evaluate does). Demucs is not run: no trained weights can be
  downloaded here, and a random-weight model separates nothing.
- basic-pitch: its own `predict()` with its defaults, on the item's audio (notes items).
- librosa: `librosa.beat.beat_track` with its defaults on the item's audio, what a user would reach for,
  for beats and tempo. librosa has no downbeat or meter estimate, so those are n/a for it.
- stem: the service's drum transcriber run on the item's own drum stem (the recorded drums alone, no
  separation), where the item has one: what a perfect separation would leave to the drum engine.

Metrics (benchmarks/scoring.py): note F1 (50 ms onsets; with offsets too), drum onset F1 per class
(kick, snare, hi-hat with open and closed pooled; 50 ms), beat and downbeat F1 (mir_eval, 70 ms, no
trimming), tempo within 4 % (strict, and allowing x2, x3, /2, /3), meter, key (mir_eval weighted score).
Every mean in a table is the mean over the items where the metric is defined ("mean over items").

Cross-validation. The drum network and the downbeat model are trained with real-dev songs, so their
numbers on this set come from fold models: `--folds FILE` (benchmarks/folds.py's manifest, written by
`benchmarks.train_drum_net --folds` and `benchmarks.train_downbeats --folds`) lists, per fold, the two
models and the songs they never saw; the service is redeployed with each fold's models and scores only
that fold's items. Each model's own record of the real songs it trained on is checked: a fold model that
trained on a song of its fold stops the run. Without folds the shipped models are used, and where one of
them trained on an item's song (the shipped downbeat model learned from every MDB song), the metrics it
decides (drum F1; downbeat F1 and meter) are left out of that item's scores (`withheld`).

Writes benchmarks/results/real.{md,json} (the results, never the audio).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks import scoring
from benchmarks.provenance import command, header, header_line, write_results
from benchmarks.real_dev import DRUM_CLASSES, RealItem, load, real_dev_folder
from benchmarks.systems import DRUMS, LIBROSA, EstNote, ServiceClient, Transcript, librosa_beats

logger = logging.getLogger(__name__)

SEPARATIONS = ("none", "hpss")
BASIC_PITCH = "basic-pitch"
STEM = "stem"
HIHAT = scoring.HIHAT
# Item families, in table order: what each one is (the prefix of its id).
FAMILIES = {
    "drums": "drums alone",
    "mix": "produced mixes",
    "rawmix": "raw multitrack sums",
    "tempo": "tempo only",
    "guitar": "solo guitar",
    "key": "key clip",
}


# --- systems -------------------------------------------------------------------------------------------


def basic_pitch_notes(audio: Path) -> Transcript:
    from basic_pitch.inference import Model, predict

    from music.engines.transcriber import bundled_onnx_model

    started = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):  # predict() prints a line per file
        _, _, events = predict(str(audio), model_or_model_path=Model(bundled_onnx_model()))
    notes = [EstNote(float(s), float(e), int(p), int(round(127 * a))) for s, e, p, a, _ in events]
    return Transcript(notes={"mix": notes}, seconds=time.monotonic() - started)


class StemDrums:
    """The service's drum engine on a recorded drum stem, in-process."""

    def __init__(self, weights: Path | None = None) -> None:
        from music.engines.drum_net import DrumNetConfig, NetDrumTranscriber

        self.engine = NetDrumTranscriber(DrumNetConfig(weights_path=weights))

    def run(self, audio: Path) -> Transcript:
        import soundfile

        started = time.monotonic()
        samples, rate = soundfile.read(audio, dtype="float32", always_2d=True)
        notes = self.engine.transcribe(samples.T, rate)
        return Transcript(
            notes={DRUMS: [EstNote(n.start, n.end, n.pitch, n.velocity) for n in notes]},
            seconds=time.monotonic() - started,
        )


def drum_stem(item: RealItem) -> Path | None:
    """The recorded drums of an item: the item itself for drums alone, else its drum stem if it has one."""
    if item.family == "drums":
        return item.audio
    return item.stems.get("drums")


# --- folds ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fold:
    name: str
    weights: Path | None  # None: the shipped weights
    held_out: frozenset[str]  # songs this fold's models never trained on
    downbeats: Path | None = None  # the fold's downbeat model; None: the shipped one


def trained_songs(weights: Path | None) -> frozenset[str]:
    """The real songs a drum-network weights file records having trained on."""
    import torch

    from music.engines.drum_net import WEIGHTS_PATH

    saved = torch.load(weights or WEIGHTS_PATH, map_location="cpu", weights_only=True)
    return frozenset(saved.get("trained_on", {}).get("real_songs", []))


def downbeat_songs(model: Path | None) -> frozenset[str]:
    """The real songs a downbeat model records having trained on."""
    from music.engines.downbeats import MODEL_PATH

    path = model or MODEL_PATH
    if not path.is_file():
        return frozenset()
    return frozenset(json.loads(path.read_text()).get("trained_on", {}).get("real_songs", []))


def load_folds(path: Path | None, items: Sequence[RealItem]) -> list[Fold]:
    """The folds of a manifest (or one fold with the shipped weights), each checked against its weights'
    own record; every item's song lands in exactly one fold."""
    songs = {i.song for i in items}
    if path is None:
        trained = trained_songs(None) | downbeat_songs(None)
        folds = [Fold("shipped models", None, frozenset(songs - trained))]
    else:
        doc = json.loads(path.read_text())
        base = path.parent
        folds = [
            Fold(f["name"], (base / f["drums"]).resolve() if f.get("drums") else None, frozenset(f["held_out"]),
                 (base / f["downbeats"]).resolve() if f.get("downbeats") else None)
            for f in doc["folds"]
        ]  # fmt: skip
        for fold in folds:
            leaked = fold.held_out & (trained_songs(fold.weights) | downbeat_songs(fold.downbeats))
            if leaked:
                raise ValueError(f"fold {fold.name}: its models trained on held-out songs {sorted(leaked)}")
    return folds


def fold_of(item: RealItem, folds: Sequence[Fold]) -> Fold | None:
    for fold in folds:
        if item.song in fold.held_out:
            return fold
    return None


# --- scoring ------------------------------------------------------------------------------------------------


def _f1(prf: scoring.PRF | None) -> float | None:
    return None if prf is None else round(prf.f1, 4)


def score(item: RealItem, transcript: Transcript, system: str, drum_fold: str | None) -> dict[str, Any]:
    """Every metric the item has and the system claims; None elsewhere."""
    out: dict[str, Any] = {"seconds": round(transcript.seconds, 2), "error": transcript.error}
    claims_notes = system in (BASIC_PITCH, *[f"service/{s}" for s in SEPARATIONS])
    claims_beats = system == LIBROSA or system.startswith("service/")
    claims_drums = system in ("service/hpss", STEM)
    if item.notes and claims_notes:
        ref = [EstNote(a, b, p) for a, b, p in item.notes]
        est = [n for stem, notes in transcript.notes.items() if stem != DRUMS for n in notes]
        out["note_f1"] = _f1(scoring.note_prf(ref, est))
        out["note_offset_f1"] = _f1(scoring.note_prf(ref, est, with_offsets=True))
    if item.has("drums") and claims_drums and (system != STEM or drum_stem(item) is not None):
        est = transcript.notes.get(DRUMS, [])
        out["drums"] = {
            cls: _f1(scoring.onset_prf(item.drums[cls], scoring.drum_onsets(est, cls if cls != "hihat" else HIHAT)))
            for cls in DRUM_CLASSES
        }
        out["drum_counts"] = {cls: int(item.drums[cls].size) for cls in DRUM_CLASSES}
        out["drum_fold"] = drum_fold
    if claims_beats and item.tempo_bpm is not None:
        out["tempo"] = {
            "ref": round(item.tempo_bpm, 2),
            "est": None if transcript.tempo_bpm is None else round(transcript.tempo_bpm, 2),
            "strict": scoring.tempo_correct(item.tempo_bpm, transcript.tempo_bpm, factors=(1.0,)),
            "octave": scoring.tempo_correct(item.tempo_bpm, transcript.tempo_bpm),
        }
    if claims_beats and item.beats:
        out["beat_f1"] = round(scoring.beat_f1(item.beats, transcript.beats) or 0.0, 4)
        if system != LIBROSA:  # librosa has no downbeats
            out["downbeat_f1"] = round(scoring.beat_f1(item.downbeats, transcript.downbeats) or 0.0, 4)
            out["meter"] = {"ref": item.meter, "est": transcript.time_signature,
                            "correct": scoring.meter_correct(item.meter or "", transcript.time_signature)}  # fmt: skip
    if item.key and system.startswith("service/"):
        key = scoring.key_score(item.key, transcript.key)
        assert key is not None
        out["key"] = {"ref": item.key, "est": transcript.key, "weighted": key.weighted}
    return out


# --- the run ---------------------------------------------------------------------------------------------------


@dataclass
class Options:
    folder: Path = field(default_factory=real_dev_folder)
    url: str | None = None
    api_key: str | None = None
    separations: tuple[str, ...] = SEPARATIONS
    folds: Path | None = None
    out: Path | None = None
    items: tuple[str, ...] = ()
    job_timeout: float = 900.0
    name: str = "real"
    command: str = ""  # as typed, for the results' header


@contextlib.contextmanager
def _service(options: Options) -> Iterator[tuple[str, Any]]:
    """(url, redeploy(drum_weights) or None): the given service, or one started here."""
    if options.url:
        yield options.url.rstrip("/"), None
        return
    from benchmarks.local_service import local_service, redeploy
    from music.engines.demucs_models import DEFAULT_TEST_MODEL, write_random_htdemucs

    with tempfile.TemporaryDirectory(prefix="stemscribe-real-") as work:
        # none/hpss need no Demucs; a small random model keeps the service healthy and quick.
        write_random_htdemucs(Path(work) / "models")
        settings = {"data_dir": str(Path(work) / "data"), "demucs_model": DEFAULT_TEST_MODEL,
                    "demucs_model_dir": str(Path(work) / "models")}  # fmt: skip
        with local_service(settings) as url:
            yield url, lambda user_configs: redeploy(url, settings, user_configs)


def run(options: Options) -> dict[str, Any]:
    items = load(options.folder)
    if options.items:
        items = [i for i in items if i.id in options.items]
    folds = load_folds(options.folds, items)
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {i.id: {} for i in items}

    shipped = {"drums": trained_songs(None), "downbeats": downbeat_songs(None)}

    def record(item: RealItem, system: str, transcript: Transcript, fold: Fold | None) -> None:
        scored = score(item, transcript, system, fold.name if fold else None)
        if fold_of(item, folds) is None:
            # Scored with the shipped models: what a model trained on this song decides is not reported.
            withheld = [kind for kind, songs in shipped.items() if item.song in songs]
            for key in ("drums",) if "drums" in withheld else ():
                scored.pop(key, None)
            for key in ("downbeat_f1", "meter") if "downbeats" in withheld else ():
                scored.pop(key, None)
            if withheld and system.startswith("service/"):
                scored["withheld"] = [f"{kind} (the shipped model trained on {item.song})" for kind in withheld]
        results[item.id][system] = scored

    if options.separations:
        with _service(options) as (url, redeploy):
            client = ServiceClient(url, options.api_key, options.job_timeout)
            try:
                # One deployment per fold; items of no fold's songs (no drums) go with the first.
                plan: list[tuple[Fold | None, list[RealItem]]] = []
                for k, fold in enumerate(folds):
                    mine = [i for i in items if fold_of(i, folds) is fold or (k == 0 and fold_of(i, folds) is None)]
                    plan.append((fold, mine))
                for fold, mine in plan:
                    if not mine:
                        continue
                    if fold is not None and (fold.weights is not None or fold.downbeats is not None):
                        if redeploy is None:
                            raise ValueError("--folds needs the service started here (no --url)")
                        redeploy({
                            "Transcription": {"drum_weights": str(fold.weights) if fold.weights else None},
                            "Separation": {"downbeat_model": str(fold.downbeats) if fold.downbeats else None},
                        })  # fmt: skip
                    for item in mine:
                        scored_by = fold if item.has("drums") and fold_of(item, folds) is fold else None
                        for separation in options.separations:
                            system = f"service/{separation}"
                            try:
                                transcript = client.run(item.audio, {"separation": separation})
                            except (RuntimeError, TimeoutError, ValueError, httpx.HTTPError) as exc:
                                logger.error("%s on %s: %s", system, item.id, exc)
                                transcript = Transcript(error=str(exc))
                            record(item, system, transcript, scored_by)
                            logger.info("%s %s: %.1f s", system, item.id, transcript.seconds)
            finally:
                client.close()
    # In-process systems after the service is down, so they do not compete with it for the CPU.
    for item in items:
        if item.notes:
            record(item, BASIC_PITCH, basic_pitch_notes(item.audio), None)
        if item.beats or item.tempo_bpm is not None:
            record(item, LIBROSA, librosa_beats(item.audio), None)
    for fold in folds:
        stems = StemDrums(fold.weights)
        for item in items:
            if item.has("drums") and drum_stem(item) is not None and fold_of(item, folds) is fold:
                record(item, STEM, stems.run(drum_stem(item)), fold)  # type: ignore[arg-type]

    report: dict[str, Any] = {
        "header": header(
            command=options.command or command(),
            set=str(options.folder), items=len(items), separations=list(options.separations),
            folds=[{"name": f.name, "weights": str(f.weights) if f.weights else "shipped",
                         "downbeats": str(f.downbeats) if f.downbeats else "shipped",
                         "held_out": sorted(f.held_out)} for f in folds],
            wall_seconds=round(time.monotonic() - started, 1),
        ),  # fmt: skip
        "items": {
            i.id: {"family": i.family, "song": i.song, "kinds": list(i.kinds), "duration_s": i.duration_s,
                   "dataset": i.dataset, "license": i.license, "systems": results[i.id]}
            for i in items
        },  # fmt: skip
    }
    report["summary"] = summarise(report)
    return report


# --- summary and tables -----------------------------------------------------------------------------------------


def _mean(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return round(float(np.mean(defined)), 3) if defined else None


def _values(report: dict[str, Any], system: str, get: Any, family: Sequence[str] | None = None) -> list[Any]:
    out = []
    for item in report["items"].values():
        if family is not None and item["family"] not in family:
            continue
        scored = item["systems"].get(system)
        if scored is not None:
            out.append(get(scored))
    return [v for v in out if v is not None]


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """Means over items, per kind of item and system."""
    systems = sorted({s for item in report["items"].values() for s in item["systems"]})
    drum_groups = {"drums alone": ("drums",), "in mixes": ("mix", "rawmix")}
    summary: dict[str, Any] = {"drums": {}, "beats": {}, "notes": {}, "key": {}}
    for group, families in drum_groups.items():
        summary["drums"][group] = {}
        for system in systems:
            row = {
                cls: _mean(_values(report, system, lambda s, c=cls: (s.get("drums") or {}).get(c), families))
                for cls in DRUM_CLASSES
            }
            row["items"] = len(_values(report, system, lambda s: s.get("drums"), families))
            if row["items"]:
                summary["drums"][group][system] = row
    for system in systems:
        beats = _values(report, system, lambda s: s.get("beat_f1"))
        tempo = _values(report, system, lambda s: s.get("tempo"))
        if beats or tempo:
            summary["beats"][system] = {
                "beat_f1": _mean(beats),
                "downbeat_f1": _mean(_values(report, system, lambda s: s.get("downbeat_f1"))),
                "meter": _mean([float(m["correct"]) for m in _values(report, system, lambda s: s.get("meter"))]),
                "tempo_strict": _mean([float(t["strict"]) for t in tempo]),
                "tempo_octave": _mean([float(t["octave"]) for t in tempo]),
                "items": len(beats),
                "tempo_items": len(tempo),
            }
        notes = _values(report, system, lambda s: s.get("note_f1"))
        if notes:
            summary["notes"][system] = {
                "note_f1": _mean(notes),
                "note_offset_f1": _mean(_values(report, system, lambda s: s.get("note_offset_f1"))),
                "items": len(notes),
            }
        keys = _values(report, system, lambda s: s.get("key"))
        if keys:
            summary["key"][system] = {"weighted": _mean([k["weighted"] for k in keys]), "items": len(keys)}
    return summary


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]


def markdown(report: dict[str, Any]) -> str:
    head, summary, items = report["header"], report["summary"], report["items"]
    folds = "; ".join(f"{f['name']} (held out: {', '.join(f['held_out'])})" for f in head["folds"])
    lines = [
        "# stemscribe on real recordings",
        "",
        header_line(head),
        "",
        f"{head['items']} items of {head['set']}; service separations {', '.join(head['separations']) or 'none run'}; "
        f"models: {folds}. Means are over the items where a metric is defined.",
        "",
        "## Drums (onset F1, 50 ms)",
        "",
    ]
    rows = []
    for group, systems in summary["drums"].items():
        for system, row in systems.items():
            rows.append([group, system, row["items"], row["kick"], row["snare"], row["hihat"]])
    lines += _table(["items", "system", "n", "kick", "snare", "hi-hat"], rows)
    lines += ["", "## Beats, downbeats, tempo, meter", ""]
    rows = [
        [s, r["items"], r["beat_f1"], r["downbeat_f1"], r["tempo_items"], r["tempo_strict"], r["tempo_octave"], r["meter"]]
        for s, r in summary["beats"].items()
    ]
    lines += _table(["system", "beat items", "beat F1", "downbeat F1", "tempo items", "tempo ±4 %",
                     "tempo ±4 % (x2, x3)", "meter"], rows)  # fmt: skip
    lines += ["", "## Notes and key", ""]
    rows = [[s, r["items"], r["note_f1"], r["note_offset_f1"]] for s, r in summary["notes"].items()]
    lines += _table(["system", "items", "note F1", "with offsets"], rows)
    lines += [""]
    rows = [[s, r["items"], r["weighted"]] for s, r in summary["key"].items()]
    lines += _table(["system", "items", "key (weighted)"], rows)
    lines += ["", "## Per item", ""]
    rows = []
    for item_id, item in items.items():
        for system, s in item["systems"].items():
            d = s.get("drums") or {}
            t = s.get("tempo") or {}
            rows.append([
                item_id, system, d.get("kick"), d.get("snare"), d.get("hihat"), s.get("beat_f1"), s.get("downbeat_f1"),
                t.get("est"), t.get("ref"), (s.get("meter") or {}).get("est"), s.get("note_f1"),
                (s.get("key") or {}).get("est"),
                s.get("error") or ("withheld: " + "; ".join(s["withheld"]) if s.get("withheld") else None),
            ])  # fmt: skip
    lines += _table(["item", "system", "kick", "snare", "hi-hat", "beat F1", "downbeat F1", "tempo", "ref tempo",
                     "meter", "note F1", "key", "error / withheld"], rows)  # fmt: skip
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.real", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--set", type=Path, default=real_dev_folder(), help="the real-dev folder")
    parser.add_argument("--url", help="a running service; without it one is started on this machine")
    parser.add_argument("--api-key", default=os.environ.get("STEMSCRIBE_KEY"))
    parser.add_argument("--separations", default=",".join(SEPARATIONS), help="comma-separated: none,hpss")
    parser.add_argument("--folds", type=Path, help="fold manifest (benchmarks/folds.py)")
    parser.add_argument("--items", default="", help="comma-separated item ids (default: all)")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    parser.add_argument("--name", default="real", help="results file name: <out>/<name>.{md,json}")
    args = parser.parse_args(argv)
    return Options(
        folder=args.set, url=args.url, api_key=args.api_key,
        separations=tuple(s.strip() for s in args.separations.split(",") if s.strip()),
        folds=args.folds, out=args.out, items=tuple(i for i in args.items.split(",") if i), name=args.name,
        command=command("benchmarks.real", argv),
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    options = parse_args(argv)
    report = run(options)
    text = markdown(report)
    kwargs = {"out": options.out} if options.out else {}
    md, js = write_results(options.name, report, text, **kwargs)
    sys.stdout.write(text)
    logger.info("wrote %s and %s", md, js)
    return report


if __name__ == "__main__":
    main()
