"""The jobs table and the one repository that reads and writes it (SQLite or PostgreSQL)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, Integer, String, Text, create_engine, event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from serve_app.domain.errors import ServiceUnavailable

logger = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


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


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets the API read while the tracker writes from another process.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


class JobRepository:
    """Every read and write of job rows. Database failures surface as `ServiceUnavailable`."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            from pathlib import Path

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

    def ping(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise ServiceUnavailable("The job database is not reachable.") from exc

    def insert(self, row: JobRow) -> JobRow:
        try:
            with self._session() as session, session.begin():
                session.add(row)
        except SQLAlchemyError as exc:
            raise ServiceUnavailable("The job database is not reachable.") from exc
        return row

    def get(self, job_id: str) -> JobRow | None:
        try:
            with self._session() as session:
                return session.get(JobRow, job_id)
        except SQLAlchemyError as exc:
            raise ServiceUnavailable("The job database is not reachable.") from exc

    def update(self, job_id: str, **fields: Any) -> None:
        fields.setdefault("updated_at", utcnow())
        try:
            with self._session() as session, session.begin():
                row = session.get(JobRow, job_id, with_for_update=True)
                if row is None:
                    raise KeyError(job_id)
                if "progress" in fields:
                    # The database enforces it too: progress a reader sees never goes backwards.
                    fields["progress"] = max(row.progress, fields["progress"])
                for name, value in fields.items():
                    setattr(row, name, value)
        except SQLAlchemyError as exc:
            raise ServiceUnavailable("The job database is not reachable.") from exc

    def unfinished(self) -> list[JobRow]:
        with self._session() as session:
            query = select(JobRow).where(JobRow.status.in_(("queued", "running"))).order_by(JobRow.created_at)
            return list(session.scalars(query))

    def dispose(self) -> None:
        self.engine.dispose()
