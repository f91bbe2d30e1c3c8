"""Checkpoints without Ray: a round trip restores identical tensors, and a checkpoint that
would run code, or is missing, foreign or of another model, is a clear error."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch
from test_step import tiny_gan

from audiogan import checkpoint, step
from audiogan.config import TrainConfig, to_dict


def test_a_checkpoint_round_trip_restores_identical_tensors(tmp_path):
    gan = tiny_gan("wavegan")
    real = [torch.rand(4, 1, 4096) * 2 - 1 for _ in range(2)]
    step.gan_step(gan, real, [None, None])
    dataset = {"sample_rate_hz": 16000, "labels": ["a", "b"]}
    state = checkpoint.training_state(gan, 7, dataset, world_size=2)
    checkpoint.save(str(tmp_path / "checkpoint_000007"), state)

    fresh = tiny_gan("wavegan")  # one worker resuming what two trained: an elastic shrink
    loaded = checkpoint.load(str(tmp_path / "checkpoint_000007"))
    assert checkpoint.restore(fresh, loaded) == 7
    assert loaded["dataset"]["labels"] == ["a", "b"] and loaded["world_size"] == 2
    for name in ("generator", "discriminator"):
        ours, theirs = getattr(gan, name).state_dict(), getattr(fresh, name).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    for a, b in zip(gan.ema.parameters(), fresh.ema.parameters(), strict=True):
        assert torch.equal(a, b)
    assert (
        fresh.opt_g.state_dict()["state"][0]["step"] == gan.opt_g.state_dict()["state"][0]["step"]
    )
    # The same next step (same batch, same noise) on both: identical results.
    batch = [torch.rand(4, 1, 4096) * 2 - 1 for _ in range(2)]
    torch.manual_seed(3)
    original = step.gan_step(gan, batch, [None, None])
    torch.manual_seed(3)
    assert step.gan_step(fresh, batch, [None, None]) == original


def test_a_resume_takes_the_learning_rates_of_its_config_and_keeps_adams_moments(tmp_path):
    """A resumed run (or a population-based sweep's trial that took another's checkpoint and
    perturbed its learning rates) trains with its own config's rates, not the checkpoint's."""
    gan = tiny_gan("wavegan")
    step.gan_step(gan, [torch.rand(4, 1, 4096) * 2 - 1 for _ in range(2)], [None, None])
    state = checkpoint.training_state(gan, 1, {"sample_rate_hz": 16000, "labels": []})
    fresh = tiny_gan("wavegan", lr_g=3e-4, lr_d=5e-5, betas=(0.0, 0.99))
    checkpoint.restore(fresh, state)
    assert [g["lr"] for g in fresh.opt_g.param_groups] == [3e-4]
    assert [g["lr"] for g in fresh.opt_d.param_groups] == [5e-5]
    assert fresh.opt_d.param_groups[0]["betas"] == (0.0, 0.99)
    moments = fresh.opt_g.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(moments, gan.opt_g.state_dict()["state"][0]["exp_avg"])


class RunsCode:
    def __reduce__(self):
        return (print, ("this checkpoint ran code",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    path = tmp_path / "state.pt"
    torch.save({"format": checkpoint.FORMAT, "payload": RunsCode()}, path)
    with pytest.raises(checkpoint.CheckpointError, match="refused"):
        checkpoint.load(str(path))
    assert "ran code" not in capsys.readouterr().out


def test_missing_foreign_and_incompatible_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        checkpoint.load(str(tmp_path / "nowhere"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(str(tmp_path / "junk.pt"))
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(checkpoint.CheckpointError, match="not an audiogan checkpoint"):
        checkpoint.load(str(tmp_path / "other.pt"))

    state = checkpoint.training_state(tiny_gan("wavegan"), 1, {})
    with pytest.raises(checkpoint.CheckpointError, match="differs from this run"):
        checkpoint.restore(tiny_gan("dcgan"), state)
    assert pickle.dumps(state)  # plain data all the way down
    # A harmonic G of two sources is another shape than one of one source.
    one = TrainConfig(model="ddsp", discriminator="stft")
    saved = {"config": to_dict(one)}
    checkpoint.check_compatible(one, saved)
    with pytest.raises(checkpoint.CheckpointError, match=r"sources.*\(.*, 1, .*\) differs"):
        checkpoint.check_compatible(dataclasses.replace(one, sources=2), saved)
