"""The sweep's search space: defaults, YAML entries, and refusals before any trial starts."""

from __future__ import annotations

import pytest
import yaml

from audiogan import tune
from audiogan.config import ConfigError, TrainConfig


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
