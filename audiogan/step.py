"""One GAN update, D then G, with no Ray in sight: a unit test can run it on a tensor batch."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from audiogan import augment, losses
from audiogan.config import TrainConfig

# Each `loss` key's (D loss, G loss).
GAN_LOSSES = {
    "bce": (losses.bce_d, losses.bce_g),
    "hinge": (losses.hinge_d, losses.hinge_g),
    "wgan-gp": (losses.wgan_d, losses.wgan_g),
}


@dataclass
class GAN:
    """The networks (possibly DDP-wrapped), their optimisers and the EMA copy of G."""

    generator: nn.Module
    discriminator: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    cfg: TrainConfig
    ema: nn.Module | None = None
    # G updates so far (restored from a checkpoint): the EMA's warm-up and lazy R1 count them.
    g_steps: int = 0
    # The latest R1 or WGAN-GP penalty, reported by G steps whose D updates carried none.
    penalty: float = 0.0


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(module, "module", module)


def sampling_generator(gan: GAN) -> nn.Module:
    """The generator samples come from: the EMA copy when there is one, else G itself."""
    return gan.ema if gan.ema is not None else unwrap(gan.generator)


def make_gan(generator: nn.Module, discriminator: nn.Module, cfg: TrainConfig) -> GAN:
    betas = tuple(cfg.betas)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr_g, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr_d, betas=betas)
    ema = None
    if cfg.ema_decay > 0:
        ema = copy.deepcopy(unwrap(generator)).eval().requires_grad_(False)
    return GAN(generator, discriminator, opt_g, opt_d, cfg, ema)


def sample_latent(
    cfg: TrainConfig, batch: int, device: torch.device | str = "cpu", generator=None
) -> torch.Tensor:
    """z ~ U[-1, 1] as in WaveGAN; the baseline drew from N(0, 1)."""
    shape = (batch, cfg.latent_dim)
    if cfg.model == "dcgan":
        return torch.randn(shape, device=device, generator=generator)
    return torch.rand(shape, device=device, generator=generator) * 2 - 1


def seen_by_d(cfg: TrainConfig, clips: torch.Tensor) -> torch.Tensor:
    """Clips as D sees them: through cfg.augment's transforms, each clip drawn on its own."""
    return augment.augment(clips, cfg.augment, cfg.augment_p) if cfg.augment else clips


def d_step(
    gan: GAN,
    real: torch.Tensor,
    labels: torch.Tensor | None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    regularize: bool = True,
) -> dict[str, float]:
    """One discriminator update on a real batch (B, 1, T) and as many fakes.

    `regularize`: this update carries the R1 penalty, if cfg.r1_weight asks for one (gan_step
    picks one update in `cfg.r1_every`). "gp" is R1's value, or WGAN-GP's at every update, and
    None when there is none.
    """
    cfg, D = gan.cfg, gan.discriminator
    with torch.no_grad(), autocast():
        fake = gan.generator(sample_latent(cfg, real.shape[0], real.device), labels).float()
    real, fake = seen_by_d(cfg, real), seen_by_d(cfg, fake)
    penalty = None
    if cfg.loss == "wgan-gp":
        with autocast():
            real_logits, _ = D(real, labels)
            fake_logits, _ = D(fake, labels)
        d_loss = GAN_LOSSES[cfg.loss][0](real_logits, fake_logits)
        # The penalty's double backward runs in full precision.
        penalty = losses.gradient_penalty(lambda x: D(x, labels)[0], real, fake)
        d_loss = d_loss + cfg.gp_weight * penalty
    else:
        # One forward over real and fake together, so BatchNorm in D sees one batch (DDP-safe).
        both_labels = None if labels is None else torch.cat([labels, labels])
        with autocast():
            logits, _ = D(torch.cat([real, fake]), both_labels)
        d_loss = GAN_LOSSES[cfg.loss][0](*losses.split(logits))
        if regularize and cfg.r1_weight:
            # Full precision, as WGAN-GP's; weighed by r1_every to make up for the updates
            # without it (StyleGAN2's lazy regularisation).
            penalty = losses.r1_penalty(lambda x: D(x, labels)[0], real)
            d_loss = d_loss + cfg.r1_weight / 2 * cfg.r1_every * penalty
    gan.opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    gan.opt_d.step()
    return {"d_loss": d_loss.item(), "gp": None if penalty is None else penalty.item()}


def g_step(
    gan: GAN,
    real: torch.Tensor,
    labels: torch.Tensor | None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """One generator update through a frozen D (the baseline's bug was to train D here too),
    on as many clips as the real batch (B, 1, T); the real clips are used by feature matching."""
    cfg, D = gan.cfg, gan.discriminator
    D.requires_grad_(False)
    try:
        with autocast():
            fake = gan.generator(sample_latent(cfg, real.shape[0], real.device), labels)
            fake_logits, fake_features = D(seen_by_d(cfg, fake), labels)
        g_loss = GAN_LOSSES[cfg.loss][1](fake_logits)
        result = {"g_loss": g_loss.item()}
        if cfg.fm_weight:
            with torch.no_grad(), autocast():
                _, real_features = D(seen_by_d(cfg, real), labels)
            matching = losses.feature_matching(
                [f.float() for f in real_features], [f.float() for f in fake_features]
            )
            g_loss = g_loss + cfg.fm_weight * matching
            result["fm"] = matching.item()
        gan.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        gan.opt_g.step()
    finally:
        D.requires_grad_(True)
    gan.g_steps += 1
    if gan.ema is not None:
        # Warm-up: the average starts near G itself, not near its random initialisation.
        decay = min(cfg.ema_decay, (1 + gan.g_steps) / (10 + gan.g_steps))
        update_ema(gan.ema, unwrap(gan.generator), decay)
    return result


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for ema_param, param in zip(ema.parameters(), model.parameters(), strict=True):
        ema_param.lerp_(param, 1 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers(), strict=True):
        ema_buffer.copy_(buffer)


def gan_step(
    gan: GAN,
    real_batches: Sequence[torch.Tensor],
    label_batches: Sequence[torch.Tensor | None],
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """`cfg.n_critic` D updates (one per real batch), then one G update.

    Returns the mean D loss over the critic updates, the mean penalty ("gp": WGAN-GP's, or R1's
    over the updates that carried it; the latest one when none did), the G loss ("g_loss",
    without feature matching) and, with fm_weight, the feature-matching distance ("fm").
    """
    cfg = gan.cfg
    if len(real_batches) != cfg.n_critic:
        raise ValueError(f"gan_step needs {cfg.n_critic} real batches, got {len(real_batches)}")
    first = gan.g_steps * cfg.n_critic  # D updates so far
    d_results = [
        d_step(gan, real, labels, autocast, regularize=(first + i) % cfg.r1_every == 0)
        for i, (real, labels) in enumerate(zip(real_batches, label_batches, strict=True))
    ]
    g_result = g_step(gan, real_batches[-1], label_batches[-1], autocast)
    penalties = [r["gp"] for r in d_results if r["gp"] is not None]
    if penalties:
        gan.penalty = sum(penalties) / len(penalties)
    return {
        "d_loss": sum(r["d_loss"] for r in d_results) / len(d_results),
        "gp": gan.penalty,
        **g_result,
    }
