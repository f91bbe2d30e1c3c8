"""TensorBoard event files, read back with TensorBoard's own reader: the scalars of
metrics.jsonl, the samples as audio at the dataset's rate (named by class), their pictures,
and a resumed run that drops what a crash had logged past its checkpoint."""

from __future__ import annotations

import dataclasses

import pyarrow.fs as pafs
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_step import tiny_gan

from audiogan import events, loop, runfolder

RATE = 16000
DATASET = {"sample_rate_hz": RATE, "labels": ["kick", "snare"], "clip_samples": 4096}


def _read(folder) -> EventAccumulator:
    # 0: keep everything (by default the reader samples the audio and images it keeps).
    accumulator = EventAccumulator(str(folder), size_guidance={"audio": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def _train(tmp_path, steps: range, start: int = 0) -> loop.Monitor:
    """A Monitor through `steps` of a tiny conditional WaveGAN, logging each step and sampling
    every second one, as rank 0 does (the GAN does not train: only what is written counts)."""
    gan = tiny_gan("wavegan", conditional=True)
    folder = runfolder.RunFolder(pafs.LocalFileSystem(), str(tmp_path), str(tmp_path), retry_s=0)
    cfg = dataclasses.replace(gan.cfg, log_every=1, sample_every=2, eval_every=10**6,
                              checkpoint_every=10**6, max_steps=100, num_samples=2)  # fmt: skip
    monitor = loop.Monitor(cfg, DATASET, torch.device("cpu"), folder, step=start)
    monitor.keep_real([torch.full((2, 1, 4096), 0.1)], [torch.tensor([1, 0])])
    meter = loop.Throughput()
    for step in steps:
        meter.stepped([torch.zeros(4, 1, 4096)])
        result = {"d_loss": float(step), "g_loss": -float(step), "gp": 0.5}
        monitor.after_step(gan, step, result, loop.plan_step(cfg, step, False), meter)
    return monitor


def test_a_run_shows_its_scalars_audio_and_pictures_in_tensorboard(tmp_path):
    _train(tmp_path, range(1, 5))
    board = _read(tmp_path)
    tags = board.Tags()
    assert {"d_loss", "g_loss", "gp", "samples_per_s", "data_wait"} <= set(tags["scalars"])
    assert [(e.step, e.value) for e in board.Scalars("d_loss")] == [(s, s) for s in (1, 2, 3, 4)]
    assert sorted(tags["audio"]) == [
        "generated/00 kick", "generated/01 snare", "real/00 kick", "real/01 snare"
    ]  # fmt: skip
    generated = board.Audio("generated/01 snare")
    assert [a.step for a in generated] == [2, 4]
    assert generated[0].sample_rate == RATE and generated[0].length_frames == 4096
    assert generated[0].encoded_audio_string[:4] == b"RIFF"
    assert sorted(tags["images"]) == ["pictures/by class", "pictures/clips"]
    picture = board.Images("pictures/clips")[0]
    assert picture.encoded_image_string.startswith(b"\x89PNG") and picture.width > picture.height


def test_audio_and_pictures_are_written_once_and_scalars_roll_over(tmp_path):
    _train(tmp_path, range(1, 5))
    files = sorted(p.name for p in tmp_path.glob("events.out.tfevents.*"))
    # Steps 1-2 (the samples of step 2 close the file), 3-4; then the next file is begun.
    assert len(files) == 2 and files[0].endswith(".0000") and files[1].endswith(".0001")


def test_a_resumed_run_drops_what_was_logged_past_its_checkpoint(tmp_path):
    _train(tmp_path, range(1, 7))  # logged to step 6, but say the last checkpoint was step 4
    import time

    time.sleep(1.1)  # a later start: the new writer's files sort after the old one's
    _train(tmp_path, range(5, 7), start=4)
    board = _read(tmp_path)
    assert [e.step for e in board.Scalars("d_loss")] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("size", [events.ROLL_BYTES])
def test_a_file_of_scalars_alone_rolls_over_at_its_size_limit(tmp_path, size):
    folder = runfolder.RunFolder(pafs.LocalFileSystem(), str(tmp_path), str(tmp_path), retry_s=0)
    log = events.EventLog(folder)
    step = 0
    while log.number == 0:
        step += 1
        log.scalars(step, {"step": step, "d_loss": 1.0, "g_loss": 2.0})
        log.flush()
    first = tmp_path / f"{log.prefix}.0000"
    assert size <= first.stat().st_size < size + 200
    assert [e.step for e in _read(tmp_path).Scalars("g_loss")] == list(range(1, step + 1))
