"""Train the downbeat model (music/engines/downbeats.py): which tracked beat starts the bar.

    python -m benchmarks.train_downbeats                # the shipped model, music/engines/data/downbeats.json
    python -m benchmarks.train_downbeats --folds        # one per fold, for benchmarks.real --folds
        [--mdb PATH] [--pieces 300] [--cache DIR]

Material, each tracked by the service's own beat tracker (music.engines.beat_tracker, the rule for the
phase switched off), every tracked beat labelled a downbeat when one of the piece's bar lines is within
70 ms of it; a piece whose tracked beats do not sit on its annotated beats (under 80 % within 70 ms: the
tracker counted off-beats, or at another tempo) teaches nothing about bars and is left out:
- real: the MDB Drums songs (benchmarks/mdb.py; CC BY-NC-SA 4.0, read at training time, never
  committed) with their annotated beats and bar positions, three ways: the drums alone, the plain sum of
  the raw multitrack files, and the produced mix where the copy has it;
- renders: `--pieces` band pieces of benchmarks.evalset's composer (random tempo 70-170 BPM, 4/4 or 3/4,
  lead, bass, keys, drums in four of five) rendered with TimGM6mb, MuseScore General and csound's GM
  bank, with their bars known by construction; half of them cut to start one to three beats into a
  bar, so the model sees music that does not start on beat 1 as often as music that does.

Cross-validation (`--folds`) uses benchmarks.folds.FOLDS: each fold model never sees its
four real-dev songs, so benchmarks.real can score every real-dev item with a model that did not train on
it. The five MDB songs outside the real-dev set are in every fold. One logistic regression per meter
(scikit-learn, L2, C=0.3, not tuned), real beats weighted twice.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.folds import FOLDS, record
from music.engines.beat_tracker import BeatTracker, BeatTrackerConfig, downbeat_inputs
from music.engines.downbeats import MODEL_PATH, DownbeatModel, LinearModel, with_context, zscore

logger = logging.getLogger("train_downbeats")

RENDER_FONTS = ("TimGM6mb", "MuseScore_General", "sf_GMbank")
PIECE_SEED = 40_000
WINDOW_S = 0.07
MIN_ON_BEAT = 0.8
C = 0.3
REAL_WEIGHT = 2.0


def labelled(samples: np.ndarray, rate: int, beats: list[float], downbeats: list[float], meter: int) -> dict | None:
    """The tracker's beats of one recording, their base features for `meter` and labels; None where the
    tracked beats do not sit on the annotated ones."""
    analysis = BeatTracker(BeatTrackerConfig(learned_downbeats=False)).analyse(samples, rate)
    if analysis.beats is None or analysis.fallback is not None:
        return None
    tracked = np.asarray(analysis.beats)
    ref = np.asarray(beats)
    if ref.size < 2 * meter or tracked.size < 2 * meter:
        return None
    near = np.min(np.abs(tracked[:, None] - ref[None, :]), axis=1) <= WINDOW_S
    inside = (tracked >= ref[0] - WINDOW_S) & (tracked <= ref[-1] + WINDOW_S)
    if inside.sum() < 2 * meter or near[inside].mean() < MIN_ON_BEAT:
        return None
    bars = np.asarray(downbeats)
    y = (np.min(np.abs(tracked[:, None] - bars[None, :]), axis=1) <= WINDOW_S).astype(int) if bars.size else np.zeros(tracked.size, int)
    keep = inside
    base = downbeat_inputs(analysis.features, meter)
    return {"x": with_context(zscore(base))[keep], "y": y[keep], "meter": meter}


def _real_job(args: tuple) -> list[dict]:
    from benchmarks.mdb import songs

    name, mdb = args
    song = {s.name: s for s in songs(mdb)}[name]
    beats, downbeats = song.beats()
    out = []
    drums, rate = song.drums()
    renditions = [("drums", drums)]
    band = drums.mean(axis=0, keepdims=True).copy()
    for file, (_, _) in song.raw_tracks().items():
        try:
            track, track_rate = song.raw(file)
        except FileNotFoundError:
            continue
        if track_rate == rate:
            n = min(band.shape[1], track.shape[1])
            if song.raw_tracks()[file][1] == "other":
                band[:, :n] += track.mean(axis=0)[:n]
    renditions.append(("rawmix", band / max(1.0, float(np.abs(band).max()) / 0.9)))
    if song.repo.has(f"audio/full_mix/{name}_MIX.wav"):
        mix, mix_rate = song.audio(f"audio/full_mix/{name}_MIX.wav")
        if mix_rate == rate:
            renditions.append(("mix", mix))
    for kind, audio in renditions:
        found = labelled(audio, rate, beats, downbeats, 4)
        if found is not None:
            out.append({**found, "song": name, "kind": kind, "real": True})
    return out


def _render_job(args: tuple) -> list[dict]:
    """A random band piece of the composer, rendered with one font; its bars are known."""
    import pretty_midi  # noqa: F401  (rendering needs it)
    import soundfile

    from benchmarks.drum_patterns import STYLES
    from benchmarks.evalset import FIRST_DOWNBEAT, PieceSpec, _midi, _parts, bars_of, compose
    from benchmarks.render import render_with
    from benchmarks.sound_sources import source

    seed, font, work = args
    rng = np.random.default_rng((seed, 3))
    meter = 3 if rng.random() < 0.25 else 4
    style = "waltz" if meter == 3 else str(rng.choice([s for s in STYLES if s != "waltz"]))
    drums = style if rng.random() < 0.8 else None
    lead = None if rng.random() < 0.3 else int(rng.choice((56, 73, 53, 40, 71, 65)))
    parts = _parts(lead, int(rng.choice((33, 34, 38, 32))), int(rng.choice((0, 4, 16, 24, 48))), drums,
                   bass_style=str(rng.choice(("eighths", "root", "root_fifth", "walking", "half"))),
                   harmony_style=str(rng.choice(("comp", "block", "pad", "arpeggio"))))  # fmt: skip
    tempo = float(rng.uniform(70, 170))
    spec = PieceSpec(f"db_{seed}", "train", False, 20.0, tempo, meter,
                     str(rng.choice(("C major", "G major", "A minor", "E minor", "F major"))), parts, seed)  # fmt: skip
    bars = bars_of(spec)
    beat = 60.0 / tempo
    end = FIRST_DOWNBEAT + bars * meter * beat
    wav = Path(work) / f"db_{seed}_{font}.wav"
    render_with(source(font), _midi(spec, compose(spec).values(), end), wav, 44100, seed)
    samples, rate = soundfile.read(wav, dtype="float32", always_2d=True)
    wav.unlink()
    wav.with_suffix(".mid").unlink(missing_ok=True)
    beats = [FIRST_DOWNBEAT + k * beat for k in range(bars * meter)]
    downbeats = beats[::meter]
    if rng.random() < 0.5:
        # Half the renders start inside a bar, as an excerpt or a pickup does: the first beat heard is beat
        # k + 1 of its bar, so "the music starts on 1" is learned as a tendency, not a rule.
        skip = int(rng.integers(1, meter))
        cut = beats[skip] - 0.05
        samples = samples[int(cut * rate) :]
        beats = [b - cut for b in beats[skip:]]
        downbeats = [d - cut for d in downbeats if d - cut >= 0.0]
    found = labelled(samples.T, rate, beats, downbeats, meter)
    return [] if found is None else [{**found, "song": None, "kind": f"render/{font}", "real": False}]


def build(args: argparse.Namespace) -> list[dict]:
    cache = args.cache / "downbeats.npz.json"
    if cache.is_file():
        rows = json.loads(cache.read_text())
        return [{**r, "x": np.asarray(r["x"]), "y": np.asarray(r["y"])} for r in rows]
    work = args.cache / "work"
    work.mkdir(parents=True, exist_ok=True)
    jobs_real = []
    if args.mdb is not None:
        from benchmarks.mdb import songs

        jobs_real = [(s.name, args.mdb) for s in songs(args.mdb)]
    jobs_render = [(PIECE_SEED + i, RENDER_FONTS[i % len(RENDER_FONTS)], str(work)) for i in range(args.pieces)]
    started = time.monotonic()
    rows: list[dict] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for found in pool.map(_real_job, jobs_real):
            rows += found
        for found in pool.map(_render_job, jobs_render, chunksize=4):
            rows += found
    logger.info("%d recordings usable (%d real) in %.0f s", len(rows), sum(r["real"] for r in rows), time.monotonic() - started)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps([{**r, "x": r["x"].tolist(), "y": r["y"].tolist()} for r in rows]))
    return rows


def fit(rows: list[dict], held_out: set[str]) -> DownbeatModel:
    from sklearn.linear_model import LogisticRegression

    models = {}
    for meter in (3, 4):
        use = [r for r in rows if r["meter"] == meter and r["song"] not in held_out]
        if not use:
            continue
        x = np.concatenate([r["x"] for r in use])
        y = np.concatenate([r["y"] for r in use])
        w = np.concatenate([np.full(r["y"].size, REAL_WEIGHT if r["real"] else 1.0) for r in use])
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
        clf = LogisticRegression(C=C, max_iter=2000).fit((x - mean) / scale, y, sample_weight=w)
        models[meter] = LinearModel(mean, scale, clf.coef_[0], float(clf.intercept_[0]))
        logger.info("meter %d: %d beats from %d recordings (%d real)", meter, y.size, len(use), sum(r["real"] for r in use))
    songs = sorted({r["song"] for r in rows if r["song"] and r["song"] not in held_out})
    return DownbeatModel(models, {"real_songs": songs, "renders": sum(not r["real"] for r in rows),
                                  "render_fonts": list(RENDER_FONTS), "C": C, "real_weight": REAL_WEIGHT})  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mdb", default=os.environ.get("STEMSCRIBE_MDB", "/work/.mirror/CarlSouthall+MDBDrums/repo"))
    parser.add_argument("--pieces", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--folds", action="store_true")
    parser.add_argument("--out", type=Path, default=MODEL_PATH)
    parser.add_argument("--cache", type=Path, default=Path(__file__).parent / ".evalset" / "downbeats")
    args = parser.parse_args(argv)
    args.mdb = None if args.mdb == "none" or not Path(args.mdb).exists() else Path(args.mdb)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rows = build(args)
    if args.folds:
        folder = args.cache / "folds"
        folder.mkdir(parents=True, exist_ok=True)
        for k, fold in enumerate(FOLDS):
            path = folder / f"fold{k}.json"
            path.write_text(json.dumps(fit(rows, set(fold)).to_json()))
            record("downbeats", k, path)
        logger.info("wrote %s", folder)
        return
    args.out.write_text(json.dumps(fit(rows, set()).to_json()))
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
