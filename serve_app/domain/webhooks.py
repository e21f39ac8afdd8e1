"""Webhooks in the Standard Webhooks format: HMAC-SHA256 signed, and never sent to private,
loopback or link-local addresses unless allowed. The host is resolved once per attempt, every
address it resolves to is checked, and the request goes to exactly such a checked address (with
the Host header and TLS SNI of the name), so a DNS answer that changes between the check and the
connection (DNS rebinding) cannot reach an address that was not checked. Deliveries themselves,
with their retries, live in the outbox (`serve_app.domain.outbox`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from serve_app.domain.errors import WebhookRefused

# (host, port) -> the addresses it resolves to, in the order to try them.
Resolver = Callable[[str, int], list[str]]


class WebhookUnresolvable(WebhookRefused):
    """The host did not resolve: refused at upload, retried at delivery (DNS may be away a moment)."""


def _secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: "v1," + base64 HMAC-SHA256 of "id.timestamp.body"."""
    digest = hmac.new(_secret_bytes(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def redact_url(url: str) -> str:
    """A webhook URL as logs show it: scheme, host and port, and a short hash of the rest (the path, query
    and user info often carry a token). The same URL always reads the same, so log lines can be matched."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ":?"
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    rest = f"{parts.netloc.rpartition('@')[0]}@{parts.path}?{parts.query}#{parts.fragment}"
    digest = hashlib.sha256(rest.encode(errors="replace")).hexdigest()[:8]
    return f"{parts.scheme or '?'}://{host}{port}/…#{digest}"


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class Target:
    """A webhook URL and the checked addresses its host resolved to."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return name if self.port == default else f"{name}:{self.port}"

    def request_for(self, address: str) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
        """URL (with the address in place of the name), headers and httpx extensions for one address."""
        url = httpx.URL(self.url).copy_with(host=address)
        extensions = {}
        if self.scheme == "https" and self.host != address:
            extensions["sni_hostname"] = self.host  # SNI and certificate checks stay on the name
        return url, {"host": self.host_header}, extensions


def resolve_target(url: str, allow_private: bool, resolver: Resolver = system_resolver) -> Target:
    """Resolve the URL's host once and check every address: WebhookRefused for other schemes and
    (unless allowed) for a host any of whose addresses is private, loopback, link-local or otherwise
    not public; WebhookUnresolvable when it does not resolve."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("webhook_url must be an http or https URL with a host.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise WebhookRefused("webhook_url has an invalid port.") from exc
    host = parts.hostname
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise WebhookUnresolvable(f"The webhook host {host!r} does not resolve.") from exc
    if not addresses:
        raise WebhookUnresolvable(f"The webhook host {host!r} does not resolve.")
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise WebhookRefused(
                    f"The webhook host {host!r} is a private, loopback or link-local address; "
                    "stemscribe only calls public addresses."
                )
    return Target(url, parts.scheme, host, port, tuple(addresses))


def check_target(url: str, allow_private: bool, resolver: Resolver = system_resolver) -> Target:
    """The check at upload time (the same rules apply again before every delivery)."""
    return resolve_target(url, allow_private, resolver)


async def post_signed(
    client: httpx.AsyncClient, target: Target, secret: str, msg_id: str, body: bytes
) -> httpx.Response:
    """POST the signed body to the target's checked addresses, the next one only if a connection
    could not be made. The client must not follow redirects."""
    last: httpx.TransportError | None = None
    for address in target.addresses:
        url, headers, extensions = target.request_for(address)
        timestamp = int(time.time())
        headers |= {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body),
        }
        try:
            return await client.post(url, content=body, headers=headers, extensions=extensions)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            last = exc
    assert last is not None
    raise last
