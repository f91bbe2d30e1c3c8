"""What a step costs when its two workers are on two nodes instead of one (`make bench-nodes`).

Starts moto_server and a three-node Ray cluster on this machine (tests/multinode.py), prepares
the tests' synthetic tree into S3, then trains the same tiny WaveGAN twice with 2 workers:
placement_strategy=PACK (both workers on one node) and SPREAD (one a node, so DDP's gloo
all-reduce crosses nodes, over loopback here). Prints the median seconds a step of each, from
metrics.jsonl's samples_per_s after the first windows. Real networks between cloud nodes are
another matter: docs/cluster.md has the arithmetic for them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import TINY, start_moto  # noqa: E402
from multinode import BIN, FAST_HEALTH_CHECKS, LocalCluster  # noqa: E402

STEPS = 60
SETTINGS = {**TINY, "max_steps": STEPS, "log_every": 5, "checkpoint_every": STEPS,
            "eval_every": STEPS, "sample_every": STEPS}  # fmt: skip
KEYS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_REGION": "us-east-1"}  # fmt: skip


def main() -> None:
    import boto3

    work = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    moto, endpoint = start_moto(subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(**KEYS, **FAST_HEALTH_CHECKS, AWS_ENDPOINT_URL=endpoint,
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")  # fmt: skip
    cluster = LocalCluster(env)
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
        s3.create_bucket(Bucket="bench")
        subprocess.run([str(BIN / "audiogan"), "synth", str(work / "raw"), "--clips-per-class",
                        "5", "--seed", "7"], check=True, capture_output=True)  # fmt: skip
        for path in sorted(p for p in (work / "raw").rglob("*") if p.is_file()):
            s3.upload_file(str(path), "bench", f"raw/{path.relative_to(work / 'raw')}")
        cluster.start_head(cpus=1)
        cluster.add_worker("a")
        cluster.add_worker("b")
        driver_env = {**env, "RAY_ADDRESS": cluster.gcs_address}
        _audiogan(driver_env, "prepare", "s3://bench/raw", "s3://bench/prepared",
                  "--clip-seconds", "1")  # fmt: skip
        print(f"2 workers, {STEPS} steps of a tiny WaveGAN (batch {TINY['batch_size']} per "
              f"worker, n_critic {TINY['n_critic']}), 1 s clips, on a 3-node cluster of this "
              "machine:")  # fmt: skip
        print("| placement | nodes of the 2 workers | s a step (median) |")
        print("|---|---:|---:|")
        for strategy in ("PACK", "SPREAD"):
            out = _audiogan(driver_env, "train", "--data", "s3://bench/prepared", "--storage",
                            "s3://bench/runs", "--name", strategy.lower(), "--workers", "2",
                            "--model", "wavegan", f"placement_strategy={strategy}",
                            *(f"{k}={v}" for k, v in SETTINGS.items()))  # fmt: skip
            nodes = {line.split(" on node ")[1].split()[0] for line in out.splitlines()
                     if ": from step " in line}  # fmt: skip
            body = s3.get_object(Bucket="bench", Key=f"runs/{strategy.lower()}/metrics.jsonl")
            rows = [json.loads(line) for line in body["Body"].read().splitlines()]
            steady = [r for r in rows if r["step"] > 10 and r["step"] < STEPS]
            per_step = statistics.median(r["global_batch"] * TINY["n_critic"] / r["samples_per_s"]
                                         for r in steady)  # fmt: skip
            print(f"| {strategy} | {len(nodes)} | {per_step:.4f} |", flush=True)
    finally:
        cluster.stop()
        moto.kill()


def _audiogan(env: dict, *args: str) -> str:
    done = subprocess.run([str(BIN / "audiogan"), *args], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    if done.returncode:
        raise SystemExit(f"audiogan {args[0]} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout + done.stderr


if __name__ == "__main__":
    main()
