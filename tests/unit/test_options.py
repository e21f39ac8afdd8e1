from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve_app.domain.options import NoteParameters, is_pitched, preset_for


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


def test_drums_are_kept_out_of_the_midi_and_other_stems_are_pitched() -> None:
    assert not is_pitched("drums")
    assert all(is_pitched(stem) for stem in ("vocals", "bass", "other", "mix", "guitar", "piano"))
