"""A harmonic-plus-noise generator (after DDSP, Engel et al. 2020), trained adversarially.

G does not draw the waveform sample by sample, as WaveGAN's transposed convolutions do; it
draws the controls of a synthesiser at a frame rate (one frame per HOP samples) and the
synthesiser, made of differentiable torch operations, plays them:

    z -> dense -> (C, 16) -> [upsample x2, conv, LeakyReLU] x 3 -> (C / 8, 128) -> `frames`
      -> per source and frame: f0 (Hz; the source's own from z, bent by up to 2 semitones),
         loudness and a distribution over HARMONICS harmonics; per frame: the gains of
         NOISE_BANDS noise bands
      -> per source, harmonic oscillators: loudness(t) * sum_k a_k(t) sin(2 pi k phi(t)),
         phi' = f0(t) / sr, harmonics above Nyquist silenced
       + noise: white noise shaped, frame by frame, by the band gains (an STFT filter)
      -> tanh, (B, 1, clip_samples)

Pitched sounds with envelopes, the stuff of monophonic instruments, are then a few numbers a
frame, so G makes a tone from its first step and spends training on timbre, pitch and
envelopes: the reason it learns within CPU-minutes where WaveGAN needs GPU-days. With one
source (one oscillator bank, the default) it plays one pitch at a time; `sources` > 1 gives
it as many banks, each with its own pitch, for chords and two instruments at once. What it
cannot make: a transient shorter than a frame beyond what the noise gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

HOP = 128  # samples per control frame (8 ms at 16 kHz)
HARMONICS = 48
TABLE_SIZE = 1024  # samples in one period of a frame's wavetable
NOISE_BANDS = 32
F0_RANGE_HZ = (40.0, 2000.0)  # a clip's f0 is sigmoid-mapped onto this range, on a log scale
PITCH_BEND_SEMITONES = 2.0  # how far f0 may move from the clip's own within the clip; 6 made
# glides that no note of the data has, and scored worse
INITIAL_FRAMES = 16
LOUDNESS_BIAS = 1.05  # scaled_sigmoid(1.05) = 1: a full-scale tone at the start
NOISE_BIAS = -4.0  # band gains of 2e-4: noise 70 dB under the tone at the start
UPSAMPLINGS = 3  # 16 -> 128 frames, then interpolated to the clip's frame count


@dataclass(frozen=True)
class DDSPConfig:
    clip_samples: int
    sample_rate_hz: int = 16000
    latent_dim: int = 100
    model_dim: int = 64  # d: the control network is 8d wide at its start, d at its end
    num_classes: int = 0  # > 0: class-conditional G
    sources: int = 1  # oscillator banks, each with its own pitch (2 or more: chords, duets)

    @property
    def frames(self) -> int:
        return -(-self.clip_samples // HOP)


def scaled_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """DDSP's exp-sigmoid: positive, 2 at most, and about a decade per unit of x near 0."""
    return 2 * torch.sigmoid(x) ** math.log(10) + 1e-7


def add_control_network(module: nn.Module, cfg: DDSPConfig) -> tuple[int, list[int]]:
    """Gives `module` the control network's layers (label_embedding, dense, convs, smooth:
    z -> (8d, 16) -> three x2 upsamplings -> d channels); returns (the label embedding's size,
    the layers' widths 8d, 4d, 2d, d)."""
    width = 8 * cfg.model_dim
    embed = cfg.latent_dim if cfg.num_classes else 0
    module.label_embedding = nn.Embedding(cfg.num_classes, embed) if cfg.num_classes else None
    module.dense = nn.Linear(cfg.latent_dim + embed, width * INITIAL_FRAMES)
    widths = [width // 2**i for i in range(UPSAMPLINGS + 1)]
    module.convs = nn.ModuleList(
        nn.Conv1d(c_in, c_out, 5, padding=2)
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
    )
    module.smooth = nn.Conv1d(widths[-1], widths[-1], 5, padding=2)
    return embed, widths


class Generator(nn.Module):
    def __init__(self, cfg: DDSPConfig):
        super().__init__()
        self.cfg = cfg
        embed, widths = add_control_network(self, cfg)
        # Loudness, harmonics and noise gains come from the last layer, every frame: for each
        # source a loudness and HARMONICS weights, then the noise bands. Pitch is a source's
        # own (from z) moved by up to PITCH_BEND_SEMITONES at the first layer's rate (16 frames
        # a clip): notes hold their pitch, and pitch drawn freely at the frame rate slides all
        # over the range.
        sources = cfg.sources
        self.clip_pitch = nn.Linear(cfg.latent_dim + embed, sources)
        self.pitch_bend = nn.Conv1d(widths[0], sources, 1)
        self.controls = nn.Conv1d(widths[-1], sources * (1 + HARMONICS) + NOISE_BANDS, 1)
        with torch.no_grad():  # start from a plain, loud enough tone: a = 1, a_k ~ 1/k, quiet noise
            bias = self.controls.bias
            for s in range(sources):  # each further source 1 lower: about 7 dB quieter
                first = s * (1 + HARMONICS)
                bias[first] = LOUDNESS_BIAS - s
                bias[first + 1 : first + 1 + HARMONICS] = -torch.log(
                    torch.arange(1.0, HARMONICS + 1)
                )
            bias[sources * (1 + HARMONICS) :] = NOISE_BIAS

    @staticmethod
    def harmonic_numbers(device: torch.device) -> torch.Tensor:
        """1, 2, ..., HARMONICS. (This and the sines are made at every call, not kept as
        buffers: DDP overwrites buffers in place at each forward, which breaks the backward of
        an earlier forward that used them.)"""
        return torch.arange(1, HARMONICS + 1, device=device, dtype=torch.float32)

    @staticmethod
    def sines(device: torch.device) -> torch.Tensor:
        """sin(2 pi k n / N) for every harmonic k and table position n: (K, N)."""
        positions = torch.arange(TABLE_SIZE, device=device, dtype=torch.float32) / TABLE_SIZE
        numbers = Generator.harmonic_numbers(device)
        return torch.sin(2 * math.pi * numbers[:, None] * positions[None, :])

    def control_frames(self, z: torch.Tensor, labels: torch.Tensor | None = None):
        """(f0_hz (B, S, frames), loudness (B, S, frames), harmonics (B, S, K, frames), noise
        gains (B, bands, frames)), for S sources."""
        if self.label_embedding is not None:
            z = torch.cat([z, self.label_embedding(labels)], dim=1)  # (B, latent + embed)
        x = self.dense(z).view(z.shape[0], -1, INITIAL_FRAMES)  # (B, 8d, 16)
        bend = PITCH_BEND_SEMITONES * torch.tanh(self.pitch_bend(F.leaky_relu(x, 0.2)).float())
        for conv in self.convs:
            x = F.leaky_relu(conv(F.interpolate(x, scale_factor=2.0)), 0.2)  # (B, C/2, 2L)
        frames = self.cfg.frames
        x = F.interpolate(x, size=frames, mode="linear", align_corners=True)
        x = self.controls(F.leaky_relu(self.smooth(x), 0.2)).float()  # (B, S(1 + K) + bands, F)
        bend = F.interpolate(bend, size=frames, mode="linear", align_corners=True)  # (B, S, F)
        low, high = F0_RANGE_HZ
        own_f0_hz = low * (high / low) ** torch.sigmoid(self.clip_pitch(z).float())  # (B, S)
        f0_hz = own_f0_hz[..., None] * 2 ** (bend / 12)  # (B, S, frames)
        sources = self.cfg.sources
        tones = x[:, : sources * (1 + HARMONICS)].view(x.shape[0], sources, 1 + HARMONICS, -1)
        loudness = scaled_sigmoid(tones[:, :, 0])
        harmonics = torch.softmax(tones[:, :, 1:], dim=2)
        noise = scaled_sigmoid(x[:, sources * (1 + HARMONICS) :])
        return f0_hz, loudness, harmonics, noise

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        f0_hz, loudness, harmonics, noise_gains = self.control_frames(z, labels)
        # The synthesiser runs in float32 under bf16 autocast too: a tone summed from
        # bfloat16 tables would carry noise about 50 dB under it, and torch.stft needs float32.
        with torch.autocast(z.device.type, enabled=False):
            return self.synthesise(f0_hz, loudness, harmonics, noise_gains)

    def synthesise(
        self,
        f0_hz: torch.Tensor,
        loudness: torch.Tensor,
        harmonics: torch.Tensor,
        noise_gains: torch.Tensor,
    ) -> torch.Tensor:
        """Control frames (as control_frames returns them) -> (B, 1, clip_samples)."""
        samples = self.cfg.clip_samples
        tone = tones(f0_hz, loudness, harmonics, self.cfg.sample_rate_hz, samples)
        return torch.tanh(tone + self.filtered_noise(noise_gains, samples)).unsqueeze(1)

    def play(self, amplitudes: torch.Tensor, cycles: torch.Tensor) -> torch.Tensor:
        return play(amplitudes, cycles)

    @staticmethod
    def filtered_noise(gains: torch.Tensor, samples: int) -> torch.Tensor:
        return filtered_noise(gains, samples)


def tones(
    f0_hz: torch.Tensor,
    loudness: torch.Tensor,
    harmonics: torch.Tensor,
    sample_rate_hz: int,
    samples: int,
) -> torch.Tensor:
    """S sources' oscillator banks, summed per clip: f0_hz and loudness (B, S, F), harmonic
    weights (B, S, K, F) -> (B, samples). The sources play as one batch of B x S tones."""
    batch, sources, frames = f0_hz.shape
    f0_hz, loudness = f0_hz.reshape(-1, frames), loudness.reshape(-1, frames)
    harmonics = harmonics.reshape(batch * sources, HARMONICS, frames)
    # Harmonics at or above Nyquist would alias: silence them, then renormalise.
    numbers = Generator.harmonic_numbers(f0_hz.device)[None, :, None]
    audible = (numbers * f0_hz.unsqueeze(1) < sample_rate_hz / 2).float()
    harmonics = harmonics * audible
    harmonics = harmonics / harmonics.sum(dim=1, keepdim=True).clamp_min(1e-7)
    amplitudes = harmonics * loudness.unsqueeze(1)  # (B S, K, F)
    f0 = F.interpolate(f0_hz.unsqueeze(1), size=samples, mode="linear", align_corners=True)
    # The phase in cycles, summed in float64: float32 loses a tenth of a cycle by 4 s.
    cycles = torch.cumsum(f0[:, 0].double() / sample_rate_hz, dim=-1).remainder(1.0).float()
    return play(amplitudes, cycles).view(batch, sources, samples).sum(dim=1)


def play(amplitudes: torch.Tensor, cycles: torch.Tensor) -> torch.Tensor:
    """The oscillator bank sum_k a_k(t) sin(2 pi k phi(t)), with a_k linear between frames,
    computed as wavetable synthesis: one period per frame, sum_k a_k sin(2 pi k n / N), is
    a matrix product, and each sample reads the tables of its two frames at its phase
    (linear interpolation in both). The same sound as B x K x T sines (to 0.5% at the 48th
    harmonic), at a fraction of the cost; the gradient reaches the amplitudes through the
    tables and f0 through the tables' slope.

    amplitudes (B, K, F), cycles (B, T) in [0, 1) -> (B, T).
    """
    batch, _, frames = amplitudes.shape
    samples = cycles.shape[1]
    tables = amplitudes.transpose(1, 2) @ Generator.sines(amplitudes.device)  # (B, F, N)
    tables = torch.cat([tables, tables[..., :1]], dim=-1).reshape(batch, -1)  # wrap: N + 1
    position = cycles * TABLE_SIZE
    index = position.long().clamp_max(TABLE_SIZE - 1)
    within = position - index
    frame_position = torch.linspace(0, frames - 1, samples, device=cycles.device)
    frame = frame_position.long().clamp_max(max(frames - 2, 0))
    between = (frame_position - frame).clamp_max(1.0)
    tone = 0
    for offset, weight in ((0, 1 - between), (min(1, frames - 1), between)):
        start = ((frame + offset) * (TABLE_SIZE + 1)).expand(batch, -1) + index
        left, right = tables.gather(1, start), tables.gather(1, start + 1)
        tone = tone + weight * (left + within * (right - left))
    return tone


def filtered_noise(gains: torch.Tensor, samples: int, hop: int = HOP) -> torch.Tensor:
    """White noise shaped by per-frame band gains (B, bands, F): an STFT filter with windows
    of 2 hop samples, a frame every hop (B, T)."""
    n_fft = 2 * hop
    window = torch.hann_window(n_fft, device=gains.device)
    noise = torch.rand(gains.shape[0], samples, device=gains.device) * 2 - 1
    # (B, bins, F')
    spectrum = torch.stft(noise, n_fft, hop, window=window, return_complex=True)
    shape = F.interpolate(
        gains.unsqueeze(1), size=spectrum.shape[1:], mode="bilinear", align_corners=True
    )[:, 0]  # (B, bins, F')
    return torch.istft(spectrum * shape, n_fft, hop, window=window, length=samples)
