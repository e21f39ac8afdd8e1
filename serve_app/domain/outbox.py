"""The webhook outbox: every delivery is a row in `webhook_deliveries` before anything is sent, and
a delivery loop claims due rows, sends them, retries with backoff (0.5 s doubling, at most 60 s
apart) until the delivery's deadline (webhook_retry_seconds after it was enqueued) and marks them
done. A claim moves the row's next attempt forward by a lease and stamps it with a claim token,
so a sender that dies mid-delivery gives the row back when the lease runs out, and a late answer
of a superseded sender changes nothing. Deliveries pending when the process stops are sent by the
next one, under the same `webhook-id`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from serve_app.domain.db import JobRepository, WebhookDeliveryRow, as_utc, utcnow
from serve_app.domain.errors import WebhookRefused
from serve_app.domain.webhooks import (
    Resolver,
    WebhookUnresolvable,
    post_signed,
    redact_url,
    resolve_target,
    system_resolver,
)

logger = logging.getLogger(__name__)

PENDING, DELIVERED, FAILED, REFUSED = "pending", "delivered", "failed", "refused"
FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 60.0
# Finished rows are kept this long (for inspection), then pruned.
KEEP_FINISHED = timedelta(days=7)


def backoff_seconds(attempts: int) -> float:
    """The pause after the `attempts`-th failed try: 0.5, 1, 2, ... at most 60 s."""
    return min(FIRST_DELAY_SECONDS * 2 ** max(attempts - 1, 0), MAX_DELAY_SECONDS)


@dataclass(frozen=True)
class Claimed:
    id: str
    url: str
    event_type: str
    body: str
    attempts: int  # including this one
    deadline_at: datetime
    token: str


class Outbox:
    def __init__(
        self,
        repo: JobRepository,
        secret: str,
        retry_seconds: float,
        timeout_seconds: float,
        allow_private: bool,
        *,
        resolver: Resolver = system_resolver,
        lease_seconds: float | None = None,
        poll_seconds: float = 0.5,
        max_in_flight: int = 16,
    ) -> None:
        self.repo = repo
        self.secret = secret
        self.retry_seconds = retry_seconds
        self.timeout_seconds = timeout_seconds
        self.allow_private = allow_private
        self.resolver = resolver
        # Long enough for a try over every address the host resolves to (a few at most).
        self.lease_seconds = lease_seconds if lease_seconds is not None else 3 * timeout_seconds + 30
        self.poll_seconds = poll_seconds
        self.max_in_flight = max_in_flight
        self._wake: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_prune = 0.0

    # --- enqueue -----------------------------------------------------------------------------

    def _insert(self, row: WebhookDeliveryRow) -> None:
        with Session(self.repo.engine, expire_on_commit=False) as session, session.begin():
            session.add(row)

    async def enqueue(self, url: str, event_type: str, data: dict[str, Any]) -> str | None:
        """Store one delivery (its body fixed now) and wake the loop; the id, or None if the
        database is away (logged: a webhook never fails a job)."""
        now = utcnow()
        row = WebhookDeliveryRow(
            id=f"msg_{uuid.uuid4().hex}", job_id=data.get("job_id"), url=url, event_type=event_type,
            body=json.dumps({"type": event_type, "timestamp": time.time(), "data": data}), status=PENDING,
            attempts=0, next_attempt_at=now, deadline_at=now + timedelta(seconds=self.retry_seconds), created_at=now,
        )  # fmt: skip
        try:
            await asyncio.to_thread(self._insert, row)
        except SQLAlchemyError:
            logger.warning("webhook %s for job %s not stored (database away?)", event_type, row.job_id, exc_info=True)
            return None
        if self._wake is not None:
            self._wake.set()
        return row.id

    # --- claim and record --------------------------------------------------------------------

    def claim_due(self, limit: int) -> list[Claimed]:
        now = utcnow()
        claimed: list[Claimed] = []
        with Session(self.repo.engine, expire_on_commit=False) as session:
            rows = session.scalars(
                select(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.status == PENDING, WebhookDeliveryRow.next_attempt_at <= now)
                .order_by(WebhookDeliveryRow.next_attempt_at, WebhookDeliveryRow.created_at)
                .limit(limit)
            ).all()
            for row in rows:
                token = uuid.uuid4().hex
                # Conditional: of two senders that saw the row due, one gets it.
                result = session.execute(
                    update(WebhookDeliveryRow)
                    .where(
                        WebhookDeliveryRow.id == row.id, WebhookDeliveryRow.status == PENDING,
                        WebhookDeliveryRow.attempts == row.attempts, WebhookDeliveryRow.next_attempt_at <= now,
                    )  # fmt: skip
                    .values(
                        claimed_by=token, attempts=row.attempts + 1,
                        next_attempt_at=now + timedelta(seconds=self.lease_seconds),
                    )  # fmt: skip
                    .execution_options(synchronize_session=False)
                )
                session.commit()
                if result.rowcount:
                    deadline = as_utc(row.deadline_at)
                    assert deadline is not None
                    claimed.append(
                        Claimed(row.id, row.url, row.event_type, row.body, row.attempts + 1, deadline, token)
                    )
        return claimed

    def _record(self, claim: Claimed, **values: Any) -> None:
        with Session(self.repo.engine) as session, session.begin():
            session.execute(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.id == claim.id, WebhookDeliveryRow.claimed_by == claim.token)
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    def _prune(self) -> None:
        with Session(self.repo.engine) as session, session.begin():
            session.execute(
                delete(WebhookDeliveryRow).where(
                    WebhookDeliveryRow.status != PENDING, WebhookDeliveryRow.finished_at < utcnow() - KEEP_FINISHED
                )
                .execution_options(synchronize_session=False)
            )

    # --- send --------------------------------------------------------------------------------

    async def deliver(self, client: httpx.AsyncClient, claim: Claimed) -> str:
        """One try of one claimed delivery; the row's new status."""
        try:
            target = await asyncio.to_thread(resolve_target, claim.url, self.allow_private, self.resolver)
            response = await post_signed(client, target, self.secret, claim.id, claim.body.encode())
            if 200 <= response.status_code < 300:
                await asyncio.to_thread(self._record, claim, status=DELIVERED, finished_at=utcnow(), claimed_by=None)
                logger.info("webhook %s %s delivered to %s", claim.event_type, claim.id, redact_url(claim.url))
                return DELIVERED
            reason = f"HTTP {response.status_code}"
        except WebhookUnresolvable as exc:
            reason = exc.message
        except WebhookRefused as exc:
            logger.warning("webhook %s to %s refused: %s", claim.id, redact_url(claim.url), exc.message)
            await asyncio.to_thread(
                self._record, claim, status=REFUSED, finished_at=utcnow(), claimed_by=None, last_error=exc.message
            )
            return REFUSED
        except httpx.HTTPError as exc:
            reason = type(exc).__name__
        retry_at = utcnow() + timedelta(seconds=backoff_seconds(claim.attempts))
        if retry_at > claim.deadline_at:
            logger.warning(
                "webhook %s to %s given up after %d tries (%s)", claim.id, redact_url(claim.url), claim.attempts, reason
            )
            await asyncio.to_thread(
                self._record, claim, status=FAILED, finished_at=utcnow(), claimed_by=None, last_error=reason
            )
            return FAILED
        logger.info(
            "webhook %s to %s failed (%s); retrying at %s", claim.id, redact_url(claim.url), reason, retry_at.isoformat()
        )
        await asyncio.to_thread(self._record, claim, next_attempt_at=retry_at, claimed_by=None, last_error=reason)
        return PENDING

    async def _deliver_logged(self, client: httpx.AsyncClient, claim: Claimed) -> None:
        try:
            await self.deliver(client, claim)
        except Exception:
            # Nothing recorded (database away?): the lease runs out and the row is tried again.
            logger.warning("webhook %s: the outcome was not recorded", claim.id, exc_info=True)

    async def run(self) -> None:
        """The delivery loop; runs until cancelled."""
        self._wake = asyncio.Event()
        async with httpx.AsyncClient(
            timeout=self.timeout_seconds, follow_redirects=False, trust_env=False
        ) as client:
            try:
                while True:
                    self._wake.clear()
                    try:
                        free = self.max_in_flight - len(self._tasks)
                        for claim in await asyncio.to_thread(self.claim_due, free) if free > 0 else []:
                            task = asyncio.create_task(self._deliver_logged(client, claim))
                            self._tasks.add(task)
                            task.add_done_callback(self._tasks.discard)
                        if time.monotonic() - self._last_prune > 3600:
                            self._last_prune = time.monotonic()
                            await asyncio.to_thread(self._prune)
                    except Exception:
                        logger.warning("webhook outbox: could not claim deliveries", exc_info=True)
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
                    except TimeoutError:
                        pass
            finally:
                for task in list(self._tasks):
                    task.cancel()
