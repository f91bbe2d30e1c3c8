"""Faults injected for real (issue 7): a training worker killed mid-run, the storage cut
mid-run, damaged checkpoints, a prepare killed halfway, mutated audio bytes fed to the decoder,
hostile checkpoints and configs. Each fault must end as a recovered run, a valid result or a
clear refusal, with nothing finished lost."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import Counter
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from conftest import TINY, encode, free_port, tone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiogan import audio
from audiogan.audio import Rejected, clips_from_file
from audiogan.cli import main
from audiogan.config import PrepareConfig

# ---------------------------------------------------------------------------------------------
# Fuzzed audio bytes

CFG = PrepareConfig(clip_seconds=0.25)
SECONDS_PER_FILE = 5  # a file that takes longer than this to decode counts as a hang
# Python-side allocation (numpy included) while decoding one file. The most a file can cost is
# the resampling kernel of an odd source rate, which audio.MAX_RESAMPLE_RATIO_PRODUCT bounds:
# about 70 MB to build; a header that claims gigabytes of frames must not come near this.
PEAK_BYTES_PER_FILE = 128 << 20


# Valid files to start from: the formats and shapes prepare meets most.
SEEDS = {
    "wav16_mono": encode(tone(440, 0.5, 16000), 16000, format="WAV", subtype="PCM_16"),
    "wav_float_stereo": encode(
        np.stack([tone(440, 0.4, 44100), tone(660, 0.4, 44100)], axis=1),
        44100,
        format="WAV",
        subtype="FLOAT",
    ),
    "wav24_22k": encode(tone(300, 0.6, 22050), 22050, format="WAV", subtype="PCM_24"),
    "flac": encode(tone(500, 0.5, 48000), 48000, format="FLAC", subtype="PCM_16"),
}
# Where a canonical WAV header keeps its numbers: RIFF size, channels, sample rate, byte rate,
# block align, bits per sample (and the data chunk's size, found by name).
WAV_FIELDS = {"riff_size": (4, "<I"), "channels": (22, "<H"), "rate": (24, "<I"),
              "byte_rate": (28, "<I"), "block_align": (32, "<H"), "bits": (34, "<H")}  # fmt: skip
EXTREMES = [0, 1, 2, 7, 255, 1000, 65535, 2**31 - 1, 2**32 - 1]


@contextmanager
def _time_limit(seconds: int):
    def hung(signum, frame):
        raise TimeoutError(f"decoding took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@st.composite
def mutated_files(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        kind = draw(st.sampled_from(["field", "header_bytes", "any_bytes", "truncate"]))
        if kind == "field" and name.startswith("wav"):
            fields = dict(WAV_FIELDS, data_size=(data.find(b"data") + 4, "<I"))
            offset, fmt = fields[draw(st.sampled_from(sorted(fields)))]
            bits = 8 * struct.calcsize(fmt)
            value = draw(st.sampled_from(EXTREMES) | st.integers(0, 2**bits - 1))
            data[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value % 2**bits)
        elif kind in ("field", "header_bytes"):  # FLAC's STREAMINFO sits in its first 42 bytes
            at = draw(st.integers(0, min(63, len(data) - 1)))
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
        elif kind == "any_bytes":
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
        else:
            del data[draw(st.integers(0, len(data))) :]
    return name, bytes(data)


@pytest.fixture(scope="module")
def fuzz_outcomes(report_fault):
    """How the mutated files ended (clip or reject reason), the slowest and the largest."""
    outcomes = {"counts": Counter(), "slowest_s": 0.0, "peak_bytes": 0}
    yield outcomes
    counts = outcomes["counts"]
    if counts:
        ends = ", ".join(f"{reason} {n}" for reason, n in counts.most_common())
        report_fault(
            f"{counts.total()} mutated WAV/FLAC files (hypothesis)",
            f"{ends}; slowest {1000 * outcomes['slowest_s']:.0f} ms, largest allocation "
            f"{outcomes['peak_bytes'] / 2**20:.0f} MiB; no crash, no hang",
        )


# AUDIOGAN_FUZZ_EXAMPLES=1000 (for example) runs a longer fuzz than CI's.
@settings(
    max_examples=int(os.environ.get("AUDIOGAN_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutated_files())
def test_any_mutated_wav_or_flac_ends_as_a_clip_or_a_reject_row(fuzz_outcomes, case):
    """No crash, no hang, no unbounded allocation: a valid clip or `Rejected` with a reason."""
    name, data = case
    audio._resample_plan.cache_clear()  # every file pays for its own kernel: the worst case
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with _time_limit(SECONDS_PER_FILE):
            try:
                decoded = clips_from_file(io.BytesIO(data), len(data), CFG, f"{name}.x")
                outcome = "clip"
            except Rejected as rejected:
                assert rejected.reason in {"empty", "decode_error", "non_finite", "too_short",
                                           "silent", "unsupported"}  # fmt: skip
                assert rejected.detail
                decoded, outcome = None, rejected.reason
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    fuzz_outcomes["counts"][outcome] += 1
    fuzz_outcomes["slowest_s"] = max(fuzz_outcomes["slowest_s"], time.perf_counter() - started)
    fuzz_outcomes["peak_bytes"] = max(fuzz_outcomes["peak_bytes"], peak)
    assert peak < PEAK_BYTES_PER_FILE, f"{peak / 2**20:.0f} MiB allocated for one file"
    if decoded is not None:
        assert decoded.clips
        for _, clip in decoded.clips:
            assert clip.shape == (CFG.clip_samples,) and clip.dtype == np.float32
            assert np.all(np.isfinite(clip)) and float(np.max(np.abs(clip))) <= 1.0


def test_the_seeds_themselves_decode():
    """The fuzzing starts from files that work, so a reject above comes from the mutation."""
    for name, data in SEEDS.items():
        decoded = clips_from_file(io.BytesIO(data), len(data), CFG, name)
        assert len(decoded.clips) == 1, name


# ---------------------------------------------------------------------------------------------
# Hostile checkpoints and configs


class _RunsCode:
    """Unpickling this calls os.system: what a checkpoint from a stranger could hold."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_checkpoint_whose_pickle_runs_code_is_refused_by_generate(
    tmp_path, capsys, report_fault, protocol
):
    marker = tmp_path / "code-ran"
    folder = tmp_path / "run" / "checkpoint_000001"
    folder.mkdir(parents=True)
    state = {"step": 1, "payload": _RunsCode(str(marker)), "weights": torch.zeros(2)}
    with open(folder / "state.pt", "wb") as file:
        torch.save(state, file, pickle_protocol=protocol)

    assert main(["generate", str(folder), str(tmp_path / "out"), "--n", "1"]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and str(folder) in err
    assert "Traceback" not in err
    assert not marker.exists()  # nothing in the file ran
    assert not (tmp_path / "out").exists()
    report_fault(f"checkpoint whose pickle (protocol {protocol}) calls os.system",
                 "refused by generate, nothing ran, one-line error")  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rate: 0.001\n", "unknown TrainConfig key(s): learning_rate"),
        ("batch_size: sixteen\n", "batch_size"),
        ("lr_g: -1.0e-4\n", "lr_g"),
        ("batch_size: 0\n", "batch_size must be at least 1"),
        ("max_steps: 1.5\n", "max_steps"),
        ("- a list\n- not a mapping\n", "mapping"),
    ],
)
def test_a_hostile_config_is_refused_before_any_ray_work(
    tmp_path, capsys, forbid_ray, report_fault, text, message
):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    code = main(["train", "--data", str(tmp_path / "none"), "--storage", str(tmp_path),
                 "--name", "x", "--config", str(config)])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "x").exists()
    said = err.strip().splitlines()[-1].removeprefix("audiogan train: error: ")
    said = said.split("; known:")[0].replace(str(config), "config.yaml")
    report_fault(f"config {text.strip()!r}", f"refused before Ray starts: {said}")


@pytest.mark.parametrize(
    "data",
    [b"", b"hello world, not a checkpoint", b"PK\x03\x04 broken zip", bytes(range(256)) * 4],
    ids=["empty", "text", "broken-zip", "noise"],
)
def test_a_damaged_or_foreign_checkpoint_file_is_a_clear_error(
    tmp_path, capsys, request, report_fault, data
):
    folder = tmp_path / "checkpoint_000001"
    folder.mkdir()
    (folder / "state.pt").write_bytes(data)
    assert main(["generate", str(folder), str(tmp_path / "out"), "--n", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("audiogan generate: error: ") and str(folder) in err
    assert "Traceback" not in err
    kind = request.node.callspec.id
    report_fault(f"state.pt that is {kind} ({len(data)} bytes)", "a one-line error from generate")


def _paths_that_are_not_what_was_asked_for(root):
    """A file where a folder is expected (Ray's own file beside a run's checkpoints), a folder
    of something else, a run whose only checkpoint is unfinished, a path that is not there."""
    run = root / "run"
    (run / "checkpoint_000004").mkdir(parents=True)
    (run / "checkpoint_000004" / "state.pt").write_bytes(b"half")  # no complete.json
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    (root / "photos").mkdir()
    (root / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 not audio")
    return {
        "file": run / "checkpoint_manager_snapshot.json",
        "other": root / "photos",
        "unfinished": run,
        "missing": root / "nowhere",
    }


BAD_INPUTS = [
    ("generate", ["generate", "{file}", "{out}"], "is a file, not a checkpoint"),
    ("generate", ["generate", "{other}", "{out}"], "holds neither state.pt nor checkpoint_"),
    ("generate", ["generate", "{unfinished}", "{out}"], "has no finished checkpoint"),
    ("generate", ["generate", "{missing}", "{out}"], "does not exist; give a checkpoint_"),
    ("evaluate", ["evaluate", "--data", "{file}", "--checkpoint", "{unfinished}"],
     "is a file; give a dataset folder"),
    ("evaluate", ["evaluate", "--data", "{other}", "--samples", "{other}"],
     "has no manifest.json: not a dataset"),
    ("evaluate", ["evaluate", "--data", "{missing}", "--samples", "{other}"], "does not exist"),
    ("autoencode", ["autoencode", "--data", "{other}", "--checkpoint", "{file}"],
     "is a file, not a checkpoint"),
    ("autoencode", ["autoencode", "--data", "{other}", "--checkpoint", "{unfinished}"],
     "has no finished checkpoint"),
    ("evaluator", ["evaluator", "fit", "--data", "{file}"], "is a file; give a dataset folder"),
]  # fmt: skip


@pytest.mark.parametrize(("command", "arguments", "message"), BAD_INPUTS)
def test_a_path_that_is_not_what_a_command_needs_is_one_line(
    tmp_path, capsys, report_fault, command, arguments, message
):
    paths = _paths_that_are_not_what_was_asked_for(tmp_path)
    argv = [a.format(out=tmp_path / "out", **paths) for a in arguments]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("resume: skipping")]
    assert len(lines) == 1 and lines[0].startswith(f"audiogan {command}: error: "), err
    assert message in lines[0]
    assert not (tmp_path / "out").exists()
    shown = " ".join(arguments).replace("{", "").replace("}", "")
    report_fault(f"audiogan {shown}", f"one line: {lines[0].split(str(tmp_path) + '/')[-1]}")


# ---------------------------------------------------------------------------------------------
# Partial checkpoints


def _truncate(run, folder):
    path = run / folder / "state.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _delete(run, folder):
    (run / folder / "state.pt").unlink()


def _flip(run, folder):  # same size, other bytes: only the checksum can tell
    path = run / folder / "state.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.ray
@pytest.mark.parametrize(
    "damage", [_truncate, _delete, _flip], ids=["truncated", "deleted", "flipped"]
)
def test_a_damaged_newest_checkpoint_is_skipped_and_the_run_resumes_from_the_one_before(
    one_second_clips, tmp_path, capfd, report_fault, damage
):
    from audiogan import checkpoint, train
    from audiogan.config import TrainConfig

    spec = train.RunSpec(one_second_clips, str(tmp_path), "run", workers=0, gpu=False)
    run = tmp_path / "run"
    train.train(TrainConfig(max_steps=4, **TINY), spec)
    damage(run, "checkpoint_000004")
    capfd.readouterr()

    summary = train.train(TrainConfig(max_steps=6, **TINY), spec)
    out = capfd.readouterr().out
    assert "resume: skipping checkpoint_000004" in out
    assert "resume: from checkpoint_000002 (step 2)" in out
    assert summary["steps"] == 6
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # steps 3 and 4 again, once each in the record
    for folder in ("checkpoint_000002", "checkpoint_000004", "checkpoint_000006"):
        assert checkpoint.load(str(run / folder))["step"] == int(folder[-6:])  # all whole now
    how = {_truncate: "truncated", _delete: "deleted", _flip: "altered (same size)"}[damage]
    report_fault(
        f"newest checkpoint's state.pt {how}",
        "skipped, resumed from checkpoint_000002; steps 1..6 once each in metrics",
    )


def test_a_checkpoint_file_that_differs_from_its_record_is_refused(tmp_path):
    from audiogan import checkpoint

    folder = tmp_path / "checkpoint_000001"
    checkpoint.save(str(folder), {"format": checkpoint.FORMAT, "step": 1, "w": torch.zeros(64)})
    assert checkpoint.load(str(folder))["step"] == 1
    _flip(tmp_path, "checkpoint_000001")
    with pytest.raises(checkpoint.CheckpointError, match="damaged"):
        checkpoint.load(str(folder))


# ---------------------------------------------------------------------------------------------
# An interrupted prepare


@pytest.mark.ray
def test_a_prepare_killed_halfway_leaves_no_manifest_and_a_rerun_gives_the_same_dataset(
    ray_session, tmp_path, report_fault
):
    """SIGKILL while clips are being written; the rerun with --overwrite must equal a run that
    was never interrupted: the same clip_ids with the same audio bytes."""
    import subprocess
    import sys

    import pyarrow.dataset as pads

    from audiogan import data, synth

    raw = tmp_path / "raw"
    synth.synthesize(str(raw), clips_per_class=40, seed=3)
    cfg = PrepareConfig(clip_seconds=1.0, batch_size=16)
    dest = tmp_path / "cut"
    command = [sys.executable, "-m", "audiogan.cli", "prepare", str(raw), str(dest),
               "--clip-seconds", "1", "--batch-size", "16"]  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    # Some clips are written: halfway.
    _wait_for(lambda: list(dest.glob("clips/*.parquet")), process, "clips were written", 120)
    written = len(list(dest.glob("clips/*.parquet")))
    process.kill()
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL  # killed mid-way, not finished
    assert not (dest / "manifest.json").exists()

    data.prepare(str(raw), str(dest), cfg, overwrite=True, log=lambda _: None)
    whole = tmp_path / "whole"
    data.prepare(str(raw), str(whole), cfg, log=lambda _: None)

    def clips(folder):
        table = pads.dataset(str(folder / "clips"), format="parquet").to_table()
        ids = table.column("clip_id").to_pylist()
        audio = table.column("audio").to_pylist()
        return dict(zip(ids, audio, strict=True))  # clip -> its 16-bit samples, as bytes

    rerun, reference = clips(dest), clips(whole)
    assert len(reference) == 160
    assert rerun.keys() == reference.keys()
    assert all(rerun[clip] == reference[clip] for clip in reference)
    manifests = [json.loads((folder / "manifest.json").read_text()) for folder in (dest, whole)]
    assert manifests[0]["counts"] == manifests[1]["counts"]
    report_fault(
        f"prepare of 160 files SIGKILLed with {written} clip file(s) written",
        "no manifest; the --overwrite rerun gives the same 160 clip_ids and audio bytes",
    )


# ---------------------------------------------------------------------------------------------
# A training worker killed mid-run, and the storage cut mid-run: `audiogan train` runs as its
# own driver on the session's Ray (so its workers' output reaches us), and the test injects the
# fault from outside while the run is in progress.


def _train_process(ray_session, data, storage_url, name, settings, env=None):
    """`audiogan train` of a tiny WaveGAN (--model: the TrainConfig defaults, then settings)."""
    command = [sys.executable, "-m", "audiogan.cli", "train", "--data", data,
               "--storage", storage_url, "--name", name, "--workers", "2", "--model", "wavegan",
               *(f"{key}={value}" for key, value in settings.items())]  # fmt: skip
    env = {
        **(env or os.environ),
        "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address,
        "RAY_DEDUP_LOGS": "0",  # every worker line as it was printed
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(condition, process, what, seconds=180):
    deadline = time.time() + seconds
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the run ended before {what}:\n{(out or '')[-3000:]}\n{err[-3000:]}")
        assert time.time() < deadline, f"no {what} after {seconds} s"
        time.sleep(0.05)


def _finish(process, seconds=240) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"the run did not end within {seconds} s:\n{out[-3000:]}\n{err[-3000:]}")
    return process.returncode, out, err


RESUMED = re.compile(r"resume: from checkpoint_(\d+) \(step (\d+)\)")


@pytest.mark.ray
def test_a_training_worker_killed_mid_run_is_replaced_and_the_run_finishes(
    ray_session, one_second_clips, tmp_path, report_fault
):
    """SIGKILL to one of the two Ray Train workers at step 6 (checkpoint 4 written); with
    max_failures=1 Ray Train starts a new worker group, which resumes from the newest checkpoint
    and trains to max_steps, repeating at most one checkpoint interval."""
    from ray.util.state import list_actors

    from audiogan import checkpoint

    every, total = 4, 16
    settings = {**TINY, "max_steps": total, "checkpoint_every": every, "eval_every": every,
                "sample_every": every, "max_failures": 1}  # fmt: skip
    run = tmp_path / "runs" / "killed"

    def train_workers() -> set[int]:
        alive = [("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]
        return {actor.pid for actor in list_actors(filters=alive)}

    earlier = train_workers()  # (none should be left from other tests; they are not ours)
    process = _train_process(ray_session, one_second_clips, str(tmp_path / "runs"), "killed",
                             settings)  # fmt: skip
    ours: set[int] = set()

    def found_workers():  # looked up while the run starts, so the kill itself is immediate
        ours.update(train_workers() - earlier)
        return len(ours) == 2

    _wait_for(found_workers, process, "two training workers")

    def mid_interval():  # checkpoint 4 written and step 6 logged: killed between checkpoints
        metrics = run / "metrics.jsonl"
        return (run / "checkpoint_000004" / "complete.json").exists() and (
            metrics.exists() and len(metrics.read_text().splitlines()) >= 6
        )

    _wait_for(mid_interval, process, "step 6")
    os.kill(min(ours), signal.SIGKILL)
    rows_at_kill = len((run / "metrics.jsonl").read_text().splitlines())

    code, out, err = _finish(process)
    assert code == 0, f"{out[-3000:]}\n{err[-3000:]}"
    assert rows_at_kill < total, "the run had finished before the worker was killed"
    resumed = [int(step) for _, step in RESUMED.findall(out)]
    assert len(resumed) == 1 and resumed[0] >= 4, out[-3000:]
    # Rank 0 prints every step it trains, in both attempts: the steps trained twice are the
    # ones after the checkpoint it resumed from.
    trained = re.findall(rf"step (\d+)/{total} ", out)
    repeated = len(trained) - total
    assert 0 <= repeated <= every, sorted(map(int, trained))
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, total + 1))  # no gap, no step twice
    assert checkpoint.load(str(run / f"checkpoint_{total:06d}"))["step"] == total
    report_fault(
        f"a Ray Train worker SIGKILLed at step {rows_at_kill} of {total} (max_failures=1)",
        f"recovered from checkpoint_{resumed[0]:06d}, {repeated} steps trained twice "
        f"(checkpoint every {every}); metrics steps 1..{total} once each; final checkpoint loads",
    )


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 in front of another local port. stop() closes every
    connection and the listening socket, so new connections are refused, as from a store that
    went away (the server behind it and its data stay); start() opens the same port again."""

    def __init__(self, target_port: int):
        self.target_port, self.port = target_port, free_port()
        self._server: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            if server is not None:
                # shutdown() wakes the thread blocked in accept() (close() alone would not,
                # and the port would go on listening until the next connection came in).
                with contextlib.suppress(OSError):
                    server.shutdown(socket.SHUT_RDWR)
                server.close()
            for connection in self._open:
                self._close(connection)
            self._open.clear()

    @staticmethod
    def _close(connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)
        connection.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                self._close(client)
                continue
            with self._lock:
                if self._server is not server:  # accepted just as stop() ran: cut it too
                    self._close(client)
                    self._close(upstream)
                    return
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def storage_proxy(s3_server):
    proxy = TcpProxy(int(s3_server.rsplit(":", 1)[1]))
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.mark.ray
@pytest.mark.s3
def test_storage_cut_mid_run_is_ridden_out_or_fails_clearly_and_the_rerun_resumes(
    ray_session, one_second_clips, s3_env, s3_server, storage_proxy, report_fault
):
    """The run's S3 traffic goes through a proxy. Once checkpoint 8 is recorded the test stops
    the proxy for a few seconds: the run retries and goes on. Once checkpoint 16 is recorded it
    stops it for good: after storage_retry_s the run fails naming the run's URL (and no key).
    With the proxy back, the same command resumes from the newest complete checkpoint."""
    from audiogan import checkpoint, runfolder, storage

    every, total, retry_s, short_outage_s = 8, 24, 6, 5
    settings = {**TINY, "max_steps": total, "checkpoint_every": every, "eval_every": every,
                "sample_every": every, "storage_retry_s": retry_s}  # fmt: skip
    url = f"s3://{s3_env}/runs"
    proxied = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{storage_proxy.port}"}
    direct, _ = storage.resolve(url)  # the test itself reads the bucket around the proxy
    run = f"{s3_env}/runs/cut"

    def recorded(name):
        """Whether Ray Train has recorded checkpoint `name`: it writes its record just after a
        checkpoint, without retries, so the test cuts the storage after it, between steps."""
        snapshot = f"{run}/checkpoint_manager_snapshot.json"
        text = storage.read_bytes(direct, snapshot) if storage.exists(direct, snapshot) else b""
        return name in text.decode()

    process = _train_process(ray_session, one_second_clips, url, "cut", settings, proxied)
    _wait_for(lambda: recorded("checkpoint_000008"), process, "checkpoint 8 recorded")
    storage_proxy.stop()
    time.sleep(short_outage_s)
    storage_proxy.start()
    _wait_for(lambda: recorded("checkpoint_000016"), process, "checkpoint 16 recorded")
    storage_proxy.stop()
    cut_at = time.monotonic()
    code, out, err = _finish(process)
    failed_after = time.monotonic() - cut_at

    assert code == 2, f"{out[-3000:]}\n{err[-3000:]}"
    # The short outage: retried, and then the writes went through.
    # (Which call meets the outage first, a read or a write, depends on timing.)
    retried = rf"storage: (reading|writing) \S+ failed \(OSError\); retrying for up to {retry_s} s"
    assert re.search(retried, out), out[-3000:]
    recovered = re.search(r"storage: (reading|writing) \S+ succeeded after (\d+) attempts", out)
    assert recovered, out[-3000:]
    # The long one: a clear last line, within the retry time and one slow attempt.
    # The command's own last word (Ray may still forward workers' lines after it).
    message = [line for line in err.splitlines() if line.startswith("audiogan train: error:")][-1]
    # A worker's write names the run (URL/cut); Ray Train's own (its checkpoint snapshot, through
    # storage.retrying_filesystem) names the storage and the run's file under it.
    unreachable = rf"audiogan train: error: storage at {re.escape(url)}"
    unreachable += r"(/cut unreachable: | unreachable: \S+ cut/)"
    assert re.match(unreachable, message), err
    assert f"; the limit is {retry_s} s)" in message
    assert "testing-secret-value" not in out + err
    # The limit counts from the first failed attempt's start, which may come a little before the
    # cut (a write under way when the proxy stopped), so the run may end under retry_s after it.
    assert failed_after < retry_s + 30, f"it took {failed_after:.0f} s to give up"
    assert int(re.search(r"kept failing for (\d+) s", message)[1]) >= retry_s  # the whole limit
    newest = runfolder.latest(direct, run)
    assert newest is not None and 16 <= int(newest[-6:]) < total  # cut mid-run

    storage_proxy.start()
    process = _train_process(ray_session, one_second_clips, url, "cut", settings, proxied)
    code, out, err = _finish(process)
    assert code == 0, f"{out[-3000:]}\n{err[-3000:]}"
    assert RESUMED.findall(out) == [(newest[-6:], str(int(newest[-6:])))], out[-3000:]
    rows = storage.read_bytes(direct, f"{run}/metrics.jsonl").decode().splitlines()
    assert [json.loads(row)["step"] for row in rows] == list(range(1, total + 1))
    assert checkpoint.load_from(direct, f"{run}/checkpoint_{total:06d}")["step"] == total
    report_fault(
        f"S3 cut for {short_outage_s} s mid-run (proxy stopped)",
        f"{recovered[1]} retried with growing waits, through after {recovered[2]} attempts; the "
        "run went on",
    )
    report_fault(
        "S3 cut for good mid-run",
        f"failed {failed_after:.0f} s later (storage_retry_s={retry_s}) naming {url}/cut, no "
        f"key; {newest.rsplit('/', 1)[-1]} intact; the rerun resumed from it to step {total}",
    )
