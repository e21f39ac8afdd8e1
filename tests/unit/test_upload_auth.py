"""An upload without a valid key is refused before its body is read: the 401 comes back while the
client has sent only the headers and a sliver of a large body."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from serve_app.api.app import create_api
from serve_app.api.services import Services
from serve_app.domain.api_keys import ApiKeys
from serve_app.domain.db import JobRepository
from serve_app.domain.storage import LocalStorage
from serve_app.settings import Settings
from tests.unit.conftest import serving

KEY = "ssk_upload-auth-test-key-0123456789"
DECLARED = 150_000_000  # under the size limit (200 MB), so only the key can refuse it
SENT = 64 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, int]]:
    settings = Settings(data_dir=tmp_path, auth_required=True)
    repo = JobRepository(settings.database_url.get_secret_value())
    repo.migrate()
    ApiKeys(repo).seed([KEY])
    services = Services(settings, repo, LocalStorage(tmp_path / "s"), tracker=None, separation=None, transcription=None)
    with serving(create_api(services)) as url:
        parts = urlsplit(url)
        yield parts.hostname or "127.0.0.1", parts.port or 80
    repo.dispose()


def _partial_upload(address: tuple[str, int], key: str | None, wait: float) -> tuple[bytes, float]:
    """Headers declaring DECLARED bytes, then SENT bytes of the body; whatever the server answers
    within `wait` seconds (the rest of the body is never sent), and how long it took."""
    boundary = "stemscribe-boundary"
    head = (
        f"POST /api/v1/transcribe HTTP/1.1\r\nHost: {address[0]}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {DECLARED}\r\n"
        + (f"X-API-Key: {key}\r\n" if key else "")
        + "\r\n"
    ).encode()
    part = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n").encode()  # fmt: skip
    with socket.create_connection(address, timeout=wait) as sock:
        started = time.monotonic()
        sock.sendall(head + part + b"\0" * (SENT - len(part)))
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            pass
        return answer, time.monotonic() - started


@pytest.mark.parametrize("key", [None, "ssk_not-a-key"])
def test_a_large_upload_without_a_valid_key_gets_401_before_its_body_is_sent(
    server: tuple[str, int], key: str | None
) -> None:
    answer, seconds = _partial_upload(server, key, wait=10)
    assert answer.startswith(b"HTTP/1.1 401"), answer
    assert b"application/problem+json" in answer and b"connection: close" in answer.lower()
    assert seconds < 5


def test_with_a_valid_key_the_server_waits_for_the_body(server: tuple[str, int]) -> None:
    # The same partial upload with the key: no answer, the server is still reading the body.
    answer, _ = _partial_upload(server, KEY, wait=1.5)
    assert answer == b""
