"""`audiogan compare`'s recipes and verdict, without training anything (no Ray)."""

from __future__ import annotations

import json

import pytest
import torch

from audiogan import compare, evaluator, synth
from audiogan.config import PRESETS_DIR, RECIPES, ConfigError, to_dict
from audiogan.errors import AudioganError


def test_every_recipe_names_a_preset_that_loads_with_the_budget():
    configs = compare.recipe_configs(compare.DEFAULT_RECIPES, 20.0)
    assert list(configs) == list(RECIPES)
    for name, (preset, cfg) in configs.items():
        assert preset == PRESETS_DIR / RECIPES[name][0]
        assert cfg.max_minutes == 20.0 and cfg.max_steps == 10**7
    assert configs["wavegan-gp"][1].n_critic == 5 and configs["wavegan-gp"][1].loss == "wgan-gp"


def test_unknown_recipes_and_recipe_keys_are_refused(tmp_path):
    with pytest.raises(AudioganError, match="unknown recipe 'nope'; known: dcgan, wavegan-gp"):
        compare.recipe_configs(("wavegan-gp", "nope"), 20.0)
    bad = tmp_path / "mine.yaml"
    bad.write_text("model: wavegan\ncritic_steps: 2\n")
    with pytest.raises(ConfigError, match="unknown TrainConfig key.*critic_steps"):
        compare.recipe_configs((str(bad),), 20.0)
    with pytest.raises(ConfigError, match="unknown TrainConfig key.*lr"):
        compare.recipe_configs(("stft",), 20.0, {"lr": 1e-3})
    for key in ("max_minutes", "max_steps"):
        with pytest.raises(AudioganError, match=f"{key} is set by the budget"):
            compare.recipe_configs(("stft",), 20.0, {key: 3})
    clash = tmp_path / "stft.yaml"
    clash.write_text("model: wavegan\n")
    with pytest.raises(AudioganError, match="a built-in recipe's name; rename it"):
        compare.recipe_configs((str(clash),), 20.0)
    with pytest.raises(AudioganError, match="twice"):
        compare.recipe_configs(("stft", "stft"), 20.0)
    with pytest.raises(AudioganError, match="--minutes must be positive"):
        compare.recipe_configs(("stft",), 0)
    with pytest.raises(AudioganError, match="give --minutes or --steps instead"):
        compare.recipe_configs(("stft",), 20.0, {"max_steps": 3}, steps=3)


def test_a_budget_of_steps_trains_every_recipe_that_many_g_steps_without_a_clock():
    configs = compare.recipe_configs(("stft", "ddsp-stft-cond"), 20.0, steps=500)
    for _, cfg in configs.values():
        assert (cfg.max_steps, cfg.max_minutes) == (500, 0.0)
    with pytest.raises(AudioganError, match="--steps must be positive"):
        compare.recipe_configs(("stft",), 20.0, steps=-1)
    terms = compare.compare_terms("d", 20.0, 2, {}, 256, steps=500)
    assert (terms["budget_steps"], terms["budget_minutes"]) == (500, None)
    # A compare.json written before --steps (no budget_steps) resumes under a minutes budget.
    assert compare.compare_terms("d", 20.0, 2, {}, 256)["budget_steps"] is None
    result = terms | {"classifier_held_out_accuracy": 1.0, "recipes": {"stft": _row(5.0, 0.5)}}
    assert compare.format_table(result)[0].startswith("compare: 500 G steps of training each")


def test_a_result_of_a_minutes_budget_is_not_resumed_by_steps(tmp_path):
    """A compare.json written before --steps existed (no budget_steps) was a minutes budget."""
    minutes = compare.compare_terms("d", 20.0, 2, {}, 256)
    del minutes["budget_steps"]
    (tmp_path / "compare.json").write_text(json.dumps(minutes | {"recipes": {}}))
    assert compare.measured_before(str(tmp_path), compare.compare_terms("d", 20.0, 2, {}, 256))
    steps = compare.compare_terms("d", 20.0, 2, {}, 256, steps=500)
    with pytest.raises(AudioganError, match=r"--minutes 20.0 \(now unset\), --steps unset "
                                            r"\(now 500\); --resume needs the same"):  # fmt: skip
        compare.measured_before(str(tmp_path), steps)


def test_a_preset_file_is_a_recipe_named_after_it(tmp_path):
    mine = tmp_path / "my-recipe.yaml"
    mine.write_text("model: wavegan\nloss: hinge\nn_critic: 1\n")
    configs = compare.recipe_configs((str(mine), "dcgan"), 5.0, {"batch_size": 8})
    assert list(configs) == ["my-recipe", "dcgan"]
    assert configs["my-recipe"][1].loss == "hinge" and configs["my-recipe"][1].batch_size == 8


def _row(classifier_fd: float, is_ratio: float, steps: int = 100) -> dict:
    return {
        "steps": steps,
        "metrics": {
            "mel_fd": {"generated": 1000.0, "real": 100.0},
            "classifier_fd": {"generated": classifier_fd, "real": 1.5},
            "inception_score": {
                "generated": round(3 * is_ratio, 4),
                "real": 3.0,
                "ratio": is_ratio,
            },
        },
    }


def test_the_verdict_takes_the_best_recipe_against_the_reference():
    rows = {
        "dcgan": _row(10.0, 0.9),  # the baseline never wins, however it scores
        "wavegan-gp": _row(80.0, 0.35),
        "stft": _row(30.0, 0.5),
        "ddsp-stft": _row(16.0, 0.45),
    }
    verdict = compare._verdict(rows)
    assert verdict["best"] == "ddsp-stft"
    assert verdict["classifier_fd_vs_reference"] == 0.2
    assert verdict["targets_met"] == {
        "inception_score_ratio": True,
        "classifier_fd_vs_reference": True,
    }
    rows["ddsp-stft"] = _row(24.0, 0.29)
    verdict = compare._verdict(rows)
    assert verdict["best"] == "ddsp-stft" and verdict["classifier_fd_vs_reference"] == 0.3
    assert verdict["targets_met"] == {
        "inception_score_ratio": False,
        "classifier_fd_vs_reference": False,
    }
    result = {
        "budget_minutes": 20.0,
        "workers": 2,
        "data": "d",
        "classifier_held_out_accuracy": 1.0,
        "recipes": rows,
        **verdict,
    }
    table = "\n".join(compare.format_table(result))
    assert "| ddsp-stft | 100 | 1000.0 (100.0) | 24.0 (1.5) | 0.3 | 0.87 (3.0) | 0.29 |" in table
    assert "classifier FD / wavegan-gp's 0.3 (target <= 0.25: missed)" in table
    assert compare._verdict({"dcgan": _row(1.0, 1.0)}) == {}


def test_the_summary_over_kinds_holds_every_kind_to_the_suite_targets():
    by_kind = {
        "speech": {"recipes": {"wavegan-gp": _row(100.0, 0.2), "a": _row(10.0, 0.7),
                               "b": _row(30.0, 0.9)}},
        "textures": {"recipes": {"wavegan-gp": _row(50.0, 0.3), "a": _row(20.0, 0.8),
                                 "b": _row(5.0, 0.95)}},
    }  # fmt: skip
    summary = compare.summarise_kinds(by_kind)
    a, b = summary["recipes"]["a"], summary["recipes"]["b"]
    assert a["fd_share"] == {"speech": 0.1, "textures": 0.4}
    assert a["mean_fd_share"] == 0.2 and b["mean_fd_share"] == pytest.approx(0.1732, abs=1e-4)
    assert summary["best"] == "b"  # the lowest geometric mean, though it loses on speech
    assert not a["targets_met_on_every_kind"] and not b["targets_met_on_every_kind"]
    by_kind["speech"]["recipes"]["b"] = _row(15.0, 0.9)
    assert compare.summarise_kinds(by_kind)["recipes"]["b"]["targets_met_on_every_kind"]
    # A recipe measured on one kind only (compare --resume keeps it) meets no target over
    # all kinds and is not the best, however good that kind is.
    by_kind["textures"]["recipes"]["c"] = _row(1.0, 0.99)
    summary = compare.summarise_kinds(by_kind)
    assert summary["recipes"]["c"]["fd_share"] == {"textures": 0.02}
    assert not summary["recipes"]["c"]["targets_met_on_every_kind"]
    assert summary["best"] == "b"
    terms = {"budget_minutes": 20.0, "workers": 2, "data": "d",
             "classifier_held_out_accuracy": 1.0}  # fmt: skip
    kinds = {kind: terms | result for kind, result in by_kind.items()}
    lines = compare.format_kinds({"kinds": kinds, "summary": summary})
    assert "| c | not run | 0.02 / 0.99 | 0.02 / 0.99 | missed |" in lines


def test_kinds_are_named_or_all_and_unknown_ones_refused():
    assert compare.suite_kinds("all") == tuple(synth.KINDS)
    assert compare.suite_kinds("speech, textures") == ("speech", "textures")
    with pytest.raises(AudioganError, match="unknown kind birdsong; known: instruments"):
        compare.suite_kinds("speech,birdsong")
    with pytest.raises(AudioganError, match="twice"):
        compare.suite_kinds("speech,speech")


def test_resume_refuses_a_result_of_other_terms_or_none_at_all(tmp_path):
    """--resume's checks that need no training (tests/test_evaluate.py resumes real runs)."""
    terms = compare.compare_terms(str(tmp_path / "data"), 20.0, 2, {"batch_size": 8}, 256)
    assert compare.measured_before(str(tmp_path), terms) == {}  # nothing measured yet
    result = tmp_path / "compare.json"
    result.write_text(json.dumps(terms | {"recipes": {"stft": _row(50.0, 0.5)}}))
    assert compare.measured_before(str(tmp_path), terms)["recipes"] == {"stft": _row(50.0, 0.5)}
    other = compare.compare_terms(str(tmp_path / "data"), 10.0, 2, {}, 256)
    with pytest.raises(AudioganError, match=r"--minutes 20.0 \(now 10.0\), key=value settings "
                                            r"\{'batch_size': 8\} \(now \{\}\)"):  # fmt: skip
        compare.measured_before(str(tmp_path), other)
    result.write_text(json.dumps({k: v for k, v in terms.items() if k != "n"} | {"recipes": {}}))
    with pytest.raises(AudioganError, match=r"--n not recorded \(written before --resume\)"):
        compare.measured_before(str(tmp_path), terms)
    for damaged in ("{not json", "[1, 2]", json.dumps(terms)):
        result.write_text(damaged)
        with pytest.raises(AudioganError, match="compare.json is not a compare result"):
            compare.measured_before(str(tmp_path), terms)


def test_a_row_whose_preset_changed_since_is_measured_again():
    configs = compare.recipe_configs(("stft", "ddsp-stft"), 20.0)
    said: list[str] = []
    row = _row(50.0, 0.5) | {"config": to_dict(configs["stft"][1])}
    assert compare._same_recipe("stft", row, configs, said.append)
    assert compare._same_recipe("dcgan", row, configs, said.append)  # not named: kept as it is
    edited = row | {"config": row["config"] | {"lr_g": 1e-3}}
    assert not compare._same_recipe("stft", edited, configs, said.append)
    assert said == ["compare: stft's preset changed since it was measured; it trains again"]
    # A row recorded before a key was added to TrainConfig (at its default) still stands; one
    # with a key TrainConfig no longer has does not.
    older = row | {"config": {k: v for k, v in row["config"].items() if k != "sources"}}
    assert compare._same_recipe("stft", older, configs, said.append)
    removed = row | {"config": row["config"] | {"no_such_key": 1}}
    assert not compare._same_recipe("stft", removed, configs, said.append)
    # ... but a recipe that sets that key to another value than the default trains again.
    two = compare.recipe_configs(("ddsp2-stft-cond",), 20.0)
    before = {k: v for k, v in to_dict(two["ddsp2-stft-cond"][1]).items() if k != "sources"}
    assert not compare._same_recipe("ddsp2-stft-cond", {"config": before}, two, said.append)


def test_rows_scored_by_another_classifier_are_not_kept():
    """The same held-out accuracy is not the same yardstick: a classifier fitted again on data
    that differs in the last bits has other weights, and its own fingerprint."""
    torch.manual_seed(0)
    first = evaluator.Classifier(4, 16000)
    same = evaluator.Classifier(4, 16000)
    same.load_state_dict(first.state_dict())
    other = evaluator.Classifier(4, 16000)
    other.load_state_dict(first.state_dict())
    with torch.no_grad():
        other.head.bias[0] += 1e-6
    yardstick = evaluator.fingerprint(first)
    assert evaluator.fingerprint(same) == yardstick != evaluator.fingerprint(other)

    before = {"classifier_held_out_accuracy": 0.99}
    said: list[str] = []
    kept = {"a": {"classifier_fingerprint": yardstick}, "b": {}}
    compare.check_yardstick("runs", before, kept, 0.99, yardstick, said.append)
    assert said == [
        "compare: b was scored before compare recorded the classifier's fingerprint; kept on "
        "its held-out accuracy, which is the same"
    ]
    with pytest.raises(AudioganError, match=r"runs/compare.json: a was scored by another "
                                            r"evaluation classifier \(fingerprint"):  # fmt: skip
        compare.check_yardstick("runs", before, kept, 0.99, evaluator.fingerprint(other))
    with pytest.raises(AudioganError, match=r"held-out accuracy 0\.99, now 0\.98"):
        compare.check_yardstick("runs", before, kept, 0.98, yardstick)
    compare.check_yardstick("runs", before, {}, 0.98, "x")  # nothing kept, nothing to compare
