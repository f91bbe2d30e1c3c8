"""`audiogan generate`: new clips from a checkpoint. No Ray: a laptop can run it."""

from __future__ import annotations

import sys

import numpy as np
import torch

from audiogan import models, runfolder, samples, storage
from audiogan.config import TrainConfig, from_dict
from audiogan.errors import AudioganError
from audiogan.step import sample_latent


def load_generator(checkpoint_url: str) -> tuple[torch.nn.Module, TrainConfig, dict]:
    """(the EMA generator, or G, in eval mode; its config; the checkpoint state) from a
    checkpoint folder or a run folder (its newest checkpoint), local or S3."""
    stderr = lambda message: print(message, file=sys.stderr)  # noqa: E731
    _, state = runfolder.locate(checkpoint_url, log=stderr)
    cfg = from_dict(TrainConfig, state["config"])
    dataset = state["dataset"]
    generator, _ = models.build(
        cfg, dataset["clip_samples"], len(dataset["labels"]), dataset["sample_rate_hz"]
    )
    generator.load_state_dict(state["ema"] if state["ema"] is not None else state["generator"])
    return generator.eval(), cfg, state


@torch.no_grad()
def render(
    model: torch.nn.Module,
    z: torch.Tensor,
    labels: torch.Tensor | None = None,
    batch: int = 64,
) -> np.ndarray:
    """(N, T) float32 clips from `model` in eval mode, `batch` at a time; its mode is restored."""
    was_training = model.training
    model.eval()
    try:
        parts = [
            model(z[i : i + batch], None if labels is None else labels[i : i + batch])
            for i in range(0, len(z), batch)
        ]
    finally:
        model.train(was_training)
    return torch.cat(parts)[:, 0].float().cpu().numpy()


def generate_clips(
    generator: torch.nn.Module,
    cfg: TrainConfig,
    labels: list[str],
    n: int,
    label: str | None,
    seed: int,
    batch: int = 64,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, T) clips and, for a conditional model, the label id each was asked for (one label,
    or all labels in turn)."""
    if n < 1:
        raise AudioganError("--n must be at least 1")
    if label is not None and label not in labels:
        raise AudioganError(
            f"label {label!r} is not one of the model's: {', '.join(labels) or 'none'}"
        )
    if label is not None and not cfg.conditional:
        raise AudioganError("--label needs a conditional model (trained with conditional=true)")
    rng = torch.Generator().manual_seed(seed)
    z = sample_latent(cfg, n, "cpu", rng)
    label_ids = None
    if cfg.conditional:
        chosen = labels.index(label) if label is not None else None
        ids = [chosen if chosen is not None else i % len(labels) for i in range(n)]
        label_ids = torch.tensor(ids)
    audio = render(generator, z, label_ids, batch)
    return audio, None if label_ids is None else label_ids.numpy()


def generate(checkpoint_url: str, out_url: str, n: int, label: str | None, seed: int) -> dict:
    """N clips from a checkpoint's (EMA) generator as WAVs, plus a PNG; no Ray needed."""
    generator, cfg, state = load_generator(checkpoint_url)
    dataset = state["dataset"]
    audio, label_ids = generate_clips(generator, cfg, dataset["labels"], n, label, seed)
    names = [] if label_ids is None else [dataset["labels"][i] for i in label_ids]
    out_fs, out_root = storage.resolve(out_url)
    rate = dataset["sample_rate_hz"]
    written = []
    for i, clip in enumerate(audio):
        name = f"generated_{i:03d}.wav"
        storage.write_bytes(out_fs, storage.join(out_root, name), samples.wav_bytes(clip, rate))
        written.append(name)
    storage.write_bytes(
        out_fs,
        storage.join(out_root, "generated.png"),
        samples.clips_png(audio[:6], rate, names=names[:6]),
    )
    return {
        "out": storage.display(out_url),
        "clips": len(written),
        "sample_rate_hz": rate,
        "step": state["step"],
        "label": label,
        "peak": float(np.max(np.abs(audio))) if audio.size else 0.0,
    }
