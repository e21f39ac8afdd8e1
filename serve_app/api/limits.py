"""The upload size limit, counted on the bytes that actually arrive (chunked uploads too)."""

from __future__ import annotations

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.api.errors import problem


class UploadSizeLimit:
    """Refuses a declared Content-Length over the limit before reading, and stops reading a body
    that grows past it. FastAPI passes the HTTPException on to the error handlers (413)."""

    def __init__(self, app: ASGIApp, path_suffix: str, max_body_bytes: int, max_upload_megabytes: float) -> None:
        self.app = app
        self.path_suffix = path_suffix
        self.max_body_bytes = max_body_bytes
        self.detail = f"The upload is larger than the limit of {max_upload_megabytes:g} MB."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith(self.path_suffix):
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await problem(413, "upload_too_large", self.detail)(scope, receive, send)
            return
        total = 0

        async def counted() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_body_bytes:
                    raise HTTPException(status_code=413, detail=self.detail)
            return message

        await self.app(scope, counted, send)
