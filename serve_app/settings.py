"""The one settings model. Nothing else in stemscribe reads the environment."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def normalize_database_url(url: str) -> str:
    """Point plain PostgreSQL URLs at the psycopg 3 driver that stemscribe ships with."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _split(keys: SecretStr) -> list[str]:
    return [key.strip() for key in keys.get_secret_value().split(",") if key.strip()]


class Settings(BaseSettings):
    """Service-wide settings, read from `STEMSCRIBE_*` variables (and `DATABASE_URL`) or builder args."""

    # hide_input_in_errors: a rejected value may be a secret (a short events_token_secret, a URL with a password).
    model_config = SettingsConfigDict(env_prefix="STEMSCRIBE_", extra="forbid", frozen=True, hide_input_in_errors=True)

    data_dir: Path = Field(
        default=Path("~/.stemscribe"),
        description="Folder for the SQLite database and local storage.",
    )
    # Secret: a PostgreSQL URL carries its password. Read it with `get_secret_value()`; reprs and logs show ***.
    database_url: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("database_url", "DATABASE_URL", "STEMSCRIBE_DATABASE_URL"),
        description="SQLAlchemy URL; empty means a SQLite file in data_dir.",
    )
    storage_backend: Literal["local", "s3"] = "local"
    storage_dir: Path | None = Field(default=None, description="Local storage root; default data_dir/storage.")
    s3_bucket: str | None = None
    s3_prefix: str = "stemscribe/"
    s3_endpoint_url: str | None = Field(default=None, description="For S3-compatible servers (MinIO, Ceph, ...)")
    s3_region: str | None = None
    # Without a key pair here, boto3's own chain applies (AWS_* variables, ~/.aws, an instance role).
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    s3_max_attempts: int = Field(default=4, ge=1, description="per request, first try included")
    s3_timeout_seconds: float = Field(default=10, gt=0, description="connect and read timeout of one try")
    # Managed transfer: objects from the threshold on go up as multipart uploads of chunk-sized parts
    # (S3's smallest part is 5 MiB, its largest 5 GiB).
    s3_multipart_threshold_bytes: int = Field(default=8 * 1024 * 1024, ge=1)
    s3_multipart_chunk_bytes: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024, le=5 * 1024**3)
    # Downloads answer 307 to a presigned URL, so result bytes skip the ingress.
    s3_presigned_downloads: bool = False
    s3_presigned_expiry_seconds: int = Field(default=300, ge=1, le=7 * 24 * 3600)
    s3_presign_endpoint_url: str | None = Field(
        default=None, description="Endpoint named in presigned URLs, when clients reach S3 by another address"
    )

    max_upload_bytes: int = Field(default=200_000_000, gt=0)
    max_duration_seconds: float = Field(default=20 * 60, gt=0)
    max_decoded_bytes: int = Field(default=1_000_000_000, gt=0, description="float32 samples one upload may decode to")
    max_concurrent_jobs: int = Field(default=3, ge=1)
    max_concurrent_separations: int = Field(
        default=2, ge=1,
        description="Of the concurrent jobs, how many may need Demucs (separation=demucs); the other slots stay "
        "free for jobs that do not, so they never queue behind a separation. Two: the shipped Separation "
        "deployment runs up to two replicas, one song each",
    )  # fmt: skip
    # How long the pipeline waits for a model that is still loading before it fails the job.
    model_wait_seconds: float = Field(default=600, gt=0)
    health_timeout_seconds: float = Field(default=5, gt=0)

    # Durability: a running job's lease is renewed every third of its length; a job whose lease ran
    # out (worker or tracker died) is taken up again, up to max_attempts attempts in all.
    lease_seconds: float = Field(default=30, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    retry_backoff_seconds: float = Field(default=2, ge=0)
    max_queue_depth: int = Field(default=100, ge=1)
    retry_after_seconds: int = Field(default=2, ge=1, description="Retry-After for polls and 503s")
    retention_seconds: float = Field(default=7 * 24 * 3600, gt=0)
    cleanup_interval_seconds: float = Field(default=600, gt=0)
    # The result cache (serve_app/domain/cached_pipeline.py): a job whose decoded audio, result options and
    # models equal a finished job's gets a copy of that job's files instead of a computation.
    result_cache: bool = Field(default=True, description="Reuse the results of an identical finished job")
    result_cache_across_owners: bool = Field(
        default=True, description="Reuse another owner's results too (their files only, never their job records)"
    )

    # Defaults for the separation/transcription `user_config`; a YAML `user_config` replaces them.
    demucs_model: str = "htdemucs"
    demucs_model_dir: Path | None = None
    demucs_device: Literal["auto", "cpu", "cuda"] = "auto"

    # Security: requests carry X-API-Key unless auth_required is off (laptop config only).
    auth_required: bool = True
    api_keys: SecretStr = Field(default=SecretStr(""), description="Comma-separated keys to seed")
    # Operator keys may also read /api/v1/health/details (driver errors, model folders); a key listed here
    # and in api_keys is an operator's.
    operator_api_keys: SecretStr = Field(default=SecretStr(""), description="Comma-separated operator keys to seed")
    max_active_jobs_per_key: int = Field(default=10, ge=1, description="queued + running jobs per key")
    max_uploads_per_minute: int = Field(default=30, ge=1, description="uploads per key per minute")

    # Signs the short-lived tokens browsers use for live progress; one value for every ingress replica
    # (the builder reads settings once, so a generated default is shared by the whole application).
    # HS256 wants a key of 32 bytes at least (RFC 7518, section 3.2).
    events_token_secret: SecretStr = Field(default_factory=lambda: SecretStr(secrets.token_hex(32)), min_length=32)
    events_token_seconds: int = Field(default=300, ge=10)
    # A comment on an idle event stream, so proxies and load balancers do not close it as dead.
    events_keepalive_seconds: float = Field(default=15, gt=0)

    # Webhooks (Standard Webhooks): the signing secret, "whsec_" + base64; without it, webhook_url is refused.
    webhook_secret: SecretStr | None = None
    webhook_retry_seconds: float = Field(default=3600, gt=0, description="how long a delivery is retried")
    webhook_timeout_seconds: float = Field(default=10, gt=0)
    # Targets in private, loopback and link-local ranges are refused unless this is on.
    webhook_allow_private: bool = False

    # Browsers: CORS is off unless origins are listed (comma-separated, e.g. "https://app.example.com").
    cors_origins: str = ""

    # Logs: "JSON" writes one JSON object a line (with stemscribe_job_id on job lines) from every
    # replica and the job tracker; it becomes each deployment's Serve logging_config.
    log_encoding: Literal["TEXT", "JSON"] = "TEXT"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("data_dir", "storage_dir", "demucs_model_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Replicas run in other working directories, so paths are fixed once, where settings are read.
        return None if value is None else value.expanduser().resolve()

    @field_validator("database_url", mode="after")
    @classmethod
    def _driver(cls, value: SecretStr) -> SecretStr:
        return SecretStr(normalize_database_url(value.get_secret_value()))

    @model_validator(mode="after")
    def _derived(self) -> Settings:
        if not self.database_url.get_secret_value():
            object.__setattr__(self, "database_url", SecretStr(f"sqlite:///{self.data_dir / 'stemscribe.db'}"))
        if self.storage_dir is None:
            object.__setattr__(self, "storage_dir", self.data_dir / "storage")
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ValueError("storage_backend 's3' needs s3_bucket (STEMSCRIBE_S3_BUCKET)")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("s3_access_key_id and s3_secret_access_key go together")
        return self

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def seeded_api_keys(self) -> list[str]:
        return _split(self.api_keys)

    @property
    def seeded_operator_keys(self) -> list[str]:
        return _split(self.operator_api_keys)

    @property
    def max_upload_megabytes(self) -> float:
        return self.max_upload_bytes / 1_000_000
