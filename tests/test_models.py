"""Model shapes, sizes and the pieces that make each family what it is (no Ray)."""

from __future__ import annotations

import pytest
import torch

from audiogan.config import TrainConfig
from audiogan.models import build, dcgan, parameter_count, wavegan


@pytest.mark.parametrize("clip_samples", [16384, 16000, 64000, 8000, 12345])
@pytest.mark.parametrize("model", ["wavegan", "dcgan"])
def test_both_families_emit_exactly_clip_samples(model, clip_samples):
    cfg = TrainConfig(model=model, model_dim=4, latent_dim=16)
    generator, discriminator = build(cfg, clip_samples)
    fake = generator(torch.rand(3, 16) * 2 - 1)
    assert fake.shape == (3, 1, clip_samples)
    assert fake.abs().max() <= 1  # tanh on data in [-1, 1]
    logits, features = discriminator(fake)
    assert logits.shape == (3,) and len(features) >= 3


def test_wavegan_plans_its_upsampling_from_the_clip_length():
    assert wavegan.plan_layers(16384) == (5, 16)  # the paper
    assert wavegan.plan_layers(64000) == (4, 250)  # 4 s at 16 kHz
    assert wavegan.plan_layers(16000) == (3, 250)  # 1 s at 16 kHz
    assert wavegan.plan_layers(12345) == (5, 13)  # 13 * 1024 >= 12345, cropped


def test_wavegan_at_d64_and_16384_samples_has_the_papers_19m_generator():
    generator = wavegan.Generator(wavegan.WaveGANConfig(16384, latent_dim=100, model_dim=64))
    assert parameter_count(generator) == pytest.approx(19.07e6, rel=0.005)


def test_phase_shuffle_shifts_the_whole_batch_and_keeps_length():
    x = torch.arange(20.0).repeat(2, 3, 1)  # (2, 3, 20)
    seen = set()
    for seed in range(40):
        shifted = wavegan.phase_shuffle(x, 2, torch.Generator().manual_seed(seed))
        assert shifted.shape == x.shape
        shift = int(shifted[0, 0, 10] - x[0, 0, 10]) * -1
        seen.add(shift)
        assert torch.equal(shifted[0], shifted[1])  # one shift for the whole batch
        if shift > 0:  # content moved right, the left edge is a reflection
            assert torch.equal(shifted[..., shift:], x[..., :-shift])
            assert torch.equal(shifted[0, 0, :shift], x[0, 0, 1 : shift + 1].flip(0))
    assert seen == {-2, -1, 0, 1, 2}
    assert torch.equal(wavegan.phase_shuffle(x, 0), x)


def test_the_baseline_keeps_the_original_layers():
    generator = dcgan.Generator(dcgan.DCGANConfig(64000))
    convs = [m for m in generator.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [(c.out_channels, c.kernel_size[0]) for c in convs] == [
        (16, 20), (32, 25), (64, 50), (64, 100),
    ]  # fmt: skip
    assert generator.dense[0].out_features == 1000  # 1000 steps x 64 channels = 64,000 samples
    discriminator = dcgan.Discriminator(dcgan.DCGANConfig(64000))
    convs = [m for m in discriminator.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (32, 100, 7), (16, 50, 5), (8, 25, 3),
    ]  # fmt: skip
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in discriminator.modules())


@pytest.mark.parametrize("model", ["wavegan", "dcgan"])
def test_conditional_models_take_a_label_and_it_matters(model):
    cfg = TrainConfig(model=model, model_dim=4, latent_dim=8, conditional=True)
    torch.manual_seed(0)
    generator, discriminator = build(cfg, 16000, num_classes=3)
    generator.eval()
    z = torch.rand(2, 8)
    a = generator(z, torch.tensor([0, 0]))
    b = generator(z, torch.tensor([2, 2]))
    assert a.shape == (2, 1, 16000) and not torch.allclose(a, b)
    logits, _ = discriminator(a, torch.tensor([0, 1]))
    assert logits.shape == (2,)
