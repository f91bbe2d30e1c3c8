"""Sweeps: the search space and sweep files (refused before any trial starts), and sweeps on
Ray Tune: results, best checkpoint, resume, ASHA stopping a diverging trial, S3."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml

from audiogan import generate, runfolder, storage, tune
from audiogan.cli import main
from audiogan.config import PRESETS_DIR, ConfigError, TrainConfig, TuneConfig


def _space(text: str, **kwargs):
    return tune.parse_space(yaml.safe_load(text), TrainConfig(), **kwargs)


def test_the_default_space_searches_latent_size_dropout_and_both_learning_rates():
    space, base = _space("")
    assert set(space) == {"latent_dim", "dropout", "lr_g", "lr_d"}
    assert space["latent_dim"].values == (64, 100, 128, 256, 500)
    assert (space["lr_g"].kind, space["lr_g"].low, space["lr_g"].high) == ("loguniform", 1e-5, 1e-3)
    assert base == TrainConfig()


def test_entries_extend_override_or_fix_the_defaults():
    space, base = _space(
        """
        n_critic: {randint: [1, 6]}
        dropout: {uniform: [0.1, 0.3]}
        latent_dim: 128
        betas: {choice: [[0.5, 0.9], [0.0, 0.99]]}
        """
    )
    assert set(space) == {"dropout", "lr_g", "lr_d", "n_critic", "betas"}
    assert space["n_critic"].examples() == [1, 5]  # the upper bound is excluded, as in Ray Tune
    assert (space["dropout"].low, space["dropout"].high) == (0.1, 0.3)
    assert base.latent_dim == 128  # fixed, no longer searched
    assert space["betas"].values == ((0.5, 0.9), (0.0, 0.99))
    only, _ = _space("lr_d: {loguniform: [1.0e-4, 1.0e-3]}", use_defaults=False)
    assert set(only) == {"lr_d"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rate: {loguniform: [1.0e-5, 1.0e-3]}", "not a training key"),
        ("lr_g: {logrange: [1.0e-5, 1.0e-3]}", "expected one of"),
        ("lr_g: {loguniform: [0, 1.0e-3]}", "low > 0"),
        ("dropout: {uniform: [0.5, 0.1]}", "low < high"),
        ("dropout: {uniform: [0.0, 1.5]}", "1.5 is not a valid value"),
        ("latent_dim: {choice: []}", "non-empty list"),
        ("model: {choice: [wavegan, stylegan]}", "'stylegan' is not a valid value"),
        ("n_critic: {randint: [1, 2.5]}", "integer bounds"),
        ("batch_size: 0", "batch_size must be at least 1"),
    ],
)
def test_the_search_space_refuses_what_no_trial_could_run(text, message):
    with pytest.raises(ConfigError, match=message):
        _space(text)


def test_the_space_becomes_ray_tune_samplers():
    from ray.tune.search.sample import Categorical, Float, Integer

    space, _ = _space("n_critic: {randint: [1, 6]}")
    samplers = tune.to_tune(space)
    assert isinstance(samplers["latent_dim"], Categorical)
    assert isinstance(samplers["lr_g"], Float) and samplers["lr_g"].lower == 1e-5
    assert isinstance(samplers["n_critic"], Integer) and samplers["n_critic"].upper == 6
    drawn = samplers["lr_d"].sample(size=200)
    assert min(drawn) >= 1e-5 and max(drawn) <= 1e-3


# ---------------------------------------------------------------------------------------------
# Sweep files


def _sweep_file(tmp_path, text: str) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return str(path)


def test_a_sweep_file_builds_on_a_preset_and_takes_overrides(tmp_path):
    path = _sweep_file(
        tmp_path,
        f"""
        base: {PRESETS_DIR / "small_cpu.yaml"}
        max_steps: 60
        eval_every: 10
        search: {{n_critic: {{choice: [1, 5]}}}}
        points: [{{lr_g: 1.0e-4, n_critic: 1}}]
        tune: {{trials: 4, grace_period_steps: 20}}
        """,
    )
    sweep = tune.load_sweep(path, ["lr_d=3.0e-4", "tune.reduction_factor=3"], {"trials": 5})
    assert sweep.base.model_dim == 8 and sweep.base.max_steps == 60  # preset, then the file
    assert set(sweep.space) == {"latent_dim", "dropout", "lr_g", "n_critic"}  # lr_d fixed
    assert sweep.base.lr_d == 3e-4
    assert (sweep.tune.trials, sweep.tune.reduction_factor) == (5, 3)
    # every evaluation is a checkpoint and a sample step, so a stopped trial leaves a report
    assert sweep.base.checkpoint_every == sweep.base.sample_every == 10
    # a point's other searched keys take the base's values (the preset's)
    assert sweep.points == ({"dropout": 0.0, "latent_dim": 64, "lr_g": 1e-4, "n_critic": 1},)


@pytest.mark.parametrize("name", sorted(p.name for p in PRESETS_DIR.glob("sweep_*.yaml")))
def test_every_sweep_file_loads(name):
    sweep = tune.load_sweep(str(PRESETS_DIR / name), [])
    assert sweep.space and sweep.tune.grace_period_steps < sweep.base.max_steps


def test_a_sweep_file_of_ones_own_builds_on_a_built_in_preset_by_name(tmp_path):
    sweep = tune.load_sweep(_sweep_file(tmp_path, "base: small_cpu\nmax_steps: 300"), [])
    assert sweep.base.model_dim == 8 and sweep.base.max_steps == 300
    beside = tmp_path / "small_cpu.yaml"  # a file of that name beside it wins
    beside.write_text("model_dim: 4\n")
    assert tune.load_sweep(_sweep_file(tmp_path, "base: small_cpu.yaml"), []).base.model_dim == 4


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("tune: {trails: 3}", [], "unknown TuneConfig key"),
        ("serch: {lr_g: 1.0e-4}", [], "unknown TrainConfig key"),
        ("points: [{model_dim: 4}]", [], "model_dim not searched"),
        ("points: [{lr_g: -1.0}]", [], "lr_g and lr_d must be positive"),
        ("max_steps: 50\ntune: {grace_period_steps: 50}", [], "must be below max_steps"),
        ("tune: {workers_per_trial: 0}", [], "no in-process trial"),
        ("tune: {search_alg: grid}", [], "search_alg must be one of"),
        ("tune: {default_space: false}", [], "nothing to sweep"),
        ("", ["tune.trials=0"], "trials must be at least 1"),
        ("base: sweep.yaml", [], "refers back to itself"),
        ("base: smal_cpu", [], "neither beside it nor a built-in preset.*small_cpu"),
        ("max_minutes: 5", [], "a time limit would look like an early stop"),
    ],
)
def test_a_sweep_file_refuses_what_no_sweep_could_run(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError, match=message):
        tune.load_sweep(_sweep_file(tmp_path, text), overrides)


def test_a_key_fixed_on_the_command_line_leaves_the_points_too(tmp_path):
    path = _sweep_file(tmp_path, "points: [{latent_dim: 128, lr_g: 2.0e-4}]")
    sweep = tune.load_sweep(path, ["latent_dim=256"])
    assert sweep.base.latent_dim == 256 and "latent_dim" not in sweep.space
    assert sweep.points == ({"dropout": 0.0, "lr_d": 1e-4, "lr_g": 2e-4},)


@pytest.mark.parametrize("name", ["", "..", "a/b"])
def test_a_sweep_name_is_one_folder(name, tmp_path):
    with pytest.raises(tune.TuneError, match="plain folder name"):
        tune.SweepSpec(str(tmp_path), str(tmp_path), name)


def test_local_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tune.SweepSpec("data/prepared", "file://" + str(tmp_path / "sweeps"), "x")
    assert spec.data_url == str(tmp_path / "data" / "prepared")
    assert spec.storage_url == str(tmp_path / "sweeps")
    assert tune.SweepSpec("s3://b/p", "s3://b/s", "x").data_url == "s3://b/p"


def test_concurrency_follows_the_gpus_or_the_cpus():
    cfg = TuneConfig(trials=8, workers_per_trial=2)
    assert tune._concurrency(cfg, gpu=True, resources={"GPU": 8, "CPU": 64}) == 4
    assert tune._concurrency(cfg, gpu=True, resources={"GPU": 3, "CPU": 64}) == 1
    # a driver (0.1) + 2 workers and a data read (0.25 each) = 0.85 CPU per trial
    assert tune._concurrency(cfg, gpu=False, resources={"CPU": 2}) == 2
    assert tune._concurrency(TuneConfig(trials=1), gpu=False, resources={"CPU": 16}) == 1
    with pytest.raises(tune.TuneError, match="2 GPU\\(s\\) per trial; the cluster has 1"):
        tune._concurrency(cfg, gpu=True, resources={"GPU": 1, "CPU": 8})
    pinned = TuneConfig(max_concurrent_trials=3)
    assert tune._concurrency(pinned, gpu=True, resources={"CPU": 2}) == 3  # autoscaling


def test_the_tune_command_refuses_a_bad_sweep_before_ray_starts(tmp_path, capsys):
    code = main(
        ["tune", "--data", str(tmp_path), "--storage", str(tmp_path), "--name", "x",
         "tune.grace_period_steps=5000"]
    )  # fmt: skip
    assert code == 2
    assert "must be below max_steps" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [  # the default recipe (ddsp_stft_cond: hinge, STFT D, R1) and the 2019 baseline's
        ("base: ddsp_stft_cond\nsearch: {gp_weight: {uniform: [1, 20]}}", [],
         "searches gp_weight, which does nothing in sweep.yaml .model=ddsp, discriminator=stft, "
         "loss=hinge.: only loss=wgan-gp has a gradient penalty"),
        ("base: ddsp_stft_cond", ["phase_shuffle=1"], "fixes phase_shuffle.*WaveGAN's D only"),
        ("base: ddsp_stft_cond\naugment_p: 0.3", [], "fixes augment_p.*augment is empty"),
        ("base: ddsp_stft_cond\nsearch: {sources: 1}", ["model=hybrid"], "fixes sources"),
        ("base: dcgan\nsearch: {model_dim: {choice: [8, 16]}}", [], "model_dim.*fixed widths"),
        ("base: small_cpu\nsearch: {disc_channels: {choice: [8, 16]}}", [], "D is wavegan"),
    ],
)  # fmt: skip
def test_a_sweep_of_a_key_that_does_nothing_in_the_recipe_is_refused(
    tmp_path, text, overrides, message
):
    with pytest.raises(ConfigError, match=message):
        tune.load_sweep(_sweep_file(tmp_path, text), overrides)


def test_a_key_that_acts_once_a_searched_switch_allows_it_is_searched(tmp_path):
    text = """
    base: ddsp_stft_cond
    search:
      r1_weight: {choice: [0.0, 1.0]}
      r1_every: {choice: [1, 4]}
      augment: {choice: [[], [shift, gain]]}
      augment_p: {uniform: [0.2, 0.8]}
    """
    sweep = tune.load_sweep(_sweep_file(tmp_path, text), [])
    assert {"r1_every", "augment_p"} <= set(sweep.space)
    # a recipe's own preset is the recipe: its keys are never refused, idle or not
    assert tune.load_sweep("wavegan_gp", []).base.loss == "wgan-gp"


def test_the_tune_command_refuses_a_key_the_recipe_does_not_use_before_ray_starts(tmp_path, capsys):
    code = main(
        ["tune", "--data", str(tmp_path), "--storage", str(tmp_path), "--name", "x",
         "--config", "ddsp_stft_cond", "gp_weight=5"]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "fixes gp_weight, which does nothing in ddsp_stft_cond" in err
    assert "ray" not in err.lower()


def test_optuna_draws_from_the_space_and_starts_with_the_points(tmp_path):
    pytest.importorskip("optuna")
    path = _sweep_file(tmp_path, "points: [{latent_dim: 128, lr_g: 2.0e-4}]")
    sweep = tune.load_sweep(path, ["tune.search_alg=optuna", "tune.seed=3"])
    searcher = tune._searcher(sweep, concurrent=2)
    searcher.set_search_properties("mel_fd", "min", tune.to_tune(sweep.space))
    first, second = searcher.suggest("t1"), searcher.suggest("t2")
    assert first == {"latent_dim": 128, "lr_g": 2e-4, "lr_d": 1e-4, "dropout": 0.0}
    assert second["latent_dim"] in (64, 100, 128, 256, 500)
    assert 1e-5 <= second["lr_d"] <= 1e-3 and 0 <= second["dropout"] <= 0.5


# ---------------------------------------------------------------------------------------------
# Sweeps on Ray Tune

# A tiny WaveGAN: a trial of 12 steps takes seconds; ASHA judges at steps 4 and 8. One worker
# per trial: most of a trial's half minute is Ray starting processes that import torch, and a
# second worker process made the sweeps here take 50% longer; the three-trial sweep keeps two,
# so that DDP inside a trial is tested.
TINY_SWEEP = """
model_dim: 4
latent_dim: 16
batch_size: 4
n_critic: 2
ema_decay: 0.9
log_every: 2
eval_every: 4
eval_clips: 8
num_samples: 2
max_steps: 12
search:
  latent_dim: {choice: [16, 32]}
  dropout: {uniform: [0.0, 0.3]}
  lr_g: {loguniform: [5.0e-5, 5.0e-4]}
  lr_d: {loguniform: [5.0e-5, 5.0e-4]}
tune: {grace_period_steps: 4, reduction_factor: 2, workers_per_trial: 1}
"""


# Three trials, one at a time, the good one first, so that the diverging one meets its score at
# the first rung: learning rates of 1.0 (points may leave the drawn ranges) send the critic's
# loss past 1e12 within 4 steps, yet finite; at 1e8 it is infinite at step 1. Two workers per
# trial, so that DDP inside a trial is tested.
THREE_POINTS = """
points:
  - {latent_dim: 16, dropout: 0.0, lr_g: 1.0e-4, lr_d: 1.0e-4}
  - {latent_dim: 16, dropout: 0.0, lr_g: 1.0, lr_d: 1.0}
  - {latent_dim: 16, dropout: 0.0, lr_g: 1.0e+8, lr_d: 1.0e+8}
"""
THREE = ["tune.trials=3", "tune.max_concurrent_trials=1", "tune.workers_per_trial=2"]


@pytest.fixture(scope="module")
def three_trials(one_second_clips, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    path = _sweep_file(folder, TINY_SWEEP + THREE_POINTS)
    # With MLflow: one run for the sweep, one nested under it per trial.
    sweep = tune.load_sweep(path, [*THREE, f"mlflow_uri=sqlite:///{folder}/mlflow.db"])
    spec = tune.SweepSpec(one_second_clips, str(folder / "sweeps"), "three")
    return sweep, spec, tune.run_sweep(sweep, spec, log=lambda _: None), path


def _csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.ray
def test_asha_stops_a_diverging_trial_and_an_exploding_one_fails(three_trials):
    _, _, summary, _ = three_trials
    by_lr = {row["lr_g"]: row for row in summary["rows"]}
    good, bad, exploded = by_lr[1e-4], by_lr[1.0], by_lr[1e8]
    assert good["status"] == "completed" and good["steps"] == 12
    assert bad["status"] == "stopped early" and bad["steps"] < 12
    assert bad["best"] > good["best"]
    assert exploded["status"] == "error" and "training diverged at step" in exploded["error"]
    assert summary["best_trial"] == good["trial"]
    assert (summary["trials"], summary["stopped_early"], summary["errors"]) == (3, 1, 1)
    assert summary["finished"]


@pytest.mark.ray
def test_tensorboard_shows_one_run_per_trial(three_trials):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    _, spec, summary, _ = three_trials
    sweep = Path(spec.storage_url) / spec.name
    board = EventMultiplexer().AddRunsFromDirectory(str(sweep)).Reload()
    runs = {run.split("/")[-1]: tags for run, tags in board.Runs().items()}
    assert set(runs) == {row["trial"] for row in summary["rows"]}
    good = next(row for row in summary["rows"] if row["status"] == "completed")
    assert "d_loss" in runs[good["trial"]]["scalars"] and runs[good["trial"]]["audio"]


@pytest.mark.ray
def test_mlflow_holds_the_sweep_with_a_nested_run_per_trial(three_trials):
    from mlflow.tracking import MlflowClient

    from audiogan.tracking import PARENT_TAG

    _, spec, summary, _ = three_trials
    client = MlflowClient(tracking_uri=f"sqlite:///{Path(spec.storage_url).parent}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("audiogan").experiment_id])
    [sweep] = [run for run in runs if PARENT_TAG not in run.data.tags]
    trials = {run.info.run_name: run for run in runs if PARENT_TAG in run.data.tags}
    assert sweep.info.run_name == "three" and sweep.info.status == "FINISHED"
    assert set(trials) == {row["trial"] for row in summary["rows"]}
    assert {run.data.tags[PARENT_TAG] for run in trials.values()} == {sweep.info.run_id}
    assert {f.path for f in client.list_artifacts(sweep.info.run_id)} == {
        "results.csv",
        "best.json",
    }
    good = next(row for row in summary["rows"] if row["status"] == "completed")
    assert trials[good["trial"]].data.params["lr_g"] == "0.0001"


def test_agreement_counts_the_trial_pairs_both_metrics_order_alike():
    trials = [
        {4: {"mel_fd": 1.0, "classifier_fd": 10.0}, 8: {"mel_fd": 1.0, "classifier_fd": 5.0}},
        {4: {"mel_fd": 2.0, "classifier_fd": 20.0}, 8: {"mel_fd": 0.5, "classifier_fd": 9.0}},
        {4: {"mel_fd": 3.0, "classifier_fd": 15.0}, 8: {"mel_fd": 0.7}},  # no classifier_fd
    ]
    # step 4: (1,2) alike, (1,3) alike, (2,3) not; step 8: (1,2) not; trial 3 has one metric
    assert tune.agreement(trials) == {"pairs": 4, "agree": 2, "share": 0.5}
    assert tune.agreement([{}])["share"] is None


@pytest.mark.ray
def test_classifier_fd_asked_of_a_dataset_without_a_classifier_is_refused_before_ray_starts(
    one_second_clips, tmp_path, capsys
):
    code = main(
        ["tune", "--data", one_second_clips, "--storage", str(tmp_path), "--name", "x",
         "tune.metric=classifier_fd", "--address", "ray://127.0.0.1:1"]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "tune.metric=classifier_fd:" in err and "has no evaluation classifier" in err
    assert f"audiogan evaluator fit --data {one_second_clips}" in err


@pytest.fixture(scope="module")
def judged_clips(one_second_clips, tmp_path_factory) -> str:
    """The 1 s clips with an evaluation classifier (a quick one: ranking needs no accuracy)."""
    import shutil

    from audiogan import evaluator

    dest = tmp_path_factory.mktemp("judged") / "prepared"
    shutil.copytree(one_second_clips, dest)
    evaluator.fit(str(dest), epochs=2, log=lambda _: None)
    return str(dest)


@pytest.mark.ray
def test_a_sweep_of_data_with_a_classifier_ranks_by_classifier_fd_and_shows_both(
    judged_clips, tmp_path
):
    path = _sweep_file(tmp_path, TINY_SWEEP)
    sweep = tune.load_sweep(path, ["tune.trials=2", "tune.workers_per_trial=1"])
    assert sweep.tune.metric == ""  # chosen by the data
    spec = tune.SweepSpec(judged_clips, str(tmp_path / "sweeps"), "judged")
    summary = tune.run_sweep(sweep, spec, log=lambda _: None)
    assert summary["metric"] == "classifier_fd" and summary["finished"]
    root = f"{spec.storage_url}/judged"
    for row in summary["rows"]:  # rank 0 measured both at every evaluation (4, 8, 12) it made
        history = runfolder.read_metrics(pafs.LocalFileSystem(), row["run"])
        scored = {r["step"]: r for r in history if "classifier_fd" in r}
        made = [step for step in (4, 8, 12) if step <= row["steps"]]  # ASHA may stop one at 4
        assert sorted(scored) == made and all(r["classifier_fd"] > 0 for r in scored.values())
        assert all("mel_fd" in r for r in scored.values())
        assert row["best"] == min(r["classifier_fd"] for r in scored.values())
    rows = _csv_rows(open(f"{root}/results.csv").read())
    assert {"best_classifier_fd", "mel_fd_at_best", "classifier_fd_at_best"} <= set(rows[0])
    best = json.load(open(f"{root}/best.json"))
    assert best["metric"] == "classifier_fd" and best["mel_fd"] > 0
    ranked = min(summary["rows"], key=lambda row: row["checkpoint_score"])
    assert best["classifier_fd"] == ranked["checkpoint_score"] and best["trial"] == ranked["trial"]
    assert json.load(open(f"{root}/sweep.json"))["tune"]["metric"] == "classifier_fd"
    assert os.path.getsize(f"{root}/plots/classifier_fd.png") > 1000
    assert summary["agreement"]["pairs"] >= 1  # two trials at three common steps, ties aside
    table = tune.format_table(summary)
    assert "best classifier_fd (step) | mel_fd there | last classifier_fd" in table[0]

    # --confirm: the best settings and the preset's, trained anew on a fresh seed and scored
    confirmed = tune.confirm(sweep, spec, summary, log=lambda _: None)
    assert json.load(open(f"{root}/confirm.json"))["runs"] == confirmed["runs"]
    best_row = next(row for row in summary["rows"] if row["trial"] == summary["best_trial"])
    for name, params in (("preset", {"lr_g": 1e-4, "latent_dim": 16}), ("best", best_row)):
        row = confirmed["runs"][name]
        assert row["steps"] == 12 and row["classifier_fd"] > 0 and row["mel_fd"] > 0
        assert row["searched"]["lr_g"] == params["lr_g"]
        _, config, state = generate.load_generator(row["checkpoint"])
        assert (config.seed, state["step"]) == (sweep.base.seed + 1, 12)  # a seed no trial had
    assert confirmed["ratio"] == pytest.approx(
        confirmed["runs"]["best"]["classifier_fd"] / confirmed["runs"]["preset"]["classifier_fd"],
        abs=1e-3,
    )
    assert "confirm: the sweep's best" in tune.format_confirmation(confirmed)[-1]


@pytest.mark.ray
def test_a_three_trial_sweep_writes_results_and_a_best_checkpoint_that_loads(three_trials):
    sweep, spec, summary, _ = three_trials
    root = f"{spec.storage_url}/three"
    rows = _csv_rows(open(f"{root}/results.csv").read())
    assert [row["status"] for row in rows] == ["completed", "stopped early", "error"]
    trained = [row for row in rows if row["status"] != "error"]
    for row in trained:  # each trial's run folder is a whole run, stopped or not
        run = f"{root}/trials/{row['trial']}"
        for name in ("metrics.jsonl", "report.html", "plots/losses.png"):
            assert os.path.exists(f"{run}/{name}"), (row["trial"], name)
    assert all({"latent_dim", "dropout", "lr_g", "lr_d"} <= set(row) for row in rows)
    best_row = min(trained, key=lambda row: float(row["best_mel_fd"]))
    best = json.load(open(f"{root}/best.json"))
    assert best["trial"] == best_row["trial"] == summary["best_trial"]
    assert best["mel_fd"] == pytest.approx(float(best_row["best_mel_fd"]))
    assert best["checkpoint"].endswith(f"checkpoint_{best['step']:06d}")
    assert best["config"]["latent_dim"] == int(best_row["latent_dim"])
    # the best checkpoint is that of the lowest mel_fd the trial logged
    metrics = [json.loads(line) for line in open(f"{best['run']}/metrics.jsonl")]
    scored = {row["step"]: row["mel_fd"] for row in metrics if "mel_fd" in row}
    assert scored[best["step"]] == pytest.approx(best["mel_fd"]) == min(scored.values())
    _, config, state = generate.load_generator(best["checkpoint"])
    assert state["step"] == best["step"] and config.latent_dim == best["config"]["latent_dim"]
    assert os.path.getsize(f"{root}/plots/mel_fd.png") > 1000
    table = "\n".join(tune.format_table(summary))
    assert all(row["trial"] in table for row in rows)


@pytest.mark.ray
def test_running_a_finished_sweep_again_trains_nothing_and_a_changed_one_is_refused(
    three_trials,
):
    sweep, spec, summary, path = three_trials
    root = f"{spec.storage_url}/three"

    def stamps() -> dict[str, float]:
        files = (f"{root}/trials/{row['trial']}/metrics.jsonl" for row in summary["rows"])
        return {name: os.path.getmtime(name) for name in files if os.path.exists(name)}

    before = stamps()
    assert len(before) >= 2  # (the trial that failed at step 1 may have written none)
    again = tune.run_sweep(sweep, spec, log=lambda _: None)
    assert again["best_trial"] == summary["best_trial"]
    assert [row["trial"] for row in again["rows"]] == [row["trial"] for row in summary["rows"]]
    assert [row["status"] for row in again["rows"]] == [row["status"] for row in summary["rows"]]
    assert stamps() == before
    logged_to = f"mlflow_uri={sweep.base.mlflow_uri}"
    changed = tune.load_sweep(path, [*THREE[1:], logged_to, "tune.trials=4"])
    with pytest.raises(tune.TuneError, match="other settings \\(tune.trials\\)"):
        tune.run_sweep(changed, spec, log=lambda _: None)


# Three trials at once, PBT at every 4 steps: the one that trains best stays best, and the
# worst of the population takes the best one's checkpoint (once that one has reported one at
# its own perturbation step, from the second round on).
PBT = ["tune.trials=3", "tune.workers_per_trial=1", "tune.scheduler=pbt",
       "tune.perturbation_interval_steps=4", "max_steps=20"]  # fmt: skip
PBT_POINTS = """
points:
  - {latent_dim: 16, dropout: 0.0, lr_g: 2.0e-4, lr_d: 2.0e-4}
  - {latent_dim: 16, dropout: 0.0, lr_g: 1.0e-5, lr_d: 1.0e-5}
  - {latent_dim: 16, dropout: 0.0, lr_g: 3.0e-2, lr_d: 3.0e-2}
"""


def test_a_population_based_sweep_is_refused_where_it_could_not_exploit_or_perturb(tmp_path):
    path = _sweep_file(tmp_path, TINY_SWEEP)
    with pytest.raises(ConfigError, match="tune.search_alg"):
        tune.load_sweep(path, [*PBT, "tune.search_alg=optuna"])
    with pytest.raises(ConfigError, match="a population: tune.trials of 2 or more"):
        tune.load_sweep(path, [*PBT, "tune.trials=1"])
    with pytest.raises(ConfigError, match="searches none .latent_dim"):
        tune.load_sweep(path, [*PBT, "dropout=0.0", "lr_g=1.0e-4", "lr_d=1.0e-4"])
    with pytest.raises(ConfigError, match="interval .20 steps. must be below max_steps"):
        tune.load_sweep(path, [*PBT, "tune.perturbation_interval_steps=20"])
    sweep = tune.load_sweep(path, PBT)
    assert sweep.base.keep_checkpoints == 0  # a checkpoint another trial may take stays
    assert tune.perturbed_ranges(sweep.space) == {
        "dropout": ("uniform", 0.0, 0.3),
        "lr_d": ("loguniform", 5e-5, 5e-4),
        "lr_g": ("loguniform", 5e-5, 5e-4),
    }  # latent_dim (a choice) changes G's shape: a taken checkpoint keeps the donor's


@pytest.mark.ray
def test_a_population_based_sweep_exploits_through_the_run_folders(one_second_clips, tmp_path):
    path = _sweep_file(tmp_path, TINY_SWEEP + PBT_POINTS)
    sweep = tune.load_sweep(path, PBT)
    spec = tune.SweepSpec(one_second_clips, str(tmp_path / "sweeps"), "pbt")
    summary = tune.run_sweep(sweep, spec, log=lambda _: None)
    assert summary["finished"] and summary["scheduler"] == "pbt"
    assert [row["status"] for row in summary["rows"]] == ["completed"] * 3
    assert all(row["steps"] == 20 for row in summary["rows"])
    fs = pafs.LocalFileSystem()
    trials = f"{spec.storage_url}/pbt/trials"
    taken = [
        info for info in fs.get_file_info(pafs.FileSelector(trials)) if "-from-" in info.base_name
    ]
    assert taken, "no trial went on from another's checkpoint"
    for info in taken:  # TRIAL-from-DONOR-STEP
        rows = runfolder.read_metrics(fs, info.path)
        # its own lineage row is the last: rows copied from a donor may hold the donor's own
        mark = max(i for i, row in enumerate(rows) if "exploited" in row)
        lineage, step = rows[mark]["exploited"], rows[mark]["step"]
        assert info.base_name.endswith(f"-from-{lineage['trial']}-{step}")
        assert step < 20  # never at the end: a done trial takes nothing
        donor = f"{trials}/{lineage['run']}"
        donors_rows = [row for row in runfolder.read_metrics(fs, donor) if row["step"] <= step]
        assert rows[:mark] == donors_rows  # the donor's curve up to the step it gave
        assert rows[mark + 1]["step"] == step + 2  # then trained on from that step (log_every 2)
        name = runfolder.checkpoint_name(step)
        assert (
            open(f"{info.path}/{name}/state.pt", "rb").read()
            == open(f"{donor}/{name}/state.pt", "rb").read()
        )
        for key, (_, low, high) in tune.perturbed_ranges(sweep.space).items():
            assert low <= lineage["searched"][key] <= high  # perturbed within the searched range
    rows = _csv_rows(open(f"{spec.storage_url}/pbt/results.csv").read())
    lineages = [row["lineage"] for row in rows if row["lineage"]]
    assert len(lineages) >= 1 and all(" from " in text for text in lineages)
    table = "\n".join(tune.format_table(summary))
    assert "went on from (step from trial)" in table


@pytest.mark.ray
@pytest.mark.s3
def test_an_interrupted_sweep_in_s3_resumes_when_the_command_runs_again_and_keeps_all_there(
    one_second_clips, s3_env, tmp_path
):
    """Ctrl-C (SIGINT) to `audiogan tune` on the test's Ray cluster, then the same sweep again:
    the interrupted trial goes on from its checkpoint, the other one runs, and ASHA judges it
    against the first trial's results from before the interrupt (replayed into its rungs).
    Everything the sweep wrote is in the S3 server, and no file holds the secret key."""
    import signal
    import subprocess
    import sys
    import time

    import ray

    bucket = s3_env
    # The good settings first, then the diverging ones (as in THREE_POINTS), one at a time.
    path = _sweep_file(tmp_path, TINY_SWEEP + "\n".join(THREE_POINTS.splitlines()[:4]))
    overrides = ["tune.trials=2", "tune.max_concurrent_trials=1", "max_steps=16"]
    storage_url = f"s3://{bucket}/sweeps"
    fs, _ = storage.resolve(storage_url)
    root = f"{bucket}/sweeps/cut"

    def files() -> list[str]:
        selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
        return [info.path for info in fs.get_file_info(selector) if info.type == pafs.FileType.File]

    command = [sys.executable, "-m", "audiogan.cli", "tune", "--data", one_second_clips,
               "--storage", storage_url, "--name", "cut", "--config", path, "--json",
               *overrides]  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not any(name.endswith("/checkpoint_000008/state.pt") for name in files()):
        assert process.poll() is None and time.time() < deadline, "the sweep did not get going"
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 2  # not done: a job runner must not count it a success
    assert b"interrupted with 2 trial(s) to go" in out  # the running one and the unstarted one
    last = json.loads(out.decode().strip().splitlines()[-1])
    assert (last["finished"], last["unfinished"]) == (False, 2)
    trials = f"{root}/trials"
    (first,) = [info.base_name for info in storage.list_folder(fs, trials, pafs.FileType.Directory)]

    sweep = tune.load_sweep(path, overrides)
    summary = tune.run_sweep(sweep, tune.SweepSpec(one_second_clips, storage_url, "cut"), print)
    assert summary["finished"] and summary["trials"] == 2 and summary["errors"] == 0
    by_trial = {row["trial"]: row for row in summary["rows"]}
    assert by_trial[first]["status"] == "completed" and by_trial[first]["steps"] == 16
    # The resumed ASHA had the first trial's step-4 and step-8 results from before Ctrl-C (its
    # reports after the resume start at 12): without them the diverging trial would be alone
    # at each rung and run to the end.
    (second,) = set(by_trial) - {first}
    assert by_trial[second]["status"] == "stopped early" and by_trial[second]["steps"] < 16
    assert by_trial[second]["lr_g"] == 1.0
    steps = [row["step"] for row in runfolder.read_metrics(fs, f"{trials}/{first}")]
    assert steps == sorted(set(steps)) and steps[-1] == 16  # went on, nothing twice

    assert summary["best_checkpoint"].startswith(f"s3://{bucket}/sweeps/cut/trials/")
    stored = files()
    for name in ("results.csv", "best.json", "plots/mel_fd.png", "sweep.json"):
        assert f"{root}/{name}" in stored
    assert len(_csv_rows(storage.read_bytes(fs, f"{root}/results.csv").decode())) == 2
    best = json.loads(storage.read_bytes(fs, f"{root}/best.json"))
    assert f"{best['checkpoint'].removeprefix('s3://')}/state.pt" in stored
    assert any(name.startswith(f"{root}/tune/") for name in stored)  # Tune's state, to resume
    for name in stored:  # keys travel in memory only
        assert b"testing-secret-value" not in storage.read_bytes(fs, name), name
    _, config, state = generate.load_generator(best["checkpoint"])
    assert state["step"] == best["step"] and config.latent_dim == best["config"]["latent_dim"]
