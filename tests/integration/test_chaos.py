"""Load and chaos, short: jobs from two keys over HTTP while a random replica of every deployment is killed
in turn; none lost, none duplicated, no unexpected 5xx. The long run is `python -m benchmarks.chaos`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.chaos import KEYS, TARGETS, ChaosPlan, report_markdown, run_chaos, service_settings
from music.engines.demucs_models import DEFAULT_TEST_MODEL
from tests.integration.conftest import Service, deploy, fresh_postgres_database, undeploy
from tests.music import melody, render

pytestmark = pytest.mark.integration

logger = logging.getLogger(__name__)
JOBS = 20


@pytest.fixture(scope="module")
def service(serve_url: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    # A database of its own: the duplicate check counts every job row in it.
    with fresh_postgres_database() as database_url:
        data_dir = tmp_path_factory.mktemp("data-chaos")
        svc = deploy(serve_url, **service_settings(database_url, data_dir, model_dir, DEFAULT_TEST_MODEL, JOBS))
        yield svc
        undeploy(svc)


def test_jobs_from_two_keys_survive_replicas_killed_at_random(service: Service, tmp_path: Path) -> None:
    clip = render(melody(seconds=3.0), tmp_path / "clip.wav")
    # Four kills, one of each kind, all inside the 60 s (4 x 14 s, and a kill takes milliseconds).
    plan = ChaosPlan(jobs=JOBS, seconds=60, kill_every=(10, 14), drain_timeout_s=240, seed=11)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    report = run_chaos(service.url, KEYS, clip, plan, service.settings)
    logger.info("\n%s", report_markdown(report))
    assert report["lost"] == 0, report["checks"]["lost"]
    assert report["duplicated"] == 0, report["checks"]
    assert report["unexpected_5xx"] == 0, report["unexpected_5xx_detail"]
    assert report["succeeded"] == JOBS
    assert set(report["kills_by_target"]) == set(TARGETS), report["kills"]  # every kind was killed once
