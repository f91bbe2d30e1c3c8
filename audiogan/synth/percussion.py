"""Percussion: drum-machine one-shots (after the analogue designs of the TR-808 and TR-909).

Each clip is one hit, or a short pattern of up to four, of one instrument:

    Kick_drum   a sine whose pitch falls from 110-250 Hz to 40-65 Hz in tens of ms, and a click
    Snare_drum  two drum-head modes near 180 and 330 Hz under a burst of bright wire noise
    Hi_hat      six detuned square waves and noise, all above 6 kHz; closed, or open (longer)
    Tom         a sine falling by a third or so, 80-250 Hz, with a second mode, ringing longer
    Hand_clap   three or four 1-2 kHz noise bursts 8-15 ms apart, then a short reverberant tail

What a harmonic synthesiser finds hard here: a pitch that sweeps an octave or more, and bursts
shorter than its frames.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from audiogan.synth.dsp import band, decay, place, seconds, sine, times


def kick(rng: np.random.Generator, n: int) -> np.ndarray:
    start_hz, end_hz = rng.uniform(110, 250), rng.uniform(40, 65)
    sweep_s = rng.uniform(0.02, 0.06)
    f_hz = end_hz + (start_hz - end_hz) * np.exp(-times(n) / sweep_s)
    body = sine(f_hz) * decay(n, rng.uniform(0.15, 0.5), attack_s=0.001)
    click = band(rng.standard_normal(n), 20, 4000) * decay(n, 0.002)
    return body + rng.uniform(0.1, 0.3) * click / (np.abs(click).max() + 1e-9)


def snare(rng: np.random.Generator, n: int) -> np.ndarray:
    head = 0
    for f_hz in (rng.uniform(160, 200), rng.uniform(300, 350)):
        head = head + sine(np.full(n, f_hz)) * decay(n, rng.uniform(0.05, 0.12))
    wires = band(rng.standard_normal(n), rng.uniform(1200, 2000), rng.uniform(8000, 11000))
    wires = wires / (np.abs(wires).max() + 1e-9) * decay(n, rng.uniform(0.08, 0.2))
    return rng.uniform(0.3, 0.6) * head + wires


# The TR-808's six square-wave oscillators (Hz), detuned together per clip.
_HAT_OSCILLATORS_HZ = (205.3, 304.4, 369.6, 522.7, 540.0, 800.0)


def hat(rng: np.random.Generator, n: int) -> np.ndarray:
    detune = rng.uniform(0.9, 1.15)
    metal = sum(np.sign(sine(np.full(n, f * detune))) for f in _HAT_OSCILLATORS_HZ)
    noise = rng.standard_normal(n) * rng.uniform(0.5, 2.0)
    bright = band(metal + noise, rng.uniform(6000, 7500), 16000)
    length_s = rng.uniform(0.2, 0.6) if rng.random() < 0.25 else rng.uniform(0.02, 0.07)
    return bright * decay(n, length_s)


def tom(rng: np.random.Generator, n: int) -> np.ndarray:
    end_hz = rng.uniform(80, 250)
    start_hz = end_hz * rng.uniform(1.15, 1.6)
    f_hz = end_hz + (start_hz - end_hz) * np.exp(-times(n) / rng.uniform(0.05, 0.15))
    length_s = rng.uniform(0.25, 0.7)
    body = sine(f_hz) * decay(n, length_s, attack_s=0.001)
    overtone = sine(f_hz * rng.uniform(1.45, 1.6)) * decay(n, length_s / 3)
    skin = band(rng.standard_normal(n), 100, 3000) * decay(n, 0.004)
    return body + 0.3 * overtone + 0.05 * skin


def clap(rng: np.random.Generator, n: int) -> np.ndarray:
    centre_hz = rng.uniform(900, 2000)
    noise = band(rng.standard_normal(n), centre_hz / 1.8, centre_hz * 1.8)
    noise /= np.abs(noise).max() + 1e-9
    envelope = np.zeros(n)
    onset = 0
    for _ in range(rng.integers(3, 5)):
        burst = decay(n - onset, rng.uniform(0.004, 0.008))
        envelope[onset:] = np.maximum(envelope[onset:], burst * rng.uniform(0.6, 1.0))
        onset += seconds(rng.uniform(0.008, 0.015))
    envelope[onset:] = np.maximum(envelope[onset:], decay(n - onset, rng.uniform(0.05, 0.15)))
    return noise * envelope


def pattern(hit, rng: np.random.Generator) -> np.ndarray:
    """One hit (about half the clips) or two to four, 0.15-0.6 s apart, each struck anew."""
    hits = 1 if rng.random() < 0.5 else int(rng.integers(2, 5))
    ring = seconds(1.2)
    onsets = np.cumsum([0] + [seconds(rng.uniform(0.15, 0.6)) for _ in range(hits - 1)])
    out = np.zeros(onsets[-1] + ring)
    for onset in onsets:
        out[onset : onset + ring] += hit(rng, ring) * rng.uniform(0.5, 1.0)
    audible = np.nonzero(np.abs(out) > 1e-4 * np.abs(out).max())[0]
    return out[: audible[-1] + 1]


def clip(hit, rng: np.random.Generator) -> np.ndarray:
    return place(rng, pattern(hit, rng), max_lead_s=0.25, max_tail_s=0.5)


CLASSES = {
    "Kick_drum": partial(clip, kick),
    "Snare_drum": partial(clip, snare),
    "Hi_hat": partial(clip, hat),
    "Tom": partial(clip, tom),
    "Hand_clap": partial(clip, clap),
}
