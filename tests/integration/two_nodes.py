"""A two-node Ray cluster on one machine, started the way a real one is: `ray start --head` and
`ray start --address=<head>` in their own process groups, each node with its own temp dir, logical
GPU, label and ports (all free ports, so it never meets another cluster on the machine), and token
authentication with a token of its own (not ~/.ray/auth_token, which other clusters here share).

`kill(worker)` is a node loss: every process of that node gets SIGKILL at once, with no graceful
anything. Ray starts each worker process (actors, Serve replicas) in a process group of its own, so
the node's process group alone would miss them: the raylet's descendants are collected first.

Nothing here runs `ray stop` (it stops every Ray on the machine, other people's too)."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.local_service import free_port

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
OBJECT_STORE_BYTES = 200 * 1024 * 1024  # the jobs pass files through storage, not objects


def _ray_bin() -> str:
    # The `ray` next to this interpreter: every node must run the same Ray and Python.
    return str(Path(sys.executable).with_name("ray"))


def _live_processes() -> list[tuple[int, int, int]]:
    """(pid, ppid, pgid) of every process that has not exited: a zombie (killed, not yet reaped by
    whoever inherited it) is already gone for this purpose."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgid ...": comm may hold spaces and parentheses, so split after the last ")".
        state, ppid, pgid = stat.rsplit(")", 1)[1].split()[:3]
        if state not in ("Z", "X"):
            found.append((int(entry.name), int(ppid), int(pgid)))
    return found


def _process_group(pgid: int) -> list[int]:
    return [pid for pid, _, group in _live_processes() if group == pgid]


def descendants(pid: int) -> list[int]:
    tree: dict[int, list[int]] = {}
    for child, parent, _ in _live_processes():
        tree.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class RayNode:
    name: str
    label: str
    temp_dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    node_id: str | None = None

    def processes(self) -> list[int]:
        """Every process of this node: `ray start --block`, its group, and all their descendants."""
        pids = set(_process_group(self.process.pid))
        if self.process.poll() is None:
            pids.add(self.process.pid)
        for pid in list(pids):
            pids.update(descendants(pid))
        return sorted(pids)

    def kill(self) -> list[int]:
        pids = self.processes()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)
        return pids


class TwoNodeCluster:
    """A head (label `pool=head`) and a worker (`pool=worker`), one logical GPU each."""

    def __init__(self, base: Path, head_cpus: int = 4, worker_cpus: int = 2) -> None:
        self.base = base
        self.head_cpus, self.worker_cpus = head_cpus, worker_cpus
        self.port = free_port()
        self.dashboard_port = free_port()
        self.token = secrets.token_hex(32)
        self.nodes: list[RayNode] = []
        self.env = self._environment()

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _environment(self) -> dict[str, str]:
        # No RAY_* from this process (a pytest session with its own ray.init may have set RAY_ADDRESS):
        # this cluster is described by its flags alone. Workers inherit the raylet's environment, so
        # PYTHONPATH makes every node import stemscribe from this checkout.
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(
            PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
            RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_USAGE_STATS_ENABLED="0",
        )  # fmt: skip
        return env

    def _node_flags(self) -> list[str]:
        # Ports that default to fixed numbers (the agent's 52365, ...) would meet another cluster's.
        return [
            "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
            "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
            "--min-worker-port", "0", "--max-worker-port", "0", "--object-store-memory", str(OBJECT_STORE_BYTES),
            "--disable-usage-stats", "--block",
        ]  # fmt: skip

    def _start(self, name: str, label: str, flags: list[str]) -> RayNode:
        # Short and under /tmp: Ray's socket paths live below it and may not exceed 107 bytes
        # (a pytest tmp_path is too deep for that).
        temp_dir = Path(tempfile.mkdtemp(prefix=f"s2n-{name}-", dir="/tmp"))
        log = self.base / f"{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [_ray_bin(), "start", *flags, "--temp-dir", str(temp_dir), "--labels", f"pool={label}", *self._node_flags()],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        node = RayNode(name, label, temp_dir, process, log)
        self.nodes.append(node)
        return node

    def start_head(self, timeout: float = 120) -> RayNode:
        head = self._start("head", "head", [
            "--head", "--port", str(self.port), "--num-cpus", str(self.head_cpus), "--num-gpus", "1",
            "--include-dashboard", "true", "--dashboard-port", str(self.dashboard_port),
            "--ray-client-server-port", str(free_port()),
        ])  # fmt: skip
        self._wait_for_nodes({"head"}, timeout)
        return head

    def add_worker(self, timeout: float = 120) -> RayNode:
        worker = self._start("worker", "worker", [
            "--address", self.gcs_address, "--num-cpus", str(self.worker_cpus), "--num-gpus", "1",
        ])  # fmt: skip
        self._wait_for_nodes({"head", "worker"}, timeout)
        return worker

    def _wait_for_nodes(self, labels: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes:
                if node.process.poll() is not None:
                    raise RuntimeError(f"ray start ({node.name}) exited: {node.log.read_text()[-3000:]}")
            try:
                alive = {n["labels"].get("pool"): n["node_id"] for n in self.alive_nodes()}
            except httpx.HTTPError:
                alive = {}
            if labels <= set(alive):
                for node in self.nodes:
                    node.node_id = alive.get(node.label, node.node_id)
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"nodes {labels} not up after {timeout} s; alive: {alive}")
            time.sleep(0.5)

    # The dashboard's REST API (with the cluster's token), as `serve status` and the Ray dashboard use it.
    def _get(self, path: str) -> Any:
        response = httpx.get(
            self.dashboard_url + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )
        response.raise_for_status()
        return response.json()

    def alive_nodes(self) -> list[dict[str, Any]]:
        return [
            {"node_id": n["raylet"]["nodeId"], "labels": n["raylet"].get("labels", {})}
            for n in self._get("/nodes?view=summary")["data"]["summary"]
            if n["raylet"]["state"] == "ALIVE"
        ]

    def serve_details(self) -> dict[str, Any]:
        """Serve's own view: applications, deployments, and each replica's state and node id."""
        return dict(self._get("/api/serve/applications/"))

    def replicas(self, app: str, deployment: str) -> list[dict[str, Any]]:
        application = self.serve_details()["applications"].get(app)
        if application is None:
            return []
        return list(application["deployments"].get(deployment, {}).get("replicas", []))

    def serve_deploy(self, config: dict[str, Any]) -> None:
        """`serve deploy` of a config file, the way README's deployment section does it."""
        path = self.base / "serve_config.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        subprocess.run(
            [str(Path(_ray_bin()).with_name("serve")), "deploy", str(path), "--address", self.dashboard_url],
            env=self.env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def stop(self) -> None:
        """Every process this cluster started, workers first; safe to call after a failure or twice."""
        for node in reversed(self.nodes):
            if node.processes():
                logger.info("stopping ray node %s (%d processes)", node.name, len(node.kill()))
            shutil.rmtree(node.temp_dir, ignore_errors=True)
