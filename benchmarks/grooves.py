"""Random drum performances for training: what a drummer plays, as hits with known classes, beats and bars.

A groove is drawn from a seed: tempo (55-200 BPM), meter (4/4, 3/4, or 12/8 felt in four), a time keeper
(closed hi-hat, ride, open hat, or none) on quarters, eighths, sixteenths or a shuffle, a kick and a snare
pattern per bar from common ones plus random syncopation, ghost notes, open hats, crashes at phrase
starts, tom fills before them, dynamics and timing that drift like a player's, and stretches where some
instruments drop out or stray hits fall, so that no class always comes with another (the first drum
network learned that a hi-hat comes with every snare, benchmarks/train_drum_net.py says more).

Classes are the drum network's (kick, snare, hihat_closed, hihat_open, tom, crash, ride) plus
"hihat_pedal", rendered as a pedal hi-hat and scored as a closed one. This generator is for training
only: the synthetic evaluation (benchmarks/drums_in_mixes.py) plays benchmarks/drum_patterns.py's
grooves instead, so no generator setting is shared between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TIMEKEEPERS = ("hihat_closed", "hihat_closed", "hihat_closed", "ride", "hihat_open", None)
SUBDIVISIONS = (("8", 0.5), ("16", 0.3), ("4", 0.08), ("shuffle", 0.12))
# Kick patterns in eighths of a 4/4 bar (0..7), and of a 3/4 bar (0..5).
KICKS_4 = ((0, 4), (0, 4, 5), (0, 3, 4), (0, 2, 4, 6), (0, 5), (0, 1, 4), (0, 3, 5), (0, 4, 7), (0, 2, 5))
KICKS_3 = ((0,), (0, 3), (0, 4), (0, 1))
SNARES_4 = ((2, 6), (2, 6), (2, 6), (4,), (2, 5, 6), (2, 6, 7), (1, 3, 5, 7))
SNARES_3 = ((2, 4), (2,), (4,), (3,))


@dataclass(frozen=True)
class Groove:
    hits: tuple[tuple[float, str, float], ...]  # (time s, class, velocity 0..1), sorted
    beats: tuple[float, ...]
    downbeats: tuple[float, ...]
    tempo: float
    beats_per_bar: int
    seconds: float


def _choice(rng: np.random.Generator, options: tuple, weights: tuple[float, ...] | None = None):
    p = None if weights is None else np.asarray(weights) / sum(weights)
    return options[int(rng.choice(len(options), p=p))]


def groove(seed: int, seconds: float = 16.0, start: float | None = None) -> Groove:
    rng = np.random.default_rng((seed, 2024))
    tempo = float(np.exp(rng.uniform(np.log(55), np.log(200))))
    meter = _choice(rng, (4, 3, 4), (0.75, 0.15, 0.1))
    twelve_eight = meter == 4 and rng.random() < 0.1
    beat = 60.0 / tempo
    start = float(rng.uniform(0.0, 1.0)) if start is None else start
    keeper = _choice(rng, TIMEKEEPERS)
    subdivision = "shuffle" if twelve_eight else _choice(rng, tuple(s for s, _ in SUBDIVISIONS),
                                                          tuple(w for _, w in SUBDIVISIONS))  # fmt: skip
    swing = 2 / 3 if subdivision == "shuffle" else 0.5 + float(rng.uniform(0.0, 0.08)) * (rng.random() < 0.3)
    kicks = KICKS_4 if meter == 4 else KICKS_3
    snares = SNARES_4 if meter == 4 else SNARES_3
    kick, snare = kicks[int(rng.integers(len(kicks)))], snares[int(rng.integers(len(snares)))]
    jitter = float(rng.uniform(0.002, 0.015))  # the player's timing spread, s
    level = float(rng.uniform(0.45, 0.95))  # how hard they play
    ghosts = rng.random() < 0.4
    opens = rng.random() < 0.35
    phrase = int(_choice(rng, (4, 8, 2)))
    fills = rng.random() < 0.6
    crashes = rng.random() < 0.7
    drift = np.cumsum(rng.normal(0.0, 0.002, size=2000))  # slow tempo drift, s per beat
    hits: list[tuple[float, str, float]] = []
    beats: list[float] = []
    downbeats: list[float] = []
    bars = int((seconds - start) / (meter * beat)) + 1

    def at(bar: int, position: float) -> float:
        """Time of `position` beats into `bar`, with drift."""
        b = bar * meter + position
        return start + b * beat + float(drift[min(int(b), drift.size - 1)])

    def add(t: float, cls: str, velocity: float) -> None:
        t += float(np.clip(rng.normal(0.0, jitter), -3 * jitter, 3 * jitter))
        if 0.0 <= t < seconds - 0.05:
            hits.append((t, cls, float(np.clip(velocity * level + rng.normal(0.0, 0.06), 0.05, 1.0))))

    def eighth(k: int) -> float:
        """Position in beats of eighth k of a bar, swung."""
        return k // 2 + (swing if k % 2 else 0.0)

    for bar in range(bars):
        for b in range(meter):
            beats.append(at(bar, b))
        downbeats.append(at(bar, 0))
        fill_bar = fills and bar % phrase == phrase - 1 and rng.random() < 0.7
        drop = {c for c in ("kick", "snare", "keeper") if rng.random() < 0.08}
        # Time keeper.
        if keeper is not None and "keeper" not in drop and not (fill_bar and rng.random() < 0.5):
            steps = {"4": [float(b) for b in range(meter)], "8": [eighth(k) for k in range(2 * meter)],
                     "shuffle": [eighth(k) for k in range(2 * meter)],
                     "16": [b + q / 4 for b in range(meter) for q in range(4)]}[subdivision]  # fmt: skip
            for k, pos in enumerate(steps):
                cls = keeper
                if keeper == "hihat_closed" and opens and rng.random() < 0.12:
                    cls = "hihat_open"
                accent = 1.0 if pos == int(pos) else 0.7
                add(at(bar, pos), cls, accent * float(rng.uniform(0.6, 1.0)))
            if keeper != "hihat_closed" and rng.random() < 0.3:  # the foot keeps time under a ride
                for b in range(1, meter, 2):
                    add(at(bar, b), "hihat_pedal", 0.5)
        # Kick and snare.
        if "kick" not in drop:
            for k in kick:
                add(at(bar, eighth(k)), "kick", 1.0 if k == 0 else 0.85)
            for k in range(2 * meter):
                if k not in kick and rng.random() < 0.06:
                    add(at(bar, eighth(k)), "kick", 0.7)
        if "snare" not in drop and not fill_bar:
            for k in snare:
                add(at(bar, eighth(k)), "snare", 1.0)
            if ghosts:
                for q in range(4 * meter):
                    if q % 2 == 1 and rng.random() < 0.15:
                        add(at(bar, q / 4), "snare", float(rng.uniform(0.12, 0.3)))
        if fill_bar:
            first = int(rng.integers(meter // 2, meter)) * 4
            drums = _choice(rng, (("snare",), ("tom",), ("snare", "tom"), ("tom", "snare")))
            for q in range(first, 4 * meter):
                if rng.random() < 0.85:
                    add(at(bar, q / 4), drums[(q * len(drums)) // (4 * meter)] if len(drums) > 1 else drums[0],
                        float(rng.uniform(0.6, 1.0)))  # fmt: skip
        if crashes and bar % phrase == 0 and rng.random() < 0.8:
            add(at(bar, 0), "crash", 1.0)
            add(at(bar, 0), "kick", 1.0)
        # Stray hits: nothing in a groove is always where the pattern says.
        for _ in range(int(rng.poisson(0.3))):
            add(at(bar, float(rng.integers(0, 4 * meter)) / 4),
                _choice(rng, ("kick", "snare", "tom", "crash", "hihat_open", "ride")), float(rng.uniform(0.3, 1.0)))  # fmt: skip
    hits.sort()
    # Two hits of one class within 20 ms are one stroke (a flam is annotated once).
    kept: list[tuple[float, str, float]] = []
    last: dict[str, float] = {}
    for t, cls, v in hits:
        if t - last.get(cls, -1.0) >= 0.02:
            kept.append((t, cls, v))
            last[cls] = t
    beats_in = tuple(b for b in beats if 0.0 <= b < seconds)
    return Groove(tuple(kept), beats_in, tuple(d for d in downbeats if 0.0 <= d < seconds), tempo,
                  3 if meter == 3 else 4, seconds)  # fmt: skip
