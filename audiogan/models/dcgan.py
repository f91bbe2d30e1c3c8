"""The 2019 baseline: the DCGAN-style Keras model of the original experiment, in PyTorch.

Faithful to its code (AUDIO_GAN_NOTES.md section 1) but for two bugs not copied: G ends in tanh
on data in [-1, 1], and D is frozen during the G step (step.py). G has no upsampling: a dense
layer makes clip_samples / 64 time steps of one channel, 'same' convolutions widen them to 64
channels, and flattening time-major turns each step's 64 channels into 64 consecutive samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

OUT_CHANNELS = 64
# Keras BatchNormalization(momentum=0.9) keeps 0.9 of the old running mean: torch's 0.1.
BN_MOMENTUM = 0.1


@dataclass(frozen=True)
class DCGANConfig:
    clip_samples: int
    latent_dim: int = 500
    dropout: float = 0.1
    num_classes: int = 0


def _block(c_in: int, c_out: int, kernel: int, dropout: float, stride: int = 1) -> nn.Sequential:
    padding = kernel // 2 if stride > 1 else "same"
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel, stride, padding=padding),
        nn.ReLU(),
        nn.BatchNorm1d(c_out, momentum=BN_MOMENTUM),
        nn.Dropout(dropout),
    )


class Generator(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        self.steps = math.ceil(cfg.clip_samples / OUT_CHANNELS)  # 1000 for 64,000 samples
        embed = cfg.latent_dim if cfg.num_classes else 0
        self.label_embedding = nn.Embedding(cfg.num_classes, embed) if cfg.num_classes else None
        self.dense = nn.Sequential(
            nn.Linear(cfg.latent_dim + embed, self.steps),
            nn.LeakyReLU(0.01),
            nn.BatchNorm1d(self.steps, momentum=BN_MOMENTUM),
        )
        self.convs = nn.Sequential(
            _block(1, 16, 20, cfg.dropout),
            _block(16, 32, 25, cfg.dropout),
            _block(32, 64, 50, cfg.dropout),
            nn.Conv1d(64, OUT_CHANNELS, 100, padding="same"),
            nn.Dropout(0.3),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_embedding is not None:
            z = torch.cat([z, self.label_embedding(labels)], dim=1)
        x = self.dense(z).unsqueeze(1)  # (B, 1, steps)
        x = self.convs(x)  # (B, 64, steps)
        x = x.transpose(1, 2).reshape(z.shape[0], 1, -1)  # time-major flatten: (B, 1, 64*steps)
        return torch.tanh(x[..., : self.cfg.clip_samples])  # (B, 1, clip_samples)


class Discriminator(nn.Module):
    """Returns (logits (B,), features); the baseline's sigmoid is in the BCE-with-logits loss."""

    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        self.convs = nn.ModuleList(
            [
                _block(1, 32, 100, cfg.dropout, stride=7),
                nn.AvgPool1d(4),
                _block(32, 16, 50, cfg.dropout, stride=5),
                _block(16, 8, 25, cfg.dropout, stride=3),
            ]
        )
        with torch.no_grad():
            length = self._trunk(torch.zeros(1, 1, cfg.clip_samples))[0].shape[-1]
        self.features = 8 * length
        self.head = nn.Sequential(
            nn.Linear(self.features, 1024),
            nn.LeakyReLU(0.01),
            nn.BatchNorm1d(1024, momentum=BN_MOMENTUM),
        )
        self.out = nn.Linear(1024, 1)
        self.projection = nn.Embedding(cfg.num_classes, 1024) if cfg.num_classes else None

    def _trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        for layer in self.convs:
            x = layer(x)
            features.append(x)
        return x, features

    def forward(self, audio: torch.Tensor, labels: torch.Tensor | None = None):
        was_training = self.training
        if audio.shape[0] == 1 and was_training:
            self.eval()  # BatchNorm needs two samples to train
        x, features = self._trunk(audio)  # (B, 8, L)
        hidden = self.head(x.flatten(1))  # (B, 1024)
        self.train(was_training)
        logits = self.out(hidden).squeeze(1)  # (B,)
        if self.projection is not None:
            logits = logits + (self.projection(labels) * hidden).sum(dim=1)
        return logits, features
