"""stemscribe's Prometheus metrics, through Ray's metrics API: every definition and every helper the
tracker and the model replicas call is here, so each call site is one line.

Ray exports them on each node's metrics agent (`MetricsExportPort` in `ray.nodes()`), prefixed with
`ray_`: `stemscribe_jobs_submitted` is scraped as `ray_stemscribe_jobs_submitted_total`. Labels take
values from small fixed sets only (separation modes, stages, reason codes, model and deployment names).
Recording never raises: a metric that cannot be recorded is logged and dropped, the job goes on.

README.md ("Operations: metrics and logs") lists them; configs/grafana-stemscribe.json draws them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from serve_app.domain.errors import BadInput, JobCanceled, ModelUnavailable, unwrap

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Why a job ended without results. "internal" is counted once per job, when its attempts ran out;
# each attempt that ended in an internal error (and gave its job back to the queue) counts in
# attempts_released.
REASONS = ("bad_input", "model_unavailable", "internal", "canceled")
STAGES = ("decoding", "separating", "transcribing", "packaging")

# Seconds. Ray exports a histogram's _sum from bucket midpoints, so the buckets are close enough
# for sum/count to be a fair mean too.
STAGE_BUCKETS = [0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 450, 600, 900, 1200]
LOAD_BUCKETS = [0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600]


@functools.cache
def _defined() -> dict[str, Any]:
    """The metric objects, made on first use (in the process that records them)."""
    from ray.util.metrics import Counter, Gauge, Histogram

    return {
        "submitted": Counter(
            "stemscribe_jobs_submitted", "Jobs accepted into the queue.", tag_keys=("separation",)
        ),
        "succeeded": Counter(
            "stemscribe_jobs_succeeded", "Jobs that finished with results.", tag_keys=("separation",)
        ),
        "failed": Counter(
            "stemscribe_jobs_failed",
            "Jobs that ended without results, by reason: bad_input, model_unavailable, internal "
            "(attempts ran out), canceled.",
            tag_keys=("reason", "separation"),
        ),
        "released": Counter(
            "stemscribe_attempts_released",
            "Attempts that ended in an internal error and gave their job back to the queue (to be "
            "retried, or failed as internal once its attempts are used up).",
            tag_keys=("separation",),
        ),
        "cache": Counter(
            "stemscribe_cache_lookups",
            "Attempts that asked the result cache, by result: hit (the job got a copy of a finished job's "
            "files, maybe after waiting for it), miss (the job computed its results).",
            tag_keys=("result", "separation"),
        ),
        "stage": Histogram(
            "stemscribe_stage_seconds",
            "Seconds an attempt spent in a stage (decoding, separating, transcribing, packaging).",
            boundaries=STAGE_BUCKETS,
            tag_keys=("stage", "separation"),
        ),
        "queue": Gauge("stemscribe_queue_depth", "Queued jobs in the database, as the job tracker last counted."),
        "running": Gauge("stemscribe_jobs_running", "Jobs the job tracker is running now."),
        "load": Histogram(
            "stemscribe_model_load_seconds",
            "Seconds a replica took to load its model (successful loads only).",
            boundaries=LOAD_BUCKETS,
            tag_keys=("model",),
        ),
        "gpu": Gauge(
            "stemscribe_gpu_memory_max_allocated_bytes",
            "torch.cuda.max_memory_allocated() of a model replica on CUDA (none on CPU).",
            tag_keys=("deployment", "replica"),
        ),
    }


def _record(name: str, method: str, value: float, tags: dict[str, str] | None = None) -> None:
    try:
        getattr(_defined()[name], method)(value, tags=tags)
    except Exception:
        logger.warning("metric %s not recorded", name, exc_info=True)


def _mode(options: Any) -> str:
    """The separation mode of a JobOptions (or its dict form)."""
    mode = options.get("separation", "demucs") if isinstance(options, dict) else options.separation
    return str(getattr(mode, "value", mode))


def failure_reason(exc: BaseException | None) -> str:
    cause = None if exc is None else unwrap(exc)
    if isinstance(cause, JobCanceled):
        return "canceled"
    if isinstance(cause, BadInput):
        return "bad_input"
    if isinstance(cause, ModelUnavailable):
        return "model_unavailable"
    return "internal"


# The job tracker.


def job_submitted(options: Any) -> None:
    _record("submitted", "inc", 1, {"separation": _mode(options)})


def job_ended(status: str, options: Any, exc: BaseException | None) -> None:
    """A job reached a final status; `exc` is what ended it when it did not succeed."""
    if str(status) == "succeeded":
        _record("succeeded", "inc", 1, {"separation": _mode(options)})
    else:
        job_failed(failure_reason(exc), options)


def job_failed(reason: str, options: Any) -> None:
    _record("failed", "inc", 1, {"reason": reason if reason in REASONS else "internal", "separation": _mode(options)})


def attempt_released(options: Any) -> None:
    _record("released", "inc", 1, {"separation": _mode(options)})


def cache_lookup(hit: bool, options: Any) -> None:
    _record("cache", "inc", 1, {"result": "hit" if hit else "miss", "separation": _mode(options)})


def stage_finished(stage: Any, seconds: float, options: Any) -> None:
    name = str(getattr(stage, "value", stage))
    if name in STAGES:
        _record("stage", "observe", max(seconds, 0.0), {"stage": name, "separation": _mode(options)})


async def sample_queue(repo: Any, running: int) -> None:
    """Queue depth from the database and the tracker's running jobs; called at the claim loop's pace."""
    _record("running", "set", running)
    try:
        queued = await asyncio.to_thread(repo.count_queued)
    except Exception:  # the database may be away; the claim loop says so already
        return
    _record("queue", "set", queued)


# The model replicas.


def timed_load(model: str, load: Callable[..., T], *args: Any) -> T:
    """`load(*args)`, its time recorded when it returns."""
    started = time.monotonic()
    result = load(*args)
    _record("load", "observe", time.monotonic() - started, {"model": model})
    return result


def load_demucs(engine: Any) -> None:
    """DemucsSeparator.load (it keeps its errors to itself; `load_seconds` is set on success only),
    then the GPU memory it took."""
    engine.load()
    if getattr(engine, "state", None) is not None and str(getattr(engine.state, "value", "")) == "ready":
        _record("load", "observe", float(engine.load_seconds), {"model": "demucs"})
    gpu_memory("Separation")


def gpu_memory(deployment: str) -> None:
    """The replica's peak torch CUDA allocation, when it uses CUDA; nothing on the CPU."""
    torch = sys.modules.get("torch")
    try:
        if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return
        peak = torch.cuda.max_memory_allocated()
    except Exception:
        return
    _record("gpu", "set", float(peak), {"deployment": deployment, "replica": _replica_id()})


def _replica_id() -> str:
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_tag)
    except Exception:
        return "-"
