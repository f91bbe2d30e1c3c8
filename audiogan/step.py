"""One GAN update, D then G, with no Ray in sight: a unit test can run it on a tensor batch."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from audiogan import losses
from audiogan.config import TrainConfig


@dataclass
class GAN:
    """The networks (possibly DDP-wrapped), their optimisers and the EMA copy of G."""

    generator: nn.Module
    discriminator: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    cfg: TrainConfig
    ema: nn.Module | None = None


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


def d_step(
    gan: GAN,
    real: torch.Tensor,
    labels: torch.Tensor | None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """One discriminator update on a real batch (B, 1, T) and as many fakes."""
    cfg, D = gan.cfg, gan.discriminator
    with torch.no_grad(), autocast():
        fake = gan.generator(sample_latent(cfg, real.shape[0], real.device), labels).float()
    if cfg.loss == "bce":
        # One forward over real and fake together, so BatchNorm in D sees one batch (DDP-safe).
        both_labels = None if labels is None else torch.cat([labels, labels])
        with autocast():
            logits, _ = D(torch.cat([real, fake]), both_labels)
        real_logits, fake_logits = logits.float().chunk(2)
        d_loss = losses.bce_d(real_logits, fake_logits)
        penalty = torch.zeros((), device=real.device)
    else:
        with autocast():
            real_logits, _ = D(real, labels)
            fake_logits, _ = D(fake, labels)
        d_loss = losses.wgan_d(real_logits.float(), fake_logits.float())
        # The penalty's double backward runs in full precision.
        penalty = losses.gradient_penalty(lambda x: D(x, labels)[0], real, fake)
        d_loss = d_loss + cfg.gp_weight * penalty
    gan.opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    gan.opt_d.step()
    return {"d_loss": d_loss.item(), "gp": penalty.item()}


def g_step(
    gan: GAN,
    batch: int,
    labels: torch.Tensor | None,
    device: torch.device | str = "cpu",
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """One generator update through a frozen D (the baseline's bug was to train D here too)."""
    cfg, D = gan.cfg, gan.discriminator
    D.requires_grad_(False)
    try:
        with autocast():
            fake = gan.generator(sample_latent(cfg, batch, device), labels)
            fake_logits, _ = D(fake, labels)
        fake_logits = fake_logits.float()
        g_loss = losses.bce_g(fake_logits) if cfg.loss == "bce" else losses.wgan_g(fake_logits)
        gan.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        gan.opt_g.step()
    finally:
        D.requires_grad_(True)
    if gan.ema is not None:
        update_ema(gan.ema, unwrap(gan.generator), cfg.ema_decay)
    return {"g_loss": g_loss.item()}


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

    Returns the mean D loss and penalty over the critic updates and the G loss.
    """
    if len(real_batches) != gan.cfg.n_critic:
        raise ValueError(f"gan_step needs {gan.cfg.n_critic} real batches, got {len(real_batches)}")
    d_results = [
        d_step(gan, real, labels, autocast)
        for real, labels in zip(real_batches, label_batches, strict=True)
    ]
    real = real_batches[-1]
    g_result = g_step(gan, real.shape[0], label_batches[-1], real.device, autocast)
    return {
        "d_loss": sum(r["d_loss"] for r in d_results) / len(d_results),
        "gp": sum(r["gp"] for r in d_results) / len(d_results),
        **g_result,
    }
