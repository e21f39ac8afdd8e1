"""The exceptions the music code raises; the service maps them (and its own, which build on
`MusicError`) to HTTP answers in one place, serve_app/api/errors.py."""

from __future__ import annotations


class MusicError(Exception):
    """Base class; `message` is a sentence a person can act on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ModelUnavailable(MusicError):
    """A model could not be loaded; the message says which and how to provide it."""


class Canceled(MusicError):
    """Long work stopped because its caller's `should_stop` said so."""
