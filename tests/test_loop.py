"""The training loop's Ray-free parts: the step schedule, the shard cache, rank 0's metrics rows."""

from __future__ import annotations

import dataclasses
import json

import pyarrow.fs as pafs
import pytest
import torch

from audiogan import loop, runfolder
from audiogan.config import TrainConfig

CFG = TrainConfig(log_every=10, eval_every=20, sample_every=30, checkpoint_every=40, max_steps=100)


def _what(plan: loop.StepPlan) -> set[str]:
    return {
        name for name in ("log", "evaluate", "sample", "checkpoint", "last") if getattr(plan, name)
    }


def test_the_schedule_step_by_step():
    expected = {
        1: set(),
        10: {"log"},
        20: {"log", "evaluate"},
        30: {"log", "sample"},
        40: {"log", "evaluate", "checkpoint"},
        60: {"log", "evaluate", "sample"},
        # max_steps: the last step samples, checkpoints, so evaluates and logs.
        100: {"log", "evaluate", "sample", "checkpoint", "last"},
    }
    for step, what in expected.items():
        assert _what(loop.plan_step(CFG, step, time_up=False)) == what, step


def test_a_schedule_whose_intervals_do_not_divide_each_other():
    cfg = TrainConfig(log_every=7, eval_every=5, sample_every=3, checkpoint_every=4, max_steps=9)
    assert _what(loop.plan_step(cfg, 3, False)) == {"sample"}  # sampled, not logged
    assert _what(loop.plan_step(cfg, 4, False)) == {"log", "evaluate", "checkpoint"}
    assert _what(loop.plan_step(cfg, 5, False)) == {"log", "evaluate"}


def test_time_up_ends_the_run_at_the_next_log_step_with_a_checkpoint():
    assert not loop.plan_step(CFG, 15, time_up=True).last  # between log steps: go on
    assert _what(loop.plan_step(CFG, 50, time_up=True)) == {
        "log", "evaluate", "sample", "checkpoint", "last",
    }  # fmt: skip


def test_ranks_agree_at_every_step_where_something_happens_and_at_the_end():
    cfg = TrainConfig(log_every=7, eval_every=5, sample_every=3, checkpoint_every=4, max_steps=11)
    assert [s for s in range(1, 12) if loop.must_agree(cfg, s)] == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    # Every step the schedule acts on is one where the ranks agreed first.
    for step in range(1, 12):
        if _what(loop.plan_step(cfg, step, False)):
            assert loop.must_agree(cfg, step)


def test_agree_on_one_rank_sees_its_own_clock_and_losses():
    cfg = TrainConfig(max_minutes=1.0)
    device = torch.device("cpu")
    assert loop.agree(cfg, 30.0, {"d_loss": 1.0}, 1, device) == (False, False)
    assert loop.agree(cfg, 61.0, {"d_loss": 1.0}, 1, device) == (True, False)
    assert loop.agree(cfg, 1.0, {"d_loss": float("nan")}, 1, device) == (False, True)
    assert loop.agree(TrainConfig(), 1e9, {"g_loss": 0.0}, 1, device) == (False, False)


def _stream(clips: int, batch_size: int, calls: list):
    audio = torch.arange(clips, dtype=torch.float32).reshape(clips, 1, 1)

    def stream():
        calls.append(1)
        for start in range(0, clips - batch_size + 1, batch_size):
            yield audio[start : start + batch_size], torch.zeros(batch_size, dtype=torch.long)

    return stream


def test_a_shard_that_fits_is_streamed_once_then_reshuffled_in_memory():
    calls, epochs = [], []
    batches = loop.cached_batches(
        _stream(12, 4, calls), 4, 1, 0, torch.device("cpu"), epoch_done=epochs.append
    )
    first_epoch = [next(batches)[0].flatten().tolist() for _ in range(3)]
    assert first_epoch == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]  # as streamed
    assert epochs == []  # the end of the epoch is not known yet
    later = [next(batches)[0].flatten().tolist() for _ in range(6)]
    assert len(calls) == 1  # never streamed again
    assert epochs == [12]  # the shard's size, said once
    for epoch in (later[:3], later[3:]):
        assert sorted(sum(epoch, [])) == list(range(12))  # every clip once an epoch
    assert later[:3] != first_epoch  # in a new order


def test_a_shard_larger_than_the_cache_streams_every_epoch():
    calls = []
    batches = loop.cached_batches(_stream(8, 4, calls), 4, 0, 0, torch.device("cpu"))
    seen = [next(batches)[0].flatten().tolist() for _ in range(6)]
    assert len(calls) == 3
    assert seen[2:4] == [[0, 1, 2, 3], [4, 5, 6, 7]]  # in the stream's own order


def test_the_monitor_writes_a_metrics_row_and_a_progress_line(tmp_path, capsys):
    fs = pafs.LocalFileSystem()
    folder = runfolder.RunFolder(fs, str(tmp_path), str(tmp_path), retry_s=0)
    dataset = {"sample_rate_hz": 16000, "labels": [], "clip_samples": 16384}
    monitor = loop.Monitor(CFG, dataset, torch.device("cpu"), folder, step=0)
    meter = loop.Throughput(world=2)
    meter.stepped([torch.zeros(8, 1, 16)] * 5)  # n_critic 5 batches of 8 on each of 2 ranks
    result = {"d_loss": 1.23456789, "g_loss": -0.5, "gp": 0.25}
    plan = loop.plan_step(CFG, 10, time_up=False)
    monitor.after_step(None, 10, result, plan, meter)  # log only: G is not needed
    (row,) = [json.loads(line) for line in (tmp_path / runfolder.METRICS).read_text().splitlines()]
    assert row["step"] == 10 and row["d_loss"] == 1.234568 and row["samples_per_s"] > 0
    assert {"data_wait", "wall_s"} <= set(row)
    assert row["world_size"] == 2 and row["global_batch"] == 16
    assert capsys.readouterr().out.startswith("step 10/100  d_loss 1.2346  g_loss -0.5000")
    # A resumed run's monitor starts from the rows up to its checkpoint's step.
    assert loop.Monitor(CFG, dataset, torch.device("cpu"), folder, step=10).history == [row]
    assert loop.Monitor(CFG, dataset, torch.device("cpu"), folder, step=9).history == []


def _row(step: int, wall_s: float) -> dict:
    return {"step": step, "wall_s": wall_s, "d_loss": 1.0, "g_loss": 0.5, "gp": 0.1,
            "samples_per_s": 50.0}  # fmt: skip


def test_the_progress_line_says_how_long_the_run_has_left(tmp_path):
    folder = runfolder.RunFolder(pafs.LocalFileSystem(), str(tmp_path), str(tmp_path), retry_s=0)
    dataset = {"sample_rate_hz": 16000, "labels": [], "clip_samples": 16384}
    monitor = loop.Monitor(CFG, dataset, torch.device("cpu"), folder, step=0)
    # 2 s a step over the first 10 steps, 90 to go; then 0.5 s a step, 80 to go.
    assert monitor.progress(_row(10, 20.0)).endswith("50.0 samples/s  ETA 3m00s")
    line = monitor.progress({**_row(20, 25.0), "mel_fd": 12.3456})
    assert line.endswith("ETA 40s  mel_fd 12.346")
    # A run on a time budget counts its minutes instead.
    budget = TrainConfig(max_minutes=10, max_steps=10**9)
    monitor = loop.Monitor(budget, dataset, torch.device("cpu"), folder, step=0)
    assert monitor.progress(_row(30, 120.0)).startswith("step 30  d_loss")
    assert monitor.progress(_row(30, 120.0)).endswith("8.0 min left")


def test_durations_read_as_a_person_says_them():
    from audiogan.console import duration

    assert [duration(s) for s in (0, 44.6, 185, 7620, -3)] == ["0s", "45s", "3m05s", "2h07m", "0s"]


def test_a_conditional_runs_samples_name_their_classes_beside_a_real_clip_of_each(tmp_path):
    from test_step import tiny_gan

    gan = tiny_gan("wavegan", conditional=True)  # 2 classes
    folder = runfolder.RunFolder(pafs.LocalFileSystem(), str(tmp_path), str(tmp_path), retry_s=0)
    dataset = {"sample_rate_hz": 16000, "labels": ["kick", "snare"], "clip_samples": 4096}
    cfg = dataclasses.replace(gan.cfg, num_samples=1, eval_clips=4)
    monitor = loop.Monitor(cfg, dataset, torch.device("cpu"), folder, step=0)
    assert len(monitor.sample_z) == 2  # num_samples 1, but one clip of each class
    kicks = torch.full((2, 1, 4096), 0.25)
    monitor.keep_real([kicks], [torch.tensor([0, 0])])
    monitor.write_samples(gan, 5)
    step = tmp_path / runfolder.samples_dir(5)
    assert json.loads((step / runfolder.LABELS_FILE).read_text()) == {
        "sample_00.wav": "kick", "sample_01.wav": "snare"
    }  # fmt: skip
    assert (step / runfolder.CLASSES_PNG).read_bytes().startswith(b"\x89PNG")
    real = tmp_path / runfolder.REAL_DIR
    assert json.loads((real / runfolder.LABELS_FILE).read_text()) == {"real_00.wav": "kick"}
    # A snare turns up later: samples/real/ is written again with one clip of each class.
    monitor.keep_real([torch.full((2, 1, 4096), -0.5)], [torch.tensor([1, 0])])
    monitor.write_samples(gan, 10)
    labels = json.loads((real / runfolder.LABELS_FILE).read_text())
    assert labels == {"real_00.wav": "kick", "real_01.wav": "snare"}
    snare, _ = __import__("soundfile").read(str(real / "real_01.wav"))
    assert snare[0] == pytest.approx(-0.5, abs=1e-4)
