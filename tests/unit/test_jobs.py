from __future__ import annotations

import pytest

from serve_app.domain.jobs import JobStatus, Stage, advance, allowed_from, overall_progress


@pytest.mark.parametrize(
    "current,new",
    [("queued", "running"), ("queued", "canceled"), ("queued", "failed"), ("running", "succeeded"),
     ("running", "failed"), ("running", "canceled")],
)  # fmt: skip
def test_allowed_transitions(current: str, new: str) -> None:
    assert current in allowed_from(JobStatus(new))


@pytest.mark.parametrize(
    "current,new",
    [("running", "queued"), ("succeeded", "running"), ("failed", "succeeded"), ("canceled", "running"),
     ("queued", "succeeded"), ("succeeded", "failed")],
)  # fmt: skip
def test_forbidden_transitions(current: str, new: str) -> None:
    assert current not in allowed_from(JobStatus(new))


def test_nothing_becomes_queued_again() -> None:
    # A retried job stays running: status never goes backwards.
    assert allowed_from(JobStatus.QUEUED) == ()


def test_final_statuses() -> None:
    assert {s for s in JobStatus if s.is_final} == {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}


def test_stage_progress_increases_through_the_pipeline() -> None:
    stages = [Stage.DECODING, Stage.SEPARATING, Stage.TRANSCRIBING, Stage.PACKAGING]
    points = [overall_progress(stage, f) for stage in stages for f in (0.0, 0.5, 1.0)]
    assert points == sorted(points)
    assert points[0] == 0.0 and overall_progress(Stage.DONE, 0) == 100.0
    assert overall_progress(Stage.SEPARATING, 7.0) == overall_progress(Stage.SEPARATING, 1.0)


def test_progress_never_goes_backwards() -> None:
    progress = 0.0
    for reported in [10, 30, 20, 30, 5, 60, 150]:
        new = advance(progress, reported)
        assert new >= progress
        progress = new
    assert progress == 100.0
