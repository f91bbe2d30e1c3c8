"""HiFi-GAN's discriminators (Kong et al. 2020), sized for audiogan: multi-period and multi-scale.

One discriminator made of eight small ones, each judging the audio in its own view:
- multi-period (MPD): for each period p in 2, 3, 5, 7, 11 the clip is folded into a (T / p, p)
  image, so a column holds every p-th sample, and convolutions look down the columns:
  periodic structure (pitch, its harmonics) at each of those periods;
- multi-scale (MSD, from MelGAN): the clip itself, and average-pooled by 2 and 4, through
  strided 1-D convolutions: the waveform's shape at three time scales.

Each sub-discriminator returns a logit per patch (so D judges many windows of a clip, not the
whole clip at once) and its feature maps, for the feature-matching loss. The widths grow from
`channels` (4 times as many at the deepest layer); HiFi-GAN's own start at 32 (MPD) and 128
(MSD), far too many for a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PERIODS = (2, 3, 5, 7, 11)
SCALES = 3
SLOPE = 0.1  # HiFi-GAN's LeakyReLU slope


@dataclass(frozen=True)
class MultiScaleConfig:
    clip_samples: int
    channels: int = 16  # the first layer's width
    periods: tuple[int, ...] = PERIODS
    scales: int = SCALES
    dropout: float = 0.0  # on every hidden feature map, after it is kept for feature matching


class PeriodDiscriminator(nn.Module):
    """(B, 1, T) -> fold to (B, 1, T/p, p) -> convolutions down each of the p columns.

    HiFi-GAN writes this as 2-D convolutions with (k, 1) kernels; a (k, 1) kernel never mixes
    columns, so the same network is 1-D convolutions over (B p, 1, T/p), which run faster on
    a CPU. Its logits and feature maps are reported in the 2-D layout, (B, C, T/p', p).
    """

    def __init__(self, period: int, channels: int, dropout: float = 0.0):
        super().__init__()
        self.period = period
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        widths = [1, channels, 2 * channels, 4 * channels]
        self.convs = nn.ModuleList(
            nn.Conv1d(c_in, c_out, 5, 3, padding=2)
            for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.convs.append(nn.Conv1d(widths[-1], widths[-1], 5, 1, padding=2))
        self.out = nn.Conv1d(widths[-1], 1, 3, 1, padding=1)

    def _unfold(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        """(B p, C, L) -> (B, C, L, p)."""
        return x.view(batch, self.period, x.shape[1], x.shape[2]).permute(0, 2, 3, 1)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        batch, _, length = audio.shape
        pad = -length % self.period
        if pad:
            audio = F.pad(audio, (0, pad), mode="reflect")
        # (B, 1, T) -> (B, T/p, p) -> (B, p, T/p): column j holds samples j, j + p, j + 2p, ...
        x = audio.view(batch, -1, self.period).transpose(1, 2).reshape(batch * self.period, 1, -1)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), SLOPE)  # (B p, C, T/(p 3^k))
            features.append(self._unfold(x, batch))
            x = self.dropout(x)
        return self._unfold(self.out(x), batch).flatten(1), features  # (B, patches)


class ScaleDiscriminator(nn.Module):
    """(B, 1, T) -> strided 1-D convolutions, MelGAN's layout with shorter kernels (15, not 41)
    and no groups: grouped convolutions run several times slower than plain ones on a CPU."""

    def __init__(self, channels: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.convs = nn.ModuleList(
            [
                nn.Conv1d(1, channels, 15, 1, padding=7),
                nn.Conv1d(channels, 2 * channels, 15, 4, padding=7),
                nn.Conv1d(2 * channels, 4 * channels, 15, 4, padding=7),
                nn.Conv1d(4 * channels, 4 * channels, 5, 1, padding=2),
            ]
        )
        self.out = nn.Conv1d(4 * channels, 1, 3, 1, padding=1)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, features = audio, []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), SLOPE)  # (B, C, T/4^k)
            features.append(x)
            x = self.dropout(x)
        return self.out(x).flatten(1), features  # (B, patches)


class Discriminator(nn.Module):
    """Returns (logits: one (B, patches) tensor per sub-discriminator, features: all their
    feature maps, in order)."""

    def __init__(self, cfg: MultiScaleConfig):
        super().__init__()
        self.cfg = cfg
        self.periods = nn.ModuleList(
            PeriodDiscriminator(p, cfg.channels, cfg.dropout) for p in cfg.periods
        )
        self.scales = nn.ModuleList(
            ScaleDiscriminator(cfg.channels, cfg.dropout) for _ in range(cfg.scales)
        )
        self.pool = nn.AvgPool1d(4, 2, padding=1, count_include_pad=False)  # (B, 1, T/2)

    def forward(self, audio: torch.Tensor, labels: torch.Tensor | None = None):
        logits, features = [], []
        for sub in self.periods:
            sub_logits, sub_features = sub(audio)
            logits.append(sub_logits)
            features += sub_features
        x = audio
        for i, sub in enumerate(self.scales):
            if i:
                x = self.pool(x)
            sub_logits, sub_features = sub(x)
            logits.append(sub_logits)
            features += sub_features
        return logits, features
