"""The losses as small pure functions, against hand-computed values: BCE, Wasserstein and its
gradient penalty, hinge, R1, feature matching, and their average over sub-discriminators."""

from __future__ import annotations

import math

import pytest
import torch

from audiogan import losses


def test_bce_losses_match_hand_computed_values():
    real, fake = torch.tensor([0.0, 2.0]), torch.tensor([-1.0, 0.0])
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expected_d = (softplus(-0.0) + softplus(-2.0)) / 2 + (softplus(-1.0) + softplus(0.0)) / 2
    assert losses.bce_d(real, fake).item() == pytest.approx(expected_d, rel=1e-6)
    assert losses.bce_g(fake).item() == pytest.approx((softplus(1.0) + softplus(0.0)) / 2)


def test_wasserstein_losses():
    real, fake = torch.tensor([3.0, 1.0]), torch.tensor([0.5, -0.5])
    assert losses.wgan_d(real, fake).item() == pytest.approx(0.0 - 2.0)
    assert losses.wgan_g(fake).item() == pytest.approx(0.0)


def test_gradient_penalty_of_a_linear_critic_is_exact():
    # D(x) = w . x has gradient w everywhere: the penalty is (||w|| - 1)^2 = (5 - 1)^2 = 16.
    w = torch.tensor([3.0, 4.0])

    def critic(x):
        return (x.flatten(1) * w).sum(dim=1)

    real, fake = torch.randn(6, 1, 2), torch.randn(6, 1, 2)
    assert losses.gradient_penalty(critic, real, fake).item() == pytest.approx(16.0)
    unit = torch.tensor([0.6, 0.8])
    assert losses.gradient_penalty(lambda x: (x.flatten(1) * unit).sum(1), real, fake).item() == (
        pytest.approx(0.0, abs=1e-10)
    )


def test_feature_matching_is_zero_for_identical_maps_and_l1_otherwise():
    maps = [torch.randn(2, 3, 5), torch.randn(2, 4, 2)]
    assert losses.feature_matching(maps, [m.clone() for m in maps]).item() == 0.0
    shifted = [m + 1 for m in maps]
    assert losses.feature_matching(maps, shifted).item() == pytest.approx(1.0)


def test_hinge_losses_match_hand_computed_values():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-3.0, 0.0])
    # relu(1 - real) = (0, 0.5), relu(1 + fake) = (0, 1): means 0.25 + 0.5.
    assert losses.hinge_d(real, fake).item() == pytest.approx(0.75)
    assert losses.hinge_g(fake).item() == pytest.approx(1.5)


def test_losses_of_several_sub_discriminators_average_over_them():
    # Two sub-discriminators with 1 and 3 patches a clip: each weighs the same.
    real = [torch.tensor([[2.0], [0.0]]), torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, -2.0]])]
    fake = [torch.tensor([[0.0], [0.0]]), torch.zeros(2, 3)]
    # relu(1 - real): means 0.5 and 5 / 6; relu(1 + fake) = 1 everywhere.
    assert losses.hinge_d(real, fake).item() == pytest.approx((0.5 + 5 / 6) / 2 + 1.0)
    assert losses.wgan_d(real, fake).item() == pytest.approx(-(1.0 + 1.0 / 6) / 2)
    assert losses.scores(real).tolist() == pytest.approx([1.5, -1 / 3])
    assert losses.bce_g(torch.zeros(4)).item() == pytest.approx(math.log(2))
    both = [torch.cat([r, f]) for r, f in zip(real, fake, strict=True)]
    split_real, split_fake = losses.split(both)
    assert all(torch.equal(a, b) for a, b in zip(split_real, real, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(split_fake, fake, strict=True))


def test_r1_penalty_matches_a_hand_computed_case():
    # D(x) = w . x + sum(x^2) / 2 has gradient w + x: at x = (1, -2) that is (4, 2), at
    # x = (0, 0) it is (3, 4); R1 is the mean squared norm, (20 + 25) / 2 = 22.5.
    w = torch.tensor([3.0, 4.0])

    def critic(x):
        flat = x.flatten(1)
        return (flat * w).sum(dim=1) + flat.pow(2).sum(dim=1) / 2

    real = torch.tensor([[[1.0, -2.0]], [[0.0, 0.0]]])
    penalty = losses.r1_penalty(critic, real)
    assert penalty.item() == pytest.approx(22.5)
    assert penalty.requires_grad  # D's loss carries it into D's update
    assert not real.requires_grad  # the caller's batch is untouched
    # A patch discriminator: per-clip scores are the mean of its patches, so two patches with
    # gradients w and -w... give a zero gradient and a zero penalty.
    assert losses.r1_penalty(lambda x: [torch.stack([critic(x), -critic(x)], 1)], real).item() == 0
