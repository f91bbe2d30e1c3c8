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
