"""basic-pitch transcription as a plain class: load the model once, turn a stem into notes."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from serve_app.domain.midi import Note, notes_from_basic_pitch
from serve_app.domain.options import NoteParameters

logger = logging.getLogger(__name__)


def bundled_onnx_model() -> Path:
    """The ICASSP 2022 model that ships inside the basic-pitch wheel."""
    from basic_pitch import FilenameSuffix, build_icassp_2022_model_path

    return build_icassp_2022_model_path(FilenameSuffix.onnx)


class TranscriptionConfig(BaseModel):
    """The transcription deployment's `user_config`."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_path: Path | None = Field(default=None, description="basic-pitch model file; None = bundled ONNX")
    melodia_trick: bool = True


class BasicPitchTranscriber:
    def __init__(self, config: TranscriptionConfig) -> None:
        from basic_pitch.inference import Model

        self.config = config
        self.model_path = config.model_path or bundled_onnx_model()
        self.model = Model(self.model_path)
        logger.info("basic-pitch model loaded from %s", self.model_path)

    def transcribe(self, wav_path: Path, parameters: NoteParameters) -> list[Note]:
        # basic-pitch's own `predict` is these two steps plus a print() per file.
        from basic_pitch import note_creation
        from basic_pitch.constants import AUDIO_SAMPLE_RATE, FFT_HOP
        from basic_pitch.inference import run_inference

        assert parameters.minimum_note_length_ms is not None
        output = run_inference(wav_path, self.model)
        _, events = note_creation.model_output_to_notes(
            output,
            onset_thresh=parameters.onset_threshold,
            frame_thresh=parameters.frame_threshold,
            min_note_len=int(round(parameters.minimum_note_length_ms / 1000 * (AUDIO_SAMPLE_RATE / FFT_HOP))),
            min_freq=parameters.minimum_frequency,
            max_freq=parameters.maximum_frequency,
            multiple_pitch_bends=False,
            melodia_trick=self.config.melodia_trick,
        )
        return notes_from_basic_pitch(events)
