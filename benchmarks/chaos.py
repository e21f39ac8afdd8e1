"""Load and chaos: short jobs from two API keys over real HTTP while Serve replicas are killed at random.

    python -m benchmarks.chaos          # 200 jobs of 10 s clips, kills every 20-30 s for 5 minutes, shipped settings
    python -m benchmarks.chaos --fast   # the quick variant: 3 s clips, small model, 6 s leases (writes chaos_fast)
    python -m benchmarks.chaos --jobs 40 --minutes 2 --kill-every 10-15

It starts its own Ray cluster and the application (a fresh PostgreSQL database, local storage in a temp
folder, authentication on with two seeded keys, a random-weight HTDemucs of the pretrained `htdemucs`
architecture), then, at the same time:

- submits the jobs at a steady rate over the run (alternating keys; a mix of `separation=none`, `hpss`
  and `demucs`, so every deployment works), each with its own `Idempotency-Key`, and polls their status;
- every `--kill-every` seconds kills one replica at random, with `ray.kill(actor, no_restart=True)`, as a
  crash would: a Separation replica, a Transcription replica, the JobTracker replica (the runner) or the
  Ingress replica. Serve's controller notices and starts a replacement.

When the run is over it waits (no more kills) for every job to finish and checks: each accepted upload is
one job that `succeeded` (0 lost), one job row per idempotency key and each result published once, with
exactly those objects in storage (0 duplicated), and no unexpected 5xx. Results go to
benchmarks/results/chaos.{md,json}.

What the client counts as expected, and retries (with the same Idempotency-Key for uploads):
- 503 with `Retry-After` (the application's problem+json: the tracker or a model is not reachable while
  it restarts; or Serve's own 503 while a deployment has no replica): expected, retried after Retry-After.
- a 500 from the Serve proxy itself (text/plain, not problem+json) for a request that was in flight on
  the Ingress replica when it was killed, within a few seconds after that kill: the proxy's answer for a
  replica that died under a request; expected, retried, counted apart ("in flight on a killed ingress").
- a connection error: retried, counted.
Every other 5xx is unexpected; so is any 500 from the application itself.

By default the service runs with its shipped settings (job lease, retry backoff, concurrent jobs:
serve_app/settings.py); `--fast` and the single flags change them, and the report states every setting
and which of them differ from the shipped ones. `tests/integration/test_chaos.py` drives `run_chaos` on
the test session's cluster with fewer jobs and the fast settings.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from benchmarks.local_service import APP_NAME, fresh_postgres_database, kill_replica, local_service, replica_actors
from benchmarks.provenance import header, header_line, write_results
from benchmarks.speed import _percentile
from serve_app.domain.storage import JobKeys
from serve_app.settings import Settings

logger = logging.getLogger("benchmarks.chaos")
FINAL = {"succeeded", "failed", "canceled"}
KEYS = ("ssk_chaos-key-one-0123456789abcdef", "ssk_chaos-key-two-0123456789abcdef")
# What the kills pick from: every deployment of the application.
TARGETS = ("Separation", "Transcription", "JobTracker", "Ingress")
# Mostly cheap jobs, so 2 cores keep up; enough of the others that every deployment is used.
SEPARATION_MIX = (("none", 6), ("hpss", 3), ("demucs", 1))
# A proxy 500 this long after an ingress kill is the answer to a request the killed replica held.
INGRESS_KILL_WINDOW_S = 15.0
POLL_GAP_S = 0.3  # between two status polls of one poller thread
MAX_TRIES = 60  # a request is given up after this many tries (then the job counts as lost)


@dataclass
class ChaosPlan:
    jobs: int = 200
    seconds: float = 300.0  # how long kills go on; the jobs are submitted evenly over it
    kill_every: tuple[float, float] = (20.0, 30.0)
    targets: Sequence[str] = TARGETS
    drain_timeout_s: float = 900.0  # after the run, how long the jobs may take to finish
    seed: int = 0
    pollers: int = 2


@dataclass
class Call:
    """One HTTP try."""

    kind: str  # "submit" or "status"
    at: float  # seconds since the start of the run
    seconds: float
    status: int | None  # None: no answer (connection error, timeout)
    outcome: str  # ok, expected_503, ingress_in_flight, transport, rate_limited, unexpected_5xx, client_error


@dataclass
class Kill:
    at: float
    target: str
    actor: str | None  # None: no live replica to kill (still being replaced)
    replaced_after_s: float | None = None


@dataclass
class Job:
    index: int
    key: str
    separation: str
    idempotency_key: str
    job_id: str | None = None
    final: dict[str, Any] | None = None


@dataclass
class Recorder:
    started: float = field(default_factory=time.monotonic)
    calls: list[Call] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    unexpected: list[dict[str, Any]] = field(default_factory=list)
    retried: list[dict[str, Any]] = field(default_factory=list)  # every try that was not answered for good
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.monotonic() - self.started

    def add(self, call: Call, detail: dict[str, Any] | None = None, body: str = "") -> None:
        with self.lock:
            self.calls.append(call)
            if detail is not None:
                self.unexpected.append(detail)
            if call.outcome not in ("ok", "client_error"):
                self.retried.append({
                    "at": round(call.at, 2), "kind": call.kind, "status": call.status, "outcome": call.outcome,
                    "seconds": round(call.seconds, 2), "body": body[:160],
                })  # fmt: skip

    def ingress_killed_recently(self, at: float) -> bool:
        with self.lock:
            return any(k.target == "Ingress" and k.actor and 0 <= at - k.at <= INGRESS_KILL_WINDOW_S for k in self.kills)


def _classify(response: httpx.Response, answered_at: float, recorder: Recorder) -> str:
    code = response.status_code
    if code < 400:
        return "ok"
    if code == 429:
        return "rate_limited"
    if code < 500:
        return "client_error"
    problem = response.headers.get("content-type", "").startswith("application/problem+json")
    if code == 503 and "retry-after" in response.headers:
        return "expected_503"
    if code == 503 and not problem:
        return "expected_503"  # Serve's proxy: the deployment has no replica right now
    if code == 500 and not problem and recorder.ingress_killed_recently(answered_at):
        return "ingress_in_flight"
    return "unexpected_5xx"


def request(
    client: httpx.Client, recorder: Recorder, kind: str, method: str, url: str, *,
    headers: dict[str, str], upload: tuple[Path, dict[str, str]] | None = None,
) -> httpx.Response | None:
    """One logical request, tried until it gets an answer that is not a temporary failure."""
    for attempt in range(MAX_TRIES):
        at = recorder.now()
        started = time.monotonic()
        try:
            if upload is not None:
                path, form = upload
                with open(path, "rb") as fh:
                    response = client.request(method, url, headers=headers, data=form, files={"file": (path.name, fh)})
            else:
                response = client.request(method, url, headers=headers)
        except httpx.TransportError as exc:
            recorder.add(Call(kind, at, time.monotonic() - started, None, "transport"), body=type(exc).__name__)
            logger.info("%s %s: %s; retrying", method, url, type(exc).__name__)
            time.sleep(min(2.0, 0.25 * 2**attempt))
            continue
        seconds = time.monotonic() - started
        outcome = _classify(response, recorder.now(), recorder)  # when the answer came: after a kill or not
        detail = None
        if outcome == "unexpected_5xx":
            detail = {"at": round(at, 2), "kind": kind, "url": url, "status": response.status_code,
                      "body": response.text[:500]}  # fmt: skip
            logger.error("unexpected %d on %s %s: %s", response.status_code, method, url, response.text[:300])
        recorder.add(Call(kind, at, seconds, response.status_code, outcome), detail, response.text)
        if outcome in ("ok", "client_error"):
            return response
        # Back off as told (Retry-After), or a little longer each time; never longer than 5 s.
        wait = float(response.headers.get("retry-after", 0.25 * 2**attempt))
        time.sleep(min(5.0, max(0.2, wait)))
    logger.error("%s %s: no answer after %d tries", method, url, MAX_TRIES)
    return None


class ReplicaKiller:
    """Kills one live replica of a deployment of `app` as a crash would (no graceful shutdown)."""

    def __init__(self, app: str = APP_NAME) -> None:
        self.app = app

    def kill(self, target: str) -> str | None:
        live = replica_actors(target, self.app)
        if not live:
            return None
        name = random.choice(live)
        try:
            kill_replica(name)
        except ValueError:
            return None  # it went away between the listing and the kill
        return name

    def replaced(self, target: str, killed: str, timeout: float = 120.0) -> float | None:
        """Seconds until a replica other than the killed one is listed again."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if [name for name in replica_actors(target, self.app) if name != killed]:
                return round(time.monotonic() - started, 2)
            time.sleep(0.5)
        return None


def _chaos_loop(plan: ChaosPlan, killer: ReplicaKiller, recorder: Recorder, stop: threading.Event) -> None:
    rng = random.Random(plan.seed)
    order: list[str] = []
    while not stop.wait(rng.uniform(*plan.kill_every)):
        if recorder.now() > plan.seconds:
            return
        # Random order, each target once a round: a short run still kills every kind of replica.
        if not order:
            order = rng.sample(list(plan.targets), len(plan.targets))
        target = order.pop()
        at = recorder.now()
        actor = killer.kill(target)
        kill = Kill(round(at, 2), target, actor)
        with recorder.lock:
            recorder.kills.append(kill)
        logger.info("t=%.0f s: killed %s (%s)", at, target, actor or "none live")
        if actor is not None:
            # Measured aside, so a slow replacement does not delay the next kill.
            threading.Thread(target=_time_replacement, args=(killer, kill), daemon=True).start()


def _time_replacement(killer: ReplicaKiller, kill: Kill) -> None:
    assert kill.actor is not None
    kill.replaced_after_s = killer.replaced(kill.target, kill.actor)


def _submit(client: httpx.Client, recorder: Recorder, job: Job, clip: Path) -> None:
    headers = {"X-API-Key": job.key, "Idempotency-Key": job.idempotency_key}
    response = request(
        client, recorder, "submit", "POST", "/api/v1/transcribe", headers=headers,
        upload=(clip, {"separation": job.separation}),
    )  # fmt: skip
    if response is None or response.status_code != 202:
        logger.error("job %d not accepted: %s", job.index, None if response is None else response.text[:300])
        return
    job.job_id = response.json()["job_id"]


def _poll(client: httpx.Client, recorder: Recorder, jobs: list[Job], until: Callable[[], bool], lock: threading.Lock) -> None:
    """Round-robin status polls of the unfinished jobs, as clients following their jobs would."""
    turn = 0
    while not until():
        with lock:
            pending = [job for job in jobs if job.job_id is not None and job.final is None]
        if not pending:
            time.sleep(POLL_GAP_S)
            continue
        job = pending[turn % len(pending)]
        turn += 1
        response = request(client, recorder, "status", "GET", f"/api/v1/jobs/{job.job_id}", headers={"X-API-Key": job.key})
        if response is not None and response.status_code == 200 and response.json()["status"] in FINAL:
            job.final = response.json()
        time.sleep(POLL_GAP_S)


def run_chaos(
    url: str, keys: Sequence[str], clip: Path, plan: ChaosPlan, settings: dict[str, Any],
    killer: ReplicaKiller | None = None,
) -> dict[str, Any]:
    """The whole run against the application deployed with `settings` (Settings fields; the checks read its
    database and local storage); returns the report (see `report_markdown`)."""
    rng = random.Random(plan.seed + 1)
    names = [name for name, weight in SEPARATION_MIX for _ in range(weight)]
    jobs = [
        Job(i, keys[i % len(keys)], rng.choice(names), f"chaos-{uuid.uuid4().hex}") for i in range(plan.jobs)
    ]  # fmt: skip
    killer = killer or ReplicaKiller()
    recorder = Recorder()
    stop = threading.Event()
    lock = threading.Lock()
    chaos = threading.Thread(target=_chaos_loop, args=(plan, killer, recorder, stop), name="chaos", daemon=True)
    interval = plan.seconds / plan.jobs
    with httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(4 + plan.pollers) as pool:
        chaos.start()
        pollers = [pool.submit(_poll, client, recorder, jobs, stop.is_set, lock) for _ in range(plan.pollers)]
        submits = []
        for job in jobs:
            # A steady rate: each upload at its own time, whatever the previous ones cost.
            delay = job.index * interval - recorder.now()
            if delay > 0:
                time.sleep(delay)
            submits.append(pool.submit(_submit, client, recorder, job, clip))
        for future in submits:
            future.result()
        chaos_over = max(0.0, plan.seconds - recorder.now())
        time.sleep(chaos_over)  # the kills go on for the whole planned time
        load_seconds = recorder.now()
        stop.set()
        chaos.join()
        for future in pollers:
            future.result()
        logger.info("kills over at t=%.0f s; waiting for the jobs to finish", recorder.now())
        drain_started = time.monotonic()
        done = threading.Event()
        pollers = [pool.submit(_poll, client, recorder, jobs, done.is_set, lock) for _ in range(plan.pollers)]
        while time.monotonic() - drain_started < plan.drain_timeout_s:
            if all(job.final is not None or job.job_id is None for job in jobs):
                break
            time.sleep(1)
        done.set()
        for future in pollers:
            future.result()
    total_seconds = recorder.now()
    resolved = Settings(**settings)
    assert resolved.storage_dir is not None and resolved.storage_backend == "local"
    checks = verify(jobs, resolved.database_url.get_secret_value(), resolved.storage_dir)
    return summarize(plan, jobs, recorder, checks, load_seconds, total_seconds)


def verify(jobs: list[Job], database_url: str, storage_dir: Path) -> dict[str, Any]:
    """Lost and duplicated, from what the clients saw, the job rows and the stored objects."""
    accepted = [job for job in jobs if job.job_id is not None]
    lost = [
        {"index": job.index, "job_id": job.job_id, "status": None if job.final is None else job.final["status"],
         "error": None if job.final is None else job.final.get("error")}
        for job in jobs if job.final is None or job.final["status"] != "succeeded"
    ]  # fmt: skip
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, idempotency_key, results, attempts FROM jobs")).all()
    finally:
        engine.dispose()
    per_key = Counter(row.idempotency_key for row in rows)
    duplicated_rows = sum(n - 1 for n in per_key.values() if n > 1)
    ours = {job.job_id for job in accepted}
    stray_rows = [row.id for row in rows if row.id not in ours]  # a job no client got an answer for
    duplicated_results, storage_mismatch = [], []
    for job in accepted:
        if job.final is None:
            continue
        names = [r["name"] for r in job.final["results"]]
        if len(names) != len(set(names)):
            duplicated_results.append(job.job_id)
        folder = storage_dir / JobKeys(str(job.job_id)).prefix / "results"
        stored = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []
        if job.final["status"] == "succeeded" and stored != sorted(names):
            storage_mismatch.append({"job_id": job.job_id, "listed": sorted(names), "stored": stored})
    attempts = Counter(int(row.attempts) for row in rows)
    return {
        "submitted": len(jobs),
        "accepted": len(accepted),
        "job_rows": len(rows),
        "lost": lost,
        "duplicated_rows": duplicated_rows,
        "stray_rows": stray_rows,
        "duplicated_results": duplicated_results,
        "storage_mismatch": storage_mismatch,
        "attempts_histogram": {str(k): v for k, v in sorted(attempts.items())},
    }


def _latency(calls: list[Call]) -> dict[str, float | int]:
    values = sorted(c.seconds for c in calls if c.status is not None)
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(1000 * statistics.median(values), 1),
        "p95_ms": round(1000 * _percentile(values, 0.95), 1),
        "p99_ms": round(1000 * _percentile(values, 0.99), 1),
        "max_ms": round(1000 * values[-1], 1),
    }


def summarize(
    plan: ChaosPlan, jobs: list[Job], recorder: Recorder, checks: dict[str, Any], load_seconds: float,
    total_seconds: float,
) -> dict[str, Any]:
    calls = recorder.calls
    under_load = [c for c in calls if c.at <= load_seconds]
    finished = [job.final for job in jobs if job.final is not None]
    last_finish = max((datetime.fromisoformat(j["finished_at"]) for j in finished if j.get("finished_at")), default=None)
    first_created = min((datetime.fromisoformat(j["created_at"]) for j in finished if j.get("created_at")), default=None)
    span = (last_finish - first_created).total_seconds() if last_finish and first_created else total_seconds
    succeeded = sum(1 for j in finished if j["status"] == "succeeded")
    return {
        "plan": {**asdict(plan), "targets": list(plan.targets)},
        "load_seconds": round(load_seconds, 1),
        "total_seconds": round(total_seconds, 1),
        "jobs_by_separation": dict(Counter(job.separation for job in jobs)),
        "succeeded": succeeded,
        "jobs_per_minute": round(60 * succeeded / span, 2) if span > 0 else None,
        "lost": len(checks["lost"]),
        "duplicated": checks["duplicated_rows"] + len(checks["stray_rows"]) + len(checks["duplicated_results"])
        + len(checks["storage_mismatch"]),
        "unexpected_5xx": len(recorder.unexpected),
        "checks": checks,
        "unexpected_5xx_detail": recorder.unexpected,
        "outcomes": dict(Counter(c.outcome for c in calls)),
        "statuses": {str(k): v for k, v in sorted(Counter(c.status for c in calls).items(), key=lambda kv: str(kv[0]))},
        "latency_under_load": {
            "all": _latency(under_load),
            "submit": _latency([c for c in under_load if c.kind == "submit"]),
            "status": _latency([c for c in under_load if c.kind == "status"]),
        },
        "retried": recorder.retried,
        "kills": [asdict(k) for k in recorder.kills],
        "kills_by_target": dict(Counter(k.target for k in recorder.kills if k.actor)),
    }


def _settings_lines(settings: dict[str, Any] | None) -> list[str]:
    if not settings:
        return []
    changed = settings["changed_from_shipped"]
    return [
        f"Service settings: lease {settings['lease_seconds']:g} s, retry backoff {settings['retry_backoff_seconds']:g} s, "
        f"{settings['max_concurrent_jobs']} jobs at once ("
        + ("the shipped defaults" if not changed else "changed from the shipped: " + ", ".join(changed)) + "); "
        f"uploads of {settings['clip_seconds']:g} s; Demucs: {settings['demucs']}.",
        "",
    ]


def report_markdown(report: dict[str, Any]) -> str:
    plan, lat = report["plan"], report["latency_under_load"]
    lo, hi = plan["kill_every"]
    lines = [
        header_line(report) if "command" in report else "",
        "",
        *_settings_lines(report.get("settings")),
        f"{plan['jobs']} jobs from two API keys ({', '.join(f'{k} {v}' for k, v in report['jobs_by_separation'].items())}), "
        f"submitted evenly over {plan['seconds']:g} s while one random replica was killed every {lo:g}-{hi:g} s; "
        f"all finished {report['total_seconds']:g} s after the start.",
        "",
        f"**lost {report['lost']}, duplicated {report['duplicated']}, unexpected 5xx {report['unexpected_5xx']}**; "
        f"{report['succeeded']} succeeded, {report['jobs_per_minute']} jobs per minute (first upload to last finish).",
        "",
        "API latency while the kills went on (every HTTP try, retries included):",
        "",
        "| requests | n | p50 | p95 | p99 | max |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("all", "submit", "status"):
        row = lat[kind]
        if row.get("n"):
            lines.append(
                f"| {kind} | {row['n']} | {row['p50_ms']} ms | **{row['p95_ms']} ms** | {row['p99_ms']} ms | {row['max_ms']} ms |"
            )
    lines += [
        "",
        "Answers: " + ", ".join(f"{k} {v}" for k, v in report["outcomes"].items())
        + " (HTTP statuses: " + ", ".join(f"{k} {v}" for k, v in report["statuses"].items()) + ")",
        "",
        "Attempts per job: " + ", ".join(f"{k}: {v}" for k, v in report["checks"]["attempts_histogram"].items()),
        "",
        "Tries answered with a temporary failure, retried by the client (t: when the try began):",
        "",
        "| t (s) | request | status | counted as | took | answer |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["retried"]:
        answer = " ".join(str(row["body"]).split())[:100].replace("|", "/")
        lines.append(
            f"| {row['at']} | {row['kind']} | {row['status'] or '-'} | {row['outcome']} | {row['seconds']} s | {answer} |"
        )
    lines += [
        "",
        "Kills (the replacement column: until another replica of that deployment was listed; 0 s when one "
        "was already running, as autoscaling keeps two Separation replicas under this load):",
        "",
        "| t (s) | killed | replica | replacement listed after |",
        "|---|---|---|---|",
    ]
    for kill in report["kills"]:
        replaced = "-" if kill["replaced_after_s"] is None else f"{kill['replaced_after_s']} s"
        lines.append(f"| {kill['at']} | {kill['target']} | {kill['actor'] or 'none live'} | {replaced} |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ServiceKnobs:
    """The settings a chaos run may change from the shipped ones (the defaults here are the shipped ones)."""

    lease_seconds: float = Settings.model_fields["lease_seconds"].default
    retry_backoff_seconds: float = Settings.model_fields["retry_backoff_seconds"].default
    max_concurrent_jobs: int = Settings.model_fields["max_concurrent_jobs"].default

    def changed(self) -> dict[str, Any]:
        shipped = ServiceKnobs()
        return {k: v for k, v in asdict(self).items() if v != getattr(shipped, k)}


# What the tests and `--fast` use: a killed runner's jobs are taken up again within seconds, not 30.
FAST = ServiceKnobs(lease_seconds=6, retry_backoff_seconds=1, max_concurrent_jobs=2)


def service_settings(
    database_url: str, data_dir: Path, model_dir: Path, model: str, jobs: int, knobs: ServiceKnobs = FAST
) -> dict[str, Any]:
    """The application's settings for a chaos run (the test uses the same)."""
    return {
        "auth_required": True, "api_keys": ",".join(KEYS), "database_url": database_url,
        "data_dir": str(data_dir), "demucs_model": model, "demucs_model_dir": str(model_dir),
        **asdict(knobs),
        # The load is the point, not the per-key limits (tested in test_security.py): room for every job.
        "max_active_jobs_per_key": jobs, "max_uploads_per_minute": max(30, jobs), "max_queue_depth": jobs + 10,
    }  # fmt: skip


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from benchmarks.pieces import melody
    from benchmarks.render import render
    from music.engines.demucs_models import DEFAULT_TEST_MODEL, write_random_htdemucs

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=5.0, help="how long the kills go on")
    parser.add_argument("--kill-every", default="20-30", help="seconds between kills, LOW-HIGH")
    parser.add_argument("--fast", action="store_true",
                        help="3 s clips, the small test model, lease 6 s, backoff 1 s, 2 jobs at once")  # fmt: skip
    parser.add_argument("--clip-seconds", type=float, help="length of each upload (10; --fast: 3)")
    parser.add_argument("--small-model", action="store_true", help="a small random HTDemucs instead of the full size")
    parser.add_argument("--lease-seconds", type=float)
    parser.add_argument("--retry-backoff-seconds", type=float)
    parser.add_argument("--max-concurrent-jobs", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-cpus", type=int, help="logical CPUs for Ray; default cores + 2")
    args = parser.parse_args(argv)
    low, high = (float(x) for x in args.kill_every.split("-"))
    plan = ChaosPlan(jobs=args.jobs, seconds=60 * args.minutes, kill_every=(low, high), seed=args.seed)
    base = FAST if args.fast else ServiceKnobs()
    knobs = ServiceKnobs(
        lease_seconds=base.lease_seconds if args.lease_seconds is None else args.lease_seconds,
        retry_backoff_seconds=base.retry_backoff_seconds if args.retry_backoff_seconds is None else args.retry_backoff_seconds,
        max_concurrent_jobs=base.max_concurrent_jobs if args.max_concurrent_jobs is None else args.max_concurrent_jobs,
    )
    clip_seconds = args.clip_seconds or (3.0 if args.fast else 10.0)
    small = args.small_model or args.fast
    name = "chaos_fast" if args.fast else "chaos"

    work = Path(tempfile.mkdtemp(prefix="stemscribe-chaos-"))
    model_dir, data_dir = work / "models", work / "data"
    model = DEFAULT_TEST_MODEL if small else "htdemucs"
    write_random_htdemucs(model_dir, model, full_size=not small)
    clip = render(melody(seconds=clip_seconds), work / "clip.wav")
    logger.info("work folder %s", work)
    with fresh_postgres_database() as database_url:
        settings = service_settings(database_url, data_dir, model_dir, model, plan.jobs, knobs)
        with local_service(settings, num_cpus=args.num_cpus) as url:
            wait_ready(url)
            report = run_chaos(url, KEYS, clip, plan, settings)
    run_settings = {
        **asdict(knobs), "changed_from_shipped": knobs.changed(), "clip_seconds": clip_seconds,
        "demucs": "small random-weight HTDemucs" if small else "random-weight htdemucs (pretrained architecture, full size)",
    }  # fmt: skip
    report = {**header(settings=run_settings), **report}
    write_results(name, report, report_markdown(report))
    logger.info("\n%s", report_markdown(report))
    return report


def wait_ready(url: str, timeout: float = 180.0) -> None:
    """Until the tracker has the schema and the seeded keys (health/ready 200)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=30) as client:
        while time.monotonic() < deadline:
            try:
                if client.get("/api/v1/health/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout:g} s")


if __name__ == "__main__":
    main()
