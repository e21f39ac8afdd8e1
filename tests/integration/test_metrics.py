"""Jobs show up in Ray's metrics endpoint (Prometheus text, each node's metrics agent) with their
values, and JSON log lines carry the job id."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families

from tests.audio_files import encode, tone
from tests.integration.conftest import Service, deploy, undeploy

pytestmark = pytest.mark.integration

# Metrics are exported on an interval (a few seconds); a loaded machine gets more.
EXPORT_WAIT_SECONDS = 60



@pytest.fixture(scope="module")
def service(serve_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    # No Demucs weights: `none` jobs succeed, `demucs` jobs fail with model_unavailable.
    svc = deploy(
        serve_url,
        data_dir=str(tmp_path_factory.mktemp("data-metrics")),
        demucs_model="htdemucs",
        demucs_model_dir=str(tmp_path_factory.mktemp("no-models") / "missing"),
        max_concurrent_jobs=1,
        log_encoding="JSON",
    )
    yield svc
    undeploy(svc)


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encode(tmp_path_factory.mktemp("a") / "tone.wav", tone(3.0, channels=1), 22050, "wav")


def _metrics_url() -> str:
    (node,) = [n for n in ray.nodes() if n["Alive"]]
    return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"


class Scrape:
    """One scrape of the Prometheus text, every sample by its full name (`_total`, `_bucket`, `_count`)."""

    def __init__(self, text: str) -> None:
        self.samples: list[tuple[str, dict[str, str], float]] = [
            (sample.name, dict(sample.labels), float(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """Summed over the series (workers, nodes) whose labels include `labels`."""
        return sum(v for n, lab, v in self.samples if n == name and labels.items() <= lab.items())

    def has(self, name: str) -> bool:
        return any(n == name for n, _, _ in self.samples)


def _scrape() -> Scrape:
    return Scrape(httpx.get(_metrics_url(), timeout=10).text)


def _until(check, what: str) -> Scrape:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + EXPORT_WAIT_SECONDS
    while True:
        scrape = _scrape()
        try:
            check(scrape)
            return scrape
        except AssertionError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not in the metrics after {EXPORT_WAIT_SECONDS} s") from None
        time.sleep(1)


def test_jobs_stages_queue_and_model_loads_reach_the_metrics_endpoint(service: Service, wav: Path) -> None:
    before = _scrape()

    def delta(scrape: Scrape, name: str, **labels: str) -> float:
        return scrape.value(name, **labels) - before.value(name, **labels)

    done = service.wait(service.submit(wav, separation="none").json()["job_id"])
    assert done["status"] == "succeeded", done["error"]
    missing = service.wait(service.submit(wav, separation="demucs").json()["job_id"])
    assert missing["status"] == "failed", missing
    # One slot: the second job waits behind the first and is canceled while it does.
    blocker = service.submit(wav, separation="none").json()["job_id"]
    queued = service.submit(wav, separation="none").json()["job_id"]
    assert service.client.post(f"/api/v1/jobs/{queued}/cancel").json()["status"] == "canceled"
    assert service.wait(blocker)["status"] == "succeeded"

    def jobs(s: Scrape) -> None:
        assert delta(s, "ray_stemscribe_jobs_submitted_total", separation="none") == 3
        assert delta(s, "ray_stemscribe_jobs_submitted_total", separation="demucs") == 1
        assert delta(s, "ray_stemscribe_jobs_succeeded_total", separation="none") == 2
        assert delta(s, "ray_stemscribe_jobs_succeeded_total", separation="demucs") == 0
        assert delta(s, "ray_stemscribe_jobs_failed_total", reason="model_unavailable", separation="demucs") == 1
        assert delta(s, "ray_stemscribe_jobs_failed_total", reason="canceled", separation="none") == 1
        assert delta(s, "ray_stemscribe_jobs_failed_total", reason="internal") == 0
        for stage in ("decoding", "transcribing", "packaging"):
            assert delta(s, "ray_stemscribe_stage_seconds_count", stage=stage, separation="none") == 2, stage
            assert delta(s, "ray_stemscribe_stage_seconds_bucket", stage=stage, separation="none", le="+Inf") == 2
        assert delta(s, "ray_stemscribe_stage_seconds_count", stage="separating", separation="none") == 0
        # The demucs job failed while decoding (waiting for its model), and that stage was timed.
        assert delta(s, "ray_stemscribe_stage_seconds_count", stage="decoding", separation="demucs") == 1

    scrape = _until(jobs, "the jobs' counters and stage histograms")
    assert scrape.value("ray_stemscribe_stage_seconds_sum", stage="transcribing", separation="none") > 0
    # Gauges, sampled from the database by this module's tracker (earlier modules' trackers may have left
    # series behind): nothing waits or runs now.
    name = "ray_stemscribe_jobs_submitted_total"
    (tracker,) = {
        labels["WorkerId"] for n, labels, v in scrape.samples
        if n == name and v > before.value(name, WorkerId=labels["WorkerId"], separation=labels["separation"])
    }  # fmt: skip

    def idle(s: Scrape) -> None:
        assert s.has("ray_stemscribe_queue_depth") and s.has("ray_stemscribe_jobs_running")
        assert s.value("ray_stemscribe_queue_depth", WorkerId=tracker) == 0
        assert s.value("ray_stemscribe_jobs_running", WorkerId=tracker) == 0

    scrape = _until(idle, "queue depth 0 and no running jobs")
    # basic-pitch loaded at replica start (Demucs never did: its model is missing).
    assert scrape.value("ray_stemscribe_model_load_seconds_count", model="basic_pitch") >= 1
    assert not scrape.has("ray_stemscribe_gpu_memory_max_allocated_bytes")  # CPU only here


def _json_lines_of(job_id: str, files: list[Path]) -> list[dict]:
    found = []
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            if job_id in line and line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    pass
    return found


def test_json_log_lines_carry_the_job_id(service: Service, wav: Path) -> None:
    job_id = service.submit(wav, separation="none").json()["job_id"]
    assert service.wait(job_id)["status"] == "succeeded"
    logs_dir = Path(ray._private.worker._global_node.get_logs_dir_path())  # this cluster's session
    deadline = time.monotonic() + 20
    while True:
        replica = _json_lines_of(job_id, sorted((logs_dir / "serve").glob("replica_stemscribe_Transcription_*.log")))
        # The tracker is a Serve deployment: its lines are in its own replica's log.
        tracker = _json_lines_of(job_id, sorted((logs_dir / "serve").glob("replica_stemscribe_JobTracker_*.log")))
        if (replica and tracker) or time.monotonic() > deadline:
            break
        time.sleep(1)
    notes = [line for line in replica if "notes in stem" in line["message"]]
    assert notes, f"no JSON line about {job_id} in the Transcription replica's log"
    assert all(line["stemscribe_job_id"] == job_id for line in notes)
    assert notes[0]["deployment"].endswith("Transcription") and notes[0]["levelname"] == "INFO"  # app_deployment
    assert notes[0]["name"] == "deployments.transcription" and notes[0]["request_id"]
    assert any(line.get("stemscribe_job_id") == job_id and "succeeded" in line["message"] for line in tracker), (
        f"no JSON line from the job tracker about {job_id}"
    )
