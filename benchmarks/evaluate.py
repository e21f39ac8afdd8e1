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

from benchmarks.evalset import DEFAULT_CACHE, EVALSET_VERSION, build, cache_folder, describe, select
from benchmarks.provenance import header
from benchmarks.report import (
    DEFAULT_OUT,
    aggregate,
    markdown,
    quality_bars,
    score_piece,
    vs_baseline,
    vs_librosa,
    write_report,
)
from benchmarks.systems import (
    BASELINE,
    LIBROSA,
    ORACLE,
    SERVICE,
    Baseline,
    LibrosaBeats,
    Oracle,
    ServiceClient,
    Transcript,
    capabilities,
)

logger = logging.getLogger(__name__)

SEPARATIONS = ("none", "hpss", "demucs")
# Form fields the harness sets itself for each run.
RESERVED_FORM = {"separation", "file"}
# Service form fields that are note-creation parameters; the oracle applies them too, so that an
# experiment with --form onset_threshold=0.6 moves the ceiling with the service.
NOTE_FIELDS = {"onset_threshold", "frame_threshold", "minimum_note_length_ms", "minimum_frequency", "maximum_frequency"}


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
    librosa: bool = True
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
                from music.engines.demucs_models import DEFAULT_TEST_MODEL, write_random_htdemucs

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
    if options.librosa:
        tracker = LibrosaBeats()
        transcripts[LIBROSA] = {p.spec.name: tracker.run(p) for p in pieces}
        logger.info("librosa done (%.1f s)", sum(t.seconds for t in transcripts[LIBROSA].values()))
    if options.oracle:
        requested = {k: float(v) for k, v in options.form.items() if k in NOTE_FIELDS}
        oracle = Oracle(requested)
        transcripts[ORACLE] = {p.spec.name: oracle.run(p) for p in pieces}
        logger.info("oracle done (%.1f s)", sum(t.seconds for t in transcripts[ORACLE].values()))

    order = [BASELINE, LIBROSA, *[f"{SERVICE}/{s}" for s in options.separations], ORACLE]
    names = [n for n in order if n in transcripts]
    report: dict[str, Any] = {
        "header": {
            **header(),
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
    report["vs_librosa"] = vs_librosa(report)
    report["quality_bars"] = quality_bars(report)
    report["header"]["wall_seconds"] = round(time.monotonic() - started, 1)
    return report


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
    parser.add_argument("--no-librosa", action="store_true", help="skip librosa's beat tracker (the tempo baseline)")
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
        librosa=not args.no_librosa,
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
