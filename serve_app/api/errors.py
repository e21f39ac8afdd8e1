"""The one place where exceptions become HTTP responses (RFC 9457 problem details)."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app.api.schemas import Problem
from serve_app.domain import errors

logger = logging.getLogger(__name__)

# exception class -> (status, stable code); the first matching base class wins.
ERROR_MAP: list[tuple[type[errors.StemscribeError], int, str]] = [
    (errors.EmptyUpload, 400, "empty_upload"),
    (errors.UploadTooLarge, 413, "upload_too_large"),
    (errors.UnsupportedAudio, 415, "unsupported_audio"),
    (errors.AudioTooLong, 422, "audio_too_long"),
    (errors.DecodedTooLarge, 422, "audio_too_large"),
    (errors.JobNotFound, 404, "job_not_found"),
    (errors.ResultNotFound, 404, "result_not_found"),
    (errors.JobGone, 410, "job_gone"),
    (errors.IdempotencyKeyReused, 422, "idempotency_key_reused"),
    (errors.InvalidCursor, 422, "invalid_cursor"),
    (errors.WebhookRefused, 422, "webhook_url_refused"),
    (errors.QueueFull, 503, "queue_full"),
    (errors.Unauthorized, 401, "unauthorized"),
    (errors.Forbidden, 403, "forbidden"),
    (errors.RateLimited, 429, "rate_limited"),
    (errors.ResultNotReady, 409, "result_not_ready"),
    (errors.ModelUnavailable, 503, "model_unavailable"),
    (errors.StorageUnavailable, 503, "storage_unavailable"),
    (errors.ServiceUnavailable, 503, "service_unavailable"),
    (errors.BadInput, 400, "bad_input"),
]


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, each a problem document."""
    return {code: {"model": Problem, "content": {"application/problem+json": {}}} for code in codes}


# The error answers every route documents in OpenAPI.
PROBLEM_RESPONSES = problem_responses(400, 401, 404, 409, 410, 413, 415, 422, 429, 503)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "upload_too_large", 400: "bad_request"}


def problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {
        "type": f"https://stemscribe.dev/problems/{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "form"))
        message = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
        parts.append(f"{field}: {message}" if field else message)
    return "Invalid request: " + "; ".join(parts) + "."


def install_error_handlers(app: FastAPI, retry_after_seconds: int) -> None:
    @app.exception_handler(errors.StemscribeError)
    async def _domain(_: Request, exc: errors.StemscribeError) -> JSONResponse:
        for cls, status, code in ERROR_MAP:
            if isinstance(exc, cls):
                # Every 503 here is temporary: tell clients when to come back.
                headers = {"Retry-After": str(retry_after_seconds)} if status == 503 else None
                if isinstance(exc, errors.RateLimited):
                    headers = {"Retry-After": str(exc.retry_after_seconds)}
                return problem(status, code, exc.message, headers)
        logger.error("unmapped error: %s", exc.message)
        return problem(500, "internal_error", "Internal error.")

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(422, "invalid_request", _validation_detail(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            detail = "There is nothing at this address."
        else:
            detail = str(exc.detail)
        return problem(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), detail, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The stack trace goes to the log, never to the client.
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal_error", "Internal error; it has been logged.")
