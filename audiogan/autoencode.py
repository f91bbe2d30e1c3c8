"""`audiogan autoencode`: what can the trained G reach? An encoder learns to invert it (no Ray).

The 2019 experiment asked this informally. Here an encoder shaped like D (its convolutions, with
the last layer ending in the latent size) learns, with G frozen, to map real training clips to
the z from which G reproduces them; the loss is the waveform's mean squared error plus the L1
distance of log-mel spectrograms (timbre, which a waveform loss alone blurs). On held-out clips
(the evaluation classifier's split) the command then writes each original beside its
reconstruction (WAVs, full and zoomed waveforms, spectrograms) and the reconstruction errors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
import torch
from matplotlib.figure import Figure  # saved to bytes only, as in samples
from torch import nn

from audiogan import evaluator, metrics, models, samples, storage
from audiogan.config import TrainConfig
from audiogan.errors import AudioganError
from audiogan.generate import load_generator

MEL_WEIGHT = 0.1  # log-mel L1 beside the waveform MSE; both are O(0.1-1) on normalised clips
SHOWN = 4


class Encoder(nn.Module):
    """The baseline's discriminator (for the baseline) or WaveGAN's (for the others), without
    dropout, phase shuffle or labels, its last linear layer ending in latent_dim; tanh for the
    z in [-1, 1] of every model but the baseline."""

    def __init__(self, cfg: TrainConfig, clip_samples: int):
        super().__init__()
        body_cfg = TrainConfig(
            model="dcgan" if cfg.model == "dcgan" else "wavegan",
            latent_dim=cfg.latent_dim,
            model_dim=cfg.model_dim,
            phase_shuffle=0,
        )
        _, self.body = models.build(body_cfg, clip_samples)
        self.body.out = nn.Linear(self.body.out.in_features, cfg.latent_dim)
        self.bounded = cfg.model != "dcgan"

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        z = self.body(audio)[0].reshape(len(audio), -1)  # (B, latent_dim)
        return torch.tanh(z) if self.bounded else z


def _loss(original: torch.Tensor, rebuilt: torch.Tensor, rate: int) -> torch.Tensor:
    wave = (original - rebuilt).pow(2).mean()
    mel = (metrics.log_mel(original, rate) - metrics.log_mel(rebuilt, rate)).abs().mean()
    return wave + MEL_WEIGHT * mel


def autoencode(
    data_url: str,
    checkpoint_url: str,
    out_url: str | None = None,
    steps: int = 300,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    if steps < 1 or batch_size < 2:
        raise AudioganError("--steps must be at least 1 and --batch-size at least 2")
    generator, cfg, state = load_generator(checkpoint_url)
    # A conditional G needs each clip's label; an unconditional one can use every clip.
    clips = evaluator.read_labelled_clips(data_url, labelled_only=cfg.conditional)
    _check_dataset(state["dataset"], clips, cfg.conditional)
    rate = clips.sample_rate_hz
    train_index, test_index = _split(clips, batch_size, data_url)
    generator.requires_grad_(False)
    torch.manual_seed(seed)
    encoder = Encoder(cfg, clips.clip_samples)
    audio = torch.from_numpy(clips.audio).unsqueeze(1)  # (N, 1, T)
    label_ids = torch.from_numpy(np.clip(clips.label_ids, 0, None))

    def rebuild(index: torch.Tensor) -> torch.Tensor:
        labels = label_ids[index] if cfg.conditional else None
        return generator(encoder(audio[index]), labels)

    started = time.perf_counter()
    first_loss, final_loss = _train_encoder(
        encoder, rebuild, audio, train_index, rate, steps, batch_size, lr, seed, log
    )

    encoder.eval()
    with torch.no_grad():
        index = torch.from_numpy(test_index)
        originals, rebuilt = audio[index], rebuild(index)
        held_out, per_clip_snr_db = _reconstruction_errors(originals, rebuilt, rate)
    originals, rebuilt = originals[:, 0].numpy(), rebuilt[:, 0].numpy()

    target = out_url or _default_out(checkpoint_url)
    fs, root = storage.resolve(target)
    _write_examples(fs, root, originals, rebuilt, rate)
    result = {
        "checkpoint": storage.display(checkpoint_url),
        "step": state["step"],
        "model": cfg.model,
        "out": storage.display(target),
        "train_clips": int(len(train_index)),
        "held_out_clips": int(len(test_index)),
        "encoder_steps": steps,
        "seconds": round(time.perf_counter() - started, 1),
        "first_train_loss": round(first_loss, 5),
        "final_train_loss": round(final_loss, 5),
        "held_out": held_out,
        "per_clip_snr_db": per_clip_snr_db,
    }
    storage.write_bytes(
        fs, storage.join(root, "autoencode.json"), json.dumps(result, indent=2).encode()
    )
    return result


def _check_dataset(dataset: dict, clips: evaluator.LabelledClips, conditional: bool) -> None:
    """Refuses a dataset of another rate or clip length than the checkpoint's (G could not
    reproduce its clips), or, for a conditional G, of other labels."""
    if (dataset["sample_rate_hz"], dataset["clip_samples"]) != (
        clips.sample_rate_hz,
        clips.clip_samples,
    ):
        raise AudioganError("the checkpoint's sample rate or clip length is not the dataset's")
    if conditional and dataset["labels"] != clips.labels:
        raise AudioganError("the checkpoint's labels differ from the dataset's")


def _split(
    clips: evaluator.LabelledClips, batch_size: int, data_url: str
) -> tuple[np.ndarray, np.ndarray]:
    """(training clips' indices, held-out clips' indices, at most SHOWN * 4): the evaluation
    classifier's split, so the encoder is judged on clips it never saw."""
    train_index = np.flatnonzero(~clips.held_out)
    test_index = np.flatnonzero(clips.held_out)[: SHOWN * 4]
    if len(train_index) < batch_size or len(test_index) == 0:
        raise AudioganError(
            f"{storage.display(data_url)} has too few clips ({len(clips.audio)}) to train an "
            "encoder and hold some out"
        )
    return train_index, test_index


def _train_encoder(
    encoder: Encoder,
    rebuild: Callable[[torch.Tensor], torch.Tensor],
    audio: torch.Tensor,
    train_index: np.ndarray,
    rate: int,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    log: Callable[[str], None],
) -> tuple[float, float]:
    """Adam on the encoder alone (G is frozen) over random batches of the training clips;
    returns the first and the last step's loss."""
    optimiser = torch.optim.Adam(encoder.parameters(), lr=lr)
    rng = torch.Generator().manual_seed(seed)
    encoder.train()
    for step in range(1, steps + 1):
        index = torch.from_numpy(train_index)[
            torch.randint(len(train_index), (batch_size,), generator=rng)
        ]
        loss = _loss(audio[index], rebuild(index), rate)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step == 1:
            first_loss = loss.item()
        if step == 1 or step % 50 == 0 or step == steps:
            log(f"autoencode: step {step}/{steps}  loss {loss.item():.4f}")
    return first_loss, float(loss.item())


def _reconstruction_errors(
    originals: torch.Tensor, rebuilt: torch.Tensor, rate: int
) -> tuple[dict, list[float]]:
    """(the held-out errors, averaged and rounded; each clip's SNR in dB, rounded)."""
    mse = (originals - rebuilt).pow(2).mean(dim=(1, 2))
    power = originals.pow(2).mean(dim=(1, 2))
    snr_db = 10 * torch.log10(power.clamp_min(1e-12) / mse.clamp_min(1e-12))
    mel_l1 = (metrics.log_mel(originals, rate) - metrics.log_mel(rebuilt, rate)).abs()
    mel_l1 = mel_l1.mean(dim=(1, 2))
    # What a blank output (silence) would score: the yardstick for "reaches nothing".
    silent_mel_l1 = (
        (metrics.log_mel(originals, rate) - metrics.log_mel(torch.zeros_like(originals), rate))
        .abs()
        .mean()
    )
    held_out = {
        "waveform_mse": round(float(mse.mean()), 5),
        "snr_db": round(float(snr_db.mean()), 2),
        "log_mel_l1": round(float(mel_l1.mean()), 4),
        "log_mel_l1_of_silence": round(float(silent_mel_l1), 4),
    }
    return held_out, [round(float(v), 2) for v in snr_db]


def _write_examples(fs, root: str, originals: np.ndarray, rebuilt: np.ndarray, rate: int) -> None:
    """The first SHOWN clips and their reconstructions as WAVs, and autoencode.png beside them."""
    for i in range(min(SHOWN, len(originals))):
        for name, clip in (("original", originals[i]), ("reconstruction", rebuilt[i])):
            path = storage.join(root, f"{name}_{i:02d}.wav")
            storage.write_bytes(fs, path, samples.wav_bytes(clip, rate))
    storage.write_bytes(
        fs,
        storage.join(root, "autoencode.png"),
        _comparison_png(originals[:SHOWN], rebuilt[:SHOWN], rate),
    )


def _default_out(checkpoint_url: str) -> str:
    """RUN/autoencode/ for a checkpoint folder RUN/checkpoint_XXXXXX or a run folder RUN."""
    base = checkpoint_url.rstrip("/")
    if base.rsplit("/", 1)[-1].startswith("checkpoint_"):
        base = base.rsplit("/", 1)[0]
    return f"{base}/autoencode"


def _comparison_png(originals: np.ndarray, rebuilt: np.ndarray, rate: int) -> bytes:
    """A column per clip: both waveforms, 20 ms of both up close, and both spectrograms."""
    from audiogan.report import ZOOM_MS, loudest_window

    columns = len(originals)
    figure = Figure(figsize=(3.2 * columns, 8))
    axes = figure.subplots(4, columns, squeeze=False)
    width = int(rate * ZOOM_MS / 1000)
    seconds = np.arange(originals.shape[1]) / rate
    for i in range(columns):
        axes[0, i].plot(seconds, originals[i], linewidth=0.3, color="tab:green", label="original")
        axes[0, i].plot(seconds, rebuilt[i], linewidth=0.3, color="tab:blue", label="rebuilt")
        axes[0, i].set_ylim(-1.05, 1.05)
        start = loudest_window(originals[i], width)
        ms = 1000 * np.arange(width) / rate
        axes[1, i].plot(ms, originals[i, start : start + width], color="tab:green", linewidth=0.8)
        axes[1, i].plot(ms, rebuilt[i, start : start + width], color="tab:blue", linewidth=0.8)
        axes[1, i].set_title(f"{ZOOM_MS} ms, loudest part", fontsize=7)
        for row, clip, name in ((2, originals[i], "original"), (3, rebuilt[i], "reconstruction")):
            samples.plot_spectrogram(axes[row, i], clip, rate)
            axes[row, i].set_title(name, fontsize=7)
        for ax in axes[:, i]:
            ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6)
    figure.tight_layout()
    return samples.png_bytes(figure)
