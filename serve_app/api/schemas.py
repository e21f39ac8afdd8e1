"""Response bodies, as the OpenAPI document shows them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from serve_app.domain.jobs import JobStatus


class JobAccepted(BaseModel):
    job_id: str
    status: JobStatus


class ResultLink(BaseModel):
    name: str
    url: str


class MusicAnalysis(BaseModel):
    tempo_bpm: float = Field(description="Tempo tracked from the mix; the MIDI's tempo map follows every beat")
    # Optional: jobs that succeeded before these fields existed have none.
    tempo_source: str | None = Field(
        default=None,
        description="tracked: the MIDI follows the tracked beats; steady_fallback: the tracker was not confident, "
        "so one tempo at its estimate; default: no beat found, 120 BPM",
        examples=["tracked"],
    )
    tempo_reason: str | None = Field(default=None, description="Why that tempo source, in words")
    time_signature: str = Field(examples=["4/4"])
    meter_confidence: float | None = Field(
        default=None, description="0..1: how clearly the music chose its meter over the other; 4/4 when unclear"
    )
    key: str | None = Field(description='Estimated key, e.g. "A minor"; null when nothing pitched was found')
    key_confidence: float | None = Field(description="Correlation of the key profile that won, -1..1")


class JobView(BaseModel):
    job_id: str
    status: JobStatus
    stage: str
    progress: float = Field(ge=0, le=100)
    options: dict[str, Any]
    upload_name: str | None
    duration_seconds: float
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    stage_seconds: dict[str, float]
    attempts: int
    expired_at: datetime | None = Field(description="When retention removed the upload and results")
    results: list[ResultLink]
    analysis: MusicAnalysis | None = Field(description="Tempo, meter and key once the job has succeeded")
    cache_hit: bool = Field(
        description="The results are a copy of an earlier job's with the same decoded audio, options and models",
    )


class JobList(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last")


class ComponentStatus(StrEnum):
    READY = "ready"
    STARTING = "starting"  # will be ready without anyone's help: a model loading, the schema being brought up
    UNAVAILABLE = "unavailable"


class ComponentHealth(BaseModel):
    """What anyone may see of a component: a status word and a stable code, never the reason in words."""

    status: ComponentStatus
    code: str = Field(examples=["ok", "database_unreachable", "model_loading"])


class ComponentDetails(ComponentHealth):
    """An operator's view: the component's own report (driver errors, model folders, devices, counters)."""

    detail: dict[str, Any] = Field(default_factory=dict)


class Health(BaseModel):
    live: bool
    ready: bool
    components: dict[str, ComponentHealth]


class HealthDetails(BaseModel):
    live: bool
    ready: bool
    components: dict[str, ComponentDetails]


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    code: str
