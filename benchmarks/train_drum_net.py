"""Train the learned drum transcriber (music/engines/drum_net.py) with real drums in the loop.

    python -m benchmarks.train_drum_net                 # the shipped weights: no song of the real-dev set
    python -m benchmarks.train_drum_net --folds         # one model per fold, for benchmarks.real --folds
        [--mdb PATH] [--kit-pieces 480] [--real-variants 12] [--epochs 14] [--real-songs all] [--cache DIR]

Material (benchmarks/drum_material.py; each example in one of three conditions: the drums alone, the
percussive part of an HPSS split of a mix, the whole mix):
- real drums: the MDB Drums songs (benchmarks/mdb.py, a git copy of github.com/CarlSouthall/MDBDrums,
  CC BY-NC-SA 4.0, read at training time, never committed), each played `--real-variants` times alone,
  with its own or another song's raw band tracks at random levels, through random rooms, equalisers and
  compressors. The last quarter of every song is held back: it chooses the epoch and the thresholds.
- sampled kits: `--kit-pieces` random performances (benchmarks/grooves.py) on TRAIN_KITS, under pitched
  parts rendered with TRAIN_FONTS, the same effects on the drums; every tenth held back likewise.
- held out from everything: HELD_OUT_KITS (two recorded acoustic kits, FluidR3's GM kits and freepats)
  and HELD_OUT_FONTS, on which benchmarks.drums_in_mixes reports. Before anything is rendered,
  benchmarks.soundfonts checks that no held-out kit or font shares a sample (by name or by sound) with a
  training one, and refuses to train otherwise.

Which real songs. The shipped weights train on the five MDB songs that the real-recording set
(../shared/real-dev) does not hold (Country1, Punk, Reggae, Rock, Zeppelin): that set's eight songs are
held out whole, so benchmarks.real scores the shipped weights on recordings they never heard, and a
threshold is never chosen on a song it is scored on (they come from the five songs' held-back quarters
and the kits'). Training on all thirteen (`--real-songs all`) would need the cross-validation below for
honest numbers: `--folds` trains one model per benchmarks.folds.FOLDS group without its songs (into
<cache>/folds/ and benchmarks.folds' manifest, for benchmarks.real --folds). The shipped weights took about
10 minutes of a quiet 2-core machine (6 building the material, 4 training); the held-out kind needs one
model where the fold kind needs one per fold, and its numbers need no folds.

The network: music.engines.drum_net.DrumNet with a bidirectional GRU (`--rnn`), seven outputs (kick,
snare, closed and open hi-hat, and toms, crashes and rides, which the service does not report but the
network must not take for the others). Targets: a class's onset frame 1, its neighbours 0.5.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import mir_eval
import numpy as np
import torch
from torch import nn

from benchmarks.drum_material import CLASSES, CONDITIONS, MATERIAL_VERSION, kit_example, load, real_examples
from benchmarks.folds import FOLDS, record
from music.engines.drum_net import NET_CLASSES, WEIGHTS_PATH, DrumNet, activations, pick_peaks
from music.engines.drums import DrumConfig

logger = logging.getLogger("train_drum_net")

TRAIN_KITS = (
    "AVL_Black_Pearl", "AVL_Red_Zeppelin", "hydrogen:GMRockKit", "hydrogen:The Black Pearl 1.0",
    "hydrogen:ForzeeStereo", "hydrogen:Millo-Drums_v.1", "hydrogen:Millo_MultiLayered2",
    "hydrogen:Millo_MultiLayered3", "hydrogen:Audiophob", "TimGM6mb", "sf_GMbank", "OPL3_FM",
    "hydrogen:TR808EmulationKit", "hydrogen:VariBreaks", "hydrogen:rumpf_kit_z01_h2",
    "hydrogen:ElectricEmpireKit", "hydrogen:HardElectro1",
)  # fmt: skip
TRAIN_FONTS = ("TimGM6mb", "sf_GMbank", "MuseScore_General", "OPL3_FM")
HELD_OUT_KITS = ("hydrogen:BJA_Pacific", "hydrogen:ColomboAcousticDrumkit", "FluidR3_GM", "freepats")
HELD_OUT_FONTS = ("freepats",)
KIT_SEED = 30_000
CROP = 128  # frames per training crop (1.5 s): the GRU hears enough around a hit, at half the cost of 256
WINDOW_S = 0.05
SCORED = ("kick", "snare", "hihat_closed", "hihat_open")


def check_held_out(cache: Path | None = None) -> None:
    """Refuse (benchmarks.soundfonts.SharedSamples) if a held-out kit or font shares samples with training."""
    from benchmarks.soundfonts import DEFAULT_CACHE, assert_disjoint

    cache = cache or DEFAULT_CACHE
    assert_disjoint(TRAIN_KITS, HELD_OUT_KITS, "drums", cache)
    assert_disjoint(TRAIN_FONTS, HELD_OUT_FONTS, "melodic", cache)


def _kit_job(args: tuple) -> str:
    return kit_example(*args)


def _real_job(args: tuple) -> list[str]:
    from benchmarks.mdb import songs

    name, others, variants, mdb, cache = args
    by_name = {s.name: s for s in songs(mdb)}
    return real_examples(by_name[name], [by_name[o] for o in others], variants, cache)


def build_material(args: argparse.Namespace) -> list[str]:
    """Every example's key (rendered and cached where not yet)."""
    cache = args.cache / "material"
    jobs: list[tuple] = []
    for i in range(args.kit_pieces):
        seed = KIT_SEED + i
        kit = TRAIN_KITS[i % len(TRAIN_KITS)]
        font = TRAIN_FONTS[(i // len(TRAIN_KITS)) % len(TRAIN_FONTS)]
        # Every tenth piece is held back (by seed, so a longer run keeps the same ones held back).
        jobs.append((seed, kit, font, CONDITIONS[(i // 3 + i) % len(CONDITIONS)], i % 10 == 9, cache))
    real_jobs: list[tuple] = []
    if args.mdb is not None and args.real_variants:
        from benchmarks.mdb import songs

        names = [s.name for s in songs(args.mdb)]
        for name in names:
            others = [o for o in names if o != name]
            real_jobs.append((name, tuple(others), args.real_variants, args.mdb, cache))
    started = time.monotonic()
    keys: list[str] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for found in pool.map(_real_job, real_jobs):
            keys += found
        keys += list(pool.map(_kit_job, jobs, chunksize=4))
    logger.info("%d examples ready in %.0f s", len(keys), time.monotonic() - started)
    return keys


# --- training ------------------------------------------------------------------------------------------------


def _crops(data: list[tuple[np.ndarray, np.ndarray]], count: int, rng: np.random.Generator):
    xs, ys = [], []
    for _ in range(count):
        x, y = data[int(rng.integers(len(data)))]
        offset = int(rng.integers(0, max(1, x.shape[1] - CROP)))
        xc, yc = x[:, offset : offset + CROP], y[:, offset : offset + CROP]
        pad = CROP - xc.shape[1]
        xs.append(np.pad(xc, ((0, 0), (0, pad))))
        ys.append(np.pad(yc, ((0, 0), (0, pad))))
    x = np.stack(xs)[:, None]
    # Level and spectral-tilt augmentation on the log features: another mix level, another EQ.
    x = x + rng.uniform(-0.5, 0.5, size=(count, 1, 1, 1)) + rng.uniform(-0.3, 0.3, size=(count, 1, 1, 1)) * np.linspace(
        -1, 1, x.shape[2]
    )[None, None, :, None]
    return torch.from_numpy(np.maximum(x, 0.0).astype(np.float32)), torch.from_numpy(np.stack(ys))


def _f1(curves: list[np.ndarray], truth: list[np.ndarray], row: int, threshold: float, distance: int, rate: float) -> tuple[float, int]:
    matched = n_ref = n_est = 0
    for curve, y in zip(curves, truth):
        ref = np.flatnonzero(y[row] == 1.0) / rate
        est = pick_peaks(curve[row], threshold, distance) / rate
        n_ref, n_est = n_ref + ref.size, n_est + est.size
        if ref.size and est.size:
            matched += len(mir_eval.util.match_events(ref, est, WINDOW_S))
    return (2 * matched / (n_ref + n_est) if n_ref + n_est else 0.0), n_ref


GRID = np.round(np.arange(0.1, 0.91, 0.04), 2)


def validate(net: DrumNet, val: list[tuple[np.ndarray, np.ndarray]], rate: float, distance: int) -> dict[str, tuple[float, float, int]]:
    """class -> (threshold, F1 there, reference hits) on `val`: the middle of the thresholds within 0.005
    of the best F1 (an unseen kit's curves peak a little higher or lower than these)."""
    net.eval()
    curves = [activations(net, x) for x, _ in val]
    truth = [y for _, y in val]
    out = {}
    for cls in SCORED:
        row = CLASSES.index(cls)
        scores = {float(t): _f1(curves, truth, row, float(t), distance, rate) for t in GRID}
        best = max(f for f, _ in scores.values())
        plateau = sorted(t for t, (f, _) in scores.items() if f >= best - 0.005)
        out[cls] = (plateau[len(plateau) // 2], best, next(iter(scores.values()))[1])
    return out


def train(
    train_set: list[tuple[np.ndarray, np.ndarray]],
    val_real: list[tuple[np.ndarray, np.ndarray]],
    val_kits: list[tuple[np.ndarray, np.ndarray]],
    real_share: float,
    args: argparse.Namespace,
) -> tuple[dict[str, torch.Tensor], dict[str, float], dict[str, float]]:
    """(state dict of the best epoch, thresholds, validation F1 per class)."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    front = DrumConfig()
    rate = front.analysis_rate / front.hop_length
    distance = int(round(0.04 * rate))
    real = [d for d, is_real in train_set if is_real]
    kits = [d for d, is_real in train_set if not is_real]
    net = DrumNet(n_bands=front.n_bands, n_classes=len(CLASSES), width=args.width, rnn=args.rnn)
    logger.info("%d parameters; %d real and %d kit examples", sum(p.numel() for p in net.parameters()), len(real), len(kits))
    optimiser = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=2e-3, total_steps=args.epochs * args.steps)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.full((len(CLASSES), 1), 6.0))
    best: tuple[float, dict[str, torch.Tensor] | None, dict[str, tuple[float, float, int]] | None] = (-1.0, None, None)
    started = time.monotonic()
    for epoch in range(args.epochs):
        net.train()
        total = 0.0
        for _ in range(args.steps):
            n_real = int(rng.binomial(args.batch, real_share)) if real else 0
            parts = [c for c in (_crops(real, n_real, rng) if n_real else None,
                                 _crops(kits, args.batch - n_real, rng) if args.batch - n_real else None) if c]  # fmt: skip
            xb, yb = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            optimiser.zero_grad()
            loss = loss_fn(net(xb), yb)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach())
        on_real = validate(net, val_real, rate, distance) if val_real else {}
        on_kits = validate(net, val_kits, rate, distance) if val_kits else {}
        score = float(np.mean([on_real[c][1] for c in SCORED if on_real.get(c, (0, 0, 0))[2] >= 20] or [0.0]))
        kit_score = float(np.mean([f for _, f, _ in on_kits.values()] or [0.0]))
        combined = 0.75 * score + 0.25 * kit_score if on_real else kit_score
        logger.info("epoch %d loss %.4f real %s kits %s -> %.3f (%.0f s)", epoch, total / args.steps,
                    {c: round(v[1], 3) for c, v in on_real.items()}, {c: round(v[1], 3) for c, v in on_kits.items()},
                    combined, time.monotonic() - started)  # fmt: skip
        if combined > best[0]:
            # A class's threshold from the real validation parts where they have 20 hits of it, else from
            # the kits' (0.5 where there is no validation at all: only in the tests' tiny runs).
            chosen = {
                c: on_real[c] if on_real.get(c, (0, 0, 0))[2] >= 20 else on_kits.get(c, (0.5, 0.0, 0)) for c in SCORED
            }
            best = (combined, {k: v.detach().clone() for k, v in net.state_dict().items()}, chosen)
    _, state, chosen = best
    assert state is not None and chosen is not None
    return state, {c: t for c, (t, _, _) in chosen.items()}, {c: round(f, 4) for c, (_, f, _) in chosen.items()}


def save_weights(path: Path, state: dict[str, torch.Tensor], thresholds: dict[str, float], args: argparse.Namespace,
                 real_songs: list[str], validation: dict[str, float]) -> None:  # fmt: skip
    front = DrumConfig()
    keys = ("analysis_rate", "n_fft", "hop_length", "n_bands", "fmin")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "shape": {"n_bands": front.n_bands, "n_classes": len(CLASSES), "width": args.width, "rnn": args.rnn},
            "classes": list(CLASSES),
            "state": {k: v.half() if v.is_floating_point() else v for k, v in state.items()},
            "thresholds": {c: thresholds[c] for c in NET_CLASSES},
            "front_end": {k: getattr(front, k) for k in keys},
            "trained_on": {
                "real_songs": sorted(real_songs), "real_source": "MDB Drums (github.com/CarlSouthall/MDBDrums)",
                "kits": list(TRAIN_KITS), "fonts": list(TRAIN_FONTS), "held_out_kits": list(HELD_OUT_KITS),
                "held_out_fonts": list(HELD_OUT_FONTS), "generator": "benchmarks.grooves", "material": MATERIAL_VERSION,
                "kit_pieces": args.kit_pieces, "kit_first_seed": KIT_SEED, "real_variants": args.real_variants,
            },
            "validation_f1": validation,
        },
        path,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mdb", default=os.environ.get("STEMSCRIBE_MDB", "/work/.mirror/CarlSouthall+MDBDrums/repo"),
                        help="a git copy of MDB Drums; 'none' trains on sampled kits only")  # fmt: skip
    parser.add_argument("--kit-pieces", type=int, default=480)
    parser.add_argument("--real-variants", type=int, default=12, help="versions of each MDB song")
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--steps", type=int, default=100, help="batches per epoch")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--real-share", type=float, default=0.5, help="share of real crops in a batch")
    # Width 8: the 2-D convolutions over 64 bands are most of the cost (width 16: about 4x the multiply-adds).
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--rnn", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="examples rendered at once")
    parser.add_argument("--folds", action="store_true", help="train one model per fold instead of the shipped one")
    parser.add_argument("--real-songs", choices=("outside-real-dev", "all"), default="outside-real-dev",
                        help="the shipped model's real songs: the MDB songs the real-dev set lacks (default), or every one")  # fmt: skip
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--cache", type=Path, default=Path(__file__).parent / ".evalset" / "drum_net")
    parser.add_argument("--no-check", action="store_true", help="skip the held-out kit check (tests on few kits)")
    parser.add_argument("--material-only", action="store_true", help="render and cache the material, train nothing")
    args = parser.parse_args(argv)
    args.mdb = None if args.mdb == "none" or not Path(args.mdb).exists() else Path(args.mdb)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.mdb is None:
        logger.warning("no MDB Drums copy: training on sampled kits only")
    if not args.no_check:
        check_held_out()
    keys = build_material(args)
    if args.material_only:
        return
    pool = [load(args.cache / "material", k) for k in keys]
    songs_all = sorted({s for e, _, _ in pool for s in e.songs})

    def split(held_out: set[str]) -> tuple[list, list, list]:
        train_set, val_real, val_kits = [], [], []
        for example, x, y in pool:
            if held_out & set(example.songs):
                continue
            real = bool(example.songs)
            if example.validation:
                (val_real if real else val_kits).append((x, y))
            else:
                train_set.append(((x, y), real))
        return train_set, val_real, val_kits

    if args.folds:
        for k, fold in enumerate(FOLDS):
            train_set, val_real, val_kits = split(set(fold))
            state, thresholds, validation = train(train_set, val_real, val_kits, args.real_share, args)
            path = args.cache / "folds" / f"fold{k}.pt"
            save_weights(path, state, thresholds, args, [s for s in songs_all if s not in fold], validation)
            record("drums", k, path)
            logger.info("fold %d (%s): thresholds %s, validation %s", k, ", ".join(fold), thresholds, validation)
        return
    held_out = {s for fold in FOLDS for s in fold} if args.real_songs == "outside-real-dev" else set()
    train_set, val_real, val_kits = split(held_out)
    state, thresholds, validation = train(train_set, val_real, val_kits, args.real_share, args)
    save_weights(args.out, state, thresholds, args, [s for s in songs_all if s not in held_out], validation)
    logger.info("wrote %s (thresholds %s, validation %s)", args.out, thresholds, validation)


if __name__ == "__main__":
    main()
