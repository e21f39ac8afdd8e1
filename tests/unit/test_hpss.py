"""separation=hpss: drums from the percussive part, everything pitched from the harmonic part."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile

from benchmarks import scoring
from music.audio import DecodedAudio
from music.engines.hpss import hpss_stems
from serve_app.domain.errors import JobCanceled
from tests.music import render


def _decoded(midi: pretty_midi.PrettyMIDI, path: Path) -> DecodedAudio:
    samples, rate = soundfile.read(render(midi, path), dtype="float32", always_2d=True)
    return DecodedAudio(np.ascontiguousarray(samples.T), rate)


def _part(program: int, is_drum: bool, pitches: list[int], length: float) -> pretty_midi.PrettyMIDI:
    midi = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program, is_drum=is_drum)
    for i in range(8):
        inst.notes.append(pretty_midi.Note(100, pitches[i % len(pitches)], 0.25 + i * 0.5, 0.25 + i * 0.5 + length))
    midi.instruments.append(inst)
    return midi


def _energy(x: np.ndarray) -> float:
    return float(np.sum(x.astype(np.float64) ** 2))


def test_drums_land_in_the_drums_stem_and_a_string_pad_in_other(tmp_path: Path) -> None:
    drums = hpss_stems(_decoded(_part(0, True, [36, 42, 38, 42], 0.1), tmp_path / "drums.wav"))
    pad = hpss_stems(_decoded(_part(48, False, [60, 64, 67], 0.5), tmp_path / "pad.wav"))
    assert set(drums) == set(pad) == {"drums", "harmonic"}
    assert _energy(drums["drums"]) > 2 * _energy(drums["harmonic"])
    assert _energy(pad["harmonic"]) > 5 * _energy(pad["drums"])


def test_stems_keep_the_input_shape_and_add_up_to_the_mix(tmp_path: Path) -> None:
    mix = _decoded(_part(0, False, [60, 62], 0.3), tmp_path / "piano.wav")
    stems = hpss_stems(mix)
    for samples in stems.values():
        assert samples.shape == mix.samples.shape and samples.dtype == np.float32
    residual = mix.samples - stems["drums"] - stems["harmonic"]
    assert _energy(residual) < 1e-3 * _energy(mix.samples)


def test_a_canceled_job_stops_before_the_work(tmp_path: Path) -> None:
    mix = _decoded(_part(0, False, [60], 0.3), tmp_path / "piano.wav")
    with pytest.raises(JobCanceled):
        hpss_stems(mix, should_stop=lambda: True)


def test_margins_keep_the_stems_adding_up_and_the_high_band_residual_goes_to_drums(tmp_path: Path) -> None:
    from music.engines.hpss import HpssConfig

    mix = _decoded(_part(0, True, [46, 42, 38, 46], 0.1), tmp_path / "hats.wav")
    strict = hpss_stems(mix, HpssConfig(margin=3.0, margin_percussive=2.0))
    kept = hpss_stems(mix, HpssConfig(margin=3.0, margin_percussive=2.0, residual_above_hz=6000.0))
    for stems in (strict, kept):
        residual = mix.samples - stems["drums"] - stems["harmonic"]
        assert _energy(residual) < 1e-3 * _energy(mix.samples)

    def high(x: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(x.mean(axis=0)))
        return float(np.sum(spectrum[np.fft.rfftfreq(x.shape[1], 1 / mix.sample_rate) > 6000.0] ** 2))

    # The open hat's ring above 6 kHz: the stricter percussive margin hands it to the harmonic stem,
    # the residual band keeps it with the drums.
    assert high(kept["drums"]) > 1.3 * high(strict["drums"])
    assert high(kept["harmonic"]) < high(strict["harmonic"])


# (held-out kit, piece of benchmarks.drums_in_mixes) -> floors a little under what the service's drum
# transcriber measured there (benchmarks/results/drums_in_mixes.md). Both kits share no sample with what
# the network trained on (benchmarks.soundfonts checks it before the numbers are taken).
# Measured 2026-12-07 with the shipped weights: BJA Pacific rock 1.00 / 1.00 / 0.91, FluidR3 disco_808
# 1.00 / 0.80 (12 snares) / 0.92.
BAND_MIXES = {
    ("hydrogen:BJA_Pacific", "rock"): {"kick": 0.8, "snare": 0.8, scoring.HIHAT: 0.8},
    ("FluidR3_GM", "disco_808"): {"kick": 0.8, "snare": 0.7, scoring.HIHAT: 0.8},
}


@pytest.mark.parametrize(("kit", "piece"), list(BAND_MIXES))
def test_drums_in_a_band_mix_through_hpss_on_a_held_out_kit(tmp_path: Path, kit: str, piece: str) -> None:
    """A band mix (drums on a kit the network never heard, the band on freepats) split and transcribed
    exactly as the service does with separation=hpss: the hits are found."""
    from benchmarks.drums_in_mixes import DESIGNS, render_piece
    from benchmarks.sound_sources import source
    from music.audio import DecodedAudio
    from music.engines.drum_net import make_drum_transcriber
    from music.engines.hpss import PERCUSSIVE_STEM, HpssConfig, hpss_stems

    for name in (kit, "freepats"):
        if not source(name).installed:
            pytest.skip(f"{name} ({source(name).package}) is not installed")
    index = next(i for i, d in enumerate(DESIGNS) if d.name == piece)
    mixed, _, rate, truth = render_piece(DESIGNS[index], index, kit, tmp_path)
    percussive = hpss_stems(DecodedAudio(mixed, rate), HpssConfig())[PERCUSSIVE_STEM]
    found = scoring.drum_prf(truth, make_drum_transcriber().transcribe(percussive, rate))
    scores = {name: round(found[name].f1, 3) for name in BAND_MIXES[(kit, piece)] if found[name] is not None}
    assert all(scores[name] >= bar for name, bar in BAND_MIXES[(kit, piece)].items()), (scores, BAND_MIXES[(kit, piece)])
