"""MLflow, where asked for: a run's params, metrics and report in a real local tracking store
(SQLite, MLflow's own backend), the same MLflow run after a resume, and clear refusals."""

from __future__ import annotations

import dataclasses

import pyarrow.fs as pafs
import pytest
import torch
from test_step import tiny_gan

from audiogan import loop, runfolder, tracking
from audiogan.config import ConfigError, TrainConfig

DATASET = {"sample_rate_hz": 16000, "labels": ["kick", "snare"], "clip_samples": 4096}


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _train(folder_path, uri: str, steps: range, start: int = 0, parent: str = "") -> str:
    """Rank 0's Monitor with a Tracker through `steps` of a tiny conditional WaveGAN (log every
    step, a checkpoint's report at every 4th, the last at 8); returns the MLflow run id."""
    gan = tiny_gan("wavegan", conditional=True)
    fs = pafs.LocalFileSystem()
    folder = runfolder.RunFolder(fs, str(folder_path), str(folder_path), retry_s=0)
    cfg = dataclasses.replace(gan.cfg, log_every=1, sample_every=4, eval_every=10**6,
                              checkpoint_every=4, max_steps=8, mlflow_uri=uri)  # fmt: skip
    tracker = tracking.Tracker(uri, folder, cfg, DATASET, "tiny", parent)
    monitor = loop.Monitor(cfg, DATASET, torch.device("cpu"), folder, start, tracker=tracker)
    monitor.keep_real([torch.zeros(4, 1, 4096)], [torch.tensor([0, 1, 0, 1])])
    meter = loop.Throughput()
    for step in steps:
        meter.stepped([torch.zeros(4, 1, 4096)])
        plan = loop.plan_step(cfg, step, False)
        result = {"d_loss": float(step), "g_loss": -1.0, "gp": 0.5}
        plan = dataclasses.replace(plan, evaluate=False)  # no mel_fd: G is untrained anyway
        monitor.after_step(gan, step, result, plan, meter)
    return tracker.run_id


def test_a_run_logs_its_params_metrics_and_report_and_a_resume_goes_on_in_the_same_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = _train(tmp_path / "run", uri, range(1, 5))
    client = _client(uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "tiny" and run.info.status == "RUNNING"  # stopped at step 4
    assert run.data.params["lr_g"] == "0.0001" and run.data.params["labels"] == "2"
    assert "mlflow_uri" not in run.data.params
    assert [f.path for f in client.list_artifacts(run_id)] == ["report.html"]
    # Beside the database, not in whatever folder the logging process ran in.
    stored = tmp_path / tracking.ARTIFACTS_DIR / run_id / "artifacts"
    assert (stored / "report.html").read_text().startswith("<!doctype html>")
    assert _train(tmp_path / "run", uri, range(5, 9), start=4) == run_id
    history = client.get_metric_history(run_id, "d_loss")
    assert sorted((m.step, m.value) for m in history) == [(s, s) for s in range(1, 9)]
    assert client.get_run(run_id).info.status == "FINISHED"  # the last step ends it
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "audiogan"
    assert len(client.search_runs([experiment.experiment_id])) == 1


def test_a_trials_run_nests_under_its_sweeps(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent = tracking.start_sweep(uri, "audiogan", "sweep", {"trials": 2})
    child = _train(tmp_path / "trial", uri, range(1, 3), parent=parent)
    tracking.end_sweep(uri, parent, {"results.csv": b"trial,best\n"})
    client = _client(uri)
    assert client.get_run(child).data.tags[tracking.PARENT_TAG] == parent
    assert client.get_run(parent).info.status == "FINISHED"
    assert [f.path for f in client.list_artifacts(parent)] == ["results.csv"]


def test_credentials_in_the_uri_are_refused():
    with pytest.raises(ConfigError, match="must not hold credentials"):
        TrainConfig(mlflow_uri="https://alice:secret@mlflow.example.com")
    with pytest.raises(tracking.TrackingError, match="MLFLOW_TRACKING_URI must not hold"):
        tracking.check("https://alice:secret@mlflow.example.com")


def test_without_a_uri_there_is_no_mlflow_and_a_relative_sqlite_store_is_made_absolute(
    monkeypatch, tmp_path
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri(TrainConfig()) == ""
    # Ray Train runs each worker in a folder of its own: the driver's folder is meant.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert tracking.tracking_uri(TrainConfig()) == f"sqlite:///{tmp_path}/x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////abs/x.db")
    assert tracking.tracking_uri(TrainConfig()) == "sqlite:////abs/x.db"
    assert tracking.tracking_uri(TrainConfig(mlflow_uri="http://127.0.0.1:5000")).endswith("5000")


def test_a_tracking_server_that_fails_mid_run_costs_a_line_not_the_run(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    folder = runfolder.RunFolder(pafs.LocalFileSystem(), str(tmp_path), str(tmp_path), retry_s=0)
    tracker = tracking.Tracker(uri, folder, TrainConfig(), DATASET, "away")

    def down(*args, **kwargs):
        raise ConnectionError("the tracking server is away")

    tracker.client.log_batch = down
    tracker.metrics(1, {"step": 1, "d_loss": 1.0})
    assert "mlflow: logging metrics failed (ConnectionError: the tracking server is away)" in (
        capsys.readouterr().out
    )


def test_a_sweep_marks_the_trials_it_stopped_early(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent = tracking.start_sweep(uri, "audiogan", "sweep", {})
    stopped = _train(tmp_path / "stopped", uri, range(1, 3), parent=parent)  # never at step 8
    tracking.end_sweep(uri, parent, {})
    assert _client(uri).get_run(stopped).info.status == "KILLED"


def test_mlflow_missing_is_one_line_that_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(tracking.TrackingError, match=r"pip install 'audiogan\[mlflow\]'"):
        tracking.check("sqlite:///x.db")
