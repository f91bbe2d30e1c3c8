"""Differentiable augmentations of what D sees (after DiffAugment, Zhao et al. 2020).

A D trained on a few hundred clips learns them by heart, and G's gradient then says nothing
useful. Transforming every clip D sees, real and generated alike, with the same random
operations keeps D from memorising the real ones without teaching G to make transformed
clips: G's gradient passes through the same transforms, so G still has to make the data.

    shift  moves a clip by up to an eighth of its length, the gap filled with silence
    gain   scales it by -6 to +6 dB
    noise  adds white noise 50 to 30 dB under full scale

Each one happens to each clip with probability p. Pure torch, no Ray.
"""

from __future__ import annotations

import torch

from audiogan.config import AUGMENTATIONS

MAX_SHIFT = 1 / 8  # of the clip's length
GAIN_DB = 6.0
NOISE_DB = (-50.0, -30.0)


def _chosen(x: torch.Tensor, p: float) -> torch.Tensor:
    """(B, 1, 1): 1 for the clips an augmentation applies to, each with probability p."""
    return (torch.rand(x.shape[0], 1, 1, device=x.device) < p).to(x.dtype)


def shift(x: torch.Tensor, p: float) -> torch.Tensor:
    batch, _, samples = x.shape
    most = int(samples * MAX_SHIFT)
    by = torch.randint(-most, most + 1, (batch, 1, 1), device=x.device)
    by = by * _chosen(x, p).long()
    source = torch.arange(samples, device=x.device).view(1, 1, -1) - by  # (B, 1, T)
    inside = (source >= 0) & (source < samples)
    return x.gather(2, source.clamp(0, samples - 1)) * inside.to(x.dtype)


def gain(x: torch.Tensor, p: float) -> torch.Tensor:
    db = (torch.rand(x.shape[0], 1, 1, device=x.device) * 2 - 1) * GAIN_DB
    return x * 10 ** (db * _chosen(x, p) / 20)


def noise(x: torch.Tensor, p: float) -> torch.Tensor:
    low, high = NOISE_DB
    db = low + (high - low) * torch.rand(x.shape[0], 1, 1, device=x.device)
    return x + torch.randn_like(x) * 10 ** (db / 20) * _chosen(x, p)


_OPERATIONS = {"shift": shift, "gain": gain, "noise": noise}


def augment(x: torch.Tensor, names: tuple[str, ...], p: float) -> torch.Tensor:
    """x (B, 1, T) with each named augmentation applied, in AUGMENTATIONS' order, to each clip
    with probability p (drawn anew for every call and clip)."""
    for name in AUGMENTATIONS:
        if name in names and p > 0:
            x = _OPERATIONS[name](x, p)
    return x
