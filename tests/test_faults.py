"""Faults injected for real (issue 7): mutated audio bytes fed to the decoder, hostile
checkpoints and configs. Each fault must end as a valid result or a clear refusal."""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import struct
import time
import tracemalloc
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from conftest import TINY, encode, tone
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


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_files())
def test_any_mutated_wav_or_flac_ends_as_a_clip_or_a_reject_row(case):
    """No crash, no hang, no unbounded allocation: a valid clip or `Rejected` with a reason."""
    name, data = case
    audio._resample_plan.cache_clear()  # every file pays for its own kernel: the worst case
    tracemalloc.start()
    try:
        with _time_limit(SECONDS_PER_FILE):
            try:
                decoded = clips_from_file(io.BytesIO(data), len(data), CFG, f"{name}.x")
            except Rejected as rejected:
                assert rejected.reason in {"empty", "decode_error", "non_finite", "too_short",
                                           "silent", "unsupported"}  # fmt: skip
                assert rejected.detail
                decoded = None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
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
def test_a_checkpoint_whose_pickle_runs_code_is_refused_by_generate(tmp_path, capsys, protocol):
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
    tmp_path, capsys, monkeypatch, text, message
):
    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a config that should have been refused")

    monkeypatch.setattr("audiogan.cli._init_ray", no_ray)
    config = tmp_path / "config.yaml"
    config.write_text(text)
    code = main(["train", "--data", str(tmp_path / "none"), "--storage", str(tmp_path),
                 "--name", "x", "--config", str(config)])  # fmt: skip
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "data",
    [b"", b"hello world, not a checkpoint", b"PK\x03\x04 broken zip", bytes(range(256)) * 4],
    ids=["empty", "text", "broken-zip", "noise"],
)
def test_a_damaged_or_foreign_checkpoint_file_is_a_clear_error(tmp_path, capsys, data):
    folder = tmp_path / "checkpoint_000001"
    folder.mkdir()
    (folder / "state.pt").write_bytes(data)
    assert main(["generate", str(folder), str(tmp_path / "out"), "--n", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("audiogan generate: error: ") and str(folder) in err
    assert "Traceback" not in err


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
    one_second_clips, tmp_path, capfd, damage
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
    ray_session, tmp_path
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
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list(dest.glob("clips/*.parquet")):  # some clips are written: halfway
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "prepare wrote no clips"
        time.sleep(0.05)
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
        return {
            clip: np.asarray(samples, np.float32).tobytes()
            for clip, samples in zip(ids, audio, strict=True)
        }

    rerun, reference = clips(dest), clips(whole)
    assert len(reference) == 160
    assert rerun.keys() == reference.keys()
    assert all(rerun[clip] == reference[clip] for clip in reference)
    manifests = [json.loads((folder / "manifest.json").read_text()) for folder in (dest, whole)]
    assert manifests[0]["counts"] == manifests[1]["counts"]
