"""Ray Jobs against a real head: `ray start --head` on 127.0.0.1, jobs submitted with
`ray job submit` and with `JobSubmissionClient`, data and outputs in the moto S3 server.

The head gets the S3 endpoint and keys from its own environment, as a cluster node gets them
from its instance role: nothing secret travels with a job."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml
from conftest import TINY, die_with_parent, free_ports, ray_tmpdir_with_a_recorded_cluster

from audiogan import storage

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SECRET = "jobs-secret-value"
# A few steps of a tiny WaveGAN (the small_cpu preset, shrunk), as key=value arguments.
TINY_ARGS = [f"{key}={value}" for key, value in TINY.items()]

pytestmark = [pytest.mark.ray, pytest.mark.s3]


@dataclass
class Head:
    address: str  # the dashboard's HTTP address, where the job server listens
    gcs_address: str  # where drivers join the cluster
    bucket: str
    env: dict  # the S3 variables the head runs with (the tests' side reads the bucket with them)
    temp_dir: str

    def client_env(self) -> dict:
        """A client's environment: no S3 keys, the head's auth mode."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        if self.env.get("RAY_AUTH_MODE") == "token":
            env["RAY_AUTH_MODE"] = "token"
        return env


def _auth_env() -> dict:
    """What the head and its clients need to agree on Ray's token auth. `make test` runs in a
    loopback-only network namespace with RAY_AUTH_MODE=disabled; elsewhere the head requires
    the token of ~/.ray/auth_token and clients send it (the file is created if missing, as the
    first `ray.init()` on a machine does)."""
    if os.environ.get("RAY_AUTH_MODE") == "disabled":
        return {}
    subprocess.run(
        [str(BIN / "ray"), "get-auth-token", "--generate"], stdout=subprocess.DEVNULL, check=True
    )
    return {"RAY_AUTH_MODE": "token"}


def _head_env(s3_endpoint: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(
        _auth_env(),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # job entrypoints' `python`
        AWS_ACCESS_KEY_ID="jobs-key",
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL=s3_endpoint,
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="2",  # the tests' jobs are over when it stops
    )
    return env


@pytest.fixture(scope="module")
def ray_head(s3_server, synth_root):
    """A Ray head of its own (2 CPUs; its ports chosen free, the dashboard on 127.0.0.1; its
    own temp dir, so that no other `ray.init()` finds it), with the raw synthetic tree in a
    bucket. Under `make test` the only network interface is loopback."""
    import boto3

    env = _head_env(s3_server)
    bucket = f"jobs-{int(time.time() * 1e6)}"
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=SECRET,
    )
    s3.create_bucket(Bucket=bucket)
    for path in sorted(p for p in synth_root.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"raw/{path.relative_to(synth_root).as_posix()}")

    temp_dir = tempfile.mkdtemp(prefix="rayhead-", dir="/tmp")  # short: Ray's socket paths
    flags = ["--port", "--dashboard-port", "--ray-client-server-port",
             "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
             "--metrics-export-port", "--runtime-env-agent-port", "--node-manager-port",
             "--object-manager-port"]  # fmt: skip
    ports = dict(zip(flags, free_ports(len(flags)), strict=True))
    dashboard_port = ports["--dashboard-port"]
    # Away from the default range (10002-19999) the session's own Ray instance uses.
    ports.update({"--min-worker-port": 21000, "--max-worker-port": 21999})
    command = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2",
               "--dashboard-host=127.0.0.1",
               f"--temp-dir={temp_dir}", "--disable-usage-stats",
               *(f"{flag}={port}" for flag, port in ports.items())]  # fmt: skip
    log = open(Path(temp_dir) / "ray-start.log", "wb")
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=log, start_new_session=True, preexec_fn=die_with_parent
    )
    address = f"http://127.0.0.1:{dashboard_port}"
    deadline = time.time() + 90
    while True:
        try:  # the job server answers once the dashboard is up (401 without a token)
            urllib.request.urlopen(f"{address}/api/version", timeout=2)
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            if time.time() > deadline or process.poll() is not None:
                _stop(process)
                message = f"the Ray head did not start; see {temp_dir}/ray-start.log"
                raise RuntimeError(message) from None
            time.sleep(0.5)
    yield Head(address, f"127.0.0.1:{ports['--port']}", bucket, env, temp_dir)
    _stop(process)
    log.close()
    shutil.rmtree(temp_dir, ignore_errors=True)


def _stop(process: subprocess.Popen) -> None:
    """`ray start --block` stops the head's processes on SIGTERM; the group kill is a backstop."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _bucket_files(head: Head, prefix: str) -> set[str]:
    fs = storage.s3_filesystem(head.env)
    selector = pafs.FileSelector(f"{head.bucket}/{prefix}", recursive=True, allow_not_found=True)
    return {
        info.path.split(f"{prefix}/", 1)[1]
        for info in fs.get_file_info(selector)
        if info.type == pafs.FileType.File
    }


def _pipeline(head: Head, tag: str) -> list[list[str]]:
    """prepare -> train -> generate, all in the bucket, as `python -m jobs.X` argument lists."""
    s3 = f"s3://{head.bucket}"
    return [
        ["jobs.prepare", f"{s3}/raw", f"{s3}/{tag}/prepared", "--clip-seconds", "1"],
        ["jobs.train", "--config", "small_cpu", "--data", f"{s3}/{tag}/prepared",
         "--storage", f"{s3}/{tag}/runs", "--name", "run", "--workers", "2", "--max-steps", "4",
         *TINY_ARGS],
        ["jobs.generate", f"{s3}/{tag}/runs/run", f"{s3}/{tag}/generated", "--n", "2"],
    ]  # fmt: skip


def _assert_pipeline_outputs(head: Head, tag: str) -> None:
    prepared = _bucket_files(head, f"{tag}/prepared")
    assert "manifest.json" in prepared
    assert any(name.startswith("clips/") and name.endswith(".parquet") for name in prepared)
    runs = _bucket_files(head, f"{tag}/runs")
    assert {"run/checkpoint_000004/state.pt", "run/metrics.jsonl", "run/report.html"} <= runs
    assert _bucket_files(head, f"{tag}/generated") == {
        "generated_000.wav",
        "generated_001.wav",
        "generated.png",
    }


@pytest.fixture(scope="module")
def cli_jobs(ray_head) -> list[str]:
    """`ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python -m jobs.X`
    for prepare, train and generate, each waited for; their outputs, in that order."""
    outputs = []
    for i, job in enumerate(_pipeline(ray_head, "cli")):
        result = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", ray_head.address,
             "--submission-id", f"cli-{i}-{job[0]}", "--working-dir", ".",
             "--runtime-env", "cluster/runtime_env.yaml", "--", "python", "-m", *job],
            cwd=ROOT, env=ray_head.client_env(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == 0, outputs[-1][-3000:]
    return outputs


def test_the_cli_runs_prepare_train_and_generate_as_jobs(ray_head, cli_jobs):
    """All three end SUCCEEDED with their outputs in S3, and no job's output holds the key."""
    for output in cli_jobs:
        assert "succeeded" in output.lower(), output[-3000:]
        assert SECRET not in output
    _assert_pipeline_outputs(ray_head, "cli")


def test_a_training_jobs_log_shows_each_step_once_and_none_of_rays_report_lines(cli_jobs):
    """What a person reads of a training job: one progress line a step, with its time left;
    no "Reporting training result" line per rank and report (--verbose brings those back),
    and no progress bar redrawn line after line (ESC [A moves a terminal's cursor up)."""
    output = cli_jobs[1]
    for step in range(1, 5):
        lines = [line for line in output.splitlines() if f"step {step}/4  d_loss" in line]
        assert len(lines) == 1, (step, lines)
        assert " samples/s  ETA " in lines[0]
    assert "TrainingReport(" not in output and "Reporting training result" not in output
    assert "\x1b[A" not in output


def _client(head: Head):
    from ray.job_submission import JobSubmissionClient

    headers = {}
    if head.env.get("RAY_AUTH_MODE") == "token":  # this process read its mode at import
        token = (Path.home() / ".ray" / "auth_token").read_text().strip()
        headers["Authorization"] = f"Bearer {token}"
    return JobSubmissionClient(head.address, headers=headers)


def test_a_local_command_never_joins_a_live_head_it_was_not_sent_to(
    ray_head, synth_root, tmp_path, report_fault
):
    """The head is recorded as this machine's cluster, as `ray start` records it; a command run
    without --address or RAY_ADDRESS still starts its own Ray, and the head sees no driver."""
    client = _client(ray_head)
    drivers_before = len(client.list_jobs())
    tmpdir = ray_tmpdir_with_a_recorded_cluster(ray_head.gcs_address)
    done = subprocess.run(
        [sys.executable, "-m", "audiogan.cli", "prepare", str(synth_root), str(tmp_path / "out"),
         "--clip-seconds", "1", "--labels", "Trumpet", "--num-cpus", "1"],
        capture_output=True, text=True, timeout=300,
        env={**ray_head.client_env(), "RAY_TMPDIR": str(tmpdir)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Started a local Ray instance" in done.stderr
    assert "Connecting to existing Ray cluster" not in done.stderr
    assert len(client.list_jobs()) == drivers_before
    # Sent there on purpose, the same command does join it (and sees the head's 2 CPUs only).
    joined = subprocess.run(
        [sys.executable, "-c", "from audiogan.connect import start_ray; import ray; "
         f"print(start_ray('{ray_head.gcs_address}')); print(ray.cluster_resources()['CPU'])"],
        capture_output=True, text=True, timeout=300, env=ray_head.client_env(),
    )  # fmt: skip
    assert joined.returncode == 0, joined.stderr[-3000:]
    assert joined.stdout.split()[-1] == "2.0"
    assert len(client.list_jobs()) == drivers_before + 1
    report_fault(
        "a live Ray head recorded as this machine's cluster, no RAY_ADDRESS",
        "prepare started a local Ray of its own; the head saw no new driver (with --address, one)",
    )


def _wait(client, job_id: str, timeout_s: float = 300):
    from ray.job_submission import JobStatus

    deadline = time.time() + timeout_s
    while (status := client.get_job_status(job_id)) not in {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    }:
        assert time.time() < deadline, f"{job_id} still {status} after {timeout_s} s"
        time.sleep(1)
    return status


def test_the_sdk_runs_a_sweep_and_a_bad_argument_fails_clearly(ray_head, cli_jobs):
    """JobSubmissionClient: a 2-trial sweep on what the CLI's prepare job wrote (preparing,
    training and generating as jobs are the CLI test's), then a train job with a bad argument."""
    from ray.job_submission import JobStatus

    client = _client(ray_head)
    runtime_env = yaml.safe_load((ROOT / "cluster" / "runtime_env.yaml").read_text())
    runtime_env["working_dir"] = str(ROOT)
    s3 = f"s3://{ray_head.bucket}"
    sweep = ["jobs.tune", "--config", "sweep_small", "--data",
             f"{s3}/cli/prepared", "--storage", f"{s3}/sdk/sweeps", "--name", "sweep", "--trials",
             "2", "--workers-per-trial", "1", "--max-steps", "4", "model_dim=4", "batch_size=4",
             "n_critic=2", "eval_every=2", "eval_clips=8", "num_samples=2",
             "tune.grace_period_steps=2"]  # fmt: skip
    job_id = client.submit_job(
        entrypoint=" ".join(["python", "-m", *sweep]),
        runtime_env=runtime_env,
        submission_id="sdk-sweep",
    )
    status = _wait(client, job_id)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert SECRET not in logs
    sweep_files = _bucket_files(ray_head, "sdk/sweeps/sweep")
    assert {"results.csv", "best.json", "sweep.json"} <= sweep_files
    assert any(name.endswith("/state.pt") for name in sweep_files)  # the trials' checkpoints
    # The job's record (entrypoint, runtime env, metadata) holds no credential either.
    info = client.get_job_info(job_id)
    assert SECRET not in repr(info)

    bad = _pipeline(ray_head, "sdk")[1] + ["batch_size=0"]
    job_id = client.submit_job(
        entrypoint=" ".join(["python", "-m", *bad]),
        runtime_env=runtime_env,
        submission_id="sdk-bad-train",
    )
    assert _wait(client, job_id, timeout_s=120) == JobStatus.FAILED
    logs = client.get_job_logs(job_id)
    assert "audiogan train: error: batch_size must be at least 1" in logs
    assert "Traceback" not in logs  # a message, not a stack trace
    assert client.get_job_info(job_id).driver_exit_code == 2


def test_a_failed_job_makes_ray_job_submit_exit_nonzero(ray_head):
    result = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", ray_head.address,
         "--working-dir", ".", "--runtime-env", "cluster/runtime_env.yaml", "--",
         "python", "-m", "jobs.prepare", f"s3://{ray_head.bucket}/missing",
         f"s3://{ray_head.bucket}/never"],
        cwd=ROOT, env=ray_head.client_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]  # `ray job submit`: the job FAILED
    missing = f"s3://{ray_head.bucket}/missing"
    assert f"audiogan prepare: error: SOURCE {missing} does not exist" in output, output[-3000:]
    assert "Traceback" not in output
    assert "manifest.json" not in _bucket_files(ray_head, "never")
