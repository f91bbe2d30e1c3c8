"""Several Ray nodes for real (tests/multinode.py): a head and two worker nodes on this machine,
each its own raylet with 1 CPU, the data and runs in the moto S3 server.

prepare's tasks, a 2-worker run (SPREAD) and a 2-trial sweep spread over the nodes; an elastic
run (--workers 1-2, max_failures=1) recovers from a SIGKILLed node on the node left, grows back
when a node joins, and ends with one line naming the node it loses with no failure left. Every
command is `audiogan ...` as its own driver joining the cluster, as on a real one."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
from conftest import TINY
from multinode import FAST_HEALTH_CHECKS, ROOMY_WORKER_POOL, SLOT, LocalCluster

from audiogan import dataset

pytestmark = [pytest.mark.ray, pytest.mark.s3, pytest.mark.multinode]

BIN = Path(sys.executable).parent
KEYS = {"AWS_ACCESS_KEY_ID": "nodes-key", "AWS_SECRET_ACCESS_KEY": "nodes-secret",
        "AWS_REGION": "us-east-1"}  # fmt: skip
# Every rank's first and last line (audiogan/train.py).
STARTED = re.compile(r"rank (\d+)/(\d+) on node (\w+) \([\d.]+\): from step (\d+)")
STOPPED = re.compile(r"rank (\d+)/(\d+) on node (\w+): stopped at step (\d+), G checksum (\S+)")
SHARD = re.compile(r"rank (\d+)/(\d+) on node \w+: its shard is (\d+) clips")
RESUMED = re.compile(r"resume: from checkpoint_(\d+) \(step (\d+)\)")


class Nodes:
    """The cluster, its bucket, and commands run against it."""

    def __init__(self, cluster: LocalCluster, endpoint: str, bucket: str):
        self.cluster, self.bucket = cluster, bucket
        self.s3 = boto3.client("s3", endpoint_url=endpoint, **_boto_keys())
        self.env = {**cluster.env, "RAY_ADDRESS": cluster.gcs_address, "RAY_DEDUP_LOGS": "0",
                    "PYTHONUNBUFFERED": "1"}  # fmt: skip

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def run(self, *args: str, timeout: float = 300) -> Driver:
        """The command, run to its end."""
        driver = self.start(*args)
        driver.finish(timeout)
        return driver

    def start(self, *args: str) -> Driver:
        return Driver([str(BIN / "audiogan"), *args], self.env)

    def rows(self, run_key: str) -> list[dict]:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=f"{run_key}/metrics.jsonl")["Body"]
        except self.s3.exceptions.NoSuchKey:
            return []
        return [json.loads(line) for line in body.read().splitlines()]

    def has(self, key: str) -> bool:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=key)
        return listed.get("KeyCount", 0) > 0

    def ensure_workers(self) -> None:
        """Both worker nodes up (a test before may have killed one)."""
        for name in ("a", "b"):
            if name not in self.cluster.nodes:
                self.cluster.add_worker(name)

    def name_of(self, node_prefix: str) -> str:
        names = {name for node, name in self.cluster.node_names().items()
                 if node.startswith(node_prefix)}  # fmt: skip
        assert len(names) == 1, (node_prefix, self.cluster.node_names())
        return names.pop()


class Driver:
    """A command running in the background; its output lines kept with the time each came."""

    def __init__(self, command: list[str], env: dict):
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)  # fmt: skip
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # With several nodes on one machine Ray may deliver a worker's line twice; a line is
        # kept once (each names its process, so a step trained again after a restart differs).
        seen = set()
        for line in self.process.stdout:
            if line not in seen:
                seen.add(line)
                self.lines.append((time.time(), line.rstrip("\n")))

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def first(self, pattern: re.Pattern, after: float = 0.0) -> float | None:
        """When a line matching `pattern` first came (after the time `after`)."""
        return next((t for t, line in self.lines if t > after and pattern.search(line)), None)

    def wait_for(self, condition, what: str, seconds: float = 180) -> None:
        deadline = time.time() + seconds
        while not condition():
            if self.process.poll() is not None:
                self._reader.join(5)
                pytest.fail(f"the command ended before {what}:\n{self.output[-4000:]}")
            if time.time() > deadline:
                self.stop()
                pytest.fail(f"no {what} after {seconds} s:\n{self.output[-4000:]}")
            time.sleep(0.1)

    def finish(self, seconds: float = 300) -> int:
        try:
            self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"the command did not end within {seconds} s:\n{self.output[-4000:]}")
        self._reader.join(10)
        return self.process.returncode

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        self._reader.join(10)


def _boto_keys() -> dict:
    return {"region_name": KEYS["AWS_REGION"], "aws_access_key_id": KEYS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": KEYS["AWS_SECRET_ACCESS_KEY"]}  # fmt: skip


@pytest.fixture(scope="module")
def nodes(s3_server, synth_root):
    """A head (1 CPU) and worker nodes a and b (1 CPU and one worker slot each), every node
    with the S3 endpoint and keys in its environment, and the raw synthetic tree in a bucket."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(**KEYS, **FAST_HEALTH_CHECKS, **ROOMY_WORKER_POOL, AWS_ENDPOINT_URL=s3_server,
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")  # fmt: skip
    bucket = f"nodes-{int(time.time() * 1e6)}"
    s3 = boto3.client("s3", endpoint_url=s3_server, **_boto_keys())
    s3.create_bucket(Bucket=bucket)
    for path in sorted(p for p in synth_root.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"raw/{path.relative_to(synth_root).as_posix()}")
    cluster = LocalCluster(env)
    try:
        cluster.start_head(cpus=1)
        cluster.add_worker("a")
        cluster.add_worker("b")
        yield Nodes(cluster, s3_server, bucket)
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def prepared(nodes) -> tuple[str, Driver, dict[str, int]]:
    """`audiogan prepare` S3 to S3 on the cluster: the dataset's URL, the command's result, and
    how many of the job's tasks ran on each node (Ray's state API)."""
    from ray.util.state import list_tasks

    # 20 files on three nodes of one CPU each: three blocks (7, 7 and 6 files), one task each.
    done = nodes.run("prepare", nodes.url("raw"), nodes.url("prepared"), "--clip-seconds", "1",
                     "--batch-size", "2")  # fmt: skip
    assert done.process.returncode == 0, done.output[-3000:]
    names = nodes.cluster.node_names()

    def tasks_per_node() -> dict[str, int]:
        tasks = list_tasks(address=nodes.cluster.dashboard, limit=10000,
                           raise_on_missing_output=False,
                           filters=[("type", "=", "NORMAL_TASK")])  # fmt: skip
        counts: dict[str, int] = {}
        for task in tasks:
            if task.node_id and "_prepare_block" in task.name:
                name = names.get(task.node_id, "?")
                counts[name] = counts.get(name, 0) + 1
        return counts

    # Workers send their task events to the head about once a second: wait until the three
    # blocks' tasks are in (or 20 s).
    deadline = time.time() + 20
    while sum((per_node := tasks_per_node()).values()) < 3 and time.time() < deadline:
        time.sleep(0.5)
    return nodes.url("prepared"), done, per_node


def test_prepare_spreads_its_tasks_over_the_nodes_and_writes_what_one_node_writes(
    nodes, prepared, one_second_clips
):
    """Its read and decode tasks ran on at least two nodes; the clips are those of the same
    tree prepared on the session's one-node Ray, sample for sample."""
    url, done, per_node = prepared
    assert "20 clips from 20 files" in done.output, done.output
    assert len([name for name in per_node if name != "?"]) >= 2, per_node

    def by_file(data_url: str) -> dict[str, np.ndarray]:
        table = dataset.read_clips(data_url, ["source", "audio"]).to_pydict()
        return {
            source.rsplit("/", 1)[-1]: np.frombuffer(audio, "<i2")
            for source, audio in zip(table["source"], table["audio"], strict=True)
        }

    os.environ.update(KEYS, AWS_ENDPOINT_URL=nodes.s3.meta.endpoint_url)
    try:
        spread, alone = by_file(url), by_file(one_second_clips)
    finally:
        for key in (*KEYS, "AWS_ENDPOINT_URL"):
            os.environ.pop(key, None)
    assert spread.keys() == alone.keys() and len(spread) == 20
    for name, audio in spread.items():
        np.testing.assert_array_equal(audio, alone[name])


def _train_args(nodes, data: str, name: str, workers: str, **settings) -> list[str]:
    keys = {**TINY, **settings}
    return ["train", "--data", data, "--storage", nodes.url("runs"), "--name", name,
            "--workers", workers, "--model", "wavegan",
            *(f"{key}={value}" for key, value in keys.items())]  # fmt: skip


# The elastic run comes first: after a fixed-size run's job ends, Ray Data's autoscaling
# coordinator may go on counting that job's requests for a minute or two, and an elastic run
# started then sees room for no worker until they expire.
def test_an_elastic_run_recovers_from_a_lost_node_shrinks_grows_back_and_names_the_next_loss(
    nodes, prepared, report_fault
):
    """--workers 1-2 with max_failures=1, one worker per worker node: node b is SIGKILLed (all
    its processes) mid-interval, and the run goes on with 1 worker from its newest checkpoint
    without waiting for b; a new node b joins, and the run grows back to 2. batch_size stays
    per worker, so the global batch follows the world size; every step is in metrics.jsonl
    once, with the world size that trained it, and each restart trains again fewer steps than
    one checkpoint interval. Then b is lost again with no failure left to spend: the run ends
    with one line naming that node."""
    nodes.ensure_workers()
    run, every = "runs/elastic", 4
    driver = nodes.start(*_train_args(
        nodes, prepared[0], "elastic", "1-2", max_steps=100000, checkpoint_every=every,
        eval_every=every, sample_every=100, max_failures=1, worker_resource=SLOT,
        elastic_resize_s=2, worker_start_timeout_s=5))  # fmt: skip

    def worlds() -> list[int]:
        return [row["world_size"] for row in nodes.rows(run)]

    driver.wait_for(lambda: worlds().count(2) >= 6, "6 steps on 2 workers")
    driver.wait_for(  # killed mid-interval: 6 steps and checkpoint 4 in storage
        lambda: len(worlds()) >= 6 and nodes.has(f"{run}/checkpoint_000004/"), "6 steps"
    )
    nodes.cluster.kill("b")
    killed_at = time.time()
    rows_at_kill = len(worlds())
    driver.wait_for(lambda: 1 in worlds()[6:], "a step on 1 worker", seconds=150)
    shrunk_at = time.time()
    driver.wait_for(lambda: worlds()[-4:].count(1) == 4, "4 more steps on 1 worker")
    nodes.cluster.add_worker("b")
    joined_at = time.time()
    driver.wait_for(lambda: 2 in worlds()[worlds().index(1) :], "growing back to 2", 150)
    grown_at = time.time()
    driver.wait_for(lambda: worlds()[-5:] == [2] * 5, "5 more steps on 2 workers")
    [b_now] = [node for node, (name, state) in nodes.cluster.node_states().items()
               if name == "b" and state == "ALIVE"]  # fmt: skip
    nodes.cluster.kill("b")
    assert driver.finish() == 2, driver.output[-4000:]

    out = driver.output
    last = out.strip().splitlines()[-1]
    assert last.startswith("audiogan train: error: training failed: the node "), last
    assert b_now[:12] in last and "was lost; max_failures=N" in last, (last, b_now)
    assert "Traceback" not in out.split("audiogan train: error:")[-1]
    rows = nodes.rows(run)
    assert [row["step"] for row in rows] == list(range(1, len(rows) + 1))
    sizes = [row["world_size"] for row in rows]
    changes = [size for i, size in enumerate(sizes) if i == 0 or size != sizes[i - 1]]
    assert changes == [2, 1, 2], sizes
    for row in rows:  # the per-worker batch stays; the global batch follows the workers
        assert row["global_batch"] == TINY["batch_size"] * row["world_size"], row
    assert "elastic: 2 -> 1 worker(s)" in out and "elastic: 1 -> 2 worker(s)" in out, out[-4000:]
    shards = {(int(world), int(clips)) for _, world, clips in SHARD.findall(out)}
    assert (1, 20) in shards and (2, 8) in shards, shards  # 20 clips; drop_last per worker
    # Each 2-worker start puts its ranks on the two worker nodes.
    for first in range(0, len(two := [m for m in STARTED.findall(out) if m[1] == "2"]), 2):
        assert two[first][2] != two[first + 1][2], two
    # Each restart resumed from the newest checkpoint: fewer than `every` steps trained again.
    resumed = [int(step) for _, step in RESUMED.findall(out)]
    assert len(resumed) == 2 and resumed[0] >= every, out[-4000:]
    trained = [int(step) for step in re.findall(r"step (\d+)/100000 ", out)]
    repeated = len(trained) - len(set(trained))
    assert repeated <= (every - 1) * len(resumed), sorted(trained)
    back = driver.first(re.compile(rf"step {resumed[0] + 1}/100000 "), after=killed_at)
    assert back is not None
    report_fault(
        f"elastic run (--workers 1-2, max_failures=1): node b (raylet, object store, workers) "
        f"SIGKILLed at step {rows_at_kill}, then a new node b",
        f"on 1 worker {shrunk_at - killed_at:.0f} s after the kill (no wait for b), from "
        f"checkpoint_{resumed[0]:06d}; back on 2 {grown_at - joined_at:.0f} s after b joined; "
        f"steps 1..{len(rows)} once each, {repeated} trained twice; b lost again: one line "
        "naming it",
    )


def test_a_sweep_runs_its_two_trials_on_two_nodes(nodes, prepared):
    """Each trial's worker takes a node's one worker slot, so the two trials, run at once,
    train on different nodes."""
    nodes.ensure_workers()
    done = nodes.run("tune", "--config", "sweep_small", "--data", prepared[0], "--storage",
                     nodes.url("sweeps"), "--name", "sweep", "--trials", "2",
                     "--workers-per-trial", "1", "--max-steps", "4", "model_dim=4",
                     "batch_size=4", "n_critic=2", "eval_every=2", "eval_clips=8",
                     "num_samples=2", "tune.grace_period_steps=2",
                     f"worker_resource={SLOT}")  # fmt: skip
    out = done.output
    assert done.process.returncode == 0, out[-4000:]
    trial_nodes = {nodes.name_of(node) for _, _, node, _ in STARTED.findall(out)}
    assert trial_nodes == {"a", "b"}, out[-4000:]
    assert nodes.has("sweeps/sweep/best.json")


def test_a_spread_run_puts_its_ranks_on_two_nodes_and_ddp_keeps_their_g_identical(nodes, prepared):
    """placement_strategy=SPREAD alone (workers of half a CPU would all fit on one node) puts
    rank 0 and rank 1 on different nodes; their gradients meet over loopback (gloo), and both
    end with the same G. The run's folder in S3 holds what a run on one node writes."""
    nodes.ensure_workers()
    total = 8
    done = nodes.run(*_train_args(
        nodes, prepared[0], "spread", "2", max_steps=total, checkpoint_every=4, eval_every=4,
        sample_every=4, placement_strategy="SPREAD"))  # fmt: skip
    out = done.output
    assert done.process.returncode == 0, out[-4000:]
    started = {int(rank): node for rank, _, node, _ in STARTED.findall(out)}
    assert sorted(started) == [0, 1] and started[0] != started[1], out[-4000:]
    checksums = {int(rank): float(value) for rank, _, _, step, value in STOPPED.findall(out)}
    assert sorted(checksums) == [0, 1] and checksums[0] == checksums[1], out[-4000:]
    rows = nodes.rows("runs/spread")
    assert [row["step"] for row in rows] == list(range(1, total + 1))
    assert {row["world_size"] for row in rows} == {2}
    for key in (f"checkpoint_{total:06d}/state.pt", f"samples/step_{total:06d}/clips.png",
                "plots/losses.png", "report.html"):  # fmt: skip
        assert nodes.has(f"runs/spread/{key}"), key
    # A cluster's nodes may be drained (a spot node's notice): Ray Train watches for it there.
    from ray.util.state import list_actors

    watchers = list_actors(address=nodes.cluster.dashboard, limit=10000,
                           filters=[("class_name", "=", "PreemptionWatcher")])  # fmt: skip
    assert watchers, "no PreemptionWatcher on the cluster"
