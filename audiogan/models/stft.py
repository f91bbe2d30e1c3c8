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


def log_magnitude(audio: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """(B, T) -> (B, n_fft / 2 + 1, T / hop + 1): the natural log of |STFT|, as torch.stft with
    a Hann window, centred frames (reflection padding) and normalized=True computes it, to
    float rounding, with a cheaper backward (WindowedRFFT)."""
    # Made at every call, not kept as a buffer: DDP overwrites buffers in place at each forward,
    # which breaks the backward of an earlier forward that used them. normalized=True's
    # 1 / sqrt(n_fft) goes into the window.
    window = torch.hann_window(n_fft, device=audio.device, dtype=audio.dtype) / n_fft**0.5
    padded = F.pad(audio.unsqueeze(1), (n_fft // 2, n_fft // 2), mode="reflect")[:, 0]
    pairs = WindowedRFFT.apply(padded, window, hop)  # (B, frames, bins, 2)
    power = pairs[..., 0].square() + pairs[..., 1].square()
    return 0.5 * torch.log(power + POWER_FLOOR).transpose(1, 2)


class WindowedRFFT(torch.autograd.Function):
    """(B, T) -> (B, frames, n_fft / 2 + 1, 2): the real FFT of every windowed frame (one every
    `hop` samples, n_fft a multiple of hop), as (real, imaginary) pairs.

    torch.stft's backward costs about 6 times its forward on a CPU (a complex FFT of full length,
    then a scatter of the frames), and G's gradient and R1 go through it at every step. The
    gradient is computed here as what it is: for each frame, the half spectrum's inverse FFT
    (an irfft, its first and last bins counted twice) times the window, and the frames added
    back where they came from. That halves the spectrogram's forward and backward together.
    The backward is made of differentiable operations on the gradient alone (the transform is
    linear), so R1's double backward goes through it too.
    """

    @staticmethod
    def forward(ctx, signal: torch.Tensor, window: torch.Tensor, hop: int) -> torch.Tensor:
        if window.shape[0] % hop:
            raise ValueError(f"n_fft ({window.shape[0]}) must be a multiple of hop ({hop})")
        ctx.save_for_backward(window)
        ctx.hop, ctx.samples = hop, signal.shape[-1]
        frames = signal.unfold(-1, window.shape[0], hop) * window  # (B, frames, n_fft)
        return torch.view_as_real(torch.fft.rfft(frames))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (window,) = ctx.saved_tensors
        n_fft, hop = window.shape[0], ctx.hop
        spectrum = torch.view_as_complex(grad.contiguous())  # (B, frames, bins)
        # sum_k Re(G_k e^(2 pi i k n / N)) over the half spectrum = N/2 irfft(G), with the DC and
        # Nyquist bins (which irfft counts once, the others twice) doubled.
        weights = torch.full((spectrum.shape[-1],), n_fft / 2, device=grad.device, dtype=grad.dtype)
        weights[0] = n_fft
        if n_fft % 2 == 0:
            weights[-1] = n_fft
        frames = torch.fft.irfft(spectrum * weights, n=n_fft) * window  # (B, frames, n_fft)
        # Overlap-add, each frame back where it came from: frame m's part r (of n_fft / hop
        # parts) lands on block m + r of the signal's hop-long blocks.
        batch, count = frames.shape[:2]
        parts = n_fft // hop
        split = frames.view(batch, count, parts, hop)
        blocks = sum(
            F.pad(split[:, :, part], (0, 0, part, parts - 1 - part)) for part in range(parts)
        )  # (B, frames + parts - 1, hop)
        covered = blocks.reshape(batch, -1)
        return F.pad(covered, (0, ctx.samples - covered.shape[1])), None, None


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
        return log_magnitude(audio[:, 0].float(), self.n_fft, self.hop)

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
