"""GAN losses as small pure functions of D's logits (and, for the penalties, of D itself).

A discriminator returns its logits either as one tensor, (B,), or, for the families made of
several sub-discriminators (audiogan/models/multiscale.py, stft.py), as a list of tensors
(B, ...), one per sub-discriminator, each holding a logit per patch. Every loss here takes
either: it is the mean over sub-discriminators of the mean over each one's logits, so one
tensor of shape (B,) gives the textbook value and a family of any size keeps the same scale.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Logits = torch.Tensor | list[torch.Tensor]


def _parts(logits: Logits) -> list[torch.Tensor]:
    return list(logits) if isinstance(logits, list | tuple) else [logits]


def _mean_over_parts(logits: Logits, loss: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    parts = _parts(logits)
    return sum(loss(part.float()).mean() for part in parts) / len(parts)


def scores(logits: Logits) -> torch.Tensor:
    """One score per clip, (B,): each sub-discriminator's mean logit, averaged over them."""
    parts = _parts(logits)
    return sum(part.float().reshape(len(part), -1).mean(dim=1) for part in parts) / len(parts)


def split(logits: Logits) -> tuple[Logits, Logits]:
    """The logits of D(cat([real, fake])) as (real, fake): each part halved along the batch."""
    if isinstance(logits, list | tuple):
        halves = [part.chunk(2) for part in logits]
        return [real for real, _ in halves], [fake for _, fake in halves]
    real, fake = logits.chunk(2)
    return real, fake


def bce_d(real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
    """Cross-entropy of real as 1 and fake as 0 (sigmoid inside): the baseline's D loss, and
    the non-saturating GAN's."""
    return _mean_over_parts(real_logits, lambda x: F.softplus(-x)) + _mean_over_parts(
        fake_logits, F.softplus
    )


def bce_g(fake_logits: Logits) -> torch.Tensor:
    """Non-saturating G loss: -log D(G(z)), as the baseline's 'fake labelled real' step."""
    return _mean_over_parts(fake_logits, lambda x: F.softplus(-x))


def hinge_d(real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
    """Hinge loss (Lim & Ye 2017; SAGAN, BigGAN): E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return _mean_over_parts(real_logits, lambda x: F.relu(1 - x)) + _mean_over_parts(
        fake_logits, lambda x: F.relu(1 + x)
    )


def hinge_g(fake_logits: Logits) -> torch.Tensor:
    """G raises D's score of its clips, without a margin (SAGAN, BigGAN); the same as WGAN's."""
    return _mean_over_parts(fake_logits, lambda x: -x)


def wgan_d(real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
    return _mean_over_parts(fake_logits, lambda x: x) - _mean_over_parts(real_logits, lambda x: x)


def wgan_g(fake_logits: Logits) -> torch.Tensor:
    return _mean_over_parts(fake_logits, lambda x: -x)


def gradient_penalty(
    critic: Callable[[torch.Tensor], Logits],
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(||grad_x D(x_hat)||_2 - 1)^2] on random interpolates."""
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    mix = torch.rand(shape, generator=generator, device=real.device, dtype=real.dtype)
    interpolates = (mix * real + (1 - mix) * fake).requires_grad_(True)
    (grads,) = torch.autograd.grad(
        scores(critic(interpolates)).sum(), interpolates, create_graph=True
    )
    norms = grads.flatten(1).norm(2, dim=1)  # (B,)
    return ((norms - 1) ** 2).mean()


def r1_penalty(critic: Callable[[torch.Tensor], Logits], real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E[||grad_x D(x)||_2^2] on real clips only.

    It keeps D flat where the data is, so D cannot push G around the data forever; the caller
    weighs it by gamma / 2 (and, applied every k steps, by k: StyleGAN2's lazy regularisation).
    """
    real = real.detach().requires_grad_(True)
    (grads,) = torch.autograd.grad(scores(critic(real)).sum(), real, create_graph=True)
    return grads.flatten(1).pow(2).sum(dim=1).mean()


def feature_matching(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Mean L1 distance between D's feature maps of real and fake audio (zero when equal)."""
    return sum(F.l1_loss(f, r.detach()) for r, f in zip(real, fake, strict=True)) / len(real)
