"""The files one attempt at a job writes, fenced like its database writes.

An attempt never writes a job's final names directly. It writes under its own folder of temporaries
(`jobs/<id>/tmp/attempt-<n>/...`), so two attempts that run at once (an orphaned separation beside the
attempt that took over) never write the same object. `publish` then gives the temporaries their final
names, but only while the attempt still holds the job's lease, asked of the database right before the
renames; an attempt that lost it removes its temporaries, publishes nothing and raises `LeaseLost`.

A delete can come between that check and the renames. The delete route flags the job (cancel) before
it removes the job's folder, so the check after the renames either sees the flag, and the attempt
removes what it has just published, or came before it, and then the folder's removal comes after the
renames and takes the files with it. Either way a deleted job keeps no files.

An attempt that is superseded between the check and the renames (a lease taken over in those
milliseconds) still publishes whole files of the same job from the same upload and options; the newer
attempt reuses or replaces them. Object storage has no compare-and-set to close that window; the lease
check makes it milliseconds instead of a whole separation."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from types import TracebackType
from typing import Protocol

from serve_app.domain.errors import JobCanceled
from serve_app.domain.storage import JobKeys, StorageBackend

logger = logging.getLogger(__name__)


class LeaseLost(JobCanceled):
    """The attempt no longer holds its job (taken over, handed back, run out, canceled or deleted): it
    ends quietly, without a result and without counting as a failure."""

    @classmethod
    def of(cls, job_id: str, attempt: int) -> LeaseLost:
        # One message argument, like every MusicError: it travels back from a replica pickled by Ray.
        return cls(f"Attempt {attempt} of job {job_id} no longer holds its lease.")


class Leases(Protocol):
    """What publishing asks of the job database (`JobRepository` is one)."""

    def holds_lease(self, job_id: str, attempt: int) -> bool: ...

    def cancel_requested(self, job_id: str) -> bool: ...


class JobFiles:
    """One attempt's writes to one job's storage: staged under attempt-scoped names, published together.

    Use it as a context manager: leaving it with an exception removes the temporaries it wrote (best
    effort: a process that dies leaves them, and the tracker removes the attempt's folder when the
    attempt ends, and every attempt's when the job succeeds)."""

    def __init__(self, storage: StorageBackend, job_id: str, attempt: int, leases: Leases) -> None:
        self.storage, self.job_id, self.attempt, self.leases = storage, job_id, attempt, leases
        self.keys = JobKeys(job_id)
        self._staged: dict[str, str] = {}  # final key -> its temporary, in the order written

    def __enter__(self) -> JobFiles:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            with contextlib.suppress(Exception):  # the exception that ended the work is the one to report
                self.discard()

    def temporary(self, key: str) -> str:
        return self.keys.temporary(key, self.attempt)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.storage.put_bytes(self._stage(key), data)

    def put_file(self, key: str, source: Path) -> None:
        self.storage.put_file(self._stage(key), source)

    def copy(self, source: str, key: str) -> None:
        """Stage a copy of the object `source` (another job's, say) as `key`; FileNotFoundError if it is gone."""
        self.storage.copy(source, self._stage(key))

    def _stage(self, key: str) -> str:
        # Recorded before the write, so a write that fails half-way is removed by `discard` too.
        self._staged[key] = self.temporary(key)
        return self._staged[key]

    @property
    def staged(self) -> list[str]:
        """The final keys written and not yet published."""
        return list(self._staged)

    def publish(self) -> list[str]:
        """Give every staged file its final name, in the order written (so the last one can mark the
        set complete), if this attempt still holds the lease; the final keys published. `LeaseLost` when
        it does not, before or right after the renames; the job's database errors (`ServiceUnavailable`)
        are raised as they are, since without an answer nothing may be published."""
        if not self._staged:
            return []
        if not self.leases.holds_lease(self.job_id, self.attempt):
            self.discard()
            logger.info("job %s: attempt %d lost its lease; it publishes nothing", self.job_id, self.attempt)
            raise LeaseLost.of(self.job_id, self.attempt)
        published: list[str] = []
        try:
            for final, temporary in list(self._staged.items()):
                self.storage.move(temporary, final)
                del self._staged[final]
                published.append(final)
        except FileNotFoundError:
            # A temporary vanished under the renames: a delete of the job is the one thing that removes
            # them, which the check below hears of; with the lease still held it is a real error.
            if self.leases.holds_lease(self.job_id, self.attempt):
                raise
        if not self.leases.holds_lease(self.job_id, self.attempt):
            if self.leases.cancel_requested(self.job_id):
                # Canceled or deleted while the files moved: see the module's docstring.
                for key in published:
                    self.storage.delete(key)
            self.discard()  # what a vanished temporary left unmoved
            logger.info("job %s: attempt %d lost its lease while publishing", self.job_id, self.attempt)
            raise LeaseLost.of(self.job_id, self.attempt)
        logger.info("job %s: attempt %d published %d files", self.job_id, self.attempt, len(published))
        return published

    def discard(self) -> None:
        """Remove the temporaries written through this object and not published. Only these: the same
        attempt may have other writers at work (two transcription calls run at once), and the tracker
        removes the attempt's whole folder when the attempt ends."""
        for temporary in self._staged.values():
            self.storage.delete(temporary)
        self._staged.clear()
