"""A synthesiser generator for any kind of sound: several pitched sources with free pitch
contours, noise at two time resolutions, and a learned waveform on top.

`ddsp` (one oscillator bank, one pitch per clip bent by 2 semitones, noise at 8 ms frames)
is built for steady monophonic notes. What it cannot make, and what this family adds:

    chords, two instruments        SOURCES oscillator banks, each with its own pitch
    a kick's sweep, a speech contour  pitch per frame, up to PITCH_RANGE_SEMITONES from the
                                   source's own (the kick falls over two octaves in 30 ms)
    snare and hat bursts, plosives noise shaped again every TRANSIENT_HOP samples (2 ms)
    anything else                  a waveform residual: transposed convolutions from the
                                   control frames to samples, its gain starting at 0

    z -> dense -> (C, 16) -> [upsample x2, conv, LeakyReLU] x 3 -> (C / 8, 128) -> `frames`
      -> per source and frame: f0, loudness, HARMONICS harmonic weights
      -> per frame: NOISE_BANDS band gains; per transient frame: TRANSIENT_BANDS band gains
      -> sum of the sources' tones + both noises + gain * residual -> tanh -> (B, 1, T)

The oscillators and the noise filter are ddsp.py's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from audiogan.models import ddsp
from audiogan.models.ddsp import HARMONICS, HOP, INITIAL_FRAMES, DDSPConfig, add_control_network

SOURCES = 2
PITCH_RANGE_SEMITONES = 24.0
NOISE_BANDS = 32
TRANSIENT_HOP = 32
TRANSIENT_BANDS = 16
SOURCE_PITCHES_HZ = ((40.0, 1000.0), (80.0, 2000.0))  # each source's own range (log scale)
# The residual's transposed convolutions: strides that multiply to HOP.
RESIDUAL_STRIDES = (8, 4, 4)


class Generator(nn.Module):
    def __init__(self, cfg: DDSPConfig):
        super().__init__()
        self.cfg = cfg
        embed, widths = add_control_network(self, cfg)
        self.source_pitch = nn.Linear(cfg.latent_dim + embed, SOURCES)
        per_source = 2 + HARMONICS  # loudness, pitch bend, harmonics
        self.controls = nn.Conv1d(widths[-1], SOURCES * per_source + NOISE_BANDS, 1)
        rate = HOP // TRANSIENT_HOP
        self.transient = nn.ConvTranspose1d(widths[-1], TRANSIENT_BANDS, 2 * rate, rate, rate // 2)
        layers, channels = [], widths[-1]
        for stride in RESIDUAL_STRIDES:
            out = max(channels // 2, 4)
            layers += [nn.ConvTranspose1d(channels, out, 2 * stride, stride, stride // 2),
                       nn.LeakyReLU(0.2)]  # fmt: skip
            channels = out
        self.residual = nn.Sequential(*layers, nn.Conv1d(channels, 1, 7, padding=3))
        self.residual_gain = nn.Parameter(torch.zeros(()))
        with torch.no_grad():  # start as ddsp does: plain tones at a steady pitch, quiet noise
            bias = self.controls.bias.view(-1)
            weight = self.controls.weight
            for s in range(SOURCES):
                first = s * per_source
                bias[first] = ddsp.LOUDNESS_BIAS - 1.0 * s  # the second source quieter
                bias[first + 1] = 0.0
                weight[first + 1] *= 0.1  # pitch bends start small
                bias[first + 2 : first + per_source] = -torch.log(torch.arange(1.0, HARMONICS + 1))
            bias[SOURCES * per_source :] = ddsp.NOISE_BIAS
            self.transient.bias.fill_(ddsp.NOISE_BIAS)

    def features(self, z: torch.Tensor, labels: torch.Tensor | None):
        """(z with the label's embedding, frame features (B, d, frames))."""
        if self.label_embedding is not None:
            z = torch.cat([z, self.label_embedding(labels)], dim=1)
        x = self.dense(z).view(z.shape[0], -1, INITIAL_FRAMES)
        for conv in self.convs:
            x = F.leaky_relu(conv(F.interpolate(x, scale_factor=2.0)), 0.2)
        x = F.interpolate(x, size=self.cfg.frames, mode="linear", align_corners=True)
        return z, F.leaky_relu(self.smooth(x), 0.2)

    def control_frames(self, z: torch.Tensor, labels: torch.Tensor | None = None):
        """(f0_hz (B, S, F), loudness (B, S, F), harmonics (B, S, K, F), noise gains (B, bands,
        F), transient gains (B, transient bands, F x HOP / TRANSIENT_HOP), frame features)."""
        z, x = self.features(z, labels)
        controls = self.controls(x).float()
        batch = z.shape[0]
        sources = controls[:, : SOURCES * (2 + HARMONICS)].view(batch, SOURCES, 2 + HARMONICS, -1)
        lows = torch.tensor([low for low, _ in SOURCE_PITCHES_HZ], device=z.device)
        highs = torch.tensor([high for _, high in SOURCE_PITCHES_HZ], device=z.device)
        own_hz = lows * (highs / lows) ** torch.sigmoid(self.source_pitch(z).float())  # (B, S)
        bend = PITCH_RANGE_SEMITONES * torch.tanh(sources[:, :, 1])  # (B, S, F)
        f0_hz = own_hz[..., None] * 2 ** (bend / 12)
        loudness = ddsp.scaled_sigmoid(sources[:, :, 0])
        harmonics = torch.softmax(sources[:, :, 2:], dim=2)
        noise = ddsp.scaled_sigmoid(controls[:, SOURCES * (2 + HARMONICS) :])
        transient = ddsp.scaled_sigmoid(self.transient(x).float())
        return f0_hz, loudness, harmonics, noise, transient, x

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        f0_hz, loudness, harmonics, noise, transient, x = self.control_frames(z, labels)
        residual = self.residual(x)[:, 0, : self.cfg.clip_samples].float()
        with torch.autocast(z.device.type, enabled=False):
            return self.synthesise(f0_hz, loudness, harmonics, noise, transient, residual)

    def synthesise(self, f0_hz, loudness, harmonics, noise, transient, residual) -> torch.Tensor:
        samples = self.cfg.clip_samples
        out = self.residual_gain * residual
        out = out + ddsp.tones(f0_hz, loudness, harmonics, self.cfg.sample_rate_hz, samples)
        out = out + ddsp.filtered_noise(noise, samples)
        out = out + ddsp.filtered_noise(transient, samples, TRANSIENT_HOP)
        return torch.tanh(out).unsqueeze(1)
