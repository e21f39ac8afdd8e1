"""The drum network's training material: grooves with known hits, kits played as Hydrogen plays them,
effects that do not move onsets, frame targets, and the real-recording set's grouping by song."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import augment
from benchmarks.drum_material import CLASSES, targets
from benchmarks.grooves import groove
from benchmarks.hydrogen_kits import drum_class_of_name, hydrogen_kit, play
from benchmarks.real_dev import available, load
from benchmarks.sound_sources import source

RATE = 44100


def test_a_groove_is_its_seed_and_keeps_to_its_bars() -> None:
    a, b = groove(7, 12.0), groove(7, 12.0)
    assert a == b and a != groove(8, 12.0)
    assert {c for _, c, _ in a.hits} <= {*CLASSES, "hihat_pedal"}
    assert all(0.0 <= t < 12.0 and 0.0 < v <= 1.0 for t, _, v in a.hits)
    assert set(a.downbeats) <= set(a.beats)
    assert len(a.beats) == pytest.approx(len(a.downbeats) * a.beats_per_bar, abs=a.beats_per_bar)


def test_no_class_always_comes_with_another() -> None:
    """The first drum network learned that a hi-hat comes with every snare; across grooves, snares without
    a hat within 30 ms and kicks without a snare must be common."""
    alone = {"snare": 0, "kick": 0}
    total = {"snare": 0, "kick": 0}
    for seed in range(40):
        hits = groove(seed, 12.0).hits
        hats = np.array([t for t, c, _ in hits if c.startswith("hihat") or c == "ride"])
        for t, c, _ in hits:
            if c in total:
                total[c] += 1
                alone[c] += int(hats.size == 0 or np.abs(hats - t).min() > 0.03)
    assert all(alone[c] / total[c] > 0.2 for c in total), (alone, total)


@pytest.mark.parametrize(
    ("name", "cls"),
    [('Kick (Tama Superstar 22")', "kick"), ("Sabian Hat Semi-Open", "hihat_open"), ("Pedal HH", "hihat_pedal"),
     ("Hi-Hat Closed (Paiste)", "hihat_closed"), ("Paiste Ride", "ride"), ("Ride Bell", "ride"), ("Cowbell", "other"),
     ("Snare Rimshot", "snare"), ("Pearl Side Stick", "other"), ("Snare Roll", None), ("crash20inch--2", "crash")],
)  # fmt: skip
def test_kit_instruments_get_their_class_from_their_names(name: str, cls: str | None) -> None:
    assert drum_class_of_name(name) == cls


def test_an_open_hat_rings_until_the_next_closed_one() -> None:
    src = source("hydrogen:ForzeeStereo")
    if not src.installed:
        pytest.skip("hydrogen-drumkits is not installed")
    kit = hydrogen_kit(src.path)
    assert kit.of_class("kick") and kit.of_class("hihat_open") and kit.of_class("hihat_closed")
    rng = np.random.default_rng(0)
    ringing, _ = play(kit, [(0.1, "hihat_open", 0.9)], 2.0, RATE, rng)
    choked, played = play(kit, [(0.1, "hihat_open", 0.9), (0.4, "hihat_closed", 0.1)], 2.0, RATE, np.random.default_rng(0))
    assert len(played) == 2
    late = slice(int(0.8 * RATE), int(1.5 * RATE))
    assert np.abs(choked[:, late]).max() < 0.1 * np.abs(ringing[:, late]).max()


def _onset(x: np.ndarray) -> int:
    return int(np.argmax(np.abs(x).max(axis=0) > 0.2 * np.abs(x).max()))


def test_the_drum_bus_changes_the_sound_not_the_onsets() -> None:
    clicks = np.zeros((2, 3 * RATE), dtype=np.float32)
    at = [int(0.5 * RATE), int(1.5 * RATE)]
    for a in at:
        clicks[:, a : a + 400] = np.hanning(400) * np.sin(np.arange(400) / 3)
    for seed in range(12):
        out = augment.drum_bus(clicks, RATE, np.random.default_rng(seed))
        assert out.shape == clicks.shape
        assert abs(_onset(out) - at[0]) <= int(0.003 * RATE), seed  # within 3 ms
    loud = augment.compress(clicks, RATE, np.random.default_rng(1))
    assert np.isfinite(loud).all()


def test_a_mix_puts_the_drums_at_the_asked_level() -> None:
    rng = np.random.default_rng(0)
    drums = rng.standard_normal((2, RATE)).astype(np.float32)
    band = rng.standard_normal((2, RATE)).astype(np.float32) * 5
    mixed = augment.mix(drums, band, 6.0)
    assert np.abs(mixed).max() == pytest.approx(0.9, abs=1e-3)
    # The band comes in 6 dB under the drums, whatever its own level; then the sum is peak-normalised.
    expected = drums + band * (augment.rms(drums) / augment.rms(band)) * 10 ** (-6 / 20)
    assert np.allclose(mixed, expected * (0.9 / float(np.abs(expected).max())), atol=1e-5)


def test_targets_mark_the_onset_frame_and_its_neighbours() -> None:
    y = targets([(1.0, "kick"), (2.0, "hihat_pedal"), (3.0, "cowbell")], 400, 22050 / 256)
    kick, closed = CLASSES.index("kick"), CLASSES.index("hihat_closed")
    frame = int(round(1.0 * 22050 / 256))
    assert y[kick, frame] == 1.0 and y[kick, frame - 1] == y[kick, frame + 1] == 0.5
    assert y[closed].max() == 1.0  # a pedal hi-hat is a closed one
    assert y.sum() == pytest.approx(4.0)  # the cowbell is nobody's class


@pytest.mark.skipif(not available(), reason="the real-recording set (../shared/real-dev) is not on this machine")
def test_the_real_set_is_grouped_by_song() -> None:
    items = {i.id: i for i in load()}
    assert items["drums_mdb_beatles"].song == items["rawmix_mdb_beatles"].song == "MusicDelta_Beatles"
    assert items["mix_musdb_80srock_7s"].song == items["drums_mdb_80srock"].song
    britpop = items["drums_mdb_britpop"]
    assert britpop.drums["hihat"].size == 100 and britpop.meter == "4/4" and britpop.tempo_bpm == pytest.approx(110, rel=0.03)
