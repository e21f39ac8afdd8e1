"""The learned drum transcriber's own promises: its weights never heard the kits it is checked on, they say
which real songs they learned from, a network made for another front end is refused, and the training
command makes weights it can load. (What it transcribes is tested beside the NMFD engine in test_drums.py
and test_hpss.py, and on real recordings in tests/integration/test_real_recordings.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

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


def test_the_shipped_network_never_heard_the_kits_it_is_checked_on() -> None:
    """benchmarks.drums_in_mixes' kits share no sample (by name or by sound) with the training kits and
    soundfonts the weights record; the check refuses otherwise."""
    from benchmarks.drums_in_mixes import BAND_FONT, KITS, check_held_out
    from benchmarks.sound_sources import source

    saved = torch.load(WEIGHTS_PATH, map_location="cpu", weights_only=True)
    used = [*saved["trained_on"]["kits"], *saved["trained_on"]["fonts"], *KITS, BAND_FONT]
    missing = [name for name in used if not source(name).installed]
    if missing:
        pytest.skip(f"not installed: {missing}")
    check_held_out(None, KITS, BAND_FONT)
    assert set(saved["thresholds"]) == set(NET_CLASSES) and set(NET_CLASSES) <= set(saved["classes"])
    assert all(0.0 < t < 1.0 for t in saved["thresholds"].values())
    net = DrumNet(**saved["shape"])
    # Small enough to ship in the wheel and to run on one CPU core next to basic-pitch.
    assert sum(p.numel() for p in net.parameters()) < 500_000


def test_the_shipped_network_says_which_real_songs_it_learned_from() -> None:
    """benchmarks.real scores a real recording with these weights only if its song is not among them."""
    saved = torch.load(WEIGHTS_PATH, map_location="cpu", weights_only=True)
    songs = saved["trained_on"]["real_songs"]
    assert songs and all(s.startswith("MusicDelta_") for s in songs)


def test_a_network_made_for_another_front_end_is_refused() -> None:
    with pytest.raises(ValueError, match="front end"):
        NetDrumTranscriber(front_end=DrumConfig(hop_length=512))


def test_thresholds_can_be_overridden_per_class() -> None:
    strict = NetDrumTranscriber(DrumNetConfig(thresholds={KICK: 0.99}))
    assert strict.thresholds[KICK] == 0.99
    assert strict.thresholds[HIHAT_OPEN] == NetDrumTranscriber().thresholds[HIHAT_OPEN]


def test_a_weights_file_of_the_first_network_still_transcribes(tmp_path: Path) -> None:
    """The first network's files (dilated convolutions, four outputs, no class list) load and run."""
    net = DrumNet(n_bands=64, n_classes=4, width=4)
    front = DrumConfig()
    keys = ("analysis_rate", "n_fft", "hop_length", "n_bands", "fmin")
    path = tmp_path / "first.pt"
    torch.save({"shape": {"n_bands": 64, "n_classes": 4, "width": 4}, "state": net.state_dict(),
                "thresholds": dict.fromkeys(NET_CLASSES, 0.5), "front_end": {k: getattr(front, k) for k in keys}},
               path)  # fmt: skip
    transcriber = NetDrumTranscriber(DrumNetConfig(weights_path=path))
    assert transcriber.classes == NET_CLASSES
    assert isinstance(transcriber.transcribe(0.1 * np.ones(22050, dtype=np.float32), 22050), list)


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
    main(["--kit-pieces", "3", "--real-variants", "0", "--mdb", "none", "--epochs", "1", "--steps", "2", "--width", "4",
          "--rnn", "8", "--no-check", "--jobs", "1", "--out", str(out), "--cache", str(tmp_path / "cache")])  # fmt: skip
    transcriber = NetDrumTranscriber(DrumNetConfig(weights_path=out))
    assert transcriber.net.conv[0].out_channels == 4 and transcriber.net.rnn == 8
    notes = transcriber.transcribe(0.1 * np.random.default_rng(0).standard_normal(22050).astype(np.float32), 22050)
    assert isinstance(notes, list)
