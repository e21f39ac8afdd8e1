"""A stand-in for the stemscribe API behind an httpx.MockTransport: enough of it to drive the client and
the command line through their paths (uploads, refusals, retries, the events stream, results, paging)."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import pretty_midi

NOTES_JSON = {
    "tempo_bpm": 100.0, "tempo_source": "tracked", "time_signature": "4/4", "key": "C major",
    "key_confidence": 0.9, "beats": [], "downbeats": [],
    "notes": [{"stem": "mix", "start": 0.5, "end": 0.9, "pitch": 60, "velocity": 90, "pitch_bends": []}] * 3
    + [{"stem": "bass", "start": 0.5, "end": 0.9, "pitch": 36, "velocity": 90, "pitch_bends": []}],
}  # fmt: skip


def _midi() -> bytes:
    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0, name="mix")
    piano.notes.append(pretty_midi.Note(90, 60, 0.5, 0.9))
    midi.instruments.append(piano)
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


RESULTS = {"transcription.mid": _midi(), "midi/mix.mid": _midi(), "notes.json": json.dumps(NOTES_JSON).encode()}


def problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"type": f"https://stemscribe.dev/problems/{code}", "title": "x", "status": status, "detail": detail,
            "code": code}  # fmt: skip
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json", **(headers or {})})


@dataclass
class FakeService:
    """`script`: what to answer each upload with, in order (a Response, an exception to raise, or None for
    'accept'); once it is used up, uploads are accepted."""

    script: list[Any] = field(default_factory=list)
    states: list[tuple[str, str, float]] = field(
        default_factory=lambda: [("queued", "queued", 0.0), ("running", "decoding", 5.0),
                                 ("running", "transcribing", 60.0), ("succeeded", "done", 100.0)]  # fmt: skip
    )
    final_status: str = "succeeded"
    events_mode: str = "sse"  # sse, html (not an event stream), drop (ends before the final state)
    api_key: str | None = None
    uploads: list[httpx.Request] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    polls: int = 0
    canceled: list[str] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def view(self, job_id: str) -> dict[str, Any]:
        job = self.jobs[job_id]
        done = job["status"] == "succeeded"
        return {
            "job_id": job_id, "status": job["status"], "stage": job["stage"], "progress": job["progress"],
            "options": {}, "upload_name": job["name"], "duration_seconds": 2.0, "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:01Z", "started_at": None, "finished_at": None, "error": job.get("error"),
            "stage_seconds": {}, "attempts": 1, "expired_at": None,
            "results": [{"name": n, "url": f"http://x/api/v1/jobs/{job_id}/results/{n}"} for n in RESULTS] if done else [],
            "analysis": {k: NOTES_JSON[k] for k in ("tempo_bpm", "time_signature", "key")} if done else None,
            "a_field_from_the_future": {"nested": True},
        }  # fmt: skip

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            return problem(401, "unauthorized", "The API key is unknown.")
        path = request.url.path
        if request.method == "POST" and path == "/api/v1/transcribe":
            self.uploads.append(request)
            request.read()
            if self.script:
                step = self.script.pop(0)
                if isinstance(step, Exception):
                    raise step
                if step is not None:
                    return step
            job_id = f"job{len(self.jobs) + 1}"
            name = re.search(rb'filename="([^"]+)"', request.content).group(1).decode()  # type: ignore[union-attr]
            self.jobs[job_id] = {"status": "queued", "stage": "queued", "progress": 0.0, "name": name}
            return httpx.Response(202, json={"job_id": job_id, "status": "queued"},
                                  headers={"Location": f"http://x/api/v1/jobs/{job_id}"})  # fmt: skip
        if m := re.fullmatch(r"/api/v1/jobs/(\w+)/events", path):
            return self.events(m.group(1))
        if m := re.fullmatch(r"/api/v1/jobs/(\w+)/results/(.+)", path):
            return httpx.Response(200, content=RESULTS[m.group(2)])
        if m := re.fullmatch(r"/api/v1/jobs/(\w+)/cancel", path):
            job = self.jobs[m.group(1)]
            self.canceled.append(m.group(1))
            if job["status"] in ("queued", "running"):
                job.update(status="canceled")
            return httpx.Response(200, json=self.view(m.group(1)))
        if m := re.fullmatch(r"/api/v1/jobs/(\w+)", path):
            job_id = m.group(1)
            if job_id not in self.jobs:
                return problem(404, "job_not_found", f"There is no job {job_id}.")
            if request.method == "DELETE":
                del self.jobs[job_id]
                return httpx.Response(204)
            self.polls += 1
            if self.events_mode != "sse":
                self.advance(job_id)
            view = self.view(job_id)
            headers = {} if view["status"] in ("succeeded", "failed", "canceled") else {"Retry-After": "2"}
            return httpx.Response(200, json=view, headers=headers)
        if path == "/api/v1/jobs":
            ids = sorted(self.jobs)
            start = int(request.url.params.get("cursor", 0))
            limit = int(request.url.params.get("limit", 20))
            page = ids[start : start + limit]
            more = start + limit < len(ids)
            return httpx.Response(200, json={"jobs": [self.view(i) for i in page],
                                             "next_cursor": str(start + limit) if more else None})  # fmt: skip
        return problem(404, "not_found", "There is nothing at this address.")

    def advance(self, job_id: str) -> None:
        job = self.jobs[job_id]
        index = job.get("step", 0)
        status, stage, progress = self.states[min(index, len(self.states) - 1)]
        if status == "succeeded":
            status = self.final_status
            if status == "failed":
                job["error"] = "The audio could not be transcribed."
        if job["status"] != "canceled":
            job.update(status=status, stage=stage, progress=progress, step=index + 1)

    def events(self, job_id: str) -> httpx.Response:
        if job_id not in self.jobs:
            return problem(404, "job_not_found", f"There is no job {job_id}.")
        if self.events_mode == "html":
            return httpx.Response(200, text="<html>a proxy</html>", headers={"content-type": "text/html"})
        chunks = []
        while True:
            self.advance(job_id)
            job = self.jobs[job_id]
            final = job["status"] in ("succeeded", "failed", "canceled")
            if self.events_mode == "drop" and final:
                break  # the connection ends before the final state
            state = {k: job.get(k) for k in ("status", "stage", "progress", "error")} | {"job_id": job_id}
            chunks.append(f"event: {'final' if final else 'state'}\ndata: {json.dumps(state)}\n\n")
            if final:
                break
        return httpx.Response(200, text=": hello\n\n" + "".join(chunks), headers={"content-type": "text/event-stream"})
