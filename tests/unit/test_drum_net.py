"""The learned drum transcriber's own promises: its weights never saw the evaluation's soundfonts, a
network made for another front end is refused, and the training command makes weights it can load.
(What it transcribes is tested beside the NMFD engine in test_drums.py and test_hpss.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.drums_in_mixes import SPLIT_FONTS
from music.drum_kit import HIHAT_CLOSED, HIHAT_OPEN, KICK
from music.engines.drum_net import (
    NET_CLASSES,
    WEIGHTS_PATH,
    DrumNet,
    DrumNetConfig,
    NetDrumTranscriber,
    _one_hat_per_instant,
)
from music.engines.drums import DrumConfig


def test_the_shipped_network_was_trained_only_on_soundfonts_the_evaluation_holds_out() -> None:
    saved = torch.load(WEIGHTS_PATH, map_location="cpu", weights_only=True)
    assert set(saved["trained_on"]["fonts"]).isdisjoint(SPLIT_FONTS["test"])
    assert set(saved["thresholds"]) == set(NET_CLASSES)
    assert all(0.0 < t < 1.0 for t in saved["thresholds"].values())
    net = DrumNet(**saved["shape"])
    # Small enough to ship in the wheel and to run on one CPU core next to basic-pitch.
    assert sum(p.numel() for p in net.parameters()) < 500_000


def test_a_network_made_for_another_front_end_is_refused() -> None:
    with pytest.raises(ValueError, match="front end"):
        NetDrumTranscriber(front_end=DrumConfig(hop_length=512))


def test_thresholds_can_be_overridden_per_class() -> None:
    strict = NetDrumTranscriber(DrumNetConfig(thresholds={KICK: 0.99}))
    assert strict.thresholds[KICK] == 0.99
    assert strict.thresholds[HIHAT_OPEN] == NetDrumTranscriber().thresholds[HIHAT_OPEN]


def test_a_hat_is_open_or_closed_not_both() -> None:
    probs = np.zeros((len(NET_CLASSES), 300), dtype=np.float32)
    closed, opened = NET_CLASSES.index(HIHAT_CLOSED), NET_CLASSES.index(HIHAT_OPEN)
    probs[closed, [100, 200]] = [0.9, 0.6]
    probs[opened, [101, 200, 250]] = [0.7, 0.8, 0.9]
    found = {HIHAT_CLOSED: np.array([100, 200]), HIHAT_OPEN: np.array([101, 200, 250])}
    _one_hat_per_instant(found, probs)
    # Both at once: the surer class keeps the hit; a lone hat stays.
    assert found[HIHAT_CLOSED].tolist() == [100]
    assert found[HIHAT_OPEN].tolist() == [200, 250]


def test_the_training_command_makes_weights_the_transcriber_loads(tmp_path: Path) -> None:
    from benchmarks.train_drum_net import main

    out = tmp_path / "net.pt"
    main(["--pieces", "3", "--recorded", "2", "--epochs", "1", "--width", "4", "--out", str(out), "--cache", str(tmp_path / "cache")])
    transcriber = NetDrumTranscriber(DrumNetConfig(weights_path=out))
    assert transcriber.net.conv[0].out_channels == 4
    notes = transcriber.transcribe(0.1 * np.random.default_rng(0).standard_normal(22050).astype(np.float32), 22050)
    assert isinstance(notes, list)
