"""STORAGE/NAME/report.html: one self-contained page a person can open and listen to (no Ray).

Built from the run folder alone (metrics.jsonl, samples/step_XXXXXX/, samples/real/), so rank 0
rewrites it at every checkpoint and at the end, and `audiogan report RUN` can rebuild it. Every
image is an inline PNG and every clip an inline WAV: the file can be mailed or opened from S3.
"""

from __future__ import annotations

import base64
import html
import io
import time

import numpy as np
import pyarrow.fs as pafs
import soundfile as sf
from matplotlib.figure import Figure  # saved to bytes only, as in samples

from audiogan import runfolder, samples, storage
from audiogan.runfolder import CLASSES_PNG, REAL_DIR, REPORT, SAMPLE_PNG, SAMPLES

CLIPS_SHOWN = 4  # generated clips per sample step (and real clips) shown and playable
ZOOM_MS = 20  # the zoomed waveform: enough periods to see a timbre's shape
QUALITY_KEYS = ("mel_fd", "classifier_fd")  # classifier_fd: where the dataset has a classifier


class _Clip:
    def __init__(self, name: str, data: bytes, label: str | None = None):
        self.name, self.data, self.label = name, data, label
        self.audio, self.rate = sf.read(io.BytesIO(data), dtype="float32")


def _wav_files(fs: pafs.FileSystem, folder: str, limit: int | None) -> list[_Clip]:
    """The first `limit` (None: all) WAVs of a samples folder, with the class labels.json
    gives each (a conditional run's)."""
    labels = runfolder.read_labels(fs, folder)
    wavs = [i for i in storage.list_folder(fs, folder) if i.base_name.endswith(".wav")]
    if labels:  # a conditional run's folder: only the clips it named
        wavs = [info for info in wavs if info.base_name in labels]
    return [
        _Clip(info.base_name, storage.read_bytes(fs, info.path), labels.get(info.base_name))
        for info in wavs[:limit]
    ]


def _text(value) -> str:
    """A value from metrics.jsonl as safe HTML text (the file is data, not markup)."""
    return html.escape(str(value))


def _png_tag(png: bytes, alt: str) -> str:
    encoded = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _audio_tag(clip: _Clip) -> str:
    encoded = base64.b64encode(clip.data).decode()
    caption = f"{clip.label}: {clip.name}" if clip.label else clip.name
    return (
        f'<figure><audio controls preload="none" src="data:audio/wav;base64,{encoded}"></audio>'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _quality_png(history: list[dict]) -> bytes | None:
    rows = [row for row in history if any(key in row for key in QUALITY_KEYS)]
    if not rows:
        return None
    figure = Figure(figsize=(7, 3))
    ax = figure.subplots()
    for key in QUALITY_KEYS:
        points = [
            (row["step"], row[key])
            for row in rows
            if isinstance(row.get(key), int | float) and isinstance(row["step"], int)
        ]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=key)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xlabel("step")
    ax.set_ylabel("lower is better")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return samples.png_bytes(figure)


def _step_png(
    fs: pafs.FileSystem, folder: str, clips: list[_Clip], real: list[_Clip], rate: int
) -> bytes:
    """A sample step's picture: the one rank 0 drew of the same clips beside the same real ones
    (samples/step_XXXXXX/clips.png), so that the report at every checkpoint does not draw it
    again, or drawn here where it is missing."""
    stored = storage.join(folder, SAMPLE_PNG)
    if storage.exists(fs, stored):
        return storage.read_bytes(fs, stored)
    return samples.clips_png(
        np.stack([c.audio for c in clips]),
        rate,
        np.stack([c.audio for c in real]) if real else None,
        title=folder.rsplit("/", 1)[-1],
        names=[c.label or "" for c in clips],
        real_names=[c.label or "" for c in real],
    )


def _by_class(fs: pafs.FileSystem, root: str, step: str, real: list[_Clip], rate: int) -> list[str]:
    """A conditional run's section: for each class, a real clip and the last sample step's
    generated one, as one picture (samples/step_XXXXXX/classes.png, drawn here if missing)
    and a table of players. [] for a run whose folders name no classes."""
    folder = storage.join(root, SAMPLES, step)
    generated = _wav_files(fs, folder, None)
    if not any(c.label for c in generated):
        return []
    first_real = {c.label: c for c in reversed(real) if c.label}
    first_generated = {c.label: c for c in reversed(generated) if c.label}
    order = list(dict.fromkeys(c.label for c in [*real, *generated] if c.label))
    stored = storage.join(folder, CLASSES_PNG)
    if storage.exists(fs, stored):
        png = storage.read_bytes(fs, stored)
    else:
        rows = [
            (label, getattr(first_real.get(label), "audio", None),
             getattr(first_generated.get(label), "audio", None))
            for label in order
        ]  # fmt: skip
        png = samples.classes_png(rows, rate, title=f"{step.replace('_', ' ')}, by class")

    def cell(clip: _Clip | None) -> str:
        return f"<td>{_audio_tag(clip)}</td>" if clip else "<td>-</td>"

    table = "".join(
        f"<tr><th>{html.escape(label)}</th>{cell(first_real.get(label))}"
        f"{cell(first_generated.get(label))}</tr>"
        for label in order
    )
    return [
        f"<h2 id='classes'>Each class: real, and generated at {step.replace('_', ' ')}</h2>",
        _png_tag(png, f"a real and a generated clip of each class, {step}"),
        f"<table><tr><th>class</th><th>real</th><th>generated</th></tr>{table}</table>",
    ]


def loudest_window(audio: np.ndarray, width: int) -> int:
    """The start of the loudest `width`-sample stretch: where a zoom shows the timbre."""
    if audio.size <= width:
        return 0
    energy = np.convolve(audio.astype(np.float64) ** 2, np.ones(width), mode="valid")
    return int(np.argmax(energy))


def _zoom_png(groups: list[tuple[str, list[_Clip]]], rate: int) -> bytes:
    """ZOOM_MS of the loudest part of two clips of each group, one row per group."""
    width = max(int(rate * ZOOM_MS / 1000), 2)
    rows = [(label, clips[:2]) for label, clips in groups if clips]
    figure = Figure(figsize=(7, 1.6 * len(rows)))
    axes = figure.subplots(len(rows), 1, squeeze=False)
    for ax, (label, clips) in zip(axes[:, 0], rows, strict=True):
        for clip in clips:
            start = loudest_window(clip.audio, width)
            piece = clip.audio[start : start + width]
            ax.plot(1000 * np.arange(piece.size) / rate, piece, linewidth=0.8)
        ax.set_title(label, fontsize=8)
        ax.set_ylim(-1.05, 1.05)
        ax.tick_params(labelsize=6)
    axes[-1, 0].set_xlabel("ms")
    figure.tight_layout()
    return samples.png_bytes(figure)


def build(
    fs: pafs.FileSystem, root: str, config: dict | None = None, history: list[dict] | None = None
) -> str:
    """The report's HTML for the run folder at `root` (`history`: its metrics rows, when the
    caller holds them; else metrics.jsonl is read)."""
    if history is None:
        history = runfolder.read_metrics(fs, root)
    steps = runfolder.sample_steps(fs, root)
    real = _wav_files(fs, storage.join(root, REAL_DIR), None)
    if not any(c.label for c in real):
        real = real[:CLIPS_SHOWN]  # an unconditional run's: the first few
    shown = [steps[0], steps[-1]] if len(steps) > 1 else steps
    sample_sets = [
        (step, _wav_files(fs, storage.join(root, SAMPLES, step), CLIPS_SHOWN)) for step in shown
    ]
    name = root.rstrip("/").rsplit("/", 1)[-1]
    last = history[-1] if history else {}
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>audiogan run {html.escape(name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}"
        "img{max-width:100%}figure{display:inline-block;margin:.3em}"
        "figcaption{font-size:.8em;color:#555}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}</style></head><body>",
        f"<h1>audiogan run <code>{html.escape(name)}</code></h1>",
        f"<p>Step {_text(last.get('step', 0))}; last losses: d {_text(last.get('d_loss'))}, "
        f"g {_text(last.get('g_loss'))}; {_text(last.get('samples_per_s'))} samples/s. "
        f"Written {time.strftime('%Y-%m-%d %H:%M:%S')}.</p>",
    ]
    if config:
        cells = "".join(
            f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in config.items()
        )
        parts.append(f"<details><summary>Configuration</summary><table>{cells}</table></details>")
    parts.append("<h2 id='losses'>Losses</h2>")
    if history:
        parts.append(_png_tag(samples.losses_png(history), "loss curves"))
    else:
        parts.append("<p>No metrics yet.</p>")
    parts.append("<h2 id='quality'>Quality over steps</h2>")
    quality = _quality_png(history)
    if quality:
        keys = [key for key in QUALITY_KEYS if any(key in row for row in history)]
        rows = "".join(
            f"<tr><td>{_text(row['step'])}</td>"
            + "".join(f"<td>{_text(row.get(key, ''))}</td>" for key in keys)
            + "</tr>"
            for row in history
            if "mel_fd" in row
        )
        header = "".join(f"<th>{key}</th>" for key in keys)
        parts += [
            _png_tag(quality, "quality over steps"),
            "<p>mel_fd: Frechet distance between the log-mel frame statistics of a fixed noise "
            "batch's clips and of real clips. classifier_fd (where the dataset has an "
            "evaluation classifier): the same between the classifier's features of those clips "
            "and of the dataset's training clips. Lower is better for both.</p>",
            f"<table><tr><th>step</th>{header}</tr>{rows}</table>",
        ]
    else:
        parts.append("<p>Not evaluated yet.</p>")
    rate = next((clips[0].rate for _, clips in sample_sets if clips), None)
    rate = rate or (real[0].rate if real else 16000)
    for step, clips in sample_sets:
        parts.append(f"<h2 id='{step}'>Samples at {step.replace('_', ' ')} (fixed noise)</h2>")
        if clips:
            png = _step_png(fs, storage.join(root, SAMPLES, step), clips, real[:2], rate)
            parts.append(_png_tag(png, f"waveforms and spectrograms, {step}"))
            parts.append("<div>" + "".join(_audio_tag(c) for c in clips) + "</div>")
    if sample_sets:
        parts += _by_class(fs, root, sample_sets[-1][0], real, rate)
    parts.append("<h2 id='real'>Real clips</h2>")
    parts.append("<div>" + "".join(_audio_tag(c) for c in real) + "</div>" if real else "<p>-</p>")
    groups = [("real", real)] + [(f"generated, {step}", clips) for step, clips in sample_sets]
    if any(clips for _, clips in groups):
        parts.append(f"<h2 id='zoom'>Waveforms up close ({ZOOM_MS} ms, loudest part)</h2>")
        parts.append(_png_tag(_zoom_png(groups, rate), "zoomed waveforms"))
    parts.append("</body></html>")
    return "\n".join(parts)


def write(
    fs: pafs.FileSystem, root: str, config: dict | None = None, history: list[dict] | None = None
) -> str:
    """Builds and writes root/report.html; returns its path."""
    path = storage.join(root, REPORT)
    storage.write_bytes(fs, path, build(fs, root, config, history).encode())
    return path
