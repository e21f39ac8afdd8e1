"""Specific exceptions. `serve_app.api.errors` maps each to one HTTP response."""

from __future__ import annotations

from music.errors import Canceled as JobCanceled
from music.errors import ModelUnavailable, MusicError

__all__ = ["JobCanceled", "ModelUnavailable"]  # raised by the engines, mapped here like the rest


class StemscribeError(MusicError):
    """Base class of the service's own errors; `message` is a sentence a person can act on."""


class BadInput(StemscribeError):
    """The client's input can never succeed; retrying will not help."""


class EmptyUpload(BadInput):
    pass


class UploadTooLarge(BadInput):
    pass


class UnsupportedAudio(BadInput):
    """Not decodable audio in a format stemscribe accepts."""


class AudioTooLong(BadInput):
    pass


class DecodedTooLarge(BadInput):
    """Within the duration limit, but more samples than the service will hold in memory."""


class JobNotFound(StemscribeError):
    pass


class ResultNotFound(StemscribeError):
    pass


class JobGone(StemscribeError):
    """The job was deleted, or its files expired."""


class IdempotencyKeyReused(BadInput):
    """The same Idempotency-Key came with a different upload or options."""


class QueueFull(StemscribeError):
    pass


class WebhookRefused(BadInput):
    """A webhook URL stemscribe will not call."""


class Unauthorized(StemscribeError):
    """No API key, an unknown one or a revoked one."""


class Forbidden(StemscribeError):
    """A valid key that may not do this (an operator's route, say)."""


class RateLimited(StemscribeError):
    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.message, self.retry_after_seconds))


class InvalidCursor(BadInput):
    pass


class ResultNotReady(StemscribeError):
    pass


class ServiceUnavailable(StemscribeError):
    """A dependency (database, tracker) does not answer right now."""


class ReplicaUnhealthy(ServiceUnavailable):
    """This model replica cannot serve: its model failed to load although the model's files are there. It
    fails its health check, so Serve replaces it; a job it was given is retried (never failed as the
    user's fault), and the retry goes to another replica."""


class StorageUnavailable(ServiceUnavailable):
    """The storage (S3) failed a request: unreachable, timed out, throttled (SlowDown, 503) or any other
    error but "no such object". Never read as a missing file; a job that meets it is retried."""


def unwrap(exc: BaseException) -> BaseException:
    """The exception a Ray actor or replica raised, without Ray's RayTaskError wrapper."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
