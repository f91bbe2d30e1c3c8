"""The evaluation classifier and `audiogan evaluate` on a small synthetic dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import tone

from audiogan import (
    autoencode,
    checkpoint,
    compare,
    data,
    evaluate,
    evaluator,
    metrics,
    models,
    samples,
    synth,
)
from audiogan.config import PrepareConfig, TrainConfig
from audiogan.dataset import read_manifest
from audiogan.errors import AudioganError
from audiogan.step import make_gan

pytestmark = pytest.mark.ray  # the dataset is prepared with Ray Data
RATE = 16000
# The stated accuracy on 4 synthetic classes, 24 files each, clips of one file in five held out.
MIN_ACCURACY = 0.7


@pytest.fixture(scope="module")
def dataset(ray_session, tmp_path_factory):
    """4 synthetic classes x 24 files cut into 1 s windows, with a fitted classifier."""
    root = tmp_path_factory.mktemp("evaluate")
    synth.synthesize(str(root / "raw"), clips_per_class=24, seed=11)
    prepared = str(root / "prepared")
    data.prepare(
        str(root / "raw"), prepared, PrepareConfig(clip_seconds=1.0, crop="windows"),
        log=lambda _: None,
    )  # fmt: skip
    summary = evaluator.fit(prepared, epochs=20, log=lambda _: None)
    return prepared, summary


def _checkpoint(folder, dataset_url: str, conditional: bool) -> str:
    """An untrained generator's checkpoint, saved as training saves them."""
    clips = evaluator.read_labelled_clips(dataset_url)
    cfg = TrainConfig(model_dim=4, latent_dim=16, conditional=conditional)
    torch.manual_seed(0)
    generator, discriminator = models.build(cfg, clips.clip_samples, len(clips.labels))
    info = {"clip_samples": clips.clip_samples, "sample_rate_hz": RATE, "labels": clips.labels}
    checkpoint.save(
        str(folder), checkpoint.training_state(make_gan(generator, discriminator, cfg), 7, info)
    )
    return str(folder)


def result_labels(prepared: str) -> list[str]:
    return evaluator.read_labelled_clips(prepared).labels


def test_the_classifier_learns_the_synthetic_classes(dataset):
    prepared, summary = dataset
    assert summary["held_out_accuracy"] >= MIN_ACCURACY
    assert (
        summary["held_out_clips"] > 20
        and summary["train_clips"] > 3 * summary["held_out_clips"] / 2
    )
    assert set(summary["held_out_accuracy_per_class"]) == set(summary["labels"])
    model, about = evaluator.load(summary["path"])
    assert about["held_out_accuracy"] == summary["held_out_accuracy"]
    assert not model.training


def test_the_judge_of_training_scores_real_clips_near_and_noise_far(dataset, tmp_path):
    """classifier_fd during training: the features of a few clips against the reference
    Gaussian the classifier keeps, which is that of the clips `evaluate` compares with."""
    prepared, summary = dataset
    url = evaluator.usable_judge(prepared, read_manifest(prepared))
    judge = evaluator.load_judge(url)
    clips = evaluator.read_labelled_clips(prepared)
    reference = evaluator.reference_audio(clips)
    assert summary["reference_clips"] == len(reference) == int((~clips.held_out).sum())
    _, features = evaluator.outputs(judge.classifier, reference)
    mean, _ = metrics.gaussian(features)
    assert np.allclose(judge.mean, mean)
    real = judge.distance(clips.held_out_audio[:16])  # as few as an evaluation's eval_clips
    noise = judge.distance(np.random.default_rng(0).uniform(-0.5, 0.5, (16, clips.clip_samples)))
    assert 0 < real < noise / 3

    state = torch.load(f"{url}/state.pt", weights_only=True)
    del state["reference"]  # as an older audiogan saved it
    torch.save(state, tmp_path / "state.pt")
    with pytest.raises(evaluator.EvaluatorError, match="older audiogan.*evaluator fit"):
        evaluator.load_judge(str(tmp_path))
    assert evaluator.judge_url(str(tmp_path / "no dataset")) is None


def test_the_judge_of_a_dataset_named_by_a_relative_path_is_found_from_any_folder(
    dataset, tmp_path, monkeypatch
):
    """Training workers run in folders of their own: the classifier's URL they get is
    absolute, though the dataset was given relative to where the command ran."""
    prepared, _ = dataset  # its classifier fitted
    monkeypatch.chdir(os.path.dirname(prepared))
    url = evaluator.judge_url(os.path.basename(prepared))
    assert url == os.path.join(prepared, evaluator.DEFAULT_DIR)
    monkeypatch.chdir(tmp_path)  # a worker's folder
    assert evaluator.load_judge(url).about["labels"]


def test_real_clips_score_higher_than_white_noise(dataset, tmp_path):
    prepared, _ = dataset
    rng = np.random.default_rng(0)
    for i in range(40):
        noise = np.clip(0.3 * rng.standard_normal(RATE), -1, 1).astype(np.float32)
        (tmp_path / f"noise_{i:02d}.wav").write_bytes(samples.wav_bytes(noise, RATE))
    result = evaluate.evaluate(prepared, samples_url=str(tmp_path), n=40, log=lambda _: None)
    figures = result["metrics"]
    assert figures["inception_score"]["real"] > figures["inception_score"]["generated"]
    assert figures["inception_score"]["ratio"] < 1
    assert figures["mel_fd"]["generated"] > 3 * figures["mel_fd"]["real"]
    assert figures["classifier_fd"]["generated"] > 3 * figures["classifier_fd"]["real"]
    assert result["generated_clips"] == result["real_clips"] == 40


def test_evaluate_json_has_every_field(dataset, tmp_path):
    prepared, _ = dataset
    ckpt = _checkpoint(tmp_path / "ckpt", prepared, conditional=True)
    done = subprocess.run(
        [sys.executable, "-m", "audiogan.cli", "evaluate", "--data", prepared,
         "--checkpoint", ckpt, "--n", "24", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["step"] == 7 and result["model"] == "wavegan"
    assert set(result["metrics"]) == {
        "mel_fd",
        "classifier_fd",
        "inception_score",
        "label_accuracy",
    }
    for figures in result["metrics"].values():
        assert {"generated", "real", "ratio"} <= set(figures)
    assert {"generated_std", "real_std"} <= set(result["metrics"]["inception_score"])
    assert 0 <= result["metrics"]["label_accuracy"]["generated"] <= 1
    for kind in ("generated", "real"):
        assert {
            "silent_share",
            "rms_mean",
            "rms_median",
            "centroid_hz_mean",
            "centroid_hz_q3",
        } <= set(result["diagnostics"][kind])
    assert "| inception_score |" in done.stdout  # the table comes first
    for kind in ("generated", "real"):
        counts = result["predicted_labels"][kind]["counts"]
        assert sum(counts.values()) == 24 and set(counts) == set(result_labels(prepared))


def test_clear_errors_for_a_missing_classifier_and_foreign_samples(dataset, tmp_path):
    prepared, _ = dataset
    with pytest.raises(evaluator.EvaluatorError, match="audiogan evaluator fit"):
        evaluate.evaluate(prepared, samples_url=str(tmp_path), evaluator_url=str(tmp_path / "none"))
    (tmp_path / "fast.wav").write_bytes(samples.wav_bytes(tone(440, 1.0, 22050), 22050))
    with pytest.raises(AudioganError, match="22050 Hz"):
        evaluate.evaluate(prepared, samples_url=str(tmp_path), log=lambda _: None)
    with pytest.raises(AudioganError, match="empty does not exist; give a folder of WAVs"):
        evaluate.evaluate(prepared, samples_url=str(tmp_path / "empty"), log=lambda _: None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AudioganError, match="no .wav"):
        evaluate.evaluate(prepared, samples_url=str(tmp_path / "empty"), log=lambda _: None)
    with pytest.raises(AudioganError, match="fast.wav is a file; give a folder of WAVs"):
        evaluate.evaluate(prepared, samples_url=str(tmp_path / "fast.wav"), log=lambda _: None)
    with pytest.raises(AudioganError, match="exactly one"):
        evaluate.evaluate(prepared, log=lambda _: None)
    one = tmp_path / "one"
    one.mkdir()
    (one / "only.wav").write_bytes(samples.wav_bytes(tone(440, 1.0, 16000), 16000))
    with pytest.raises(AudioganError, match="need at least 2 generated clips to score; got 1"):
        evaluate.evaluate(prepared, samples_url=str(one), log=lambda _: None)


def test_the_classifier_needs_two_classes(ray_session, tmp_path, write_wav):
    for i in range(6):
        write_wav(tmp_path / "raw" / "Only" / f"{i}.wav", tone(300 + 50 * i, 1.5, RATE), RATE)
    data.prepare(str(tmp_path / "raw"), str(tmp_path / "prep"), PrepareConfig(clip_seconds=1.0),
                 log=lambda _: None)  # fmt: skip
    with pytest.raises(evaluator.EvaluatorError, match="at least 2"):
        evaluator.fit(str(tmp_path / "prep"), log=lambda _: None)


def test_autoencode_inverts_g_and_writes_originals_beside_reconstructions(dataset, tmp_path):
    prepared, _ = dataset
    ckpt = _checkpoint(tmp_path / "run" / "checkpoint_000007", prepared, conditional=False)
    result = autoencode.autoencode(prepared, ckpt, steps=30, log=lambda _: None)
    out = tmp_path / "run" / "autoencode"  # the default: beside the run's checkpoints
    assert result["out"] == str(out)
    assert result["final_train_loss"] < result["first_train_loss"]
    held = result["held_out"]
    assert np.isfinite([held["snr_db"], held["waveform_mse"], held["log_mel_l1"]]).all()
    assert held["log_mel_l1_of_silence"] > 0
    for i in range(4):
        assert (out / f"original_{i:02d}.wav").exists()
        assert (out / f"reconstruction_{i:02d}.wav").exists()
    assert (out / "autoencode.png").stat().st_size > 10_000
    assert json.loads((out / "autoencode.json").read_text())["held_out"] == held


def test_compare_trains_each_recipe_on_one_budget_and_scores_them(dataset, tmp_path):
    prepared, _ = dataset
    runs = str(tmp_path / "runs")
    recipes = ("dcgan", "wavegan-gp", "ddsp-stft")
    small = {"model_dim": 4, "latent_dim": 8, "disc_channels": 2, "batch_size": 4}

    said: list[str] = []

    def run(n=8, resume=False):
        return compare.compare(
            prepared, runs, 0.01, 0, recipes, n=n, overrides=small, log=said.append,
            resume=resume,
        )  # fmt: skip

    result = run()
    assert list(result["recipes"]) == list(recipes)
    for row in result["recipes"].values():
        assert row["steps"] == 10  # max_minutes is checked at the first log step (log_every=10)
        assert {"mel_fd", "classifier_fd", "inception_score"} <= set(row["metrics"])
    assert result["best"] == "ddsp-stft"  # the only recipe that is neither baseline nor reference
    assert set(result["targets_met"]) == {"inception_score_ratio", "classifier_fd_vs_reference"}
    assert result["overrides"] == small
    assert json.loads((tmp_path / "runs" / "compare.json").read_text()) == result
    with pytest.raises(AudioganError, match="--overwrite"):  # a resumed run: not the same budget
        run()

    # --resume: as if the comparison had been cut short while wavegan-gp trained (after dcgan,
    # before ddsp-stft). The other two are kept as they were, their run folders untouched;
    # wavegan-gp trains again from scratch, and the rows keep the order of --recipes.
    cut = json.loads((tmp_path / "runs" / "compare.json").read_text())
    del cut["recipes"]["wavegan-gp"]
    (tmp_path / "runs" / "compare.json").write_text(json.dumps(cut))
    for name in recipes:
        (tmp_path / "runs" / f"compare-{name}" / "marker").write_text("before")
    said.clear()
    resumed = run(resume=True)
    assert list(resumed["recipes"]) == list(recipes)
    for name in ("dcgan", "ddsp-stft"):
        assert resumed["recipes"][name] == result["recipes"][name]
        assert (tmp_path / "runs" / f"compare-{name}" / "marker").exists()
        assert f"compare: {name} was measured before on the same terms; kept (--resume)" in said
    assert not (tmp_path / "runs" / "compare-wavegan-gp" / "marker").exists()
    assert any(line.startswith("compare: training wavegan-gp") for line in said)
    assert json.loads((tmp_path / "runs" / "compare.json").read_text()) == resumed
    with pytest.raises(AudioganError, match=r"measured with --n 8 \(now 9\); --resume needs"):
        run(n=9, resume=True)


def test_compare_over_two_kinds_makes_each_dataset_and_sums_up(ray_session, tmp_path):
    """One recipe (the reference) to keep it short: test_compare_trains_each_recipe... has
    several on one dataset, and the summary's arithmetic is tests/test_compare.py's."""
    suite, runs = str(tmp_path / "suite"), str(tmp_path / "runs")
    recipes = ("wavegan-gp",)
    small = {"model_dim": 4, "latent_dim": 8, "disc_channels": 2, "batch_size": 4}
    # --steps 3: each recipe trains exactly 3 G steps, whatever they cost.
    result = compare.compare_kinds(
        suite, runs, 0.0, ("percussion", "speech"), workers=0, recipes=recipes, n=8,
        overrides=small, clips_per_class=6, log=lambda _: None, steps=3,
    )  # fmt: skip
    assert list(result["kinds"]) == ["percussion", "speech"]
    assert (result["budget_steps"], result["budget_minutes"]) == (3, None)
    for kind, by_kind in result["kinds"].items():
        assert by_kind["recipes"]["wavegan-gp"]["steps"] == 3
        labels = set(evaluator.read_labelled_clips(f"{suite}/{kind}/prepared").labels)
        assert labels == set(synth.KINDS[kind])  # each kind its own dataset and classifier
        assert (tmp_path / "suite" / kind / "prepared" / "evaluator" / "state.pt").exists()
        assert list(by_kind["recipes"]) == list(recipes)
        assert (tmp_path / "runs" / kind / "compare.json").exists()
    summary = result["summary"]
    assert summary["best"] is None  # the reference is no candidate
    reference = summary["recipes"]["wavegan-gp"]
    assert reference["fd_share"] == {"percussion": 1.0, "speech": 1.0}
    assert reference["mean_fd_share"] == 1.0 and not reference["targets_met_on_every_kind"]
    assert json.loads((tmp_path / "runs" / "suite.json").read_text()) == result
    # A kind made once is kept, and not taken for one of another size.
    assert compare.kind_dataset(suite, "speech", 6) == f"{suite}/speech/prepared"
    with pytest.raises(AudioganError, match="made with 6 clips a class; give --clips-per-class 6"):
        compare.kind_dataset(suite, "speech", 7)
    with pytest.raises(AudioganError, match="speech/compare-wavegan-gp exists"):
        compare.compare_kinds(suite, runs, 0.01, ("speech", "percussion"), recipes=recipes)
    # Resumed with everything measured, nothing trains again and the result is the same.
    said: list[str] = []
    again = compare.compare_kinds(
        suite, runs, 0.0, ("percussion", "speech"), workers=0, recipes=recipes, n=8,
        overrides=small, clips_per_class=6, log=said.append, resume=True, steps=3,
    )  # fmt: skip
    assert again == result
    assert not any(line.startswith("compare: training") for line in said)
    assert said.count("compare: wavegan-gp was measured before on the same terms; kept "
                      "(--resume)") == 2  # fmt: skip
    # A later kind measured on other terms is refused before the first kind is looked at.
    speech = tmp_path / "runs" / "speech" / "compare.json"
    speech.write_text(json.dumps(json.loads(speech.read_text()) | {"budget_steps": 4}))
    said.clear()
    with pytest.raises(AudioganError, match=r"speech/compare.json was measured with --steps "
                                            r"4 \(now 3\)"):  # fmt: skip
        compare.compare_kinds(
            suite, runs, 0.0, ("percussion", "speech"), workers=0, recipes=recipes, n=8,
            overrides=small, clips_per_class=6, log=said.append, resume=True, steps=3,
        )  # fmt: skip
    assert said == []
    lines = compare.format_kinds(result)
    assert "## percussion" in lines and "## speech" in lines
    assert lines[-1] == "| wavegan-gp | 1.0 / {} | 1.0 / {} | 1.0 / {} | missed |".format(
        reference["is_ratio"]["percussion"], reference["is_ratio"]["speech"],
        reference["mean_is_ratio"],
    )  # fmt: skip
