"""WaveGAN (Donahue, McAuley, Puckette 2019): transposed 1-D convolutions, kernel 25, stride 4.

G: z -> dense -> (c0, L0) -> [ReLU, ConvTranspose1d k25 s4] x n -> tanh, emitting exactly
`clip_samples`. D mirrors it with Conv1d k25 s4, LeakyReLU 0.2 and phase shuffle, no BatchNorm.
The number of upsampling layers n is planned from the clip length: the paper's 16,384 samples
are 16 x 4^5 (n = 5); 64,000 = 250 x 4^4 (n = 4); 16,000 = 250 x 4^3 (n = 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

KERNEL = 25
STRIDE = 4
MAX_LAYERS = 5


@dataclass(frozen=True)
class WaveGANConfig:
    clip_samples: int
    latent_dim: int = 100
    model_dim: int = 64  # d
    phase_shuffle: int = 2
    dropout: float = 0.0
    num_classes: int = 0  # > 0: class-conditional G and D


def plan_layers(clip_samples: int) -> tuple[int, int]:
    """(n layers, L0) with L0 * 4^n = clip_samples, as many layers (up to 5) as divide evenly.

    A length that 4^2 does not divide gets 5 layers and a last crop instead.
    """
    for layers in range(MAX_LAYERS, 1, -1):
        if clip_samples % STRIDE**layers == 0:
            return layers, clip_samples // STRIDE**layers
    return MAX_LAYERS, -(-clip_samples // STRIDE**MAX_LAYERS)


def _channels(cfg: WaveGANConfig) -> list[int]:
    """Channels from the dense layer down to the last hidden layer: 16d, 8d, ..., d for n = 5."""
    layers, _ = plan_layers(cfg.clip_samples)
    return [cfg.model_dim * 2 ** (layers - 1 - i) for i in range(layers)]


class Generator(nn.Module):
    def __init__(self, cfg: WaveGANConfig):
        super().__init__()
        self.cfg = cfg
        _, self.initial_length = plan_layers(cfg.clip_samples)
        channels = _channels(cfg)
        embed = cfg.latent_dim if cfg.num_classes else 0
        self.label_embedding = nn.Embedding(cfg.num_classes, embed) if cfg.num_classes else None
        self.dense = nn.Linear(cfg.latent_dim + embed, channels[0] * self.initial_length)
        outs = channels[1:] + [1]
        self.upsample = nn.ModuleList(
            # padding 11 + output_padding 1 makes each layer exactly 4x longer.
            nn.ConvTranspose1d(c_in, c_out, KERNEL, STRIDE, padding=11, output_padding=1)
            for c_in, c_out in zip(channels, outs, strict=True)
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_embedding is not None:
            z = torch.cat([z, self.label_embedding(labels)], dim=1)  # (B, latent + embed)
        x = self.dense(z).view(z.shape[0], -1, self.initial_length)  # (B, 16d, L0)
        for layer in self.upsample:
            x = layer(F.relu(x))  # (B, C/2, 4L)
        return torch.tanh(x[..., : self.cfg.clip_samples])  # (B, 1, clip_samples)


def phase_shuffle(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None):
    """Shifts the whole batch by one random integer in [-max_shift, max_shift], reflect-padded."""
    if max_shift == 0:
        return x
    shift = int(torch.randint(-max_shift, max_shift + 1, (1,), generator=generator))
    if shift == 0:
        return x
    if shift > 0:  # content moves right; the left edge is reflected in
        return F.pad(x[..., :-shift], (shift, 0), mode="reflect")
    return F.pad(x[..., -shift:], (0, -shift), mode="reflect")


class Discriminator(nn.Module):
    """Returns (logits (B,), features: list of each layer's activations)."""

    def __init__(self, cfg: WaveGANConfig):
        super().__init__()
        self.cfg = cfg
        channels = list(reversed(_channels(cfg)))  # d, 2d, ..., 16d
        self.convs = nn.ModuleList(
            nn.Conv1d(c_in, c_out, KERNEL, STRIDE, padding=11)
            for c_in, c_out in zip([1] + channels[:-1], channels, strict=True)
        )
        length = cfg.clip_samples
        for _ in channels:
            length = (length + 2 * 11 - KERNEL) // STRIDE + 1
        self.features = channels[-1] * length
        self.out = nn.Linear(self.features, 1)
        self.dropout = nn.Dropout(cfg.dropout)
        # Projection discriminator (Miyato & Koyama 2018): logit += <embed(y), features>.
        self.projection = nn.Embedding(cfg.num_classes, self.features) if cfg.num_classes else None

    def forward(self, audio: torch.Tensor, labels: torch.Tensor | None = None):
        x, features = audio, []
        for i, conv in enumerate(self.convs):
            x = self.dropout(F.leaky_relu(conv(x), 0.2))  # (B, C, L/4)
            features.append(x)
            if i < len(self.convs) - 1:
                x = phase_shuffle(x, self.cfg.phase_shuffle)
        flat = x.flatten(1)  # (B, C*L)
        logits = self.out(flat).squeeze(1)  # (B,)
        if self.projection is not None:
            logits = logits + (self.projection(labels) * flat).sum(dim=1)
        return logits, features
