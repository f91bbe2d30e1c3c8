"""Speech-like syllables from a source-filter model (after Klatt 1980), one syllable a class.

A voiced source (harmonics of a pitch that follows a contour, falling 6 dB an octave) passes
through three formant resonators that move from the consonant's locus to the vowel's values;
noise shaped by the same formants (aspiration) or by a high resonance (frication) and a
plosive's release burst make the unvoiced parts. Each clip is one syllable by one speaker:

    Syllable_ba  a voice bar under the closed lips, a soft low burst, then /a/ (F1 730, F2 1090)
    Syllable_ti  silence, a sharp high burst, 40-70 ms of aspiration, then /i/ (270, 2290)
    Syllable_su  120-200 ms of hiss near 6 kHz, then /u/ (300, 870)
    Syllable_mo  a nasal murmur near 250 Hz, then /o/ (570, 840)
    Syllable_ke  silence, a compact mid burst, aspiration, then /e/ (530, 1840)

A speaker is a pitch (85-260 Hz), a vocal tract length (formants scaled by 0.85-1.2, shorter
with higher voices), a speaking rate and a contour: a fall, a rise, or a rise and fall, of 2-5
semitones. No recorded or ready-made speech is used, nor any speech synthesiser's voice.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from audiogan.synth.dsp import (
    band,
    decay,
    harmonics,
    noise_frames,
    place,
    resonance,
    seconds,
    shaped_noise,
    times,
)

# Peterson & Barney's (1952) averages for men: F1, F2, F3 in Hz.
VOWELS_HZ = {
    "a": (730.0, 1090.0, 2440.0),
    "i": (270.0, 2290.0, 3010.0),
    "u": (300.0, 870.0, 2240.0),
    "o": (570.0, 840.0, 2410.0),
    "e": (530.0, 1840.0, 2480.0),
}
BANDWIDTHS_HZ = (80.0, 100.0, 160.0)
# Where F1 and F2 start at the release: the lips close low (b, m), the tongue tip high (t, s),
# the back of the tongue where F2 and F3 meet (k).
LOCUS_HZ = {"b": (250, 900), "m": (250, 900), "t": (250, 1800), "s": (300, 1700), "k": (250, 2200)}
# A plosive's release burst: (lowest, highest Hz, decay s, level against the vowel's peak).
BURSTS = {
    "b": (100, 1500, 0.002, 0.25),
    "t": (3000, 8000, 0.003, 0.5),
    "k": (1500, 3500, 0.006, 0.5),
}
SYLLABLES = {"Syllable_ba": "ba", "Syllable_ti": "ti", "Syllable_su": "su", "Syllable_mo": "mo",
             "Syllable_ke": "ke"}  # fmt: skip
VOICED_MAX_HZ = 8000.0  # harmonics above this are left out (a 16 kHz dataset keeps none)


@dataclass(frozen=True)
class Speaker:
    f0_hz: float
    formant_scale: float  # a shorter vocal tract scales every formant up
    rate: float  # durations are multiplied by it
    fall_semitones: float  # f0 moves by this over the syllable, linearly (negative: a rise)
    arch_semitones: float  # and by this up and back down, as a half sine


def random_speaker(rng: np.random.Generator) -> Speaker:
    f0_hz = float(np.exp(rng.uniform(np.log(85), np.log(260))))
    height = (np.log(f0_hz) - np.log(85)) / (np.log(260) - np.log(85))  # 0 low, 1 high voice
    scale = 0.85 + 0.3 * height + rng.uniform(-0.04, 0.04)
    shape = rng.choice(["fall", "rise", "arch"])
    fall, arch = {
        "fall": (rng.uniform(2, 5), rng.uniform(0, 1.5)),
        "rise": (-rng.uniform(2, 5), rng.uniform(0, 1)),
        "arch": (rng.uniform(0, 1.5), rng.uniform(2, 4)),
    }[shape]
    return Speaker(f0_hz, float(np.clip(scale, 0.85, 1.2)), rng.uniform(0.8, 1.25), fall, arch)


def _track(n: int, points: list[tuple[float, float]]) -> np.ndarray:
    """A control per sample through (time s, value) breakpoints, linear between them."""
    at, value = zip(*points, strict=True)
    return np.interp(times(n), at, value)


def syllable(rng: np.random.Generator, text: str, speaker: Speaker) -> np.ndarray:
    """One consonant-vowel syllable (`text` such as "ba") said by `speaker`, unscaled."""
    consonant, vowel = text
    r, scale = speaker.rate, speaker.formant_scale
    # The consonant's timing: when it releases into the vowel, and when voicing starts.
    if consonant in "tk":
        release = rng.uniform(0.03, 0.06) * r  # the closure is silent
        voice_on = release + rng.uniform(0.04, 0.075) * r  # aspiration until voicing
    elif consonant == "s":
        release = rng.uniform(0.12, 0.2) * r  # frication until the vowel
        voice_on = release - 0.01
    else:  # b and m are voiced throughout: a voice bar or a murmur while the lips are closed
        release = rng.uniform(0.03, 0.07) * r if consonant == "b" else rng.uniform(0.06, 0.1) * r
        voice_on = 0.0
    end = release + rng.uniform(0.18, 0.35) * r
    n = seconds(end + 0.05)

    # Formants: at the locus when the consonant releases, at the vowel's values 35-60 ms later.
    settle = release + rng.uniform(0.035, 0.06) * r
    vowel_hz = np.array(VOWELS_HZ[vowel]) * scale
    locus_hz = (*(np.array(LOCUS_HZ[consonant]) * scale), vowel_hz[2])
    formants = [
        _track(n, [(0, start), (release, start), (settle, target), (end, target)])
        for start, target in zip(locus_hz, vowel_hz, strict=True)
    ]

    # The voiced source's pitch: the contour over the voiced span, with a little jitter.
    u = np.clip((times(n) - voice_on) / (end - voice_on), 0, 1)
    semitones = -speaker.fall_semitones * u + speaker.arch_semitones * np.sin(np.pi * u)
    jitter = 1 + 0.003 * rng.standard_normal(n).cumsum() / np.sqrt(n)  # a slow random walk
    f0_hz = speaker.f0_hz * 2 ** (semitones / 12) * jitter
    onset = voice_on if consonant in "tks" else release
    voicing = _track(n, [(0, 0), (onset, 0), (onset + 0.015, 1), (end - 0.06, 0.85), (end, 0)])
    # Under closed lips: a voice bar (b) or a nasal murmur (m), quiet and low.
    closed_level = {"b": 0.06, "m": 0.35}.get(consonant, 0.0)
    closed = _track(
        n, [(0, 0), (0.01, closed_level), (release, closed_level), (release + 0.01, 0), (end, 0)]
    )

    def amplitude(k: int, f_hz: np.ndarray) -> np.ndarray:
        source = 1.0 / k
        tract = 1.0
        for centre, width in zip(formants, BANDWIDTHS_HZ, strict=True):
            tract = tract * resonance(f_hz, centre, width)
        murmur = resonance(f_hz, 250 * scale, 60) * (1 + 0.3 * resonance(f_hz, 1100 * scale, 200))
        return source * (voicing * tract + closed * murmur)

    voiced = harmonics(f0_hz, amplitude, VOICED_MAX_HZ)
    voiced /= np.abs(voiced).max() + 1e-9

    # Unvoiced parts: aspiration through the moving formants, or frication near 6 kHz.
    frame_s, freqs = noise_frames(n)
    frame_formants = [np.interp(frame_s, times(n), track) for track in formants]
    if consonant in "tk":
        at = [release, release + 0.005, voice_on, voice_on + 0.02]
        level = np.interp(frame_s, at, [0, 0.12, 0.08, 0])
        shape = np.ones((frame_s.size, freqs.size))
        for centre, width in zip(frame_formants, BANDWIDTHS_HZ, strict=True):
            shape = shape * resonance(freqs[None], centre[:, None], 2 * width)
        shape = shape * np.clip(freqs / 1000, 0.2, 2)[None]
    elif consonant == "s":
        level = np.interp(frame_s, [0, 0.03, release - 0.02, release], [0, 0.3, 0.3, 0])
        peak_hz = rng.uniform(5000, 7000) * scale
        hiss = resonance(freqs, peak_hz, 2000) * (freqs > 3000)
        shape = np.broadcast_to(hiss, (frame_s.size, freqs.size))
    else:
        level, shape = np.zeros(frame_s.size), np.zeros((frame_s.size, freqs.size))
    noise = shaped_noise(rng, n, level[:, None] * shape / (shape.max() + 1e-9))

    audio = voiced + noise
    if consonant in BURSTS:
        low_hz, high_hz, decay_s, level = BURSTS[consonant]
        at, length = seconds(release), seconds(0.03)
        burst = band(rng.standard_normal(length), low_hz, high_hz) * decay(length, decay_s)
        audio[at : at + length] += level * burst / (np.abs(burst).max() + 1e-9)
    return audio


def clip(text: str, rng: np.random.Generator) -> np.ndarray:
    return place(rng, syllable(rng, text, random_speaker(rng)), max_lead_s=0.25, max_tail_s=0.4)


CLASSES = {label: partial(clip, text) for label, text in SYLLABLES.items()}
