"""The job model: what a client may ask of a job, and the state machine (statuses, stages and
progress that never goes backwards)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from music.presets import MidiOptions, NoteParameters


class SeparationMode(StrEnum):
    DEMUCS = "demucs"
    # Harmonic/percussive split (stems "drums" and "harmonic"): no model weights, so it works
    # air-gapped and on any CPU.
    HPSS = "hpss"
    NONE = "none"


class JobOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    separation: SeparationMode = SeparationMode.DEMUCS
    notes: NoteParameters = NoteParameters()
    midi: MidiOptions = MidiOptions()
    webhook_url: str | None = None
    webhook_progress: bool = False


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})

_ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELED}),
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELED: frozenset(),
}


def allowed_from(new: JobStatus) -> tuple[str, ...]:
    """The statuses a job may have when it becomes `new`: the guard of every status write."""
    return tuple(s.value for s, targets in _ALLOWED.items() if new in targets)


class Stage(StrEnum):
    QUEUED = "queued"
    DECODING = "decoding"
    SEPARATING = "separating"
    TRANSCRIBING = "transcribing"
    PACKAGING = "packaging"
    DONE = "done"

    @property
    def order(self) -> int:
        return _STAGE_ORDER.index(self)


_STAGE_ORDER = list(Stage)


# Share of overall progress (start, end) that each stage covers; separation dominates run time.
STAGE_SPAN: dict[Stage, tuple[float, float]] = {
    Stage.QUEUED: (0.0, 0.0),
    Stage.DECODING: (0.0, 5.0),
    Stage.SEPARATING: (5.0, 60.0),
    Stage.TRANSCRIBING: (60.0, 95.0),
    Stage.PACKAGING: (95.0, 100.0),
    Stage.DONE: (100.0, 100.0),
}


def overall_progress(stage: Stage, fraction: float) -> float:
    """Map a stage and how far it is (0..1) to the job's 0..100 progress."""
    start, end = STAGE_SPAN[stage]
    fraction = min(max(fraction, 0.0), 1.0)
    return round(start + (end - start) * fraction, 1)


def advance(previous: float, proposed: float) -> float:
    """Progress only moves forward; a late or repeated report never lowers it."""
    return max(previous, min(proposed, 100.0))
