"""Where stemscribe's own log lines go, in which encoding, and the job id each carries.

The loggers of the `serve_app`, `deployments` and `music` packages are set up once per Ray process
(`configure_logging`, called where a replica or the job tracker starts):

- in a Serve replica their records go to Serve's logger (`ray.serve`), so they land in the replica's
  log file in the encoding of the deployment's `logging_config` (which the builder sets from
  `log_encoding`), beside Serve's own fields (deployment, replica, request_id);
- elsewhere (the job tracker actor) to stderr, i.e. the worker's log file, in `log_encoding`.

A line about a job carries its id as `stemscribe_job_id` (`job_id` is taken: Ray's own context filter
writes the Ray job's id there): from `extra={"stemscribe_job_id": ...}`, or else from `bind_job`,
which ties the id to the current asyncio task or worker thread.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from typing import Any

PACKAGES = ("serve_app", "deployments", "music")
# httpx's INFO line names every request's full URL, and a webhook's path or query often carries a token.
QUIETED = ("httpx", "httpcore")
SERVE_LOGGER = "ray.serve"
JOB_KEY = "stemscribe_job_id"

_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("stemscribe_job_id", default=None)


def bind_job(job_id: str) -> None:
    """Log lines from here on in this task (or thread) carry the job's id. Asyncio tasks and
    `asyncio.to_thread` calls each have their own copy of the context, so no reset is needed."""
    _job_id.set(job_id)


class JobIdFilter(logging.Filter):
    """Adds the job's id (JOB_KEY) to records about a job; one given in `extra` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, JOB_KEY, None) is None:
            job_id = _job_id.get()
            if job_id is not None:
                setattr(record, JOB_KEY, job_id)
        return True


# Attributes every LogRecord has; the rest came from `extra` or a filter and are written out.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _ray_context() -> dict[str, str]:
    try:
        import ray

        if not ray.is_initialized():
            return {}
        ctx = ray.get_runtime_context()
        found = {"node_id": ctx.get_node_id(), "worker_id": ctx.get_worker_id(), "actor_id": ctx.get_actor_id()}
        return {k: v for k, v in found.items() if v}
    except Exception:
        return {}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, source, extras (stemscribe_job_id) and Ray ids."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "asctime": self.formatTime(record),
            "levelname": record.levelname,
            "name": record.name,
            "message": record.getMessage(),
            "filename": record.filename,
            "lineno": record.lineno,
            "process": record.process,
        }
        if record.exc_info:
            line["exc_text"] = self.formatException(record.exc_info)
        line.update(_ray_context())
        line.update(_extras(record))
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """Ray's text layout, with the extras (stemscribe_job_id) as key=value at the end."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s\t%(levelname)s %(filename)s:%(lineno)d -- %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        return f"{text} {extras}" if extras else text


class _ToServeLogger(logging.Handler):
    """Hands records to Serve's logger, whose handlers Serve sets up (and replaces) per replica."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(SERVE_LOGGER).handle(record)


def _in_serve_replica() -> bool:
    try:
        from ray import serve

        serve.get_replica_context()
    except Exception:
        return False
    return True


def _in_ray_actor() -> bool:
    try:
        import ray

        return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
    except Exception:
        return False


def make_handler(encoding: str, serve_replica: bool) -> logging.Handler:
    handler: logging.Handler
    if serve_replica:
        handler = _ToServeLogger()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter() if encoding == "JSON" else TextFormatter())
    handler.addFilter(JobIdFilter())
    handler._stemscribe = True  # type: ignore[attr-defined]
    return handler


def configure_logging(settings: Any, force: bool = False) -> None:
    """Set up stemscribe's loggers in this process; only inside Ray actors (replicas, the tracker)
    unless `force`, so tests and command lines keep their own logging."""
    if not force and not _in_ray_actor():
        return
    handler = make_handler(settings.log_encoding, _in_serve_replica())
    for name in PACKAGES:
        package_logger = logging.getLogger(name)
        for old in [h for h in package_logger.handlers if getattr(h, "_stemscribe", False)]:
            package_logger.removeHandler(old)
        package_logger.addHandler(handler)
        package_logger.setLevel(settings.log_level)
        package_logger.propagate = False
    for name in QUIETED:
        logging.getLogger(name).setLevel(logging.WARNING)


def serve_logging_config(settings: Any) -> dict[str, Any]:
    """The `logging_config` the builder gives each deployment (a YAML deployment entry's own wins)."""
    # The logger's name, as the tracker's lines have it (Serve's lines leave it out by default).
    return {"encoding": settings.log_encoding, "log_level": settings.log_level, "additional_log_standard_attrs": ["name"]}
