"""Webhooks in the Standard Webhooks format: HMAC-SHA256 signed, retried with backoff under one
`webhook-id`, and never sent to private, loopback or link-local addresses unless allowed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx

from serve_app.domain.errors import WebhookRefused

logger = logging.getLogger(__name__)


def _secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: "v1," + base64 HMAC-SHA256 of "id.timestamp.body"."""
    digest = hmac.new(_secret_bytes(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def check_target(url: str, allow_private: bool) -> None:
    """Refuse URLs stemscribe must not call: other schemes, and (unless allowed) hosts that resolve
    to private, loopback, link-local or otherwise non-public addresses. Checked again before each send."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("webhook_url must be an http or https URL with a host.")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookRefused(f"The webhook host {parts.hostname!r} does not resolve.") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise WebhookRefused(
                f"The webhook host {parts.hostname!r} is a private, loopback or link-local address; "
                "stemscribe only calls public addresses."
            )


class WebhookSender:
    def __init__(self, secret: str, retry_seconds: float, timeout_seconds: float, allow_private: bool) -> None:
        self.secret = secret
        self.retry_seconds = retry_seconds
        self.timeout_seconds = timeout_seconds
        self.allow_private = allow_private
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, url: str, event_type: str, data: dict[str, Any]) -> None:
        """Deliver in the background; the caller never waits for a receiver."""
        task = asyncio.create_task(self._deliver(url, event_type, data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, event_type: str, data: dict[str, Any]) -> None:
        msg_id = f"msg_{uuid.uuid4().hex}"  # the same id on every retry, so receivers can de-duplicate
        body = json.dumps({"type": event_type, "timestamp": time.time(), "data": data}).encode()
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.5
        async with httpx.AsyncClient(timeout=self.timeout_seconds, follow_redirects=False) as client:
            while True:
                try:
                    await asyncio.to_thread(check_target, url, self.allow_private)
                    timestamp = int(time.time())
                    headers = {
                        "content-type": "application/json",
                        "webhook-id": msg_id,
                        "webhook-timestamp": str(timestamp),
                        "webhook-signature": sign(self.secret, msg_id, timestamp, body),
                    }
                    response = await client.post(url, content=body, headers=headers)
                    if 200 <= response.status_code < 300:
                        logger.info("webhook %s %s delivered to %s", event_type, msg_id, url)
                        return
                    reason = f"HTTP {response.status_code}"
                except WebhookRefused as exc:
                    logger.warning("webhook %s to %s refused: %s", msg_id, url, exc.message)
                    return
                except httpx.HTTPError as exc:
                    reason = type(exc).__name__
                if time.monotonic() + delay > deadline:
                    logger.warning("webhook %s to %s given up after retries (%s)", msg_id, url, reason)
                    return
                logger.info("webhook %s to %s failed (%s); retrying in %.1f s", msg_id, url, reason, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
