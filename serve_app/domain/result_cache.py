"""The result cache's records, in the database so that they survive restarts and hold across trackers.

A result is held by jobs, not by the cache: every succeeded job that is neither deleted nor expired and
carries a key in `jobs.cache_key` has that key's result among its own files. So a result lives as long
as some job holds it, and deleting or expiring one job (its own files only) never touches another's.

`result_cache` has one row per key, naming the job that computes it (or last did). Every decision about
a key is taken under a lock on that key (a PostgreSQL transaction advisory lock; SQLite's write lock, by
`BEGIN IMMEDIATE`), and the row's primary key makes a second claim impossible even without it:

- a job that holds the result: reuse it (the asking job is filed under the key while it copies, and holds
  the result once it succeeds);
- else another job at work on the key under a live lease (computing it, or copying it from a holder that
  has just gone): wait for it;
- else this job computes it, taking the row over from a computer that died, failed or was canceled. Jobs
  taken over are no longer filed under the key: should one finish after all (a worker whose lease ran out
  and came back), its files stay its own and the key keeps one result.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, exists, select, text, update
from sqlalchemy.orm import Session

from serve_app.domain.db import UNFINISHED, JobRepository, JobRow, ResultCacheRow, utcnow

logger = logging.getLogger(__name__)

# pg_advisory_xact_lock(class, key) class of the result cache's per-key locks ("cach" in ASCII).
_LOCK_CLASS = 0x63616368


@dataclass(frozen=True)
class Reuse:
    holder: JobRow  # a succeeded job whose files are the result


@dataclass(frozen=True)
class Wait:
    job_id: str  # the job computing the result now


@dataclass(frozen=True)
class Compute:
    pass


Decision = Reuse | Wait | Compute


def _holding(key: Any) -> list[Any]:
    """The conditions of a job that holds `key`'s result (a key, or the column of a correlated query)."""
    return [
        JobRow.cache_key == key,
        JobRow.status == "succeeded",
        JobRow.deleted_at.is_(None),
        JobRow.expired_at.is_(None),
    ]


class ResultCache:
    def __init__(self, repo: JobRepository) -> None:
        self.engine = repo.engine

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _lock(self, session: Session, key: str) -> None:
        if self.engine.dialect.name == "sqlite":
            session.execute(text("BEGIN IMMEDIATE"))
        elif self.engine.dialect.name == "postgresql":
            # 32 bits of the key as a signed int4; two keys that share them only wait for each other.
            session.execute(
                text("SELECT pg_advisory_xact_lock(CAST(:cls AS integer), CAST(:key AS integer))"),
                {"cls": _LOCK_CLASS, "key": int(key[:8], 16) - 2**31},
            )
        else:  # pragma: no cover - stemscribe runs on SQLite or PostgreSQL
            raise NotImplementedError(self.engine.dialect.name)

    @staticmethod
    def _holder(session: Session, key: str, exclude: Iterable[str]) -> JobRow | None:
        query = (
            select(JobRow).where(*_holding(key), JobRow.id.not_in(list(exclude)))
            # The newest holder: it is the one retention keeps longest.
            .order_by(JobRow.finished_at.desc()).limit(1)
        )
        return session.scalars(query).first()

    @staticmethod
    def _producer(session: Session, key: str, job_id: str) -> str | None:
        """Another job at work on `key`'s result now (computing it, or copying it from a holder):
        unfinished, not canceled or deleted, and under a lease that has not run out (a dead worker's job is
        not waited for)."""
        query = select(JobRow.id).where(
            JobRow.cache_key == key, JobRow.id != job_id, JobRow.status.in_(UNFINISHED),
            JobRow.lease_owner.is_not(None), JobRow.lease_expires_at > utcnow(),
            JobRow.cancel_requested.is_(False), JobRow.deleted_at.is_(None),
        ).limit(1)  # fmt: skip
        return session.scalar(query)

    def holder(self, key: str) -> JobRow | None:
        """A job holding `key`'s result, if any (a read: nothing is claimed)."""
        with self._session() as session:
            return self._holder(session, key, ())

    def begin(self, key: str, job_id: str, exclude: Iterable[str] = ()) -> Decision:
        """What job `job_id` does about `key` (see the module's docstring). `exclude`: holders whose files
        turned out to be gone."""
        with self._session() as session, session.begin():
            self._lock(session, key)
            now = utcnow()
            holder = self._holder(session, key, [*exclude, job_id])
            if holder is not None:
                session.execute(update(JobRow).where(JobRow.id == job_id).values(cache_key=key))
                session.execute(
                    update(ResultCacheRow).where(ResultCacheRow.cache_key == key)
                    .values(hits=ResultCacheRow.hits + 1, updated_at=now)
                )  # fmt: skip
                return Reuse(holder)
            producer = self._producer(session, key, job_id)
            if producer is not None:
                # A waiter is not filed under the key: only jobs at work on it are waited for.
                session.execute(update(JobRow).where(JobRow.id == job_id).values(cache_key=None))
                return Wait(producer)
            # Unfinished jobs still filed under the key are dead (their leases ran out) or stopped: should one
            # finish after all, its files stay its own.
            session.execute(
                update(JobRow).where(JobRow.cache_key == key, JobRow.id != job_id, JobRow.status.in_(UNFINISHED))
                .values(cache_key=None)
            )  # fmt: skip
            entry = session.get(ResultCacheRow, key)
            if entry is None:
                session.add(ResultCacheRow(cache_key=key, job_id=job_id, hits=0, created_at=now, updated_at=now))
            elif entry.job_id != job_id:
                logger.info("job %s takes result %s over from job %s", job_id, key[:12], entry.job_id)
                entry.job_id, entry.updated_at = job_id, now
            session.execute(update(JobRow).where(JobRow.id == job_id).values(cache_key=key))
            return Compute()

    def forget(self, key: str, holder_id: str) -> None:
        """`holder_id`'s files of `key` are gone (deleted or expired under a copy, or lost): it no longer
        holds the result."""
        with self._session() as session, session.begin():
            self._lock(session, key)
            session.execute(
                update(JobRow).where(JobRow.id == holder_id, JobRow.cache_key == key).values(cache_key=None)
            )

    def abandon(self, key: str, job_id: str) -> None:
        """`job_id` computed under `key` but its result may not be filed there (its models changed while it
        ran): it keeps its files, the key is free for the next job."""
        with self._session() as session, session.begin():
            self._lock(session, key)
            session.execute(update(JobRow).where(JobRow.id == job_id, JobRow.cache_key == key).values(cache_key=None))
            session.execute(
                delete(ResultCacheRow).where(ResultCacheRow.cache_key == key, ResultCacheRow.job_id == job_id)
            )

    def sweep(self) -> int:
        """Remove the rows of keys no job holds and none computes (their last holder was deleted or
        expired); the number removed."""
        held = exists().where(*_holding(ResultCacheRow.cache_key))
        with self._session() as session:
            candidates = list(session.scalars(select(ResultCacheRow.cache_key).where(~held)))
        removed = 0
        for key in candidates:
            with self._session() as session, session.begin():
                self._lock(session, key)
                entry = session.get(ResultCacheRow, key)
                if entry is None or self._holder(session, key, ()) is not None or self._producer(session, key, ""):
                    continue
                session.delete(entry)
                removed += 1
        return removed
