"""The service's answers as typed objects. Every model ignores fields it does not know, so a newer
service (more fields in the job view) still parses; enumerations are plain strings for the same reason."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

FINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class ResultLink(_Model):
    name: str
    url: str


class MusicAnalysis(_Model):
    tempo_bpm: float | None = None
    tempo_source: str | None = None
    tempo_reason: str | None = None
    time_signature: str | None = None
    meter_confidence: float | None = None
    key: str | None = None
    key_confidence: float | None = None


class JobAccepted(_Model):
    """The answer to an upload: the job exists and is queued."""

    job_id: str
    status: str = "queued"
    location: str | None = Field(default=None, description="The job's URL, from the Location header")


class Job(_Model):
    """`GET /api/v1/jobs/{job_id}`."""

    job_id: str
    status: str
    stage: str = "queued"
    progress: float = 0.0
    options: dict[str, Any] = Field(default_factory=dict)
    upload_name: str | None = None
    duration_seconds: float | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    attempts: int = 0
    expired_at: datetime | None = None
    results: list[ResultLink] = Field(default_factory=list)
    analysis: MusicAnalysis | None = None
    cache_hit: bool = Field(default=False, description="The results are a copy of an identical earlier job's")
    retry_after: float | None = Field(default=None, exclude=True, description="The answer's Retry-After, seconds")

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class JobPage(_Model):
    """One page of `GET /api/v1/jobs`; pass `next_cursor` as `cursor` for the next (None on the last)."""

    jobs: list[Job] = Field(default_factory=list)
    next_cursor: str | None = None


class JobEvent(_Model):
    """One state of a job as the events stream (or, when it is unavailable, a poll) reports it."""

    event: str = "state"  # "state" or "final"
    job_id: str
    status: str
    stage: str = "queued"
    progress: float = 0.0
    error: str | None = None
    source: str = Field(default="sse", exclude=True, description="sse, or poll when the stream was unavailable")

    @property
    def is_final(self) -> bool:
        return self.event == "final" or self.status in FINAL_STATUSES

    @classmethod
    def from_job(cls, job: Job) -> JobEvent:
        return cls(
            event="final" if job.is_final else "state", job_id=job.job_id, status=job.status, stage=job.stage,
            progress=job.progress, error=job.error, source="poll",
        )  # fmt: skip
