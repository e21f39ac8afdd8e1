"""The asynchronous client: the same API as `Client`, awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse

from stemscribe_client import _common as c
from stemscribe_client.errors import ApiError
from stemscribe_client.models import Job, JobAccepted, JobEvent, JobPage

AsyncEventCallback = Callable[[JobEvent], Awaitable[None] | None]


class AsyncClient:
    """`Client`, for asyncio: `async with AsyncClient() as client: job = await client.submit(...)`."""

    def __init__(
        self, url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0, retries: int = 3,
        backoff: float = 0.5, max_retry_wait: float = 30.0, poll_interval: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:  # fmt: skip
        self.url = c.resolve_url(url)
        self.retries = retries
        self.backoff = backoff
        self.max_retry_wait = max_retry_wait
        self.poll_interval = poll_interval
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=c.headers(c.resolve_key(api_key)), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, *, retry: bool = False, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            error: ApiError | None = None
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if not retry or attempt > self.retries:
                    raise c.unreachable(self.url, exc) from exc
            else:
                if not (retry and response.status_code in c.RETRY_STATUSES and attempt <= self.retries):
                    return response
                error = ApiError.from_response(response)
            await asyncio.sleep(c.retry_delay(attempt, self.backoff, error, self.max_retry_wait))

    async def submit(self, path: str | Path, *, idempotency_key: str | None = None, **options: Any) -> JobAccepted:
        path = Path(path)
        form = c.form_fields(options)
        key = idempotency_key or c.new_idempotency_key()
        attempt = 0
        with open(path, "rb") as fh:
            while True:
                attempt += 1
                fh.seek(0)
                error: ApiError | None = None
                try:
                    response = await self._http.post(
                        f"{c.API}/transcribe", files={"file": (path.name, fh)}, data=form,
                        headers={"Idempotency-Key": key},
                    )  # fmt: skip
                except httpx.TransportError as exc:
                    if attempt > self.retries:
                        raise c.unreachable(self.url, exc) from exc
                else:
                    if response.status_code not in c.RETRY_STATUSES or attempt > self.retries:
                        return c.parse_accepted(response)
                    error = ApiError.from_response(response)
                await asyncio.sleep(c.retry_delay(attempt, self.backoff, error, self.max_retry_wait))

    async def status(self, job_id: str | Job | JobAccepted) -> Job:
        return c.parse_job(await self._send("GET", f"{c.API}/jobs/{c.job_id_of(job_id)}", retry=True))

    async def cancel(self, job_id: str | Job | JobAccepted) -> Job:
        return c.parse_job(await self._send("POST", f"{c.API}/jobs/{c.job_id_of(job_id)}/cancel", retry=True))

    async def delete(self, job_id: str | Job | JobAccepted) -> None:
        c.check(await self._send("DELETE", f"{c.API}/jobs/{c.job_id_of(job_id)}"))

    async def list(self, *, status: str | None = None, limit: int = 20, cursor: str | None = None) -> JobPage:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return c.parse_page(await self._send("GET", f"{c.API}/jobs", params=params, retry=True))

    async def iter_jobs(self, *, status: str | None = None, page_size: int = 100) -> AsyncIterator[Job]:
        cursor = None
        while True:
            page = await self.list(status=status, limit=page_size, cursor=cursor)
            for job in page.jobs:
                yield job
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def events(self, job_id: str | Job | JobAccepted) -> AsyncIterator[JobEvent]:
        job_id = c.job_id_of(job_id)
        use_sse = True
        while True:
            if use_sse:
                try:
                    async with aconnect_sse(self._http, "GET", f"{c.API}/jobs/{job_id}/events") as source:
                        response = source.response
                        if response.status_code in c.RETRY_STATUSES:
                            await response.aread()  # away for a moment: poll (which retries), then the stream again
                        elif response.status_code != 200:
                            await response.aread()
                            if response.status_code in (404, 405) and "problem" not in response.headers.get(
                                "content-type", ""
                            ):
                                use_sse = False
                            else:
                                c.check(response)
                        else:
                            async for sse in source.aiter_sse():
                                if sse.event not in ("state", "final"):
                                    continue
                                event = JobEvent.model_validate({"event": sse.event, **sse.json()})
                                yield event
                                if event.is_final:
                                    return
                except SSEError:
                    use_sse = False
                except httpx.TransportError:
                    pass
            job = await self.status(job_id)
            event = JobEvent.from_job(job)
            yield event
            if event.is_final:
                return
            await asyncio.sleep(job.retry_after if job.retry_after is not None else self.poll_interval)

    async def wait(
        self, job_id: str | Job | JobAccepted, *, timeout: float | None = None,
        on_event: AsyncEventCallback | None = None,
    ) -> Job:  # fmt: skip
        deadline = None if timeout is None else time.monotonic() + timeout
        async for event in self.events(job_id):
            if on_event:
                maybe = on_event(event)
                if asyncio.iscoroutine(maybe):
                    await maybe
            if event.is_final:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {c.job_id_of(job_id)} is still {event.status} after {timeout} s")
        return await self.status(job_id)

    async def download(self, job: str | Job, dest: str | Path, *, names: list[str] | None = None) -> list[Path]:
        if isinstance(job, str) or not job.results:
            job = await self.status(job)
        dest = Path(dest)
        written = []
        for link in job.results:
            if names is not None and link.name not in names:
                continue
            target = c.result_path(dest, link.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            try:
                async with self._http.stream("GET", f"{c.API}/jobs/{job.job_id}/results/{link.name}") as response:
                    if not response.is_success:
                        await response.aread()
                        c.check(response)
                    with open(partial, "wb") as out:
                        async for chunk in response.aiter_bytes():
                            out.write(chunk)
            except httpx.TransportError as exc:
                partial.unlink(missing_ok=True)
                raise c.unreachable(self.url, exc) from exc
            partial.replace(target)
            written.append(target)
        return written

    async def health(self) -> dict[str, Any]:
        return dict(c.check(await self._send("GET", f"{c.API}/health")).json())
