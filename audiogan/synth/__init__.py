"""Synthetic stand-ins for FSDKaggle2018, one per kind of sound, written as 44.1 kHz 16-bit WAVs.

No real dataset can be downloaded where audiogan is developed and tested, so the demo and the
tests use these, and a recipe is judged on every kind, not only the one it was designed on:

    instruments  plucked string, reed, brass, bowed string: phrases of steady notes
    percussion   kick (a falling pitch), snare, hi-hat, tom, hand clap: one-shots and short patterns
    speech       syllables ba, ti, su, mo, ke from a source-filter model: pitch contours,
                 formant transitions, voiced and unvoiced parts, plosive bursts
    textures     rain, wind, fire crackle, applause: noise without pitch, granular or slow
    polyphonic   strummed and organ chords, two instruments at once

Every clip depends only on (seed, label, index), whatever the kind, the layout or the workers.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from audiogan.synth import instruments, percussion, polyphonic, speech, textures
from audiogan.synth.dsp import SAMPLE_RATE_HZ

# kind -> label -> renderer(rng) -> the clip at SAMPLE_RATE_HZ
KINDS: dict[str, dict[str, Callable[[np.random.Generator], np.ndarray]]] = {
    "instruments": instruments.CLASSES,
    "percussion": percussion.CLASSES,
    "speech": speech.CLASSES,
    "textures": textures.CLASSES,
    "polyphonic": polyphonic.CLASSES,
}
DEFAULT_KIND = "instruments"
_RENDERERS = {label: render for classes in KINDS.values() for label, render in classes.items()}
assert len(_RENDERERS) == sum(map(len, KINDS.values())), "a label in two kinds"
# Share of rows marked manually_verified, as in FSDKaggle2018 (about 40% there).
VERIFIED_SHARE = 0.6

__all__ = ["DEFAULT_KIND", "KINDS", "SAMPLE_RATE_HZ", "plan", "render_clip", "synthesize"]


@dataclass(frozen=True)
class ClipSpec:
    label: str
    index: int
    fname: str
    verified: bool


def _fname(seed: int, label: str, index: int) -> str:
    digest = hashlib.sha256(f"{seed}:{label}:{index}".encode()).hexdigest()
    return f"{digest[:8]}.wav"


def _clip_rng(seed: int, label: str, index: int) -> np.random.Generator:
    digest = hashlib.sha256(f"audio:{seed}:{label}:{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def render_clip(seed: int, label: str, index: int) -> np.ndarray:
    """One clip of a label of any kind (float32 in [-1, 1] at SAMPLE_RATE_HZ)."""
    return _RENDERERS[label](_clip_rng(seed, label, index))


def plan(clips_per_class: int, seed: int, kind: str = DEFAULT_KIND) -> list[ClipSpec]:
    specs = []
    for label in KINDS[kind]:
        for index in range(clips_per_class):
            verified = bool(_clip_rng(seed, label, index).random() < VERIFIED_SHARE)
            specs.append(ClipSpec(label, index, _fname(seed, label, index), verified))
    return specs


def _write(args: tuple[str, int, ClipSpec]) -> None:
    path, seed, spec = args
    audio = render_clip(seed, spec.label, spec.index)
    sf.write(path, audio, SAMPLE_RATE_HZ, subtype="PCM_16", format="WAV")


def synthesize(
    out_dir: str,
    clips_per_class: int = 40,
    seed: int = 0,
    layout: str = "fsd",
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    kind: str = DEFAULT_KIND,
) -> dict:
    """Writes a synthetic dataset of one kind and returns a summary.

    Args:
        out_dir: created if missing; existing files of the same names are replaced.
        clips_per_class: clips of each of the kind's classes.
        seed: everything written depends only on it.
        layout: `fsd` (train.csv + audio_train/) or `tree` (<label>/<fname>.wav).
        workers: processes to render with (default: all cores).
        progress: called as progress(done, total) while clips are written.
        kind: one of KINDS.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    if layout not in ("fsd", "tree"):
        raise ValueError("layout must be fsd or tree")
    if clips_per_class < 1:
        raise ValueError("clips_per_class must be at least 1")
    specs = plan(clips_per_class, seed, kind)
    if len({s.fname for s in specs}) != len(specs):
        raise RuntimeError("file name collision; choose another seed")
    jobs = []
    for spec in specs:
        folder = os.path.join(out_dir, "audio_train" if layout == "fsd" else spec.label)
        os.makedirs(folder, exist_ok=True)
        jobs.append((os.path.join(folder, spec.fname), seed, spec))

    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(jobs) < 8:
        for done, job in enumerate(jobs, 1):
            _write(job)
            if progress:
                progress(done, len(jobs))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for done, _ in enumerate(pool.map(_write, jobs, chunksize=4), 1):
                if progress:
                    progress(done, len(jobs))

    if layout == "fsd":
        with open(os.path.join(out_dir, "train.csv"), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["fname", "label", "manually_verified"])
            for spec in sorted(specs, key=lambda s: s.fname):
                writer.writerow([spec.fname, spec.label, int(spec.verified)])
    return {
        "out_dir": out_dir,
        "kind": kind,
        "layout": layout,
        "clips": len(specs),
        "per_label": dict.fromkeys(KINDS[kind], clips_per_class),
        "verified": sum(s.verified for s in specs),
        "sample_rate_hz": SAMPLE_RATE_HZ,
        "seed": seed,
    }
