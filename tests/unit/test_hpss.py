"""separation=hpss: drums from the percussive part, everything pitched from the harmonic part."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile

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


# (soundfont, piece of benchmarks.drums_in_mixes) -> floors a little under what the service's drum
# transcriber (the network) measured there on 2026-12-04 (FluidR3 disco_808: kick 1.00, snare 0.96, closed
# hats 0.98, open 1.00; sf_GMbank disco: 0.96, 0.97, 0.95, 0.94). Both are disco grooves: closed hat on the beat,
# open hat on every off-beat; neither soundfont gave the network, the templates or any threshold.
BAND_MIXES = {
    ("FluidR3_GM", "disco_808"): {"kick": 0.9, "snare": 0.85, "hh_closed": 0.85, "hh_open": 0.85, "hihat": 0.9},
    ("sf_GMbank", "disco"): {"kick": 0.9, "snare": 0.9, "hh_closed": 0.85, "hh_open": 0.85, "hihat": 0.9},
}


@pytest.mark.parametrize(("font", "piece"), list(BAND_MIXES))
def test_drums_in_a_band_mix_through_hpss_open_hats_read_as_open(tmp_path: Path, font: str, piece: str) -> None:
    """A band mix (lead or not, synth bass, keys or guitar, drums) split and transcribed exactly as the
    service does (benchmarks.drums_in_mixes): hits found, and open hi-hats told from closed ones."""
    from benchmarks.drums_in_mixes import DESIGNS, SCORED, SOUND_FONTS, counts, f1, render_mix, service_drums
    from music.engines.drum_net import make_drum_transcriber
    from music.engines.hpss import HpssConfig

    if not SOUND_FONTS[font].is_file():
        pytest.skip(f"{SOUND_FONTS[font]} is not installed")
    index = next(i for i, d in enumerate(DESIGNS) if d.name == piece)
    wav, reference = render_mix(DESIGNS[index], "test", index, font, tmp_path)
    found = counts(reference, service_drums(wav, HpssConfig(), make_drum_transcriber()))
    scores = {name: round(f1(found[name]), 3) for name in SCORED}
    bars = BAND_MIXES[(font, piece)]
    assert all(scores[name] >= bar for name, bar in bars.items()), (scores, bars)
