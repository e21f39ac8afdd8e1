"""Scoring and reporting for the evaluation: every metric for one piece (score_piece), the metrics and
their means (Metric, aggregate), the comparison with basic-pitch and the quality bars, the Markdown
tables, the machine and commit of a run, and writing evaluation.md and evaluation.json."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import scoring
from benchmarks.evalset import GroundTruth
from benchmarks.systems import BASELINE, DRUMS, LIBROSA, ORACLE, SERVICE, Capabilities, Transcript

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results"
PITCHED_STEMS = ("vocals", "bass", "other")
# Differences below this count as ties: basic-pitch's ONNX output varies in the last digits between
# machines, and a note or two on a small set is not a difference worth a claim.
TIE = 0.005


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
        "notes": _prf(scoring.note_prf(reference, pitched)) if caps.notes else None,
        "notes_offsets": _prf(scoring.note_prf(reference, pitched, with_offsets=True)) if caps.notes else None,
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
    if caps.tempo and caps.bars:
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


def vs_librosa(report: dict[str, Any]) -> list[str]:
    """Tempo and beats against librosa's tracker (it has no downbeats or meter)."""
    systems = report["systems"]
    if LIBROSA not in systems:
        return []
    base = systems[LIBROSA]["all"]
    lines = []
    for key in ("tempo_acc", "tempo_acc_strict", "beat_f1"):
        metric = METRIC[key]
        parts = [
            f"{name} {_compare(systems[name]['all'][key], base[key])} it "
            f"({_fmt(systems[name]['all'][key], metric.percent)} vs {_fmt(base[key], metric.percent)})"
            for name in systems
            if name.startswith(f"{SERVICE}/") and systems[name]["all"][key] is not None and base[key] is not None
        ]
        if parts:
            lines.append(f"{metric.label}: " + "; ".join(parts))
    for name in (n for n in systems if n.startswith(f"{SERVICE}/")):
        below = []
        for piece, row in report["pieces"].items():
            b, v = row["systems"].get(LIBROSA, {}).get("beat_f1"), row["systems"].get(name, {}).get("beat_f1")
            if b is not None and v is not None and _compare(v, b) == "is below":
                below.append(f"{piece} ({v:.3f} vs {b:.3f})")
        lines.append(f"beat F1 per piece, {name}: below librosa on {len(below)}" + (f": {', '.join(below)}" if below else ""))
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
    hpss = systems.get(f"{SERVICE}/hpss", {}).get("all")
    if hpss is not None:
        for key, label in (("drum_kick", "kick"), ("drum_snare", "snare"), ("drum_hihat", "hi-hat")):
            add(f"drum onset F1 >= 0.85 in band mixes through hpss: {label}", f"{SERVICE}/hpss", hpss[key], 0.85)
    if ORACLE in systems:
        for key, label in (("drum_kick", "kick"), ("drum_snare", "snare"), ("drum_hihat", "hi-hat")):
            add(f"drum onset F1 >= 0.85 on rendered drum stems: {label}", ORACLE, systems[ORACLE]["all"][key], 0.85)
    return bars


# --- the report ----------------------------------------------------------------------------------------


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
    lines += ["", "## Against librosa's beat tracker (tempo and beats; it has no downbeats or meter)", ""]
    lines += [f"- {line}" for line in report.get("vs_librosa", [])] or ["- librosa not run"]
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

def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "evaluation.md", out / "evaluation.json"
    md.write_text(markdown(report))
    js.write_text(json.dumps(report, indent=1))
    return md, js
