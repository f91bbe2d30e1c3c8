"""Audible and visible output: WAV bytes, waveform/spectrogram PNGs, loss curves. No Ray."""

from __future__ import annotations

import io
from collections.abc import Sequence
from itertools import zip_longest

import numpy as np
import soundfile as sf

# Figures are made as matplotlib.figure.Figure, not through pyplot: they are only ever saved
# to bytes, so no backend is chosen and no global figure list has to be closed. Importing this
# module changes nothing in matplotlib for the process that imports it.
from matplotlib.figure import Figure


def wav_bytes(audio: np.ndarray, sample_rate_hz: int) -> bytes:
    """16-bit PCM WAV of a mono clip in [-1, 1]."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1, 1), sample_rate_hz, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def log_spectrogram(clip: np.ndarray, nfft: int = 512, hop: int = 128) -> np.ndarray:
    """Power in dB (floored at -120 dB, so silence plots as the floor), (nfft // 2 + 1, frames)."""
    clip = np.pad(np.asarray(clip, dtype=np.float64), (0, max(nfft - clip.size, 0)))
    frames = np.lib.stride_tricks.sliding_window_view(clip, nfft)[::hop] * np.hanning(nfft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    return 10 * np.log10(np.maximum(power, 1e-12)).T


def plot_spectrogram(ax, clip: np.ndarray, sample_rate_hz: int) -> None:
    """A clip's log spectrogram on `ax`, time in seconds, 90 dB below its loudest bin."""
    decibels = log_spectrogram(clip)
    ax.imshow(
        decibels,
        vmin=decibels.max() - 90,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0, clip.size / sample_rate_hz, 0, sample_rate_hz / 2),
    )


def png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def clips_png(
    generated: np.ndarray,
    sample_rate_hz: int,
    real: np.ndarray | None = None,
    title: str = "",
    names: Sequence[str] = (),
    real_names: Sequence[str] = (),
) -> bytes:
    """Waveforms and log spectrograms: generated clips in the left columns, real on the right,
    each titled "generated" or "real" and, where `names` (`real_names`) give it, its class.

    The columns share their axes, so only the outer ones carry tick labels, and the margins are
    fixed: laying out a dozen labelled axes (tight_layout) was a third of the picture's cost,
    paid at every sample step while the other DDP ranks wait for rank 0."""
    columns = [
        ("generated", clip, name) for clip, name in zip_longest(generated, names[: len(generated)])
    ]
    if real is not None:
        columns += [
            ("real", clip, name) for clip, name in zip_longest(real, real_names[: len(real)])
        ]
    figure = Figure(figsize=(2.6 * len(columns), 4.2))
    axes = figure.subplots(2, len(columns), squeeze=False, sharex=True, sharey="row")
    for i, (kind, clip, name) in enumerate(columns):
        seconds = np.arange(clip.size) / sample_rate_hz
        axes[0, i].plot(
            seconds, clip, linewidth=0.3, color="tab:blue" if kind == "generated" else "tab:green"
        )
        axes[0, i].set_ylim(-1.05, 1.05)
        # parse_math=False: a class name is data, and matplotlib reads $...$ as TeX.
        heading = f"{kind}: {name}" if name else kind
        axes[0, i].set_title(heading, fontsize=8, parse_math=False)
        plot_spectrogram(axes[1, i], clip, sample_rate_hz)
        for ax in axes[:, i]:
            ax.tick_params(labelsize=6)
            ax.label_outer()
    if title:
        figure.suptitle(title, fontsize=9)
    inches = figure.get_figwidth()  # room for the outer labels: 0.5 in left, 0.1 in right
    figure.subplots_adjust(
        left=0.5 / inches,
        right=1 - 0.1 / inches,
        bottom=0.07,
        top=0.86 if title else 0.92,
        wspace=0.06,
        hspace=0.14,
    )
    return png_bytes(figure)


def class_rows(
    labels: Sequence[str],
    real: Sequence[np.ndarray],
    real_names: Sequence[str],
    generated: Sequence[np.ndarray],
    names: Sequence[str],
) -> list[tuple[str, np.ndarray | None, np.ndarray | None]]:
    """(class, its first real clip, its first generated clip) for each of `labels` that has
    either, in label order: classes_png's rows."""
    first_real = dict(zip(reversed(real_names), reversed(list(real)), strict=True))
    first_generated = dict(zip(reversed(names), reversed(list(generated)), strict=True))
    return [
        (label, first_real.get(label), first_generated.get(label))
        for label in labels
        if label in first_real or label in first_generated
    ]


def classes_png(
    rows: Sequence[tuple[str, np.ndarray | None, np.ndarray | None]],
    sample_rate_hz: int,
    title: str = "",
) -> bytes:
    """One row per class: its name, a real clip's spectrogram and a generated clip's (a blank
    where there is none), side by side on the same axes."""
    figure = Figure(figsize=(6.4, 0.3 + 1.0 * len(rows)))
    axes = figure.subplots(len(rows), 2, squeeze=False, sharex=True, sharey=True)
    for (name, real, generated), pair in zip(rows, axes, strict=True):
        for ax, clip, kind in ((pair[0], real, "real"), (pair[1], generated, "generated")):
            if clip is None:
                ax.set_axis_off()
                continue
            plot_spectrogram(ax, clip, sample_rate_hz)
            ax.set_title(f"{kind}: {name}", fontsize=7, pad=2, parse_math=False)
            ax.tick_params(labelsize=5)
            ax.label_outer()
    if title:
        figure.suptitle(title, fontsize=9)
    inches = figure.get_figheight()
    figure.subplots_adjust(
        left=0.09, right=0.98, bottom=0.25 / inches, top=1 - 0.35 / inches, hspace=0.45,
        wspace=0.05,
    )  # fmt: skip
    return png_bytes(figure)


def _number(value) -> float:
    """A metric as a float; anything else (a missing or hand-edited value) as NaN, a gap."""
    return float(value) if isinstance(value, int | float) else float("nan")


def losses_png(history: list[dict]) -> bytes:
    """D and G losses (and the gradient penalty, if any) against the step."""
    figure = Figure(figsize=(7, 3.5))
    ax = figure.subplots()
    steps = [row["step"] for row in history]
    for key in ("d_loss", "g_loss", "gp"):
        values = [_number(row.get(key)) for row in history]
        if any(v for v in values if v == v):  # some non-zero number (NaN != NaN)
            ax.plot(steps, values, label=key, linewidth=1)
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return png_bytes(figure)


def sweep_png(
    curves: dict[str, list[list[tuple[int, float]]]],
    stopped: set[str],
    best: str | None,
    metric: str = "mel_fd",
) -> bytes:
    """The sweep's metric against the step for every trial: trials stopped early dashed, the
    best one thick. A trial's curve is one run, or (PBT) several: each later one begins with a
    star at the score of the checkpoint it went on from, another trial's."""
    figure = Figure(figsize=(7, 4))
    ax = figure.subplots()
    taken_any = False
    for trial, segments in sorted(curves.items()):
        color = None
        for index, points in enumerate(segment for segment in segments if segment):
            steps, values = zip(*points, strict=True)
            first = color is None
            (line,) = ax.plot(
                steps,
                values,
                linestyle="--" if trial in stopped else "-",
                linewidth=2.5 if trial == best else 1,
                marker="o",
                markersize=3,
                color=color,
                label=(
                    trial
                    + (" (best)" if trial == best else " (stopped)" if trial in stopped else "")
                )
                if first
                else None,
            )
            color = line.get_color()
            if index and len(segments) > 1:
                ax.plot(steps[0], values[0], "*", markersize=11, color=color)
                taken_any = True
    ax.set_xlabel("step")
    ax.set_ylabel(f"{metric} (lower is better)")
    if taken_any:
        ax.set_title("*: the trial went on from another trial's checkpoint (PBT)", fontsize=8)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7)
    figure.tight_layout()
    return png_bytes(figure)
