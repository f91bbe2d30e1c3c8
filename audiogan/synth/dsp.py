"""The few signal-processing pieces the synthetic kinds are built from (numpy only, 44.1 kHz).

Everything takes the random generator it draws from, so a clip depends only on its seed.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE_HZ = 44_100
# The STFT that shapes noise frame by frame: 23 ms windows, a frame every 5.8 ms.
NOISE_FFT = 1024
NOISE_HOP = 256


def seconds(n: float) -> int:
    """Samples in n seconds."""
    return int(round(n * SAMPLE_RATE_HZ))


def times(n: int) -> np.ndarray:
    """The time of each of n samples, in seconds."""
    return np.arange(n) / SAMPLE_RATE_HZ


def decay(n: int, seconds_to_1_over_e: float, attack_s: float = 0.0005) -> np.ndarray:
    """A struck sound's envelope: a short linear attack, then an exponential decay."""
    t = times(n)
    return np.clip(t / attack_s, 0, 1) * np.exp(-t / seconds_to_1_over_e)


def sine(f_hz: np.ndarray) -> np.ndarray:
    """A sine at an instantaneous frequency per sample (the phase summed in float64)."""
    return np.sin(2 * np.pi * np.cumsum(f_hz) / SAMPLE_RATE_HZ)


def band(audio: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    """The part of `audio` between low_hz and high_hz (a brick-wall filter in one FFT)."""
    spectrum = np.fft.rfft(audio)
    freqs = np.fft.rfftfreq(audio.size, 1 / SAMPLE_RATE_HZ)
    spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0
    return np.fft.irfft(spectrum, audio.size)


def resonance(freqs: np.ndarray, centre_hz, bandwidth_hz) -> np.ndarray:
    """The magnitude response of a two-pole resonator (a formant), 1 at 0 Hz.
    centre_hz and bandwidth_hz broadcast against freqs."""
    return centre_hz**2 / np.sqrt((centre_hz**2 - freqs**2) ** 2 + (bandwidth_hz * freqs) ** 2)


def noise_frames(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(frame times in s, bin frequencies in Hz) of the STFT that `shaped_noise` filters with."""
    frames = n // NOISE_HOP + 1
    return np.arange(frames) * NOISE_HOP / SAMPLE_RATE_HZ, np.fft.rfftfreq(
        NOISE_FFT, 1 / SAMPLE_RATE_HZ
    )


def shaped_noise(rng: np.random.Generator, n: int, gains: np.ndarray) -> np.ndarray:
    """White noise whose spectrum follows `gains` (frames, bins) from frame to frame, with the
    frames and bins `noise_frames(n)` gives: each frame's spectrum is multiplied by its row and
    the frames overlap-added (Hann analysis and synthesis windows, 75% overlap)."""
    pad = NOISE_FFT // 2
    frames = gains.shape[0]
    white = rng.standard_normal((frames - 1) * NOISE_HOP + NOISE_FFT)
    window = np.hanning(NOISE_FFT)
    windows = np.lib.stride_tricks.sliding_window_view(white, NOISE_FFT)[::NOISE_HOP][:frames]
    shaped = np.fft.irfft(np.fft.rfft(windows * window, axis=1) * gains, NOISE_FFT, axis=1)
    out = np.zeros(white.size)
    for i, frame in enumerate(shaped * window):
        out[i * NOISE_HOP : i * NOISE_HOP + NOISE_FFT] += frame
    out /= (window**2).sum() / NOISE_HOP  # the overlap-added windows' constant gain
    return out[pad : pad + n]


def at_frames(values: np.ndarray, n: int) -> np.ndarray:
    """A control given per noise frame (frames, ...) read at each of n samples (linear)."""
    frame_times, _ = noise_frames(n)
    t = times(n)
    if values.ndim == 1:
        return np.interp(t, frame_times, values)
    return np.stack([np.interp(t, frame_times, column) for column in values.T], axis=1)


def harmonics(f0_hz: np.ndarray, amplitude, max_hz: float = 10_000.0) -> np.ndarray:
    """A voiced tone: sum_k a_k(t) sin(2 pi k phi(t)), phi' = f0(t), for every harmonic under
    max_hz and Nyquist. `amplitude(k, f_hz)` gives a_k at each sample from the harmonic number
    and its frequency per sample (an array), so a filter's response can follow the pitch."""
    phase = 2 * np.pi * np.cumsum(f0_hz) / SAMPLE_RATE_HZ
    tone = np.zeros(f0_hz.size)
    ceiling = min(max_hz, 0.45 * SAMPLE_RATE_HZ)
    for k in range(1, int(ceiling / f0_hz.min()) + 1):
        f_hz = k * f0_hz
        audible = f_hz < ceiling
        if not audible.any():
            break
        tone += audible * amplitude(k, f_hz) * np.sin(k * phase)
    return tone


def place(
    rng: np.random.Generator,
    body: np.ndarray,
    max_lead_s: float = 0.8,
    max_tail_s: float = 0.8,
) -> np.ndarray:
    """A sound as a clip of the dataset: silence before and after it on about half of the
    clips, a peak of its own between -30 and -1 dBFS, and digital silence or a faint floor."""
    lead = seconds(rng.uniform(0.02, max_lead_s)) if rng.random() < 0.5 else 0
    tail = seconds(rng.uniform(0.02, max_tail_s)) if rng.random() < 0.5 else 0
    body = body / (np.max(np.abs(body)) + 1e-9) * 10 ** (rng.uniform(-30, -1) / 20)
    floor = rng.choice([0.0, 10 ** (-75 / 20)])
    audio = np.concatenate([np.zeros(lead), body, np.zeros(tail)])
    audio = audio + floor * rng.standard_normal(audio.size)
    return np.clip(audio, -1, 1).astype(np.float32)
