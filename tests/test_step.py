"""gan_step on tensors: both networks change, losses are finite, D is frozen for G's update."""

from __future__ import annotations

import math

import pytest
import torch

from audiogan import step
from audiogan.config import TrainConfig
from audiogan.models import build


def tiny_gan(model: str, **overrides) -> step.GAN:
    loss = "bce" if model == "dcgan" else "wgan-gp"
    n_critic = 1 if model == "dcgan" else 2
    cfg = TrainConfig(model=model, loss=loss, model_dim=4, latent_dim=16, n_critic=n_critic,
                      batch_size=4, **overrides)  # fmt: skip
    torch.manual_seed(0)
    generator, discriminator = build(cfg, 4096, num_classes=2)
    return step.make_gan(generator, discriminator, cfg)


def copy_params(module):
    return [p.detach().clone() for p in module.parameters()]


def changed(before, module):
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


@pytest.mark.parametrize("model", ["wavegan", "dcgan"])
def test_a_seeded_gan_step_changes_both_networks_and_returns_finite_losses(model):
    gan = tiny_gan(model)
    g_before, d_before = copy_params(gan.generator), copy_params(gan.discriminator)
    real = [torch.rand(4, 1, 4096) * 2 - 1 for _ in range(gan.cfg.n_critic)]
    result = step.gan_step(gan, real, [None] * gan.cfg.n_critic)
    assert set(result) == {"d_loss", "g_loss", "gp"}
    assert all(math.isfinite(v) for v in result.values())
    assert changed(g_before, gan.generator) and changed(d_before, gan.discriminator)
    if model == "wavegan":
        assert result["gp"] > 0


def test_gan_step_is_reproducible_from_a_seed():
    results = []
    for _ in range(2):
        gan = tiny_gan("wavegan")
        torch.manual_seed(1)
        real = [torch.rand(4, 1, 4096) * 2 - 1 for _ in range(2)]
        results.append(step.gan_step(gan, real, [None, None]))
    assert results[0] == results[1]


@pytest.mark.parametrize("model", ["wavegan", "dcgan"])
def test_d_is_frozen_during_the_g_step_and_g_during_the_d_step(model):
    gan = tiny_gan(model)
    d_before, g_before = copy_params(gan.discriminator), copy_params(gan.generator)
    step.g_step(gan, 4, None)
    assert not changed(d_before, gan.discriminator)  # the 2019 bug trained D here
    assert all(p.grad is None for p in gan.discriminator.parameters())
    assert all(p.requires_grad for p in gan.discriminator.parameters())
    assert changed(g_before, gan.generator)

    g_before = copy_params(gan.generator)
    step.d_step(gan, torch.rand(4, 1, 4096) * 2 - 1, None)
    assert not changed(g_before, gan.generator)


def test_the_ema_generator_follows_g_slowly():
    gan = tiny_gan("wavegan", ema_decay=0.9)
    ema_before = copy_params(gan.ema)
    real = [torch.rand(4, 1, 4096) * 2 - 1 for _ in range(2)]
    step.gan_step(gan, real, [None, None])
    for old, ema, new in zip(
        ema_before, gan.ema.parameters(), gan.generator.parameters(), strict=True
    ):
        torch.testing.assert_close(ema, 0.9 * old + 0.1 * new.detach())


def test_conditional_step_uses_the_batch_labels():
    gan = tiny_gan("wavegan", conditional=True)
    real = [torch.rand(4, 1, 4096) * 2 - 1 for _ in range(2)]
    labels = [torch.tensor([0, 1, 0, 1])] * 2
    result = step.gan_step(gan, real, labels)
    assert all(math.isfinite(v) for v in result.values())


def test_gan_step_wants_one_batch_per_critic_update():
    gan = tiny_gan("wavegan")
    with pytest.raises(ValueError, match="needs 2 real batches"):
        step.gan_step(gan, [torch.zeros(4, 1, 4096)], [None])
