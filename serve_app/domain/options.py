"""What a client may ask of a job, and the per-stem basic-pitch presets that fill in the rest."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

# basic-pitch's model covers A0..C8; asking outside it only returns nothing.
MIN_FREQUENCY_HZ = 27.5
MAX_FREQUENCY_HZ = 4186.0


class SeparationMode(StrEnum):
    DEMUCS = "demucs"
    NONE = "none"


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


class JobOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    separation: SeparationMode = SeparationMode.DEMUCS
    notes: NoteParameters = NoteParameters()
    webhook_url: str | None = None
    webhook_progress: bool = False


class StemPreset(BaseModel):
    model_config = ConfigDict(frozen=True)

    program: int = Field(ge=0, le=127, description="General MIDI program, 0-based")
    pitched: bool = True
    notes: NoteParameters = NoteParameters()


BASIC_PITCH_DEFAULTS = NoteParameters(
    onset_threshold=0.5, frame_threshold=0.3, minimum_note_length_ms=127.7
)

# Programs are 0-based General MIDI numbers. Ranges keep each stem to where its instrument plays,
# which removes separation bleed (cymbal hash in "bass", bass rumble in "vocals").
DEFAULT_PRESETS: dict[str, StemPreset] = {
    "vocals": StemPreset(
        program=53,  # Voice Oohs
        notes=BASIC_PITCH_DEFAULTS.model_copy(
            update={"minimum_frequency": 80.0, "maximum_frequency": 1400.0, "minimum_note_length_ms": 100.0}
        ),
    ),
    "bass": StemPreset(
        program=33,  # Electric Bass (finger)
        notes=BASIC_PITCH_DEFAULTS.model_copy(
            update={"minimum_frequency": 30.0, "maximum_frequency": 400.0, "frame_threshold": 0.35}
        ),
    ),
    "other": StemPreset(program=0, notes=BASIC_PITCH_DEFAULTS),  # Acoustic Grand Piano
    "mix": StemPreset(program=0, notes=BASIC_PITCH_DEFAULTS),
    "drums": StemPreset(program=0, pitched=False),
    # htdemucs_6s stems
    "guitar": StemPreset(
        program=25,  # Acoustic Guitar (steel)
        notes=BASIC_PITCH_DEFAULTS.model_copy(update={"minimum_frequency": 75.0}),
    ),
    "piano": StemPreset(program=0, notes=BASIC_PITCH_DEFAULTS),
}


def preset_for(stem: str) -> StemPreset:
    return DEFAULT_PRESETS.get(stem, DEFAULT_PRESETS["other"])


def is_pitched(stem: str) -> bool:
    return preset_for(stem).pitched
