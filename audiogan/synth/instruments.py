"""Instruments: four monophonic timbres (plucked string, reed, brass, bowed string).

Each class has a clearly different timbre, and each clip is a phrase of notes that varies in
pitch, loudness, length and silence, so a GAN has something to learn and a classifier
something to tell apart.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from audiogan.synth.dsp import SAMPLE_RATE_HZ

MIN_SECONDS, MAX_SECONDS = 0.4, 10.0
TABLE_SIZE = 4096


def _wavetable(amplitudes: np.ndarray) -> np.ndarray:
    """One period of sum_k a_k sin(2 pi k x), with a wrap-around sample for interpolation."""
    x = np.arange(TABLE_SIZE + 1) / TABLE_SIZE
    harmonics = np.arange(1, len(amplitudes) + 1)[:, None]
    table = (amplitudes[:, None] * np.sin(2 * np.pi * harmonics * x)).sum(axis=0)
    return (table / np.max(np.abs(table))).astype(np.float32)


def _play(table: np.ndarray, f0_hz: np.ndarray) -> np.ndarray:
    """Reads a wavetable at an instantaneous frequency per sample (linear interpolation)."""
    phase = np.cumsum(f0_hz / SAMPLE_RATE_HZ) % 1.0 * TABLE_SIZE
    index = phase.astype(np.int64)
    frac = (phase - index).astype(np.float32)
    return table[index] * (1 - frac) + table[index + 1] * frac


def _harmonic_count(f0_hz: float) -> int:
    return max(1, int(0.45 * SAMPLE_RATE_HZ / (f0_hz * 1.03)))  # stay under Nyquist with vibrato


def _envelope(n: int, attack_s: float, release_s: float, decay_per_s: float = 0.0) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE_HZ
    attack = np.clip(t / max(attack_s, 1e-4), 0, 1)
    release = np.clip((n / SAMPLE_RATE_HZ - t) / max(release_s, 1e-4), 0, 1)
    return (attack * release * np.exp(-decay_per_s * t)).astype(np.float32)


def _noise(rng: np.random.Generator, n: int, low_hz: float, high_hz: float) -> np.ndarray:
    """White noise band-limited to [low_hz, high_hz] in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE_HZ)
    spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0
    band = np.fft.irfft(spectrum, n)
    return (band / (np.max(np.abs(band)) + 1e-9)).astype(np.float32)


def _vibrato(n: int, rate_hz: float, depth: float, delay_s: float, rng) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE_HZ
    ramp = np.clip((t - delay_s) / 0.3, 0, 1)
    return 1 + depth * ramp * np.sin(2 * np.pi * rate_hz * t + rng.uniform(0, 2 * np.pi))


def reed(rng: np.random.Generator, f0_hz: float, n: int) -> np.ndarray:
    """Saxophone-like: rich harmonics with a bright formant, vibrato, breath noise."""
    k = np.arange(1, _harmonic_count(f0_hz) + 1)
    formant = 1 + 2.0 * np.exp(-((((k * f0_hz) - 1500) / 700) ** 2))
    amplitudes = k**-0.9 * formant * np.where(k % 2 == 0, 0.6, 1.0)
    f0 = f0_hz * _vibrato(n, rng.uniform(4.8, 6.0), rng.uniform(0.004, 0.012), 0.2, rng)
    env = _envelope(n, rng.uniform(0.03, 0.08), 0.08)
    tone = _play(_wavetable(amplitudes), f0)
    breath = _noise(rng, n, 1500, 9000) * rng.uniform(0.03, 0.08)
    return env * (tone + breath)


def bowed(rng: np.random.Generator, f0_hz: float, n: int) -> np.ndarray:
    """Violin-like: sawtooth harmonics through body resonances, slow attack, bow noise."""
    k = np.arange(1, _harmonic_count(f0_hz) + 1)
    freqs = k * f0_hz
    body = sum(
        np.exp(-(((freqs - centre) / width) ** 2)) for centre, width in ((450, 150), (2800, 900))
    )
    amplitudes = (1.0 / k) * (0.4 + body)
    f0 = f0_hz * _vibrato(n, rng.uniform(5.5, 7.0), rng.uniform(0.006, 0.015), 0.35, rng)
    env = _envelope(n, rng.uniform(0.12, 0.3), 0.12)
    tone = _play(_wavetable(amplitudes), f0)
    bow_rate = rng.uniform(3, 8)
    scratch = 0.6 + 0.4 * np.sin(2 * np.pi * bow_rate * np.arange(n) / SAMPLE_RATE_HZ)
    bow = _noise(rng, n, 2000, 7000) * scratch * rng.uniform(0.05, 0.12)
    return env * (tone + bow.astype(np.float32))


def plucked(rng: np.random.Generator, f0_hz: float, n: int) -> np.ndarray:
    """Guitar-like: an instant attack and harmonics that die away, the high ones faster."""
    t = np.arange(n, dtype=np.float32) / SAMPLE_RATE_HZ
    pluck_position = rng.uniform(0.1, 0.3)
    base_decay = rng.uniform(1.0, 2.5)
    tone = np.zeros(n, dtype=np.float32)
    for k in range(1, min(_harmonic_count(f0_hz), 24) + 1):
        amplitude = abs(np.sin(np.pi * k * pluck_position)) / k
        decay = base_decay * (1 + 0.25 * k**1.3)
        tone += (amplitude * np.exp(-decay * t) * np.sin(2 * np.pi * k * f0_hz * t)).astype(
            np.float32
        )
    thump = _noise(rng, n, 80, 3000) * np.exp(-t / 0.01).astype(np.float32) * 0.3
    return _envelope(n, 0.002, 0.05) * (tone + thump)


def brass(rng: np.random.Generator, f0_hz: float, n: int) -> np.ndarray:
    """Trumpet-like: a sharp attack with a pitch scoop, brighter as it gets louder."""
    k = np.arange(1, _harmonic_count(f0_hz) + 1)
    dark, bright = _wavetable(k**-2.2), _wavetable(k**-0.5)
    t = np.arange(n) / SAMPLE_RATE_HZ
    scoop = 1 - rng.uniform(0.02, 0.05) * np.exp(-t / 0.03)
    f0 = f0_hz * scoop * _vibrato(n, rng.uniform(5.0, 6.5), rng.uniform(0.0, 0.006), 0.5, rng)
    env = _envelope(n, rng.uniform(0.008, 0.02), 0.06)
    overshoot = 1 + 0.5 * np.exp(-t / 0.05)
    loudness = np.clip(env * overshoot / 1.5, 0, 1).astype(np.float32)
    brightness = loudness**1.5
    tone = (1 - brightness) * _play(dark, f0) + brightness * _play(bright, f0)
    return loudness * tone


# label -> (note synthesiser, lowest and highest fundamental in Hz)
INSTRUMENTS: dict[str, tuple[Callable, float, float]] = {
    "Acoustic_guitar": (plucked, 82.0, 660.0),
    "Saxophone": (reed, 138.0, 880.0),
    "Trumpet": (brass, 165.0, 932.0),
    "Violin_or_fiddle": (bowed, 196.0, 1320.0),
}


def phrase(label: str, rng: np.random.Generator) -> np.ndarray:
    """One clip: a phrase of notes of one instrument, with silence and a loudness of its own."""
    synthesise, low_hz, high_hz = INSTRUMENTS[label]
    seconds = rng.uniform(MIN_SECONDS, MAX_SECONDS)
    total = int(seconds * SAMPLE_RATE_HZ)
    lead = int(rng.uniform(0.05, 0.8) * SAMPLE_RATE_HZ) if rng.random() < 0.5 else 0
    tail = int(rng.uniform(0.05, 0.8) * SAMPLE_RATE_HZ) if rng.random() < 0.5 else 0
    body = max(total - lead - tail, int(0.2 * SAMPLE_RATE_HZ))

    # Notes on a semitone grid, moving by small steps as a melody would.
    semitone = rng.integers(0, int(12 * np.log2(high_hz / low_hz)) + 1)
    notes = []
    remaining = body
    while remaining > 0:
        length = min(remaining, int(rng.uniform(0.3, 2.5) * SAMPLE_RATE_HZ))
        f0 = low_hz * 2 ** (semitone / 12)
        notes.append(synthesise(rng, f0, length) * rng.uniform(0.6, 1.0))
        remaining -= length
        semitone = int(np.clip(semitone + rng.integers(-4, 5), 0, 12 * np.log2(high_hz / low_hz)))
    melody = np.concatenate(notes)
    melody = melody / (np.max(np.abs(melody)) + 1e-9) * 10 ** (rng.uniform(-30, -1) / 20)
    floor = rng.choice([0.0, 10 ** (-75 / 20)])  # digital silence or a faint noise floor
    audio = np.concatenate([np.zeros(lead), melody, np.zeros(tail)])
    audio = audio + floor * rng.standard_normal(audio.size)
    return np.clip(audio, -1, 1).astype(np.float32)


CLASSES = {label: partial(phrase, label) for label in INSTRUMENTS}
