"""Polyphony: several pitches at once, in chords or as two instruments playing together.

    Guitar_chord        strummed chords of the plucked string, 8-30 ms between strings
    Organ_chord         held chords of an organ (drawbar harmonics 1, 2, 3, 4, 6, 8), no vibrato
    Sax_and_guitar      a reed melody over strummed chords
    Violin_and_trumpet  two lines at once: brass below, bowed string a third or sixth above

Chords are major, minor, seventh or suspended triads on a semitone grid; each clip is 1-6 s.
A single oscillator bank, whatever its harmonics, cannot make any of these.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from audiogan.synth.dsp import place, seconds, times
from audiogan.synth.instruments import bowed, brass, plucked, reed

MIN_SECONDS, MAX_SECONDS = 1.0, 6.0
CHORDS = {
    "major": (0, 4, 7),
    "minor": (0, 3, 7),
    "seventh": (0, 4, 7, 10),
    "minor_seventh": (0, 3, 7, 10),
    "suspended": (0, 5, 7),
}
DRAWBARS = (1, 2, 3, 4, 6, 8)  # the organ's harmonics


def organ(rng: np.random.Generator, f0_hz: float, n: int) -> np.ndarray:
    """One held organ note: fixed drawbar harmonics, a 10-30 ms attack and a 50 ms release."""
    t = times(n)
    levels = rng.uniform(0.2, 1.0, len(DRAWBARS)) / np.array(DRAWBARS) ** 0.5
    tone = sum(
        level * np.sin(2 * np.pi * k * f0_hz * t)
        for k, level in zip(DRAWBARS, levels, strict=True)
        if k * f0_hz < 15_000
    )
    attack = np.clip(t / rng.uniform(0.01, 0.03), 0, 1)
    release = np.clip((t[-1] - t) / 0.05, 0, 1)
    return tone * attack * release


def chord(rng, voice, root_hz: float, intervals, n: int, strum_s: float = 0.0) -> np.ndarray:
    """The notes of a chord played by `voice(rng, f0_hz, n)`, each `strum_s` after the last."""
    out = np.zeros(n)
    for i, semitones in enumerate(intervals):
        onset = min(seconds(i * strum_s), n - 1)
        out[onset:] += voice(rng, root_hz * 2 ** (semitones / 12), n - onset)
    return out


def _progression(rng: np.random.Generator, n: int) -> list[tuple[int, float, tuple]]:
    """(length, root Hz, intervals) of each chord: 0.5-2 s each, roots 110-220 Hz."""
    chords, remaining = [], n
    while remaining > 0:
        length = min(remaining, seconds(rng.uniform(0.5, 2.0)))
        root_hz = 110 * 2 ** (rng.integers(0, 13) / 12)
        intervals = CHORDS[rng.choice(list(CHORDS))]
        if rng.random() < 0.5:  # an inversion: the lowest note an octave up
            intervals = (*intervals[1:], intervals[0] + 12)
        chords.append((length, root_hz, intervals))
        remaining -= length
    return chords


def guitar_chords(rng: np.random.Generator, n: int) -> np.ndarray:
    strum_s = rng.uniform(0.008, 0.03)
    return np.concatenate([chord(rng, plucked, root, ivs, length, strum_s)
                           for length, root, ivs in _progression(rng, n)])  # fmt: skip


def organ_chords(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.concatenate(
        [chord(rng, organ, root, ivs, length) for length, root, ivs in _progression(rng, n)]
    )


def _line(rng: np.random.Generator, n: int, span: int) -> list[tuple[int, int]]:
    """(length, semitone) of each note of a melody: 0.25-1 s, moving by small steps."""
    notes, remaining, step = [], n, int(rng.integers(0, span + 1))
    while remaining > 0:
        length = min(remaining, seconds(rng.uniform(0.25, 1.0)))
        notes.append((length, step))
        remaining -= length
        step = int(np.clip(step + rng.integers(-3, 4), 0, span))
    return notes


def _play(rng, voice, line, low_hz: float, transpose: int = 0) -> np.ndarray:
    return np.concatenate([voice(rng, low_hz * 2 ** ((step + transpose) / 12), length)
                           * rng.uniform(0.7, 1.0) for length, step in line])  # fmt: skip


def sax_and_guitar(rng: np.random.Generator, n: int) -> np.ndarray:
    melody = _play(rng, reed, _line(rng, n, 14), 220.0)
    backing = guitar_chords(rng, n)
    return melody / np.abs(melody).max() + 0.7 * backing / (np.abs(backing).max() + 1e-9)


def violin_and_trumpet(rng: np.random.Generator, n: int) -> np.ndarray:
    """One melody played twice at once: brass, and bowed string a third or sixth above."""
    line = _line(rng, n, 12)
    interval = int(rng.choice([3, 4, 8, 9]))
    low = _play(rng, brass, line, 175.0)
    high = _play(rng, bowed, line, 175.0, transpose=interval)
    return low / np.abs(low).max() + high / (np.abs(high).max() + 1e-9)


def clip(music, rng: np.random.Generator) -> np.ndarray:
    return place(rng, music(rng, seconds(rng.uniform(MIN_SECONDS, MAX_SECONDS))))


CLASSES = {
    "Guitar_chord": partial(clip, guitar_chords),
    "Organ_chord": partial(clip, organ_chords),
    "Sax_and_guitar": partial(clip, sax_and_guitar),
    "Violin_and_trumpet": partial(clip, violin_and_trumpet),
}
