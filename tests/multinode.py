"""A Ray cluster of several nodes on this machine, for the multi-node tests.

Each node is its own `ray start --block` (a head, then `--address=HEAD` for the others), with
its own raylet, object store, ports and temp dir, all on 127.0.0.1. A worker node offers one
`worker_slot` besides its CPU, so that a run whose workers each take one slot puts one worker
on each of them, as GPU workers take one GPU of a 1-GPU node. `kill(name)` SIGKILLs every
process of a node by pid, as a preempted machine goes; `stop()` ends every process the cluster
started, by pid, whatever the tests did.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from conftest import die_with_parent, free_ports

BIN = Path(sys.executable).parent
# The custom resource a worker node offers one of (train.worker_resource=worker_slot).
SLOT = "worker_slot"
# The head notices a node that stopped answering in about 2 s (Ray's default is about 15 s:
# health checks every 3 s, 5 missed in a row), so that a lost node is a lost node quickly.
FAST_HEALTH_CHECKS = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}
# A 1-CPU node would keep only one idle Python worker and start one at a time: every job's
# Ray Data tasks and Ray Train actors would then wait for worker processes in a queue.
ROOMY_WORKER_POOL = {
    "RAY_num_workers_soft_limit": "4",
    "RAY_worker_maximum_startup_concurrency": "2",
}
# Each node's own ports; `ray start` would pick the same defaults for two nodes of one machine.
NODE_PORTS = ("--node-manager-port", "--object-manager-port", "--metrics-export-port",
              "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
              "--runtime-env-agent-port")  # fmt: skip
HEAD_PORTS = ("--port", "--dashboard-port", "--ray-client-server-port")


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    temp_dir: str
    log: object

    def pids(self) -> set[int]:
        """`ray start` and everything under it: raylet, object store, agents, workers."""
        return {self.process.pid} | descendants(self.process.pid)


@dataclass
class LocalCluster:
    env: dict
    nodes: dict[str, Node] = field(default_factory=dict)
    gcs_address: str = ""
    dashboard: str = ""  # http://127.0.0.1:PORT: the state API and the job server
    _next_worker_port: int = 22000

    def start_head(self, cpus: int = 1) -> None:
        ports = dict(zip(HEAD_PORTS, free_ports(len(HEAD_PORTS)), strict=True))
        self.gcs_address = f"127.0.0.1:{ports['--port']}"
        self.dashboard = f"http://127.0.0.1:{ports['--dashboard-port']}"
        self._start("head", ["--head", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
                             *(f"{flag}={port}" for flag, port in ports.items())],
                    cpus, {"node_head": 1})  # fmt: skip
        self._wait_for(lambda: self._dashboard_answers(), "head", 90)

    def add_worker(self, name: str, cpus: int = 1) -> None:
        """A node that joins the head, with one worker slot; returns once the head sees it."""
        self._start(name, [f"--address={self.gcs_address}"], cpus, {SLOT: 1, f"node_{name}": 1})
        self._wait_for(lambda: name in self.alive_names(), name, 60)

    def _start(self, name: str, flags: list[str], cpus: int, resources: dict) -> None:
        temp_dir = tempfile.mkdtemp(prefix=f"ray{name[:4]}-", dir="/tmp")  # short socket paths
        ports = dict(zip(NODE_PORTS, free_ports(len(NODE_PORTS)), strict=True))
        # Every node its own range of worker ports, away from the session's Ray instance's.
        low, self._next_worker_port = self._next_worker_port, self._next_worker_port + 400
        command = [str(BIN / "ray"), "start", "--block", *flags, f"--num-cpus={cpus}",
                   f"--resources={json.dumps(resources)}", "--node-ip-address=127.0.0.1",
                   f"--temp-dir={temp_dir}", "--disable-usage-stats",
                   f"--object-store-memory={200 << 20}",
                   f"--min-worker-port={low}", f"--max-worker-port={low + 399}",
                   *(f"{flag}={port}" for flag, port in ports.items())]  # fmt: skip
        log = open(Path(temp_dir) / "ray-start.log", "wb")
        # RAY_ADDRESS for the node's own processes: Ray Train's PlacementGroupCleaner asks the
        # state API with no address, which finds two clusters on this machine (this one and
        # the session's) and gives up.
        env = {**self.env, "RAY_ADDRESS": self.gcs_address}
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=log, start_new_session=True,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        self.nodes[name] = Node(name, process, temp_dir, log)

    def kill(self, name: str) -> None:
        """SIGKILL to every process of the node at once: nothing of it gets to say goodbye."""
        node = self.nodes.pop(name)
        for pid in node.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        node.process.wait(timeout=30)
        node.log.close()

    def stop(self) -> None:
        """Ends every process of every node, by pid (nothing is kept that a graceful stop would
        save), and removes their temp dirs."""
        for name in list(self.nodes):
            temp_dir = self.nodes[name].temp_dir
            self.kill(name)
            shutil.rmtree(temp_dir, ignore_errors=True)

    def alive_names(self) -> set[str]:
        """The nodes the head counts as alive (the state API's view), by name."""
        return {name for name, state in self.node_states().values() if state == "ALIVE"}

    def node_states(self) -> dict[str, tuple[str, str]]:
        """node id -> (the name this cluster gave it, ALIVE or DEAD): each node offers a
        resource `node_NAME`; a node started again under a name has a new id."""
        from ray.util.state import list_nodes

        names = {}
        for node in list_nodes(address=self.dashboard, detail=True):
            marks = [key for key in (node.resources_total or {}) if key.startswith("node_")]
            names[node.node_id] = (marks[0].removeprefix("node_") if marks else "?", node.state)
        return names

    def node_names(self) -> dict[str, str]:
        """node id -> name, for every node the head has seen."""
        return {node_id: name for node_id, (name, _) in self.node_states().items()}

    def _dashboard_answers(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=2)
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def _wait_for(self, condition, name: str, seconds: float) -> None:
        deadline = time.time() + seconds
        while True:
            node = self.nodes[name]
            try:
                if condition():
                    return
            except Exception:  # noqa: BLE001 - the head's API is not up yet
                pass
            if time.time() > deadline or node.process.poll() is not None:
                log = (Path(node.temp_dir) / "ray-start.log").read_text()[-2000:]
                self.stop()
                raise RuntimeError(f"Ray node {name} did not start:\n{log}")
            time.sleep(0.3)


def descendants(pid: int) -> set[int]:
    """Every process under `pid`, read from /proc (a process's parent is field 4 of its stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
