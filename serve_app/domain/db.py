"""The jobs table and the one repository that reads and writes it (SQLite or PostgreSQL).

Writes by a worker are fenced by the job's attempt number: once a job has been handed to a newer
attempt, an older worker's updates match no row and change nothing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    and_,
    case,
    create_engine,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from serve_app.domain.errors import QueueFull, RateLimited, ServiceUnavailable
from serve_app.domain.jobs import JobStatus, allowed_from

logger = logging.getLogger(__name__)

UNFINISHED = ("queued", "running")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    # SQLite drops the zone of stored datetimes; every time stemscribe writes is UTC.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    stage: Mapped[str] = mapped_column(String(16))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    upload_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    upload_bytes: Mapped[int] = mapped_column(BigInteger)
    duration_seconds: Mapped[float] = mapped_column(Float)
    sample_rate: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    results: Mapped[list[str]] = mapped_column(JSON, default=list)
    stage_seconds: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Durability (revision 0002)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    stems: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Ownership (revision 0003): the API key that made the job; None when authentication is off.
    owner: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    # Music analysis (revision 0004): tempo, time signature and key of a succeeded job.
    analysis: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Result cache (revision 0007): the decoded upload's hash (from the ingress), the key the job's results
    # are filed under once it succeeds (a succeeded job with a key holds that result: `result_cache`), and
    # whether its files are a copy of another job's.
    audio_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cache_key: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    cache_hit: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Role (revision 0006): an operator's key may also read the health details.
    operator: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class WebhookDeliveryRow(Base):
    """One webhook message in the outbox (revision 0005); `serve_app.domain.outbox` sends it."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the webhook-id, the same on every try
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    url: Mapped[str] = mapped_column(Text)
    event_type: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    # pending, delivered, failed (retried until deadline_at) or refused (the target broke the rules)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When it may be tried next; a claim moves it forward by the lease, so a sender that dies gives it back.
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deadline_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ResultCacheRow(Base):
    """One result cache key (revision 0007): the job that computes it, or last did. The primary key makes
    the claim to compute a key unique; `serve_app.domain.result_cache` reads and writes it."""

    __tablename__ = "result_cache"

    cache_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(32))
    hits: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class AdmissionLimits:
    """What a new job is checked against when it is admitted."""

    max_queue_depth: int
    max_active_jobs_per_key: int
    max_uploads_per_minute: int
    retry_after_seconds: int

    @classmethod
    def from_settings(cls, settings: Any) -> AdmissionLimits:
        return cls(
            settings.max_queue_depth, settings.max_active_jobs_per_key, settings.max_uploads_per_minute,
            settings.retry_after_seconds,
        )  # fmt: skip


# pg_advisory_xact_lock key that serialises admissions ("stem" in ASCII).
_ADMISSION_LOCK = 0x7374656D


def _check_limits(session: Session, limits: AdmissionLimits, owner: str | None, now: datetime) -> None:
    """RateLimited or QueueFull if one more job would break a limit."""
    if owner is not None:
        active = session.scalar(
            select(func.count()).select_from(JobRow).where(JobRow.owner == owner, JobRow.status.in_(UNFINISHED))
        )
        if (active or 0) >= limits.max_active_jobs_per_key:
            raise RateLimited(
                f"This key already has {active} jobs queued or running (the limit is "
                f"{limits.max_active_jobs_per_key}); wait for one to finish.",
                retry_after_seconds=limits.retry_after_seconds * 5,
            )
        recent = session.scalar(
            select(func.count()).select_from(JobRow)
            .where(JobRow.owner == owner, JobRow.created_at >= now - timedelta(minutes=1))
        )  # fmt: skip
        if (recent or 0) >= limits.max_uploads_per_minute:
            raise RateLimited(
                f"This key uploaded {recent} songs in the last minute (the limit is {limits.max_uploads_per_minute}).",
                retry_after_seconds=60,
            )
    queued = session.scalar(select(func.count()).select_from(JobRow).where(JobRow.status == "queued"))
    if (queued or 0) >= limits.max_queue_depth:
        raise QueueFull("Too many jobs are waiting; try again later.")


def make_engine(url: str) -> Engine:
    # hide_parameters: a failed statement's error (which gets logged) leaves out its values (webhook URLs, options).
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets the API read while the tracker writes from another process.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args={"connect_timeout": 5}, hide_parameters=True
    )


def _guarded(method: Any) -> Any:
    """Database failures surface as `ServiceUnavailable` (503), never as a 500."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except SQLAlchemyError as exc:
            if isinstance(exc, IntegrityError):
                raise
            raise ServiceUnavailable("The job database is not reachable; try again shortly.") from exc

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class JobRepository:
    """Every read and write of job rows."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (creating it in an empty database)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", "serve_app.domain:migrations")
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def _session(self) -> Session:
        return self._sessions()

    def dispose(self) -> None:
        self.engine.dispose()

    @_guarded
    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # --- reads -------------------------------------------------------------------------------

    @_guarded
    def get(self, job_id: str) -> JobRow | None:
        with self._session() as session:
            return session.get(JobRow, job_id)

    @_guarded
    def page(
        self, owner: str | None, status: str | None, limit: int, after: tuple[datetime, str] | None
    ) -> list[JobRow]:
        """One owner's jobs, newest first; `after` is the (created_at, id) of the previous page's last row."""
        owned = JobRow.owner.is_(None) if owner is None else JobRow.owner == owner
        query = select(JobRow).where(JobRow.deleted_at.is_(None), owned)
        if status is not None:
            query = query.where(JobRow.status == status)
        if after is not None:
            created, job_id = after
            query = query.where(
                or_(JobRow.created_at < created, and_(JobRow.created_at == created, JobRow.id < job_id))
            )
        query = query.order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit)
        with self._session() as session:
            return list(session.scalars(query))

    @_guarded
    def precheck(self, owner: str | None, idempotency_key: str | None, limits: AdmissionLimits) -> None:
        """An early refusal before the upload is stored; `admit` is the check that counts. A replayed
        idempotency key passes: it answers with its job and adds none."""
        with self._session() as session:
            if idempotency_key is not None and session.scalar(
                select(JobRow.id).where(JobRow.idempotency_key == idempotency_key)
            ):
                return
            _check_limits(session, limits, owner, utcnow())

    @_guarded
    def count_queued(self) -> int:
        with self._session() as session:
            query = select(func.count()).select_from(JobRow).where(JobRow.status == "queued")
            return int(session.scalar(query) or 0)

    # --- API keys ----------------------------------------------------------------------------

    @_guarded
    def add_key(self, row: ApiKeyRow) -> bool:
        """False when a key with the same hash exists already."""
        try:
            with self._session() as session, session.begin():
                session.add(row)
        except IntegrityError:
            return False
        return True

    @_guarded
    def key_by_hash(self, key_hash: str) -> ApiKeyRow | None:
        with self._session() as session:
            return session.scalars(select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash)).first()

    @_guarded
    def keys(self) -> list[ApiKeyRow]:
        with self._session() as session:
            return list(session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at)))

    @_guarded
    def set_key_operator(self, key_id: str, operator: bool) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(operator=operator))

    @_guarded
    def revoke_key(self, key_id: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                update(ApiKeyRow).where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None)).values(revoked_at=utcnow())
            )
            return bool(result.rowcount)

    @_guarded
    def claimable(self, now: datetime, limit: int) -> list[JobRow]:
        """Queued jobs, and running jobs whose lease ran out (their worker died or gave up), oldest first."""
        query = (
            select(JobRow)
            .where(JobRow.status.in_(UNFINISHED))
            .where(or_(JobRow.lease_expires_at.is_(None), JobRow.lease_expires_at < now))
            .order_by(JobRow.created_at)
            .limit(limit)
        )
        with self._session() as session:
            return list(session.scalars(query))

    @_guarded
    def cancel_requested(self, job_id: str) -> bool:
        with self._session() as session:
            row = session.get(JobRow, job_id)
            return row is None or row.cancel_requested or row.status == "canceled"

    @_guarded
    def holds_lease(self, job_id: str, attempt: int) -> bool:
        """Whether `attempt` may still publish the job's files: it is the job's current attempt, the job is
        running, not canceled or deleted, and the lease is held and has not run out (a lease past its time
        may be claimed by another tracker at any moment, so it counts as lost)."""
        query = select(func.count()).select_from(JobRow).where(
            JobRow.id == job_id, JobRow.attempts == attempt, JobRow.status == "running",
            JobRow.lease_owner.is_not(None), JobRow.lease_expires_at > utcnow(),
            JobRow.cancel_requested.is_(False), JobRow.deleted_at.is_(None),
        )  # fmt: skip
        with self._session() as session:
            return bool(session.scalar(query))

    # --- writes ------------------------------------------------------------------------------

    def _lock_admissions(self, session: Session) -> None:
        """Make this transaction the only admission in flight until it ends. The queue depth is one
        number for every key, so one lock for all: PostgreSQL's transaction advisory lock, SQLite's
        write lock taken at BEGIN IMMEDIATE. An admission holds it for a few short queries."""
        if self.engine.dialect.name == "sqlite":
            session.execute(text("BEGIN IMMEDIATE"))
        elif self.engine.dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADMISSION_LOCK})
        else:  # pragma: no cover - stemscribe runs on SQLite or PostgreSQL
            raise NotImplementedError(self.engine.dialect.name)

    @_guarded
    def admit(self, row: JobRow, limits: AdmissionLimits) -> str:
        """Check the limits and insert a new queued job as one atomic step; the id of the job that
        answers the request. A job id already inserted (a retried call) or an idempotency key already
        used answers with that job without counting it; anything else is checked like any upload
        (RateLimited, QueueFull) before it is inserted."""
        with self._session() as session, session.begin():
            self._lock_admissions(session)
            if session.scalar(select(JobRow.id).where(JobRow.id == row.id)) is not None:
                return row.id
            if row.idempotency_key is not None:
                existing = session.scalar(select(JobRow.id).where(JobRow.idempotency_key == row.idempotency_key))
                if existing is not None:
                    return str(existing)
            _check_limits(session, limits, row.owner, as_utc(row.created_at) or utcnow())
            session.add(row)
        return row.id

    def _update(self, *where: Any, **fields: Any) -> bool:
        fields.setdefault("updated_at", utcnow())
        if "progress" in fields:
            # Progress a reader sees never goes backwards, whoever writes.
            new = fields["progress"]
            fields["progress"] = case((JobRow.progress < new, new), else_=JobRow.progress)
        with self.engine.begin() as conn:
            result = conn.execute(update(JobRow).where(*where).values(**fields))
            return bool(result.rowcount)

    @_guarded
    def claim(self, job_id: str, seen_attempts: int, owner: str, lease_seconds: float) -> bool:
        """Start attempt `seen_attempts + 1`; False if another worker got there first."""
        now = utcnow()
        return self._update(
            JobRow.id == job_id,
            JobRow.attempts == seen_attempts,
            JobRow.status.in_(UNFINISHED),
            or_(JobRow.lease_expires_at.is_(None), JobRow.lease_expires_at < now),
            attempts=seen_attempts + 1,
            status="running",
            started_at=func.coalesce(JobRow.started_at, now),
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
        )

    @_guarded
    def renew(self, job_id: str, attempt: int, lease_seconds: float) -> bool:
        return self._update(
            JobRow.id == job_id,
            JobRow.attempts == attempt,
            JobRow.status.in_(UNFINISHED),
            lease_expires_at=utcnow() + timedelta(seconds=lease_seconds),
        )

    @_guarded
    def update_attempt(self, job_id: str, attempt: int, **fields: Any) -> bool:
        """A worker's write: applies only while `attempt` is the job's current one and it is unfinished."""
        return self._update(JobRow.id == job_id, JobRow.attempts == attempt, JobRow.status.in_(UNFINISHED), **fields)

    @_guarded
    def finish(self, job_id: str, attempt: int, status: JobStatus, **fields: Any) -> bool:
        """The attempt's last write: succeeded, failed or canceled, if the job is still its own."""
        return self._update(
            JobRow.id == job_id, JobRow.attempts == attempt, JobRow.status.in_(allowed_from(status)),
            status=status.value, finished_at=utcnow(), lease_owner=None, lease_expires_at=None, **fields,
        )  # fmt: skip

    @_guarded
    def release(self, job_id: str, attempt: int, error: str, backoff_seconds: float) -> bool:
        """Give the job back for another attempt after a pause (status and progress stay as they are)."""
        return self.update_attempt(
            job_id, attempt, lease_owner=None, lease_expires_at=utcnow() + timedelta(seconds=backoff_seconds),
            last_error=error,
        )  # fmt: skip

    @_guarded
    def cancel(self, job_id: str) -> None:
        """Queued: canceled at once. Running: flagged; its worker stops at the next checkpoint."""
        now = utcnow()
        self._update(
            JobRow.id == job_id, JobRow.status == "queued", JobRow.lease_owner.is_(None),
            status="canceled", stage="done", finished_at=now, error="Canceled by the client.",
        )  # fmt: skip
        self._update(JobRow.id == job_id, JobRow.status == "running", cancel_requested=True)

    @_guarded
    def fail_exhausted(self, job_id: str, seen_attempts: int, error: str) -> bool:
        return self._update(
            JobRow.id == job_id, JobRow.attempts == seen_attempts, JobRow.status.in_(allowed_from(JobStatus.FAILED)),
            status="failed", error=error, finished_at=utcnow(), lease_owner=None, lease_expires_at=None,
        )  # fmt: skip

    @_guarded
    def mark_deleted(self, job_id: str) -> None:
        self._update(JobRow.id == job_id, deleted_at=utcnow())

    @_guarded
    def expirable(self, finished_before: datetime) -> list[str]:
        query = select(JobRow.id).where(
            JobRow.status.in_(("succeeded", "failed", "canceled")),
            JobRow.finished_at < finished_before,
            JobRow.expired_at.is_(None),
            JobRow.deleted_at.is_(None),
        )
        with self._session() as session:
            return list(session.scalars(query))

    @_guarded
    def mark_expired(self, job_id: str) -> None:
        self._update(JobRow.id == job_id, expired_at=utcnow())
