"""Training on Ray Train: the run layout, DDP, resume, S3, and generate from a checkpoint."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pyarrow.fs as pafs
import pytest
import ray.cloudpickle
import ray.train
import soundfile as sf
from conftest import TINY

from audiogan import data, generate, storage, train
from audiogan.checkpoint import CheckpointError
from audiogan.config import PrepareConfig, TrainConfig
from audiogan.errors import AudioganError

pytestmark = pytest.mark.ray
# The callback below runs in Ray Train's controller actor, which cannot import this file.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class RecordReports(ray.train.UserCallback):
    """Writes every rank's reported metrics to a file (the callback runs in another process)."""

    def __init__(self, path: str):
        self.path = path

    def after_report(self, run_context, metrics, checkpoint):
        with open(self.path, "a") as handle:
            handle.write(json.dumps(metrics) + "\n")


@pytest.fixture(scope="module")
def two_worker_run(one_second_clips, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    reports = runs / "reports.jsonl"
    spec = train.RunSpec(one_second_clips, str(runs), "tiny", workers=2, gpu=False)
    cfg = TrainConfig(max_steps=4, mlflow_uri=f"sqlite:///{runs}/mlflow.db", **TINY)
    summary = train.train(cfg, spec, [RecordReports(str(reports))])
    return runs / "tiny", spec, summary, reports


def test_a_two_worker_run_writes_the_documented_layout(two_worker_run):
    run, _, summary, _ = two_worker_run
    assert summary["steps"] == 4 and summary["error"] is None
    assert summary["checkpoint"].endswith("tiny/checkpoint_000004")
    assert (run / "checkpoint_000002" / "state.pt").exists()
    for step in ("000002", "000004"):
        wavs = sorted((run / "samples" / f"step_{step}").glob("*.wav"))
        assert len(wavs) == 2 and (run / "samples" / f"step_{step}" / "clips.png").exists()
        audio, rate = sf.read(str(wavs[0]))
        assert rate == 16000 and audio.shape == (16000,)
    assert (run / "plots" / "losses.png").stat().st_size > 1000
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite([r["d_loss"], r["g_loss"], r["gp"]]).all() for r in rows)
    assert all(r["samples_per_s"] > 0 for r in rows)
    # mel_fd at every evaluation step (eval_every=2), and only there
    assert [r["step"] for r in rows if "mel_fd" in r] == [2, 4]
    assert all(r["mel_fd"] > 0 and np.isfinite(r["mel_fd"]) for r in rows if "mel_fd" in r)
    assert len(list((run / "samples" / "real").glob("real_*.wav"))) == 4
    page = (run / "report.html").read_text()
    assert page.count("<audio") == 2 + 2 + 4  # steps 2 and 4, and the real clips
    assert "step_000004" in page and "mel_fd" in page


def test_rank_0_logs_the_run_to_mlflow(two_worker_run):
    from mlflow.tracking import MlflowClient

    run, _, _, _ = two_worker_run
    client = MlflowClient(tracking_uri=f"sqlite:///{run.parent}/mlflow.db")
    [logged] = client.search_runs([client.get_experiment_by_name("audiogan").experiment_id])
    assert logged.info.run_name == "tiny" and logged.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(logged.info.run_id, "d_loss")]
    assert sorted(steps) == [1, 2, 3, 4]
    assert [f.path for f in client.list_artifacts(logged.info.run_id)] == ["report.html"]


def test_ddp_keeps_the_generator_identical_on_both_ranks(two_worker_run):
    _, _, _, reports = two_worker_run
    for line in reports.read_text().splitlines():
        per_rank = json.loads(line)
        assert sorted(m["rank"] for m in per_rank) == [0, 1]
        assert "mel_fd" in per_rank[0] or "mel_fd" in per_rank[1]  # rank 0's, for Tune
        assert per_rank[0]["g_checksum"] == per_rank[1]["g_checksum"]
        # ...while each rank drew its own noise and data, so their losses differ.
        assert per_rank[0]["d_loss"] != per_rank[1]["d_loss"]


def test_a_local_ray_instance_runs_without_the_preemption_watcher(two_worker_run):
    """No node of a local instance is drained, so no run there starts Ray Train's watcher for
    drained nodes (audiogan/connect.py LOCAL_RAY_ENV); the multi-node tests show it on a
    cluster."""
    from ray.util.state import list_actors

    classes = {actor.class_name for actor in list_actors(limit=10000)}
    assert "TrainController" in classes and "RayTrainWorker" in classes, classes
    assert "PreemptionWatcher" not in classes, classes


def test_running_again_resumes_at_the_next_step(two_worker_run):
    run, spec, _, _ = two_worker_run
    summary = train.train(TrainConfig(max_steps=6, **TINY), spec)
    assert summary["steps"] == 6
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # no gap, no repeat
    assert (run / "checkpoint_000006").exists()


def test_generate_writes_clips_from_a_checkpoint(two_worker_run, tmp_path):
    _, _, summary, _ = two_worker_run
    result = generate.generate(summary["checkpoint"], str(tmp_path / "out"), 3, None, seed=1)
    assert result["clips"] == 3 and result["sample_rate_hz"] == 16000
    audio, rate = sf.read(str(tmp_path / "out" / "generated_002.wav"))
    assert rate == 16000 and audio.shape == (16000,) and np.abs(audio).max() <= 1
    assert (tmp_path / "out" / "generated.png").exists()
    again = generate.generate(summary["checkpoint"], str(tmp_path / "again"), 3, None, seed=1)
    assert again == {**result, "out": str(tmp_path / "again")}
    from_run_folder = generate.generate(
        summary["checkpoint"].rsplit("/", 1)[0], str(tmp_path / "r"), 1, None, 1
    )
    assert from_run_folder["step"] >= 4  # the run's newest checkpoint
    with pytest.raises(AudioganError, match="needs a conditional model"):
        generate.generate(summary["checkpoint"], str(tmp_path / "x"), 1, "Saxophone", seed=1)
    with pytest.raises(CheckpointError, match="missing does not exist; give a checkpoint_"):
        generate.generate(str(tmp_path / "missing"), str(tmp_path / "x"), 1, None, seed=1)


@pytest.mark.s3
def test_a_run_against_the_s3_server_writes_everything_there(
    one_second_clips, s3_env, tmp_path, monkeypatch
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    bucket = s3_env
    spec = train.RunSpec(one_second_clips, f"s3://{bucket}/runs", "s3run", workers=2, gpu=False)
    summary = train.train(TrainConfig(max_steps=2, **TINY), spec)
    assert summary["checkpoint"] == f"s3://{bucket}/runs/s3run/checkpoint_000002"
    fs, _ = storage.resolve(f"s3://{bucket}")
    names = {
        info.path.split("s3run/", 1)[1]
        for info in fs.get_file_info(pafs.FileSelector(f"{bucket}/runs/s3run", recursive=True))
        if info.type == pafs.FileType.File
    }
    expected = {"metrics.jsonl", "plots/losses.png", "checkpoint_000002/state.pt",
                "samples/step_000002/sample_00.wav", "samples/step_000002/clips.png"}  # fmt: skip
    assert expected <= names
    assert any(name.startswith("events.out.tfevents.") for name in names)
    # TensorBoard reads the run where it is (`S3_ENDPOINT=... tensorboard --logdir s3://...`).
    monkeypatch.setenv("S3_ENDPOINT", os.environ["AWS_ENDPOINT_URL"])
    board = EventAccumulator(f"s3://{bucket}/runs/s3run", size_guidance={"audio": 0})
    board.Reload()
    assert [e.step for e in board.Scalars("d_loss")] == [1, 2]
    assert board.Audio("generated/00")[0].sample_rate == 16000
    result = generate.generate(summary["checkpoint"], f"s3://{bucket}/generated", 2, None, seed=0)
    assert result["clips"] == 2
    assert storage.exists(fs, f"{bucket}/generated/generated_001.wav")


def test_an_in_process_run_keeps_its_checkpoints_and_resumes(one_second_clips, tmp_path):
    spec = train.RunSpec(one_second_clips, str(tmp_path / "runs"), "local", workers=0, gpu=False)
    tiny = {**TINY, "keep_checkpoints": 2}
    run = tmp_path / "runs" / "local"
    first = train.train(TrainConfig(max_steps=4, **tiny), spec)
    assert first["checkpoint"] == str(run / "checkpoint_000004")
    (run / "checkpoint_000099").mkdir()  # an unfinished checkpoint (no state.pt): not resumed
    second = train.train(TrainConfig(max_steps=6, **tiny), spec)
    assert second["steps"] == 6 and second["checkpoint"] == str(run / "checkpoint_000006")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(0 <= r["data_wait"] <= 1 for r in rows)
    kept = sorted(p.name for p in run.glob("checkpoint_*") if (p / "state.pt").exists())
    assert kept == ["checkpoint_000004", "checkpoint_000006"]  # keep_checkpoints=2
    with pytest.raises(CheckpointError, match="differs from this run"):  # before any worker
        train.train(TrainConfig(max_steps=8, **{**tiny, "model_dim": 8}), spec)


def test_max_minutes_stops_a_run_with_a_checkpoint(one_second_clips, tmp_path):
    spec = train.RunSpec(one_second_clips, str(tmp_path / "runs"), "timed", workers=0, gpu=False)
    cfg = TrainConfig(max_steps=1000, max_minutes=1e-6, **{**TINY, "log_every": 3})
    summary = train.train(cfg, spec)
    assert summary["steps"] == 3  # the first check, at the first log step
    assert summary["checkpoint"].endswith("timed/checkpoint_000003")
    rows = [json.loads(line) for line in (tmp_path / "runs/timed/metrics.jsonl").open()]
    assert rows[-1]["step"] == 3 and "mel_fd" in rows[-1]  # the last step is evaluated


def test_a_conditional_run_in_process_and_generating_one_class(one_second_clips, tmp_path):
    spec = train.RunSpec(one_second_clips, str(tmp_path / "runs"), "cond", workers=0, gpu=False)
    summary = train.train(TrainConfig(max_steps=2, conditional=True, **TINY), spec)
    assert summary["steps"] == 2 and summary["error"] is None
    assert (tmp_path / "runs" / "cond" / "samples" / "step_000002" / "sample_00.wav").exists()


def test_conditional_training_needs_labels(ray_session, tmp_path, write_wav):
    from conftest import tone

    write_wav(tmp_path / "raw" / "loose.wav", tone(440, 1.5, 16000), 16000)
    data.prepare(str(tmp_path / "raw"), str(tmp_path / "prep"), PrepareConfig(clip_seconds=1.0),
                 log=lambda _: None)  # fmt: skip
    spec = train.RunSpec(str(tmp_path / "prep"), str(tmp_path / "runs"), "x", 2, False)
    with pytest.raises(train.TrainError, match="needs labels"):
        train.build_trainer(TrainConfig(conditional=True, **TINY), spec)


def test_ray_trains_own_lines_and_ray_datas_bars_come_back_with_verbose(one_second_clips, tmp_path):
    """Quiet by default (what a job's log shows of it is in test_jobs.py); --verbose sets
    Ray Train's log level back to INFO, and Ray Data's bars are on only while a run is built
    and trained, as asked, and as they were after it."""
    import ray.data

    for verbose, level in ((False, "WARNING"), (True, "INFO")):
        spec = train.RunSpec(one_second_clips, str(tmp_path), "v", 2, False, verbose=verbose)
        trainer = train.build_trainer(TrainConfig(**TINY), spec)
        assert trainer.run_config.logging_config.log_level == level
        assert trainer.train_loop_config["verbose"] is verbose
    context = ray.data.DataContext.get_current()
    before = context.enable_progress_bars
    for on in (True, False):
        with train.ray_data_bars(on):
            assert context.enable_progress_bars is on
        assert context.enable_progress_bars is before


def test_a_run_that_diverges_stops_with_an_error(one_second_clips, tmp_path):
    # Adam at a learning rate of 1e8 sends the critic's loss to infinity in the first step.
    spec = train.RunSpec(one_second_clips, str(tmp_path), "inf", workers=0, gpu=False)
    cfg = TrainConfig(max_steps=4, lr_g=1e8, lr_d=1e8, **TINY)
    with pytest.raises(AudioganError, match="training diverged at step 1: d_loss (inf|nan)"):
        train.train(cfg, spec)
    assert not (tmp_path / "inf" / "checkpoint_000001").exists()  # nothing after a NaN is kept


def test_the_shard_streams_16_bit_audio_that_training_sees_as_floats(one_second_clips):
    """Format /2's bytes reach the workers as int16 (half the object store and cache) and the
    loop scales them back to the floats evaluate reads."""
    import torch

    from audiogan import evaluator, loop
    from audiogan.dataset import CLIPS

    fs, root = storage.resolve(one_second_clips)
    clips = train._read_clips(storage.join(root, CLIPS), fs, 0.5)
    [batch] = list(clips.iter_torch_batches(batch_size=64))
    assert batch["audio"].dtype == torch.int16 and batch["audio"].shape == (20, 16000)
    floats = loop.as_float(batch["audio"]).numpy()
    stored = evaluator.read_labelled_clips(one_second_clips, labelled_only=False).audio
    energies = [
        np.sort(np.square(audio, dtype=np.float64).sum(axis=1)) for audio in (floats, stored)
    ]
    np.testing.assert_allclose(*energies, rtol=1e-6)  # the same clips (in the shard's order)
    assert float(np.abs(floats).max()) == pytest.approx(0.99, abs=1e-4)
