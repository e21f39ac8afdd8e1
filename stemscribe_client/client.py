"""The synchronous client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

from stemscribe_client import _common as c
from stemscribe_client.errors import ApiError
from stemscribe_client.models import Job, JobAccepted, JobEvent, JobPage

EventCallback = Callable[[JobEvent], None]


class Client:
    """A stemscribe service. `url` defaults to $STEMSCRIBE_URL, then http://127.0.0.1:8000; `api_key` to
    $STEMSCRIBE_API_KEY. `retries`: further tries of an upload (same Idempotency-Key) and of reads, on
    connection errors and 503. Use it as a context manager, or call `close()`."""

    def __init__(
        self, url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0, retries: int = 3,
        backoff: float = 0.5, max_retry_wait: float = 30.0, poll_interval: float = 1.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:  # fmt: skip
        self.url = c.resolve_url(url)
        self.retries = retries
        self.backoff = backoff
        self.max_retry_wait = max_retry_wait
        self.poll_interval = poll_interval
        self._http = httpx.Client(
            base_url=self.url, headers=c.headers(c.resolve_key(api_key)), timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing ---------------------------------------------------------------------------------------

    def _send(self, method: str, path: str, *, retry: bool = False, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            error: ApiError | None = None
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if not retry or attempt > self.retries:
                    raise c.unreachable(self.url, exc) from exc
            else:
                if not (retry and response.status_code in c.RETRY_STATUSES and attempt <= self.retries):
                    return response
                error = ApiError.from_response(response)
            time.sleep(c.retry_delay(attempt, self.backoff, error, self.max_retry_wait))

    # -- the API ----------------------------------------------------------------------------------------

    def submit(self, path: str | Path, *, idempotency_key: str | None = None, **options: Any) -> JobAccepted:
        """Upload a song; `options` are the form fields (separation, onset_threshold, quantize_grid, ...).
        One Idempotency-Key per call (generated unless given) makes the retries safe."""
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
                    response = self._http.post(
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
                time.sleep(c.retry_delay(attempt, self.backoff, error, self.max_retry_wait))

    def status(self, job_id: str | Job | JobAccepted) -> Job:
        return c.parse_job(self._send("GET", f"{c.API}/jobs/{c.job_id_of(job_id)}", retry=True))

    def cancel(self, job_id: str | Job | JobAccepted) -> Job:
        return c.parse_job(self._send("POST", f"{c.API}/jobs/{c.job_id_of(job_id)}/cancel", retry=True))

    def delete(self, job_id: str | Job | JobAccepted) -> None:
        c.check(self._send("DELETE", f"{c.API}/jobs/{c.job_id_of(job_id)}"))

    def list(self, *, status: str | None = None, limit: int = 20, cursor: str | None = None) -> JobPage:
        """One page, newest first; pass the page's `next_cursor` as `cursor` for the next."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return c.parse_page(self._send("GET", f"{c.API}/jobs", params=params, retry=True))

    def iter_jobs(self, *, status: str | None = None, page_size: int = 100) -> Iterator[Job]:
        """Every job, newest first, following the cursors."""
        cursor = None
        while True:
            page = self.list(status=status, limit=page_size, cursor=cursor)
            yield from page.jobs
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def events(self, job_id: str | Job | JobAccepted) -> Iterator[JobEvent]:
        """The job's states from its events stream (SSE), ending with the final one. When the stream is
        unavailable or drops, polls `GET /jobs/{id}` at the pace its Retry-After asks, and tries the
        stream again."""
        job_id = c.job_id_of(job_id)
        use_sse = True
        while True:
            if use_sse:
                try:
                    with connect_sse(self._http, "GET", f"{c.API}/jobs/{job_id}/events") as source:
                        response = source.response
                        if response.status_code in c.RETRY_STATUSES:
                            response.read()  # away for a moment: poll (which retries), then the stream again
                        elif response.status_code != 200:
                            response.read()
                            if response.status_code in (404, 405) and "problem" not in response.headers.get(
                                "content-type", ""
                            ):
                                use_sse = False  # no events route here: poll instead
                            else:
                                c.check(response)
                        else:
                            for sse in source.iter_sse():
                                if sse.event not in ("state", "final"):
                                    continue
                                event = JobEvent.model_validate({"event": sse.event, **sse.json()})
                                yield event
                                if event.is_final:
                                    return
                except SSEError:
                    use_sse = False  # not an event stream (a proxy in the way): poll
                except httpx.TransportError:
                    pass  # dropped or timed out: one poll, then the stream again (it starts with the state)
            job = self.status(job_id)
            event = JobEvent.from_job(job)
            yield event
            if event.is_final:
                return
            time.sleep(job.retry_after if job.retry_after is not None else self.poll_interval)

    def wait(
        self, job_id: str | Job | JobAccepted, *, timeout: float | None = None, on_event: EventCallback | None = None
    ) -> Job:
        """Follow the job until it is final (succeeded, failed or canceled) and return its view; `on_event`
        sees every state on the way. TimeoutError after `timeout` seconds (the job goes on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for event in self.events(job_id):
            if on_event:
                on_event(event)
            if event.is_final:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {c.job_id_of(job_id)} is still {event.status} after {timeout} s")
        return self.status(job_id)

    def download(self, job: str | Job, dest: str | Path, *, names: list[str] | None = None) -> list[Path]:
        """Write every result of a succeeded job (or those `names`) under `dest`, keeping their folders
        (midi/, stems/). Returns the paths written."""
        if isinstance(job, str) or not job.results:
            job = self.status(job)
        dest = Path(dest)
        written = []
        for link in job.results:
            if names is not None and link.name not in names:
                continue
            target = c.result_path(dest, link.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            try:
                with self._http.stream("GET", f"{c.API}/jobs/{job.job_id}/results/{link.name}") as response:
                    if not response.is_success:
                        response.read()
                        c.check(response)
                    with open(partial, "wb") as out:
                        for chunk in response.iter_bytes():
                            out.write(chunk)
            except httpx.TransportError as exc:
                partial.unlink(missing_ok=True)
                raise c.unreachable(self.url, exc) from exc
            partial.replace(target)
            written.append(target)
        return written

    def health(self) -> dict[str, Any]:
        return dict(c.check(self._send("GET", f"{c.API}/health")).json())



