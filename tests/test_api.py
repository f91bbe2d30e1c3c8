"""The Python API: `audiogan.load(checkpoint)` and what its generator answers, without Ray."""

from __future__ import annotations

import numpy as np
import pytest
from test_step import tiny_gan

import audiogan
from audiogan import checkpoint
from audiogan.api import GeneratorError

RATE = 16000


def _run_folder(tmp_path, model: str, conditional: bool) -> str:
    """A run folder with one finished checkpoint of a tiny, untrained model (2 classes)."""
    gan = tiny_gan(model, conditional=conditional)
    dataset = {"sample_rate_hz": RATE, "clip_samples": 4096, "labels": ["kick", "snare"]}
    run = tmp_path / f"{model}-{conditional}"
    checkpoint.save(str(run / "checkpoint_000003"), checkpoint.training_state(gan, 3, dataset))
    return str(run)


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    return audiogan.load(_run_folder(tmp_path_factory.mktemp("api"), "wavegan", True))


def test_a_run_folder_loads_in_one_line_and_says_what_it_makes(conditional):
    assert conditional.labels == ["kick", "snare"] and conditional.conditional
    assert conditional.sample_rate_hz == RATE and conditional.step == 3
    assert repr(conditional) == (
        "TrainedGenerator(wavegan, step 3, 0.256 s at 16000 Hz, labels=['kick', 'snare'])"
    )


def test_the_same_seed_gives_the_same_clips_and_another_seed_others(conditional):
    audio, rate = conditional.generate(3, label="snare", seed=5)
    assert rate == RATE and audio.shape == (3, 4096) and audio.dtype == np.float32
    assert np.abs(audio).max() <= 1.0 and np.abs(audio).max() > 0
    np.testing.assert_array_equal(conditional.generate(3, label="snare", seed=5)[0], audio)
    assert not np.array_equal(conditional.generate(3, label="snare", seed=6)[0], audio)
    # The label changes the clip made from the same noise.
    assert not np.array_equal(conditional.generate(3, label="kick", seed=5)[0], audio)
    # With no label the classes come in turn: clip 1 of seed 5 is a snare from the same noise.
    in_turn, _ = conditional.generate(3, seed=5)
    np.testing.assert_array_equal(in_turn[1], audio[1])
    assert conditional.generate(1)[0].shape == (1, 4096)  # a seed of its own


def test_an_interpolation_runs_from_one_seeds_clip_to_the_others(conditional):
    row, rate = conditional.interpolate(seed_a=1, seed_b=2, steps=5, label="kick")
    assert rate == RATE and row.shape == (5, 4096)
    first, _ = conditional.generate(1, label="kick", seed=1)
    last, _ = conditional.generate(1, label="kick", seed=2)
    np.testing.assert_allclose(row[0], first[0], atol=1e-6)
    np.testing.assert_allclose(row[-1], last[0], atol=1e-6)
    # Each step moves away from the first clip.
    distances = [float(np.abs(clip - row[0]).mean()) for clip in row]
    assert distances[0] == 0 and all(b > a for a, b in zip(distances, distances[1:], strict=False))


def test_a_gaussian_prior_is_interpolated_along_the_sphere(tmp_path):
    import torch

    from audiogan.generate import render

    baseline = audiogan.load(_run_folder(tmp_path, "dcgan", False))
    row, _ = baseline.interpolate(3, 4, steps=3)
    np.testing.assert_allclose(row[0], baseline.generate(1, seed=3)[0][0], atol=1e-6)
    np.testing.assert_allclose(row[2], baseline.generate(1, seed=4)[0][0], atol=1e-6)
    assert baseline.labels == [] and not baseline.conditional
    # Halfway along the arc: slerp's midpoint is the chord's divided by cos(angle / 2), out
    # where N(0, 1) noise lies rather than inside it.
    start, end = baseline._latent(3, 1)[0], baseline._latent(4, 1)[0]
    angle = torch.arccos(torch.dot(start, end) / (start.norm() * end.norm()))
    arc = (start + end) / (2 * torch.cos(angle / 2))
    np.testing.assert_allclose(row[1], render(baseline.model, arc[None])[0], atol=2e-3)
    assert not np.allclose(row[1], render(baseline.model, ((start + end) / 2)[None])[0], atol=2e-3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda g: g.generate(1, label="hats"),
            "label 'hats' is not one of the model's: kick, snare",
        ),
        (lambda g: g.generate(0), "n must be a whole number of at least 1, got 0"),
        (lambda g: g.generate(1, seed=-1), "seed must be between 0 and 2\\*\\*63 - 1, got -1"),
        (lambda g: g.generate(1, seed="7"), "seed must be a whole number, got '7'"),
        (lambda g: g.interpolate(1, 2, steps=1, label="kick"), "steps must be .* at least 2"),
        (lambda g: g.interpolate(1, 2), "this model is conditional: give label=, one of kick"),
    ],
)
def test_requests_it_cannot_answer_are_clear_errors(conditional, call, message):
    with pytest.raises(GeneratorError, match=message):
        call(conditional)


def test_a_label_for_an_unconditional_model_is_refused(tmp_path):
    plain = audiogan.load(_run_folder(tmp_path, "wavegan", False))
    with pytest.raises(GeneratorError, match="unconditional"):
        plain.generate(1, label="kick")
    assert plain.generate(2, seed=0)[0].shape == (2, 4096)
