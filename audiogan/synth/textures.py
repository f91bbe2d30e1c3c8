"""Textures: sounds with no pitch, made of many small events or of slowly moving noise.

    Rain          hundreds to thousands of drops a second (each a damped 1.5-6 kHz ring) on a hiss
    Wind          noise through a resonance that wanders over 200-1500 Hz, in gusts
    Fire_crackle  sparse sharp clicks of heavy-tailed loudness over a low rumble
    Applause      30-150 claps a second (1-4 kHz noise bursts), swelling and dying away

Each clip is 1-8 s long.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from audiogan.synth.dsp import (
    SAMPLE_RATE_HZ,
    band,
    decay,
    noise_frames,
    place,
    resonance,
    seconds,
    shaped_noise,
    times,
)

MIN_SECONDS, MAX_SECONDS = 1.0, 8.0


def _wander(rng: np.random.Generator, count: int, steps_per_s: float, frame_s: float) -> np.ndarray:
    """A smooth random walk in [0, 1] with `count` values, about `steps_per_s` turns a second."""
    knots = max(2, int(count * frame_s * steps_per_s) + 2)
    values = np.clip(0.5 + np.cumsum(rng.normal(0, 0.25, knots)), 0, 1)
    return np.interp(np.linspace(0, knots - 1, count), np.arange(knots), values)


def _scatter(out: np.ndarray, onsets: np.ndarray, grain) -> None:
    """Adds grain(i) (an array) at each onset, cut at the end of `out`."""
    for i, onset in enumerate(onsets):
        g = grain(i)
        out[onset : onset + g.size] += g[: out.size - onset]


def rain(rng: np.random.Generator, n: int) -> np.ndarray:
    drops = rng.poisson(rng.uniform(200, 1500) * n / SAMPLE_RATE_HZ)
    onsets = rng.integers(0, n, drops)
    freqs = np.exp(rng.uniform(np.log(1500), np.log(6000), drops))
    decays = rng.uniform(0.002, 0.008, drops)
    loudness = rng.uniform(0.1, 1.0, drops) ** 2
    ring = times(seconds(0.03))
    out = np.zeros(n)
    _scatter(
        out,
        onsets,
        lambda i: loudness[i] * np.sin(2 * np.pi * freqs[i] * ring) * np.exp(-ring / decays[i]),
    )
    hiss = band(rng.standard_normal(n), 300, 12000)
    return out / (np.abs(out).max() + 1e-9) + rng.uniform(0.05, 0.2) * hiss / np.abs(hiss).max()


def wind(rng: np.random.Generator, n: int) -> np.ndarray:
    frame_s, freqs = noise_frames(n)
    frame_step = frame_s[1] - frame_s[0]
    centre = 200 * 7.5 ** _wander(rng, frame_s.size, 0.7, frame_step)  # 200-1500 Hz
    gust = 0.15 + 0.85 * _wander(rng, frame_s.size, 0.5, frame_step)
    shape = resonance(freqs[None], centre[:, None], 0.4 * centre[:, None]) + 0.3 * resonance(
        freqs[None], 120.0, 150.0
    )
    return shaped_noise(rng, n, gust[:, None] * shape)


def crackle(rng: np.random.Generator, n: int) -> np.ndarray:
    pops = rng.poisson(rng.uniform(5, 40) * n / SAMPLE_RATE_HZ)
    onsets = rng.integers(0, n, pops)
    loudness = np.minimum(rng.pareto(1.5, pops) + 0.05, 4.0)
    out = np.zeros(n)
    _scatter(
        out,
        onsets,
        lambda i: (
            loudness[i]
            * rng.standard_normal(seconds(0.004))
            * decay(seconds(0.004), rng.uniform(0.0002, 0.001), attack_s=0.00005)
        ),
    )
    rumble = band(rng.standard_normal(n), 30, 400)
    return (
        out / (np.abs(out).max() + 1e-9) + rng.uniform(0.05, 0.25) * rumble / np.abs(rumble).max()
    )


def applause(rng: np.random.Generator, n: int) -> np.ndarray:
    duration_s = n / SAMPLE_RATE_HZ
    claps = rng.poisson(rng.uniform(30, 150) * duration_s)
    onsets = np.sort(rng.integers(0, n, claps))
    grain = seconds(0.03)
    centres = rng.uniform(1000, 4000, claps)
    out = np.zeros(n)

    def clap(i: int) -> np.ndarray:
        burst = band(rng.standard_normal(grain), centres[i] / 1.6, centres[i] * 1.6)
        return burst * decay(grain, rng.uniform(0.005, 0.015)) * rng.uniform(0.3, 1.0)

    _scatter(out, onsets, clap)
    swell = rng.uniform(0.1, 0.4) * duration_s
    t = times(n)
    envelope = np.clip(t / swell, 0, 1) * np.clip((duration_s - t) / swell, 0, 1) ** 0.5
    return out * envelope


def clip(texture, rng: np.random.Generator) -> np.ndarray:
    n = seconds(rng.uniform(MIN_SECONDS, MAX_SECONDS))
    return place(rng, texture(rng, n), max_lead_s=0.3, max_tail_s=0.3)


CLASSES = {
    "Rain": partial(clip, rain),
    "Wind": partial(clip, wind),
    "Fire_crackle": partial(clip, crackle),
    "Applause": partial(clip, applause),
}
