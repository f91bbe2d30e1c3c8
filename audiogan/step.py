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


@dataclass
class Shared:
    """What a step's last D update hands G's update when cfg.share_passes is on."""

    # G's clips for this step, with G's graph: D trains on them detached, G's loss on them.
    fake: torch.Tensor
    # D's feature maps of the real clips, from D before its update (no graph): feature
    # matching's targets. None until the D update fills them in (and without fm_weight).
    real_features: list[torch.Tensor] | None = None


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX), so oneDNN's bf16
    convolutions beat float32 ones; bf16 emulated with plain AVX-512 is slower than float32."""
    # torch's own probes of the CPU's features (private: there is no public one).
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resolved_precision(precision: str, device: torch.device) -> str:
    """bf16 or fp32: what cfg.precision means on `device` (auto: bf16 on a GPU only; bf16 on a
    CPU without native bf16 would be slower than float32, so it is fp32 there)."""
    if precision == "fp32":
        return "fp32"
    if device.type == "cuda":
        return "bf16"
    return "bf16" if precision == "bf16" and cpu_has_bf16() else "fp32"


def autocast_for(
    precision: str, device: torch.device
) -> Callable[[], contextlib.AbstractContextManager]:
    """What gan_step enters around G's and D's layers: bf16 autocast, or nothing (float32)."""
    if resolved_precision(precision, device) == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


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
    shared: Shared | None = None,
) -> dict[str, float]:
    """One discriminator update on a real batch (B, 1, T) and as many fakes.

    `regularize`: this update carries the R1 penalty, if cfg.r1_weight asks for one (gan_step
    picks one update in `cfg.r1_every`). "gp" is R1's value, or WGAN-GP's at every update, and
    None when there is none. `shared`: the fakes come from it (else G makes them here), and it
    gets D's features of the real clips for G's feature matching.
    """
    cfg, D = gan.cfg, gan.discriminator
    if shared is None:
        with torch.no_grad(), autocast():
            fake = gan.generator(sample_latent(cfg, real.shape[0], real.device), labels)
    else:
        fake = shared.fake.detach()
    real, fake = seen_by_d(cfg, real), seen_by_d(cfg, fake.float())
    penalty = None
    if cfg.loss == "wgan-gp":
        with autocast():
            real_logits, real_features = D(real, labels)
            fake_logits, _ = D(fake, labels)
        d_loss = GAN_LOSSES[cfg.loss][0](real_logits, fake_logits)
        # The penalty's double backward runs in full precision.
        penalty = losses.gradient_penalty(lambda x: D(x, labels)[0], real, fake)
        d_loss = d_loss + cfg.gp_weight * penalty
    else:
        # One forward over real and fake together, so BatchNorm in D sees one batch (DDP-safe).
        both_labels = None if labels is None else torch.cat([labels, labels])
        with autocast():
            logits, features = D(torch.cat([real, fake]), both_labels)
        d_loss = GAN_LOSSES[cfg.loss][0](*losses.split(logits))
        real_features = [f[: len(real)] for f in features]  # (B, ...) each
        if regularize and cfg.r1_weight:
            # Full precision, as WGAN-GP's; weighed by r1_every to make up for the updates
            # without it (StyleGAN2's lazy regularisation).
            penalty = losses.r1_penalty(lambda x: D(x, labels)[0], real)
            d_loss = d_loss + cfg.r1_weight / 2 * cfg.r1_every * penalty
    if shared is not None and cfg.fm_weight:
        shared.real_features = [f.detach() for f in real_features]
    gan.opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    gan.opt_d.step()
    return {"d_loss": d_loss.item(), "gp": None if penalty is None else penalty.item()}


def g_step(
    gan: GAN,
    real: torch.Tensor,
    labels: torch.Tensor | None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    shared: Shared | None = None,
) -> dict[str, float]:
    """One generator update through a frozen D (the baseline's bug was to train D here too),
    on as many clips as the real batch (B, 1, T); the real clips are used by feature matching.
    `shared`: G's clips, and D's features of the real clips, from the step's D update."""
    cfg, D = gan.cfg, gan.discriminator
    D.requires_grad_(False)
    try:
        with autocast():
            if shared is None:
                fake = gan.generator(sample_latent(cfg, real.shape[0], real.device), labels)
            else:
                fake = shared.fake
            fake_logits, fake_features = D(seen_by_d(cfg, fake), labels)
        g_loss = GAN_LOSSES[cfg.loss][1](fake_logits)
        result = {"g_loss": g_loss.item()}
        if cfg.fm_weight:
            if shared is None:
                with torch.no_grad(), autocast():
                    _, real_features = D(seen_by_d(cfg, real), labels)
            else:
                real_features = shared.real_features
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
    """`cfg.n_critic` D updates (one per real batch), then one G update (with
    cfg.share_passes, on the clips and real features of the last D update).

    Returns the mean D loss over the critic updates, the mean penalty ("gp": WGAN-GP's, or R1's
    over the updates that carried it; the latest one when none did), the G loss ("g_loss",
    without feature matching) and, with fm_weight, the feature-matching distance ("fm").
    """
    cfg = gan.cfg
    if len(real_batches) != cfg.n_critic:
        raise ValueError(f"gan_step needs {cfg.n_critic} real batches, got {len(real_batches)}")
    first = gan.g_steps * cfg.n_critic  # D updates so far
    real, labels = real_batches[-1], label_batches[-1]
    shared = None
    d_results = [
        d_step(gan, batch, batch_labels, autocast, regularize=(first + i) % cfg.r1_every == 0)
        for i, (batch, batch_labels) in enumerate(
            zip(real_batches[:-1], label_batches[:-1], strict=True)
        )
    ]
    if cfg.share_passes:
        # G's clips for the last D update and for G's own, made once with G's graph kept.
        with autocast():
            shared = Shared(gan.generator(sample_latent(cfg, real.shape[0], real.device), labels))
    last = (first + cfg.n_critic - 1) % cfg.r1_every == 0
    d_results.append(d_step(gan, real, labels, autocast, regularize=last, shared=shared))
    g_result = g_step(gan, real, labels, autocast, shared)
    penalties = [r["gp"] for r in d_results if r["gp"] is not None]
    if penalties:
        gan.penalty = sum(penalties) / len(penalties)
    return {
        "d_loss": sum(r["d_loss"] for r in d_results) / len(d_results),
        "gp": gan.penalty,
        **g_result,
    }
