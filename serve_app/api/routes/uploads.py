"""POST /api/v1/transcribe: a song in, a job to follow out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from music.presets import MidiOptions, NoteParameters, QuantizeGrid
from serve_app.api import submissions
from serve_app.api.schemas import JobAccepted
from serve_app.api.services import OwnerDep, ServicesDep
from serve_app.domain.jobs import JobOptions, SeparationMode

router = APIRouter(tags=["uploads"])


@router.post(
    "/transcribe",
    status_code=202,
    response_model=JobAccepted,
    summary="Upload a song; answers at once with the job to poll",
)
async def transcribe(
    request: Request,
    response: Response,
    services: ServicesDep,
    owner: OwnerDep,
    file: Annotated[UploadFile, File(description="The audio: WAV, FLAC, MP3, Ogg/Opus or M4A/AAC")],
    separation: Annotated[SeparationMode, Form()] = SeparationMode.DEMUCS,
    onset_threshold: Annotated[float | None, Form()] = None,
    frame_threshold: Annotated[float | None, Form()] = None,
    minimum_note_length_ms: Annotated[float | None, Form()] = None,
    minimum_frequency: Annotated[float | None, Form()] = None,
    maximum_frequency: Annotated[float | None, Form()] = None,
    clean_ghost_notes: Annotated[bool, Form(description="Drop short, quiet ghost notes")] = True,
    clean_octave_duplicates: Annotated[
        bool, Form(description="Drop notes that double a louder note's harmonic an octave or twelfth up")
    ] = True,
    quantize_grid: Annotated[
        QuantizeGrid, Form(description="Grid of transcription.quantized.mid; t = triplets")
    ] = QuantizeGrid.SIXTEENTH,
    webhook_url: Annotated[str | None, Form(max_length=2000)] = None,
    webhook_progress: Annotated[bool, Form()] = False,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JobAccepted:
    try:
        notes = NoteParameters(
            onset_threshold=onset_threshold, frame_threshold=frame_threshold,
            minimum_note_length_ms=minimum_note_length_ms,
            minimum_frequency=minimum_frequency, maximum_frequency=maximum_frequency,
        )  # fmt: skip
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
    midi = MidiOptions(
        clean_ghost_notes=clean_ghost_notes, clean_octave_duplicates=clean_octave_duplicates,
        quantize_grid=quantize_grid,
    )  # fmt: skip
    options = JobOptions(
        separation=separation, notes=notes, midi=midi, webhook_url=webhook_url, webhook_progress=webhook_progress
    )
    job_id, status = await submissions.submit(services, owner, file, options, idempotency_key)
    response.headers["Location"] = str(request.url_for("get_job", job_id=job_id))
    return JobAccepted(job_id=job_id, status=status)
