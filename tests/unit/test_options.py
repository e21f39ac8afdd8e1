from __future__ import annotations

import pytest
from pydantic import ValidationError

from music.presets import MidiOptions, NoteParameters, QuantizeGrid, is_pitched, preset_for
from serve_app.domain.jobs import JobOptions


def test_requested_parameters_override_only_what_they_set() -> None:
    merged = NoteParameters(onset_threshold=0.7).over(preset_for("bass").notes)
    assert merged.onset_threshold == 0.7
    assert merged.maximum_frequency == 400.0  # the bass preset keeps the bass range


@pytest.mark.parametrize(
    "kwargs",
    [{"onset_threshold": 1.5}, {"frame_threshold": 0}, {"minimum_note_length_ms": 1},
     {"minimum_frequency": 5}, {"maximum_frequency": 20000}, {"minimum_frequency": 500, "maximum_frequency": 100}],
)  # fmt: skip
def test_out_of_range_parameters_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        NoteParameters(**kwargs)


def test_drums_go_to_the_drum_transcriber_and_other_stems_to_basic_pitch() -> None:
    assert not is_pitched("drums")
    assert all(is_pitched(stem) for stem in ("vocals", "bass", "other", "mix", "guitar", "piano"))


def test_cleaning_is_on_by_default_and_each_step_can_be_switched_off() -> None:
    assert JobOptions().midi == MidiOptions(clean_ghost_notes=True, clean_octave_duplicates=True)
    off = JobOptions.model_validate({"midi": {"clean_ghost_notes": False}})
    assert not off.midi.clean_ghost_notes and off.midi.clean_octave_duplicates


@pytest.mark.parametrize(("grid", "divisions"), [("1/4", 1), ("1/8", 2), ("1/8t", 3), ("1/16", 4), ("1/16t", 6)])
def test_quantize_grids_are_note_values_of_a_quarter_note_beat(grid: str, divisions: int) -> None:
    assert QuantizeGrid(grid).divisions_per_beat == divisions


def test_an_unknown_quantize_grid_is_refused() -> None:
    with pytest.raises(ValidationError):
        MidiOptions.model_validate({"quantize_grid": "1/5"})
