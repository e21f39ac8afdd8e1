"""The metric helpers: fixed label values, no recording on failure, nothing that can fail a job."""

from __future__ import annotations

import asyncio
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from deployments import metrics
from serve_app.domain.errors import BadInput, JobCanceled, ModelUnavailable, UnsupportedAudio
from serve_app.domain.jobs import JobOptions, JobStatus, SeparationMode, Stage

ROOT = Path(__file__).resolve().parents[2]


class _Fake:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, dict[str, str] | None]] = []

    def inc(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("inc", value, tags))

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("observe", value, tags))

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("set", value, tags))


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> dict[str, _Fake]:
    found = {name: _Fake() for name in metrics._defined.__wrapped__()}  # the real names, fake objects
    monkeypatch.setattr(metrics, "_defined", lambda: found)
    return found


class _RayTaskError(Exception):
    def __init__(self, cause: BaseException) -> None:
        self.cause = cause


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (UnsupportedAudio("x"), "bad_input"),
        (_RayTaskError(BadInput("x")), "bad_input"),
        (_RayTaskError(ModelUnavailable("x")), "model_unavailable"),
        (JobCanceled("x"), "canceled"),
        (RuntimeError("x"), "internal"),
        (None, "internal"),
    ],
)
def test_failure_reasons_are_a_fixed_set(exc: BaseException | None, reason: str) -> None:
    assert metrics.failure_reason(exc) == reason
    assert reason in metrics.REASONS


def test_job_outcomes_are_counted_by_mode_and_reason(fakes: dict[str, _Fake]) -> None:
    options = JobOptions(separation=SeparationMode.NONE)
    metrics.job_submitted(options.model_dump(mode="json"))
    metrics.job_ended(JobStatus.SUCCEEDED, options, None)
    metrics.job_ended(JobStatus.FAILED, options, _RayTaskError(ModelUnavailable("gone")))
    metrics.job_ended(JobStatus.CANCELED, {"separation": "hpss"}, JobCanceled("x"))
    metrics.job_failed("something new", options)  # an unknown reason never becomes a label value
    metrics.attempt_released(options)
    assert fakes["submitted"].calls == [("inc", 1, {"separation": "none"})]
    assert fakes["succeeded"].calls == [("inc", 1, {"separation": "none"})]
    assert [c[2] for c in fakes["failed"].calls] == [
        {"reason": "model_unavailable", "separation": "none"},
        {"reason": "canceled", "separation": "hpss"},
        {"reason": "internal", "separation": "none"},
    ]
    assert fakes["released"].calls == [("inc", 1, {"separation": "none"})]


def test_only_the_four_work_stages_are_timed(fakes: dict[str, _Fake]) -> None:
    options = JobOptions()
    for stage in Stage:
        metrics.stage_finished(stage, 1.5, options)
    assert [c[2]["stage"] for c in fakes["stage"].calls] == list(metrics.STAGES)  # type: ignore[index]
    assert {c[2]["separation"] for c in fakes["stage"].calls} == {"demucs"}  # type: ignore[index]


def test_queue_depth_comes_from_the_database_and_survives_its_absence(fakes: dict[str, _Fake]) -> None:
    class Repo:
        def __init__(self, fail: bool) -> None:
            self.fail = fail

        def count_queued(self) -> int:
            if self.fail:
                raise RuntimeError("database away")
            return 7

    asyncio.run(metrics.sample_queue(Repo(fail=False), 2))
    asyncio.run(metrics.sample_queue(Repo(fail=True), 1))
    assert fakes["queue"].calls == [("set", 7, None)]
    assert fakes["running"].calls == [("set", 2, None), ("set", 1, None)]


def test_model_loads_are_timed_when_they_succeed(fakes: dict[str, _Fake]) -> None:
    assert metrics.timed_load("basic_pitch", lambda a, b: a + b, 1, 2) == 3

    def broken() -> None:
        raise OSError("no model")

    with pytest.raises(OSError):
        metrics.timed_load("basic_pitch", broken)

    class Engine:
        def __init__(self, ok: bool) -> None:
            self.ok = ok
            self.state = types.SimpleNamespace(value="loading")
            self.load_seconds: float | None = None

        def load(self) -> None:  # like DemucsSeparator.load: failures are kept, not raised
            self.state = types.SimpleNamespace(value="ready" if self.ok else "failed")
            self.load_seconds = 4.2 if self.ok else None

    metrics.load_demucs(Engine(ok=True))
    metrics.load_demucs(Engine(ok=False))
    calls = fakes["load"].calls
    assert [c[2] for c in calls] == [{"model": "basic_pitch"}, {"model": "demucs"}]
    assert calls[1][1] == 4.2


def test_gpu_memory_only_on_cuda(fakes: dict[str, _Fake], monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = types.SimpleNamespace(is_available=lambda: False, is_initialized=lambda: False,
                                 max_memory_allocated=lambda: 123)  # fmt: skip
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    metrics.gpu_memory("Separation")
    assert fakes["gpu"].calls == []
    cuda.is_available = lambda: True
    metrics.gpu_memory("Separation")  # CUDA there but never used by this replica: nothing either
    assert fakes["gpu"].calls == []
    cuda.is_initialized = lambda: True
    metrics.gpu_memory("Separation")
    assert fakes["gpu"].calls == [("set", 123.0, {"deployment": "Separation", "replica": "-"})]


def test_recording_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("no metrics here")

    monkeypatch.setattr(metrics, "_defined", broken)
    metrics.job_submitted({"separation": "none"})
    metrics.stage_finished(Stage.PACKAGING, 1.0, JobOptions())


def test_metric_names_are_valid_for_ray() -> None:
    from ray.util.metrics import Counter, Gauge, Histogram

    defined = metrics._defined.__wrapped__()
    assert all(isinstance(m, (Counter, Gauge, Histogram)) for m in defined.values())
    assert not any(m._discard_metric for m in defined.values())


def _exported_names() -> set[str]:
    """The names Prometheus scrapes: Ray prefixes `ray_`; counters end in _total, histograms have _bucket."""
    from ray.util.metrics import Counter, Histogram

    names = set()
    for m in metrics._defined.__wrapped__().values():
        base = f"ray_{m.info['name']}"
        names.add(base + "_total" if isinstance(m, Counter) else base + "_bucket" if isinstance(m, Histogram) else base)
    return names


def test_the_dashboard_and_the_readme_use_the_exported_names() -> None:
    dashboard = json.loads((ROOT / "configs" / "grafana-stemscribe.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    readme = (ROOT / "README.md").read_text()
    for name in _exported_names():
        assert name in exprs, f"no dashboard panel shows {name}"
        assert name.removesuffix("_bucket") in readme, f"README.md does not describe {name}"
