"""The per-stem presets: basic-pitch's note parameters, the cleaning rules and the General MIDI program
of each stem, and the MIDI options a job may change."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

# basic-pitch's model covers A0..C8; asking outside it only returns nothing.
MIN_FREQUENCY_HZ = 27.5
MAX_FREQUENCY_HZ = 4186.0


class QuantizeGrid(StrEnum):
    """The grid of transcription.quantized.mid, as a note value (a beat is a quarter note)."""

    QUARTER = "1/4"
    EIGHTH = "1/8"
    EIGHTH_TRIPLET = "1/8t"
    SIXTEENTH = "1/16"
    SIXTEENTH_TRIPLET = "1/16t"
    THIRTY_SECOND = "1/32"

    @property
    def divisions_per_beat(self) -> int:
        return _DIVISIONS[self]


_DIVISIONS = {"1/4": 1, "1/8": 2, "1/8t": 3, "1/16": 4, "1/16t": 6, "1/32": 8}


class MidiOptions(BaseModel):
    """How the notes become MIDI; each cleaning step can be switched off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clean_ghost_notes: bool = True
    clean_octave_duplicates: bool = True
    quantize_grid: QuantizeGrid = QuantizeGrid.SIXTEENTH


class NoteParameters(BaseModel):
    """basic-pitch's note-creation parameters; None means "use the stem's preset"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    onset_threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    frame_threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    minimum_note_length_ms: float | None = Field(default=None, ge=10.0, le=2000.0)
    minimum_frequency: float | None = Field(default=None, ge=MIN_FREQUENCY_HZ, le=MAX_FREQUENCY_HZ)
    maximum_frequency: float | None = Field(default=None, ge=MIN_FREQUENCY_HZ, le=MAX_FREQUENCY_HZ)

    @model_validator(mode="after")
    def _ordered(self) -> NoteParameters:
        low, high = self.minimum_frequency, self.maximum_frequency
        if low is not None and high is not None and low >= high:
            raise ValueError("minimum_frequency must be lower than maximum_frequency")
        return self

    def over(self, preset: NoteParameters) -> NoteParameters:
        """These parameters where set, the preset's elsewhere."""
        return preset.model_copy(update=self.model_dump(exclude_none=True))


class CleaningRules(BaseModel):
    """Thresholds of the cleaning steps (music/cleaning.py), per stem preset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Ghost notes: shorter than this AND quieter than this fraction of the stem's median velocity.
    ghost_max_seconds: float = Field(default=0.3, gt=0)
    ghost_velocity_ratio: float = Field(default=0.5, ge=0)
    # Octave duplicates: starts within this of a note a harmonic interval below it...
    duplicate_onset_window: float = Field(default=0.05, gt=0)
    # ...and is at most this loud relative to it (0 switches the rule off for the stem).
    duplicate_velocity_ratio: float = Field(default=0.6, ge=0)


class StemPreset(BaseModel):
    model_config = ConfigDict(frozen=True)

    program: int = Field(ge=0, le=127, description="General MIDI program, 0-based")
    pitched: bool = True
    notes: NoteParameters = NoteParameters()
    cleaning: CleaningRules = CleaningRules()


NO_CLEANING = CleaningRules(ghost_velocity_ratio=0.0, duplicate_velocity_ratio=0.0)

# vocals/bass/other: chosen with `python -m benchmarks.tune_presets` on the composed set's tune half (README,
# "Presets") on isolated instrument renders; not yet cross-validated over genres. Frequency ranges tie on clean
# renders and are kept: they remove separation bleed (cymbal hash in "bass", rumble in "vocals").
_OTHER = StemPreset(
    program=0,  # Acoustic Grand Piano
    notes=NoteParameters(onset_threshold=0.8, frame_threshold=0.2, minimum_note_length_ms=127.7),
    cleaning=CleaningRules(ghost_velocity_ratio=0.8, ghost_max_seconds=1.0, duplicate_velocity_ratio=1.0),
)
# The whole mix (separation=none) and HPSS's "harmonic" stem: chosen with `python -m benchmarks.crossval`
# (README, "Presets"), leave one genre out x leave one sample family out over real scores and the composed
# set (benchmarks/results/crossval.md). Only the onset threshold beat basic-pitch's defaults on the held-out
# blocks of every genre (frame threshold and minimum length did not: they stay at basic-pitch's 0.3 and
# 127.7 ms). The cleaning, tuned on top of it, won overall but lost on quartets, so it is off: a change
# stays at basic-pitch's behaviour unless it wins on every held-out genre.
_MIX = StemPreset(
    program=0,
    notes=NoteParameters(onset_threshold=0.7, frame_threshold=0.3, minimum_note_length_ms=127.7),
    cleaning=NO_CLEANING,
)
DEFAULT_PRESETS: dict[str, StemPreset] = {
    "vocals": StemPreset(
        program=53,  # Voice Oohs
        notes=NoteParameters(
            onset_threshold=0.8, frame_threshold=0.5, minimum_note_length_ms=127.7,
            minimum_frequency=80.0, maximum_frequency=1400.0,
        ),  # fmt: skip
        cleaning=NO_CLEANING,
    ),
    "bass": StemPreset(
        program=33,  # Electric Bass (finger)
        notes=NoteParameters(
            onset_threshold=0.6, frame_threshold=0.6, minimum_note_length_ms=92.9,
            minimum_frequency=30.0, maximum_frequency=400.0,
        ),  # fmt: skip
        cleaning=CleaningRules(ghost_velocity_ratio=0.6, ghost_max_seconds=0.2, duplicate_velocity_ratio=0.0),
    ),
    "other": _OTHER,
    "mix": _MIX,
    # separation=hpss: the mix without its drums
    "harmonic": _MIX,
    # Drums: General MIDI percussion on channel 10; the program is the standard kit.
    "drums": StemPreset(program=0, pitched=False),
    # htdemucs_6s stems, with the "other" preset's parameters
    "guitar": _OTHER.model_copy(update={"program": 25}),  # Acoustic Guitar (steel)
    "piano": _OTHER,
}


def preset_for(stem: str) -> StemPreset:
    return DEFAULT_PRESETS.get(stem, DEFAULT_PRESETS["other"])


def is_pitched(stem: str) -> bool:
    return preset_for(stem).pitched
