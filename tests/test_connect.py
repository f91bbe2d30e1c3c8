"""Where a command's Ray comes from: its own local instance, or a cluster named on purpose that
answers. The commands run as subprocesses, as a user runs them."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from conftest import free_port, ray_tmpdir_with_a_recorded_cluster

from audiogan import connect

CLI = [sys.executable, "-m", "audiogan.cli"]


def cli_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", **extra}


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("http://127.0.0.1:8265", "is a dashboard address, the one `ray job submit` takes"),
        ("somewhere", "is not a cluster address: give HOST:PORT"),
        ("host:port", "is not a cluster address"),
    ],
)
def test_addresses_that_name_no_cluster_are_refused(address, message):
    with pytest.raises(connect.RayAddressError, match=message):
        connect.cluster_endpoint(address)


def test_cluster_addresses_are_read_as_ray_reads_them():
    assert connect.cluster_endpoint("10.0.0.5:6379")[:2] == ("10.0.0.5", 6379)
    assert connect.cluster_endpoint("ray://head:10001")[:2] == ("head", 10001)
    assert connect.cluster_endpoint("[2001:db8::5]:6379")[:2] == ("2001:db8::5", 6379)


def test_a_dead_address_is_one_line_in_seconds_and_nothing_is_written(
    synth_root, tmp_path, report_fault
):
    port = free_port()  # nothing listens there
    started = time.perf_counter()
    done = subprocess.run(
        CLI + ["prepare", str(synth_root), str(tmp_path / "out"), "--clip-seconds", "1"],
        capture_output=True,
        text=True,
        env=cli_env(RAY_ADDRESS=f"127.0.0.1:{port}"),
        timeout=120,
    )
    seconds = time.perf_counter() - started
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"audiogan prepare: error: no Ray cluster answers at RAY_ADDRESS=127.0.0.1:{port} "
        "(Connection refused); unset RAY_ADDRESS (or set RAY_ADDRESS=local) to run on a local "
        "Ray instance"
    ]
    assert seconds < 20, seconds
    assert not (tmp_path / "out").exists()  # checked before Ray, refused before any write
    report_fault(
        "RAY_ADDRESS names a cluster that is gone (a closed port)",
        f"prepare failed with one line after {seconds:.1f} s naming RAY_ADDRESS; nothing written",
    )


def test_auto_with_a_stale_record_names_the_dead_cluster(synth_root, tmp_path):
    port = free_port()
    tmpdir = ray_tmpdir_with_a_recorded_cluster(f"127.0.0.1:{port}")
    done = subprocess.run(
        CLI + ["prepare", str(synth_root), str(tmp_path / "out"), "--address", "auto"],
        capture_output=True, text=True, timeout=120, env=cli_env(RAY_TMPDIR=str(tmpdir)),
    )  # fmt: skip
    assert done.returncode == 2
    # Ray may warn first that it sees other instances (this test session's own, for one).
    lines = done.stderr.strip().splitlines()
    [line] = [line for line in lines if line.startswith("audiogan")]
    assert line == lines[-1] and "Traceback" not in done.stderr
    # (Ray writes 127.0.0.1 as the machine's address where it has one.)
    assert re.fullmatch(
        r"audiogan prepare: error: no Ray cluster answers at --address=auto \(the cluster "
        rf"recorded at [\d.]+:{port}\) \(Connection refused\); .*",
        line,
    ), line
    assert not (tmp_path / "out").exists()


@pytest.mark.ray
def test_auto_with_no_record_says_so_even_beside_a_running_ray(ray_session, synth_root, tmp_path):
    """Ray's own "auto" would join any GCS it sees, such as this test session's private Ray."""
    tmpdir = tmp_path / "raytmp"
    tmpdir.mkdir()
    done = subprocess.run(
        CLI + ["prepare", str(synth_root), str(tmp_path / "out"), "--address", "auto"],
        capture_output=True, text=True, timeout=120, env=cli_env(RAY_TMPDIR=str(tmpdir)),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "audiogan prepare: error: --address=auto: no Ray cluster is recorded on this machine; "
        "start one with `ray start --head`, or give its address (HOST:6379)"
    )
    assert not (tmp_path / "out").exists()


def test_a_missing_dataset_is_refused_before_ray_is_asked(tmp_path):
    started = time.perf_counter()
    done = subprocess.run(
        CLI + ["train", "--data", str(tmp_path / "none"), "--storage", str(tmp_path),
               "--name", "x", "--address", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=120, env=cli_env(),
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().endswith(
        "does not exist; give a dataset folder (audiogan prepare DEST)"
    )
    assert time.perf_counter() - started < 20


def test_a_cluster_that_accepts_but_never_answers_is_given_up_on(tmp_path, report_fault):
    """A port that completes TCP handshakes (a listening socket nobody serves) and says nothing:
    ray.init would wait for minutes; the command ends with one line after its limit."""
    host = connect.cluster_endpoint("127.0.0.1:1")[0]  # where Ray would connect for 127.0.0.1
    if not ipaddress.ip_address(host).is_loopback:  # (make test's namespace has loopback only)
        pytest.skip(f"Ray connects to {host} for 127.0.0.1 here; tests listen on loopback only")
    with socket.socket() as silent:
        silent.bind((host, 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        code = (
            "import audiogan.connect as c; c.CONNECT_TIMEOUT_S = 3; "
            f"c.start_ray('127.0.0.1:{port}')"
        )
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
            env=cli_env(),
        )  # fmt: skip
        seconds = time.perf_counter() - started
    assert done.returncode == 2
    assert (
        f"audiogan: error: the Ray cluster at --address=127.0.0.1:{port} accepts connections but "
        "did not let this command join within 3 s"
    ) in done.stderr
    assert seconds < 30, seconds
    report_fault(
        "a cluster address that accepts connections and never answers",
        f"given up after the limit (3 s in the test, 60 s by default) with one line; "
        f"{seconds:.1f} s in all",
    )


@pytest.mark.ray
def test_without_an_address_a_command_starts_its_own_ray_despite_a_stale_record(
    synth_root, tmp_path, report_fault
):
    """The record of a head that was killed (not stopped) made `ray.init()` wait for it."""
    tmpdir = ray_tmpdir_with_a_recorded_cluster(f"127.0.0.1:{free_port()}")
    done = subprocess.run(
        CLI + ["prepare", str(synth_root), str(tmp_path / "out"), "--clip-seconds", "1",
               "--num-cpus", "1", "--json"],
        capture_output=True, text=True, timeout=300, env=cli_env(RAY_TMPDIR=str(tmpdir)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out" / "manifest.json").exists()
    assert "Started a local Ray instance" in done.stderr
    assert "Connecting to existing Ray cluster" not in done.stderr
    # Its sessions live beside Ray's default folder, where no other ray.init() looks.
    sessions = [p.name for p in (tmpdir / "audiogan-ray").iterdir() if p.name.startswith("sess")]
    assert sessions
    assert (tmpdir / "ray" / "ray_current_cluster").read_text().startswith("127.0.0.1:")
    report_fault(
        "a stale record of a killed head (ray_current_cluster), no RAY_ADDRESS",
        "prepare started a local Ray of its own and wrote its dataset",
    )
