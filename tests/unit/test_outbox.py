"""The webhook outbox: deliveries are rows first, retried with backoff until their deadline under
one webhook-id, and a delivery pending when its process dies is delivered by the next one."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from serve_app.domain.db import JobRepository, WebhookDeliveryRow
from serve_app.domain.outbox import DELIVERED, FAILED, PENDING, REFUSED, Outbox, backoff_seconds
from serve_app.domain.webhooks import redact_url, sign

SECRET = "whsec_" + base64.b64encode(b"unit-test-webhook-secret-0123456").decode()
ROOT = Path(__file__).resolve().parents[2]


class Receiver:
    """A webhook receiver on loopback; `answers` are the statuses to give, in order (then 200);
    "hang" keeps the request open until the receiver stops."""

    def __init__(self, answers: list[int | str]) -> None:
        self.answers = list(answers)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.stop = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                answer = receiver.answers.pop(0) if receiver.answers else 200
                if answer == "hang":
                    receiver.stop.wait(60)
                    return
                self.send_response(int(answer))
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()


@pytest.fixture
def repo(database_url: str) -> Iterator[JobRepository]:
    repository = JobRepository(database_url)
    repository.migrate()
    yield repository
    repository.dispose()


def _rows(repo: JobRepository) -> list[WebhookDeliveryRow]:
    with Session(repo.engine) as session:
        return list(session.scalars(select(WebhookDeliveryRow)))


async def _run_until(outbox: Outbox, done, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.create_task(outbox.run())
    deadline = time.monotonic() + timeout
    try:
        while not done():
            assert time.monotonic() < deadline, "the outbox did not get there in time"
            await asyncio.sleep(0.05)
    finally:
        loop.cancel()


def test_backoff_doubles_from_half_a_second_up_to_a_minute() -> None:
    assert [backoff_seconds(n) for n in (1, 2, 3, 4, 8, 20)] == [0.5, 1, 2, 4, 60, 60]


def test_a_delivery_is_retried_under_one_id_until_a_2xx(repo: JobRepository) -> None:
    receiver = Receiver([500, 503])
    outbox = Outbox(repo, SECRET, retry_seconds=30, timeout_seconds=5, allow_private=True)

    async def scenario() -> None:
        await outbox.enqueue(receiver.url, "job.succeeded", {"job_id": "a" * 32, "status": "succeeded"})
        await _run_until(outbox, lambda: _rows(repo)[0].status == DELIVERED)

    try:
        asyncio.run(scenario())
    finally:
        receiver.close()
    assert len(receiver.received) == 3
    assert len({h["webhook-id"] for h, _ in receiver.received}) == 1
    for headers, body in receiver.received:
        assert headers["webhook-signature"] == sign(SECRET, headers["webhook-id"], int(headers["webhook-timestamp"]), body)
        assert json.loads(body)["data"]["job_id"] == "a" * 32
    (row,) = _rows(repo)
    assert row.attempts == 3 and row.finished_at is not None and row.claimed_by is None


def test_log_lines_name_the_webhook_host_but_not_its_path_query_or_credentials(
    repo: JobRepository, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver([500])
    url = receiver.url.replace("http://", "http://user:pa55word@") + "/tok-d41d8cd9?sig=c2lnbmF0dXJl"
    outbox = Outbox(repo, SECRET, retry_seconds=30, timeout_seconds=5, allow_private=True)

    async def scenario() -> None:
        await outbox.enqueue(url, "job.succeeded", {"job_id": "c" * 32})
        await _run_until(outbox, lambda: _rows(repo)[0].status == DELIVERED)

    caplog.set_level(logging.DEBUG, logger="serve_app")
    try:
        asyncio.run(scenario())
    finally:
        receiver.close()
    assert len(receiver.received) == 2  # a failed try and a delivery: two lines about the URL
    lines = [r.getMessage() for r in caplog.records if "webhook" in r.getMessage()]
    assert any("failed" in line for line in lines) and any("delivered" in line for line in lines)
    host = urlsplit(receiver.url).netloc
    for line in lines:
        assert f"http://{host}/…#{redact_url(url).rsplit('#')[1]}" in line, line
    for secret in ("tok-d41d8cd9", "c2lnbmF0dXJl", "pa55word", "user:"):
        assert secret not in caplog.text


def test_past_the_deadline_a_delivery_is_given_up(repo: JobRepository) -> None:
    receiver = Receiver([500] * 100)
    outbox = Outbox(repo, SECRET, retry_seconds=3, timeout_seconds=5, allow_private=True)

    async def scenario() -> None:
        await outbox.enqueue(receiver.url, "job.failed", {"job_id": "b" * 32})
        await _run_until(outbox, lambda: _rows(repo)[0].status != PENDING)

    try:
        asyncio.run(scenario())
    finally:
        receiver.close()
    (row,) = _rows(repo)
    assert row.status == FAILED and row.last_error == "HTTP 500"
    # Tries at 0, 0.5 and 1.5 s at the earliest; the next would come 2 s later, past the 3 s deadline.
    assert 1 <= len(receiver.received) <= 3
    assert row.attempts == len(receiver.received)


def test_the_rules_apply_again_at_delivery(repo: JobRepository) -> None:
    outbox = Outbox(repo, SECRET, retry_seconds=30, timeout_seconds=5, allow_private=False)

    async def scenario() -> None:
        await outbox.enqueue("http://127.0.0.1:9/hook", "job.failed", {"job_id": "c" * 32})
        await _run_until(outbox, lambda: _rows(repo)[0].status != PENDING)

    asyncio.run(scenario())
    (row,) = _rows(repo)
    assert row.status == REFUSED and "public" in (row.last_error or "")


_SENDER = textwrap.dedent(
    """
    import asyncio, sys
    from serve_app.domain.db import JobRepository
    from serve_app.domain.outbox import Outbox

    async def main():
        outbox = Outbox(JobRepository(sys.argv[1]), sys.argv[3], retry_seconds=60, timeout_seconds=30,
                        allow_private=True, lease_seconds=2)
        await outbox.enqueue(sys.argv[2], "job.succeeded", {"job_id": "d" * 32, "status": "succeeded"})
        print("enqueued", flush=True)
        await outbox.run()

    asyncio.run(main())
    """
)


def test_a_delivery_pending_when_its_process_is_killed_is_delivered_after_the_restart(
    repo: JobRepository, database_url: str
) -> None:
    """A process enqueues a delivery and starts sending it; the receiver holds the request, and the
    process is killed (SIGKILL, nothing cleaned up). A new process's outbox delivers it once the
    dead sender's lease runs out, under the same webhook-id."""
    receiver = Receiver(["hang"])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    sender = subprocess.Popen(
        [sys.executable, "-c", _SENDER, database_url, receiver.url, SECRET], env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not receiver.received:
            assert sender.poll() is None, sender.communicate()
            assert time.monotonic() < deadline, "the first process never sent"
            time.sleep(0.05)
        sender.send_signal(signal.SIGKILL)
        sender.wait(timeout=10)
        (row,) = _rows(repo)
        assert row.status == PENDING and row.claimed_by is not None  # claimed by the dead process
        restarted = Outbox(JobRepository(database_url), SECRET, retry_seconds=60, timeout_seconds=5,
                           allow_private=True)  # fmt: skip
        asyncio.run(_run_until(restarted, lambda: _rows(repo)[0].status == DELIVERED))
        restarted.repo.dispose()
    finally:
        if sender.poll() is None:
            sender.kill()
        receiver.close()
    assert len(receiver.received) == 2
    (first, _), (second, body) = receiver.received
    assert first["webhook-id"] == second["webhook-id"]
    assert json.loads(body)["data"]["job_id"] == "d" * 32


def test_a_delivery_enqueued_before_a_restart_and_never_tried_is_sent(repo: JobRepository, database_url: str) -> None:
    receiver = Receiver([])
    before = Outbox(JobRepository(database_url), SECRET, retry_seconds=60, timeout_seconds=5, allow_private=True)
    message = asyncio.run(before.enqueue(receiver.url, "job.canceled", {"job_id": "e" * 32}))
    before.repo.dispose()  # the process "stops" before its loop ever ran
    after = Outbox(JobRepository(database_url), SECRET, retry_seconds=60, timeout_seconds=5, allow_private=True)
    try:
        asyncio.run(_run_until(after, lambda: _rows(repo)[0].status == DELIVERED))
    finally:
        after.repo.dispose()
        receiver.close()
    ((headers, _),) = receiver.received
    assert headers["webhook-id"] == message


def test_enqueue_survives_a_database_that_is_away(tmp_path: Path) -> None:
    repo = JobRepository(f"sqlite:///{tmp_path / 'no-tables.db'}")  # never migrated
    outbox = Outbox(repo, SECRET, retry_seconds=60, timeout_seconds=5, allow_private=True)
    assert asyncio.run(outbox.enqueue("http://127.0.0.1:9/", "job.progress", {"job_id": "f" * 32})) is None
