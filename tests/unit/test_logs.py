"""Log lines carry the job id, JSON logs are one object a line, and the setting reaches Serve."""

from __future__ import annotations

import contextvars
import io
import json
import logging
from collections.abc import Iterator

import pytest
from ray.serve.schema import LoggingConfig

from serve_app import logs
from serve_app.app import ingress_options, separation_options, transcription_options
from serve_app.settings import Settings


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.JobIdFilter())
    logger = logging.getLogger("tests.unit.test_logs.captured")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_bound_job_id(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured

    def in_a_job() -> None:
        logs.bind_job("job-1")
        logger.info("working on %s", "it")

    contextvars.copy_context().run(in_a_job)  # as asyncio tasks and to_thread calls each get
    logger.info("no job here")
    logger.info("given", extra={logs.JOB_KEY: "job-2"})
    first, second, third = _lines(stream)
    assert first["message"] == "working on it" and first[logs.JOB_KEY] == "job-1"
    assert first["levelname"] == "INFO" and first["name"] == "tests.unit.test_logs.captured"
    assert logs.JOB_KEY not in second
    assert third[logs.JOB_KEY] == "job-2"


def test_json_lines_keep_the_traceback(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    (line,) = _lines(stream)
    assert "ValueError: boom" in line["exc_text"]


def test_text_lines_end_with_the_job_id() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "job %s done", ("j",), None)
    setattr(record, logs.JOB_KEY, "j")
    assert logs.TextFormatter().format(record).endswith("job j done stemscribe_job_id=j")


def test_configure_logging_leaves_processes_outside_ray_alone() -> None:
    logs.configure_logging(Settings(log_encoding="JSON"))
    assert not any(getattr(h, "_stemscribe", False) for h in logging.getLogger("deployments").handlers)


def test_configure_logging_sets_up_the_package_loggers_once() -> None:
    package = logging.getLogger("deployments")
    before = (package.level, package.propagate, list(package.handlers))
    quieted = {name: logging.getLogger(name).level for name in logs.QUIETED}
    try:
        logs.configure_logging(Settings(log_encoding="JSON", log_level="WARNING"), force=True)
        logs.configure_logging(Settings(log_encoding="JSON", log_level="WARNING"), force=True)
        ours = [h for h in package.handlers if getattr(h, "_stemscribe", False)]
        assert len(ours) == 1 and isinstance(ours[0].formatter, logs.JsonFormatter)
        assert package.level == logging.WARNING and not package.propagate
        # httpx's request lines (full URLs, webhook tokens included) never reach a replica's log.
        assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
    finally:
        for name, level in quieted.items():
            logging.getLogger(name).setLevel(level)
        for name in logs.PACKAGES:
            logger = logging.getLogger(name)
            for h in [h for h in logger.handlers if getattr(h, "_stemscribe", False)]:
                logger.removeHandler(h)
            logger.setLevel(before[0])
            logger.propagate = before[1]


def test_the_setting_becomes_every_deployments_serve_logging_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEMSCRIBE_LOG_ENCODING", "JSON")
    settings = Settings()
    for options in (ingress_options(settings), separation_options(settings), transcription_options(settings)):
        config = LoggingConfig.model_validate(options["logging_config"])
        assert config.encoding == "JSON" and config.log_level == "INFO"
        assert config.additional_log_standard_attrs == ["name"]
    assert Settings(log_encoding="TEXT").log_encoding == "TEXT"
    with pytest.raises(ValueError):
        Settings(log_encoding="XML")
