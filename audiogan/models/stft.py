"""A multi-resolution STFT discriminator (after UnivNet's MRD and EnCodec's MS-STFT-D).

The clip's short-time Fourier transform at three resolutions (windows of 256, 512 and 1024
samples, hop a quarter of the window) becomes three log-magnitude spectrograms: timbre, pitch
and onsets are what they show plainly, and what a waveform discriminator has to learn to see.
Each is judged by a small network of 1-D convolutions along time that takes the frequency bins
as its input channels, so its first layer sees a frame's whole spectrum at once. (UnivNet's
and EnCodec's use 2-D convolutions over (time, frequency); with one input channel those run
about ten times slower on a CPU for the same width.) The STFT is differentiable, so G gets its
gradient through it. Each sub-discriminator returns a logit per few frames and its feature
maps (for feature matching).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

RESOLUTIONS = (256, 512, 1024)  # FFT sizes; hop = n_fft / 4
SLOPE = 0.2
# Added to the power before the log (-60 dB of a full-scale normalised bin), so a silent bin
# stays finite and its gradient bounded.
POWER_FLOOR = 1e-6


@dataclass(frozen=True)
class STFTConfig:
    clip_samples: int
    channels: int = 16  # each sub-discriminator is 8 x this wide
    resolutions: tuple[int, ...] = RESOLUTIONS
    num_classes: int = 0  # > 0: a projection of the label onto every patch's features
    dropout: float = 0.0  # on every hidden feature map, after it is kept for feature matching


class ResolutionDiscriminator(nn.Module):
    """(B, 1, T) -> log |STFT| (B, bins, frames) -> 1-D convolutions along frames."""

    def __init__(self, n_fft: int, channels: int, num_classes: int = 0, dropout: float = 0.0):
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        width = 8 * channels
        self.convs = nn.ModuleList(
            [
                nn.Conv1d(n_fft // 2 + 1, width, 3, padding=1),
                nn.Conv1d(width, width, 5, 2, padding=2),
                nn.Conv1d(width, width, 5, 2, padding=2),
                nn.Conv1d(width, width, 3, padding=1),
            ]
        )
        self.out = nn.Conv1d(width, 1, 3, padding=1)
        self.projection = nn.Embedding(num_classes, width) if num_classes else None
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) -> (B, n_fft / 2 + 1, T / hop + 1) natural-log magnitude."""
        # Made at every call, not kept as a buffer: DDP overwrites buffers in place at each
        # forward, which breaks the backward of an earlier forward that used them.
        window = torch.hann_window(self.n_fft, device=audio.device)
        spec = torch.stft(
            audio[:, 0].float(),
            self.n_fft,
            self.hop,
            window=window,
            normalized=True,
            return_complex=True,
        )
        return 0.5 * torch.log(spec.real.square() + spec.imag.square() + POWER_FLOOR)

    def forward(self, audio: torch.Tensor, labels: torch.Tensor | None = None):
        x, features = self.spectrogram(audio), []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), SLOPE)  # (B, 8c, frames / 2^k)
            features.append(x)
            x = self.dropout(x)
        logits = self.out(x)[:, 0]  # (B, patches)
        if self.projection is not None:  # Miyato & Koyama 2018, at every patch
            logits = logits + torch.einsum("bc,bcl->bl", self.projection(labels), x)
        return logits, features


class Discriminator(nn.Module):
    """Returns (logits: one (B, patches) tensor per resolution, features: all feature maps)."""

    def __init__(self, cfg: STFTConfig):
        super().__init__()
        self.cfg = cfg
        self.resolutions = nn.ModuleList(
            ResolutionDiscriminator(n_fft, cfg.channels, cfg.num_classes, cfg.dropout)
            for n_fft in cfg.resolutions
        )

    def forward(self, audio: torch.Tensor, labels: torch.Tensor | None = None):
        logits, features = [], []
        for sub in self.resolutions:
            sub_logits, sub_features = sub(audio, labels)
            logits.append(sub_logits)
            features += sub_features
        return logits, features
