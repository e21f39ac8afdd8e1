"""separation=hpss: drums from the percussive part, everything pitched from the harmonic part."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile

from deployments.hpss import hpss_stems
from serve_app.domain.audio import DecodedAudio
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
