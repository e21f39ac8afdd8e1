"""Two Ray nodes on this machine (a head and a worker, each with its own logical GPU and temp dir),
the application deployed with `serve deploy` from `serve_config.yaml` itself, PostgreSQL and the S3
server as the only shared state. Separation runs on the worker and Transcription on the head; then
the worker node is killed (every process, SIGKILL) while a job separates there, and the job finishes,
once: a second attempt on the head, one set of results, one `job.succeeded`.

The cluster is a second Ray cluster, so it lives in its own processes (`ray start`), never in this
pytest process, which may hold the suite's own `ray.init`."""

from __future__ import annotations

import base64
import copy
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from music.engines.demucs_models import DEFAULT_TEST_MODEL, write_random_htdemucs
from tests.audio_files import encode, tone
from tests.integration.conftest import FINAL, Service, free_port, fresh_postgres_database
from tests.integration.s3_server import S3Server
from tests.integration.two_nodes import ROOT, TwoNodeCluster
from tests.music import melody, render

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

logger = logging.getLogger(__name__)

APP = "stemscribe"
BUCKET = "stemscribe-two-nodes"
PREFIX = "two-nodes/"
API_KEY = "ssk_two_nodes_" + secrets.token_hex(8)
STEMS = {"stems/bass.wav", "stems/drums.wav", "stems/other.wav", "stems/vocals.wav"}
HEAD, WORKER = {"pool": "head"}, {"pool": "worker"}


class WebhookReceiver:
    """Records every delivery it gets as (type, job id, webhook-id); a redelivery keeps its webhook-id."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                receiver.received.append((body["type"], body["data"]["job_id"], self.headers["webhook-id"]))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # quiet: the test reads `received`
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def messages(self, event_type: str, job_id: str, timeout: float = 30) -> set[str]:
        """The distinct webhook-ids of one job's `event_type`, once at least one has arrived."""
        deadline = time.monotonic() + timeout
        while True:
            found = {wid for kind, job, wid in self.received if kind == event_type and job == job_id}
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


def cluster_config(
    http_port: int, database_url: str, s3: S3Server, model_dir: Path, extra_env: dict[str, str]
) -> dict[str, Any]:
    """`serve_config.yaml`, with only what one test machine must change. Every change is listed here."""
    config = copy.deepcopy(yaml.safe_load((ROOT / "serve_config.yaml").read_text()))
    # Two proxies on one machine cannot both listen on one port; a real node has a port of its own.
    config["proxy_location"] = "HeadOnly"
    config["http_options"] = {"host": "127.0.0.1", "port": http_port}
    (app,) = config["applications"]
    s3_settings = s3.settings(PREFIX)
    app["runtime_env"]["env_vars"].update({
        # The placeholders: a fresh database and the test's S3 server.
        "DATABASE_URL": database_url,
        "STEMSCRIBE_S3_BUCKET": s3_settings["s3_bucket"], "STEMSCRIBE_S3_PREFIX": PREFIX,
        "STEMSCRIBE_S3_ENDPOINT_URL": s3_settings["s3_endpoint_url"], "STEMSCRIBE_S3_REGION": s3_settings["s3_region"],
        "STEMSCRIBE_S3_ADDRESSING_STYLE": "path", "STEMSCRIBE_S3_ACCESS_KEY_ID": s3_settings["s3_access_key_id"],
        "STEMSCRIBE_S3_SECRET_ACCESS_KEY": s3_settings["s3_secret_access_key"],
        "STEMSCRIBE_API_KEYS": API_KEY,
        **extra_env,
    })  # fmt: skip
    deployments = {d["name"]: d for d in app["deployments"]}
    # Placement: the front and Transcription on the head, Separation on the worker, and when the worker
    # is gone, on the head (a soft preference: Ray's fallback_strategy). Small CPU shares for 2 cores.
    # One model replica each (no autoscaling), so "the replica" of a deployment is one node.
    deployments["Ingress"]["ray_actor_options"] = {"num_cpus": 0.25, "label_selector": HEAD}
    deployments["JobTracker"]["ray_actor_options"] = {"num_cpus": 0.1, "label_selector": HEAD}
    for name, where in (("Separation", WORKER), ("Transcription", HEAD)):
        deployment = deployments[name]
        deployment.pop("autoscaling_config")
        deployment["num_replicas"] = 1
        deployment["ray_actor_options"] = {"num_gpus": 0.5, "num_cpus": 0.5, "label_selector": where}
    deployments["Separation"]["ray_actor_options"]["fallback_strategy"] = [{"label_selector": HEAD}]
    deployments["Separation"]["user_config"].update(model=DEFAULT_TEST_MODEL, model_dir=str(model_dir))
    return config


@dataclass
class TwoNodeService:
    cluster: TwoNodeCluster
    service: Service
    database_url: str
    s3: S3Server
    webhooks: WebhookReceiver
    timings: dict[str, float] = field(default_factory=dict)

    def replica_nodes(self, deployment: str, state: str = "RUNNING") -> list[str]:
        return [r["node_id"] for r in self.cluster.replicas(APP, deployment) if r["state"] == state]

    def row(self, job_id: str) -> dict[str, Any]:
        with psycopg.connect(self.database_url) as conn:
            status, attempts, last_error, results = conn.execute(
                "SELECT status, attempts, last_error, results FROM jobs WHERE id = %s", (job_id,)
            ).fetchone()
            (succeeded,) = conn.execute(
                "SELECT count(*) FROM webhook_deliveries WHERE job_id = %s AND event_type = 'job.succeeded'", (job_id,)
            ).fetchone()
        results = json.loads(results) if isinstance(results, str) else results
        return {"status": status, "attempts": attempts, "last_error": last_error, "results": results,
                "succeeded_outbox_rows": succeeded}  # fmt: skip


def _wait_ready(cluster: TwoNodeCluster, client: httpx.Client, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get("/api/v1/health/ready").status_code == 200:
                return
        except httpx.HTTPError:
            pass  # the proxy is not up yet
        time.sleep(1)
    details = cluster.serve_details()["applications"].get(APP, {})
    raise AssertionError(f"not ready after {timeout} s: {json.dumps(details)[-4000:]}")


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodeService]:
    base = tmp_path_factory.mktemp("two-nodes")
    model_dir = base / "models"  # one machine: this folder is on "every GPU node"
    write_random_htdemucs(model_dir)
    s3 = S3Server(BUCKET)
    cluster = TwoNodeCluster(base)
    webhooks = WebhookReceiver()
    try:
        s3.start()
        with fresh_postgres_database() as database_url:
            try:  # every node is stopped before the database is dropped, even when the test fails
                started = time.monotonic()
                cluster.start_head()
                cluster.add_worker()
                nodes_up = time.monotonic()
                http_port = free_port()
                cluster.serve_deploy(cluster_config(http_port, database_url, s3, model_dir, {
                    "STEMSCRIBE_LEASE_SECONDS": "10", "STEMSCRIBE_RETRY_BACKOFF_SECONDS": "1",
                    "STEMSCRIBE_WEBHOOK_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
                    "STEMSCRIBE_WEBHOOK_ALLOW_PRIVATE": "true",
                }))  # fmt: skip
                url = f"http://127.0.0.1:{http_port}"
                with httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": API_KEY}) as client:
                    _wait_ready(cluster, client, timeout=240)
                    timings = {"nodes_up_s": nodes_up - started, "ready_s": time.monotonic() - nodes_up}
                    logger.info("two nodes up in %.1f s, application ready %.1f s later", *timings.values())
                    yield TwoNodeService(cluster, Service(url, client, {}), database_url, s3, webhooks, timings)
            finally:
                cluster.stop()
    finally:
        s3.stop()
        webhooks.server.shutdown()


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("audio")
    return {
        "short": render(melody(seconds=6.0), folder / "short.wav"),
        "long": encode(folder / "long.flac", tone(30.0), 44100, "flac"),  # separates for seconds: time to kill the node
    }


def _submit(svc: TwoNodeService, path: Path) -> str:
    response = svc.service.submit(path, separation="demucs", webhook_url=svc.webhooks.url)
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def _results_in_bucket(svc: TwoNodeService, job_id: str) -> list[str]:
    folder = f"{PREFIX}jobs/{job_id}/results/"
    return sorted(key.removeprefix(folder) for key in svc.s3.objects(folder))


def _assert_succeeded_once(svc: TwoNodeService, job: dict[str, Any]) -> None:
    job_id = job["job_id"]
    assert job["status"] == "succeeded", job
    names = [r["name"] for r in job["results"]]
    assert len(names) == len(set(names)) and STEMS <= set(names), names
    # The bucket holds exactly the results the job lists, each once: no second attempt published others.
    assert _results_in_bucket(svc, job_id) == sorted(names)
    row = svc.row(job_id)
    assert row["status"] == "succeeded" and sorted(row["results"]) == sorted(names)
    assert row["succeeded_outbox_rows"] == 1, row  # one transaction finished the job
    seen = svc.service.seen_progress[job_id]
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    # The client hears of the end once: one job.succeeded message (a redelivery would keep its id).
    assert len(svc.webhooks.messages("job.succeeded", job_id)) == 1, svc.webhooks.received


def test_separation_and_transcription_run_on_different_nodes(two_nodes: TwoNodeService, audio) -> None:
    svc = two_nodes
    head, worker = (node.node_id for node in svc.cluster.nodes)
    assert head != worker
    assert svc.replica_nodes("Separation") == [worker]
    assert svc.replica_nodes("Transcription") == [head]
    assert svc.replica_nodes("JobTracker") == [head] and svc.replica_nodes("Ingress") == [head]

    job = svc.service.wait(_submit(svc, audio["short"]), timeout=180)
    _assert_succeeded_once(svc, job)
    assert job["attempts"] == 1


def test_killing_the_worker_node_mid_separation_finishes_the_job_once(two_nodes: TwoNodeService, audio) -> None:
    svc = two_nodes
    head_node, worker_node = svc.cluster.nodes
    job_id = _submit(svc, audio["long"])
    seen = svc.service.seen_progress.setdefault(job_id, [])
    deadline = time.monotonic() + 120
    while True:  # until the job is separating, which runs on the worker
        job = svc.service.client.get(f"/api/v1/jobs/{job_id}").json()
        seen.append(job["progress"])
        if job["stage"] == "separating":
            break
        assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
        time.sleep(0.2)
    assert svc.replica_nodes("Separation") == [worker_node.node_id]

    killed_at = time.monotonic()
    pids = worker_node.kill()
    logger.info("killed the worker node (%d processes) at %.1f%% of the job", len(pids), job["progress"])
    timings: dict[str, float] = {}
    while job["status"] not in FINAL and time.monotonic() - killed_at < 240:
        now = time.monotonic() - killed_at
        job = svc.service.client.get(f"/api/v1/jobs/{job_id}").json()
        seen.append(job["progress"])
        if "retried_s" not in timings and job["attempts"] >= 2:
            timings["retried_s"] = now
        if "node_dead_s" not in timings and worker_node.node_id not in {
            n["node_id"] for n in svc.cluster.alive_nodes()
        }:
            timings["node_dead_s"] = now
        if "separation_on_head_s" not in timings and svc.replica_nodes("Separation") == [head_node.node_id]:
            timings["separation_on_head_s"] = now
        time.sleep(0.5)
    timings["finished_s"] = time.monotonic() - killed_at
    svc.timings.update(timings)
    logger.info("after the kill: %s", timings)

    _assert_succeeded_once(svc, job)
    assert job["attempts"] == 2, job
    row = svc.row(job_id)
    assert row["last_error"] and "separating" in row["last_error"], row  # attempt 1's reason, kept
    assert svc.replica_nodes("Separation") == [head_node.node_id]
    assert worker_node.node_id not in {n["node_id"] for n in svc.cluster.alive_nodes()}
