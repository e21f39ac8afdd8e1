"""What the client raises. Every error is a `StemscribeClientError`; the service's refusals (problem+json)
are `ApiError`s carrying its `status`, stable `code` and the `detail` meant for a person."""

from __future__ import annotations

from typing import Any

import httpx


class StemscribeClientError(Exception):
    """Base class of every error this package raises."""


class ServiceUnreachable(StemscribeClientError):
    """No HTTP answer at all: connection refused, DNS, timeout, a dropped connection."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"Cannot reach the stemscribe service at {url}: {reason}")


class ApiError(StemscribeClientError):
    """An error answer from the service, e.g. 415 `unsupported_audio`."""

    def __init__(
        self, status: int, code: str, detail: str, *, title: str | None = None, retry_after: float | None = None,
        body: Any = None,
    ) -> None:  # fmt: skip
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title
        self.retry_after = retry_after
        self.body = body
        super().__init__(f"{status} {code}: {detail}")

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "code" in body:
            return cls(
                int(body.get("status") or response.status_code), str(body["code"]),
                str(body.get("detail") or body.get("title") or ""), title=body.get("title"),
                retry_after=retry_after, body=body,
            )  # fmt: skip
        # Not problem+json (a proxy, another server on the port): say what came back.
        text = response.text.strip().replace("\n", " ")[:200] if response.content else ""
        detail = f"{response.reason_phrase or 'HTTP error'}" + (f": {text}" if text else "")
        return cls(response.status_code, "http_error", detail, retry_after=retry_after, body=body)


class Unauthorized(ApiError):
    """401: no valid API key."""


class NotFound(ApiError):
    """404: no such job (or another key's job), or no such result."""


class Gone(ApiError):
    """410: the job was deleted or its results expired."""


_BY_STATUS: dict[int, type[ApiError]] = {401: Unauthorized, 404: NotFound, 410: Gone}


def error_for(response: httpx.Response) -> ApiError:
    generic = ApiError.from_response(response)
    cls = _BY_STATUS.get(generic.status, ApiError)
    if cls is ApiError:
        return generic
    return cls(
        generic.status, generic.code, generic.detail, title=generic.title, retry_after=generic.retry_after,
        body=generic.body,
    )  # fmt: skip


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the service sends delta-seconds; an HTTP date is not worth a dependency)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
