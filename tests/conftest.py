"""Shared fixtures: one Ray instance and one S3 server per test session, small synthetic data."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

# `make test` runs the suite in a loopback-only network namespace and sets RAY_AUTH_MODE
# there; elsewhere Ray's token auth stays on.
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def tone(freq_hz: float, seconds: float, rate_hz: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def dominant_hz(audio: np.ndarray, rate_hz: int) -> float:
    """The frequency of the strongest FFT bin (Hann-windowed, zero-padded for resolution)."""
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size), n=8 * audio.size))
    return float(np.argmax(spectrum) * rate_hz / (8 * audio.size))


def write_fsd(root: Path, files: dict[str, tuple[str | None, bool]], extra_rows=()) -> None:
    """train.csv for files already in root/audio_train: fname -> (label, verified)."""
    lines = ["fname,label,manually_verified"]
    for fname, (label, verified) in files.items():
        lines.append(f"{fname},{label or ''},{int(verified)}")
    lines += list(extra_rows)
    (root / "train.csv").write_text("\n".join(lines) + "\n")


# What each fault test injected and how it ended, printed after the test session's summary:
# the figures of docs/robustness.md (What audiogan survives) come from these lines.
FAULTS: list[str] = []


@pytest.fixture(scope="session")
def report_fault():
    """report_fault("fault", "outcome"): one line of the session's fault summary."""
    return lambda fault, outcome: FAULTS.append(f"{fault}: {outcome}")


def pytest_terminal_summary(terminalreporter):
    if FAULTS:
        terminalreporter.section("faults injected and their outcome")
        for line in FAULTS:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small synthetic FSDKaggle2018 tree: 4 classes x 5 clips."""
    from audiogan import synth

    root = tmp_path_factory.mktemp("synth")
    synth.synthesize(str(root), clips_per_class=5, seed=7)
    return root


# A tiny WaveGAN that trains a few steps in seconds (pass max_steps).
TINY = dict(model_dim=4, latent_dim=16, batch_size=4, n_critic=2, log_every=1, sample_every=2,
            checkpoint_every=2, eval_every=2, eval_clips=8, num_samples=2,
            ema_decay=0.9)  # fmt: skip


def encode(samples: np.ndarray, rate_hz: int, **kwargs) -> bytes:
    """Audio file bytes from soundfile (WAV unless format= says otherwise)."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate_hz, format=kwargs.pop("format", "WAV"), **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def one_second_clips(ray_session, synth_root, tmp_path_factory) -> str:
    """synth_root prepared as 1 s clips, for the training, sweep and fault tests."""
    from audiogan import data
    from audiogan.config import PrepareConfig

    dest = tmp_path_factory.mktemp("prepared_1s")
    data.prepare(str(synth_root), str(dest), PrepareConfig(clip_seconds=1.0), log=lambda _: None)
    return str(dest)


@pytest.fixture(scope="session")
def ray_session():
    """The one Ray instance of the test session: local (whatever RAY_ADDRESS says), 2 CPUs."""
    import ray

    from audiogan.connect import start_ray

    # With the dashboard (127.0.0.1): Ray Train frees a stopped Tune trial's workers through
    # its state API (see audiogan/commands/common.py start_ray).
    start_ray("local", num_cpus=2, dashboard=True, log_to_driver=False)
    yield ray
    ray.shutdown()


def ray_tmpdir_with_a_recorded_cluster(address: str) -> Path:
    """A RAY_TMPDIR whose ray/ray_current_cluster names `address`, as `ray start` leaves it (and
    leaves it still after its head is killed). Short, for Ray's socket paths."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="raytmp-", dir="/tmp"))
    (folder / "ray").mkdir()
    (folder / "ray" / "ray_current_cluster").write_text(address)
    return folder


def die_with_parent() -> None:
    """A Popen preexec_fn: the child gets SIGTERM when the test process dies, even if it is
    killed and no teardown runs (Linux's PR_SET_PDEATHSIG), so no server outlives the suite."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports on 127.0.0.1 (held open together while chosen, so that the
    system cannot hand out the same one twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start_moto(log) -> tuple[subprocess.Popen, str]:
    """moto_server on a free port of 127.0.0.1, once it answers: (its process, its endpoint)."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or "moto_server"
    process = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=log,
        preexec_fn=die_with_parent,
    )
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            return process, endpoint
        except OSError:
            if time.time() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.2)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 API: moto_server on 127.0.0.1, for pyarrow, s3fs and Ray workers alike."""
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    process, endpoint = start_moto(log)
    yield endpoint
    process.terminate()
    process.wait(timeout=10)
    log.close()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """AWS variables pointing at the test server, and a fresh bucket; returns its name."""
    import boto3

    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-value",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_server,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    bucket = f"audiogan-{int(time.time() * 1e6)}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def forbid_ray(monkeypatch):
    """Starting Ray fails the test: for input that must be refused before Ray starts."""

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for input that should have been refused")

    monkeypatch.setattr("audiogan.connect.start_ray", no_ray)


@pytest.fixture
def write_wav():
    """Writes audio with soundfile: write_wav(path, audio, rate, **soundfile kwargs)."""

    def write(path: Path, audio: np.ndarray, rate_hz: int, **kwargs) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), audio, rate_hz, **kwargs)
        return path

    return write
