"""DiffAugment-style augmentations: what each one does, and that D sees nothing without them."""

from __future__ import annotations

import math

import pytest
import torch

from audiogan import augment, step
from audiogan.config import PRESETS_DIR, ConfigError, TrainConfig, load_config
from audiogan.models import build

TINY = {"model_dim": 4, "latent_dim": 8, "disc_channels": 2, "batch_size": 2}


def test_shift_moves_each_clip_by_at_most_an_eighth_and_fills_with_silence():
    torch.manual_seed(0)
    ramp = torch.arange(1.0, 801.0).view(1, 1, -1).expand(64, 1, -1)  # no zero in the clip
    moved = augment.shift(ramp, p=1.0)[:, 0]
    gaps = []
    for clip in moved:
        kept = clip[clip != 0]
        gap = 800 - kept.numel()
        assert torch.equal(torch.diff(kept), torch.ones(kept.numel() - 1))  # the clip, in one piece
        # the silence at one end: a clip moved later starts with it, one moved earlier ends so
        assert torch.equal(clip[gap:], kept) or torch.equal(clip[: 800 - gap], kept)
        gaps.append(gap)
    assert max(gaps) <= 100 and sum(g > 0 for g in gaps) > 0.9 * len(gaps)


def test_gain_is_within_6_db_and_noise_30_to_50_db_under_full_scale():
    torch.manual_seed(0)
    x = torch.full((256, 1, 1000), 0.5)
    ratio_db = 20 * torch.log10(augment.gain(x, p=1.0)[:, 0, 0] / 0.5)
    assert ratio_db.abs().max() <= 6.0 + 1e-4 and ratio_db.std() > 2
    added = augment.noise(torch.zeros(256, 1, 4000), p=1.0)
    level_db = 20 * torch.log10(added.std(dim=2).flatten())
    assert -51 < level_db.min() and level_db.max() < -29


@pytest.mark.parametrize("name", augment.AUGMENTATIONS)
def test_each_augmentation_keeps_the_gradient_and_applies_to_a_share_p(name):
    torch.manual_seed(0)
    x = (torch.rand(400, 1, 512) * 2 - 1).requires_grad_()
    out = augment.augment(x, (name,), p=0.3)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    touched = (out != x).flatten(1).any(dim=1).float().mean().item()
    assert 0.2 < touched < 0.4
    assert torch.equal(augment.augment(x, (name,), p=0.0), x)


def test_unknown_augmentations_and_probabilities_out_of_range_are_refused():
    with pytest.raises(ConfigError, match="augment: unknown flip; known: shift, gain, noise"):
        TrainConfig(augment=("gain", "flip"))
    with pytest.raises(ConfigError, match="augment_p must be in"):
        TrainConfig(augment=("gain",), augment_p=1.5)
    cfg = load_config(TrainConfig, str(PRESETS_DIR / "ddsp_stft_cond.yaml"),
                      {"augment": ["shift", "noise"]})  # fmt: skip
    assert cfg.augment == ("shift", "noise")


MARK = 1000.0  # what the stand-in augmentation adds: a clip D sees unaugmented stays under 1


def _marking_gan(monkeypatch, **overrides):
    cfg = load_config(
        TrainConfig, str(PRESETS_DIR / "ddsp_stft_cond.yaml"),
        TINY | {"augment": ("gain",)} | overrides,
    )  # fmt: skip
    torch.manual_seed(0)
    generator, discriminator = build(cfg, 4000, num_classes=3, sample_rate_hz=16000)
    seen = []
    forward = discriminator.forward

    def recording(x, labels=None):
        seen.append(x.detach().flatten(1).abs().min(dim=1).values)
        return forward(x, labels)

    monkeypatch.setattr(discriminator, "forward", recording)
    monkeypatch.setattr(step.augment, "augment", lambda x, names, p: x + MARK)
    return step.make_gan(generator, discriminator, cfg), seen


@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("loss", ["hinge", "wgan-gp"])
def test_d_sees_every_clip_real_and_generated_through_the_augmentations(monkeypatch, loss, share):
    """In D's update (R1 or WGAN-GP's penalty included) and in G's (feature matching's real
    clips included, or, with shared passes, the D update's), every clip reaches D augmented."""
    extra = {"loss": loss, "r1_weight": 0.0} if loss == "wgan-gp" else {"r1_every": 1}
    gan, seen = _marking_gan(monkeypatch, share_passes=share, **extra)
    real = torch.rand(2, 1, 4000) * 2 - 1
    result = step.gan_step(gan, [real], [torch.tensor([0, 2])])
    assert all(math.isfinite(v) for v in result.values())
    assert "fm" in result and result["gp"] > 0
    # hinge: D(real + fake), R1's D(real), G's D(fake), feature matching's D(real);
    # wgan-gp: D(real), D(fake), the penalty's D(mix), then G's two. Shared passes take
    # feature matching's real features from the D update: one pass fewer.
    passes = (4 if loss == "hinge" else 5) - share
    assert len(seen) == passes if loss == "hinge" else len(seen) >= passes
    assert all((clips > MARK / 2).all() for clips in seen)


def test_without_augment_d_sees_the_clips_themselves(monkeypatch):
    gan, seen = _marking_gan(monkeypatch, augment=())
    step.gan_step(gan, [torch.rand(2, 1, 4000) * 2 - 1], [torch.tensor([0, 1])])
    assert seen and all((clips < 2).all() for clips in seen)
