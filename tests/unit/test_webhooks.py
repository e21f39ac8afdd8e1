from __future__ import annotations

import asyncio
import base64
import http.server
import socket
import threading

import httpx
import pytest

from serve_app.domain.errors import WebhookRefused
from serve_app.domain.webhooks import (
    WebhookUnresolvable,
    check_target,
    post_signed,
    redact_url,
    resolve_target,
    sign,
)

SECRET = "whsec_" + base64.b64encode(b"unit-test-webhook-secret-0123456").decode()


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # The example from the Standard Webhooks specification.
    signature = sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                     b'{"test": 2432232314}')  # fmt: skip
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/t/0f8e2c?sig=abc#frag", "https://hooks.example.com/…#"),
        ("http://user:pw@93.184.216.34:8080/x", "http://93.184.216.34:8080/…#"),
        ("https://[2001:db8::1]/hook", "https://[2001:db8::1]/…#"),
    ],
)
def test_a_redacted_url_keeps_scheme_and_host_and_hashes_the_rest(url: str, shown: str) -> None:
    redacted = redact_url(url)
    assert redacted.startswith(shown) and len(redacted) == len(shown) + 8
    int(redacted.removeprefix(shown), 16)  # after scheme, host and port: only the hash
    assert redacted == redact_url(url)  # the same URL reads the same in every line
    assert redacted != redact_url(url.replace("/t/0f8e2c", "/t/0f8e2d").replace("/x", "/y").replace("hook", "hooc"))
    for hidden in ("0f8e2c", "sig", "frag", "user", "pw@"):
        assert hidden not in redacted


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/hook", "http://10.1.2.3/hook", "http://192.168.0.10/", "http://169.254.169.254/latest",
     "http://[::1]/hook", "http://localhost/hook", "ftp://93.184.216.34/x", "file:///etc/passwd", "http:///nohost"],
)  # fmt: skip
def test_private_loopback_link_local_and_odd_targets_are_refused(url: str) -> None:
    with pytest.raises(WebhookRefused):
        check_target(url, allow_private=False)


def test_public_addresses_pass_and_operators_may_allow_private_ones() -> None:
    check_target("https://93.184.216.34/hook", allow_private=False)
    check_target("http://127.0.0.1:9/hook", allow_private=True)


def test_every_resolved_address_is_checked_so_a_private_second_answer_is_refused() -> None:
    def rebinding(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.5"]  # public first, private second

    with pytest.raises(WebhookRefused):
        check_target("https://hooks.example.com/x", allow_private=False, resolver=rebinding)
    for mapped in (["::ffff:127.0.0.1"], ["93.184.216.34", "::1"], ["169.254.169.254"], ["0.0.0.0"]):
        with pytest.raises(WebhookRefused):
            check_target("https://hooks.example.com/x", allow_private=False, resolver=lambda h, p, a=mapped: a)


def test_the_request_goes_to_the_checked_address_with_the_name_in_host_and_sni() -> None:
    """A resolver that answers a public address first and a private one after (DNS rebinding):
    the host is resolved once per try, and the connection goes to exactly the address checked."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"], ["127.0.0.1"]])
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    target = resolve_target("https://hooks.example.com:8443/in?x=1", allow_private=False, resolver=rebinding)
    assert target.addresses == ("93.184.216.34",) and calls == ["hooks.example.com"]

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler), follow_redirects=False) as client:
            return await post_signed(client, target, SECRET, "msg_1", b"{}")

    assert asyncio.run(send()).status_code == 204
    (request,) = seen
    assert request.url.host == "93.184.216.34" and request.url.port == 8443 and request.url.raw_path == b"/in?x=1"
    assert request.headers["host"] == "hooks.example.com:8443"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    assert calls == ["hooks.example.com"]  # no second look-up that could answer differently
    # The next try resolves again, and now the private answer is refused before any connection.
    with pytest.raises(WebhookRefused):
        resolve_target("https://hooks.example.com:8443/in", allow_private=False, resolver=rebinding)


def test_a_real_send_connects_to_the_pinned_address_and_keeps_the_host_name() -> None:
    got: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["content-length"]))
            got.update({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        # The name does not exist anywhere: only the pinned address can have been used.
        target = resolve_target(f"http://hooks.invalid:{port}/h", allow_private=True,
                                resolver=lambda h, p: ["127.0.0.1"])  # fmt: skip

        async def send() -> httpx.Response:
            async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
                return await post_signed(client, target, SECRET, "msg_2", b'{"a": 1}')

        assert asyncio.run(send()).status_code == 200
    finally:
        server.shutdown()
    assert got["host"] == f"hooks.invalid:{port}" and got["webhook-id"] == "msg_2"
    assert got["webhook-signature"] == sign(SECRET, "msg_2", int(got["webhook-timestamp"]), b'{"a": 1}')


def test_a_host_that_does_not_resolve_is_refused_at_upload() -> None:
    def nothing(host: str, port: int) -> list[str]:
        raise socket.gaierror("no such host")

    with pytest.raises(WebhookUnresolvable):
        check_target("https://nowhere.invalid/x", allow_private=False, resolver=nothing)
