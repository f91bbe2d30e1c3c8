"""Model families, one file each; `build` makes (G, D) from a TrainConfig and the dataset."""

from __future__ import annotations

from torch import nn

from audiogan.config import TrainConfig
from audiogan.models import dcgan, wavegan


def build(cfg: TrainConfig, clip_samples: int, num_classes: int = 0) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) for `cfg.model`, emitting exactly `clip_samples`."""
    classes = num_classes if cfg.conditional else 0
    if cfg.model == "dcgan":
        model_cfg = dcgan.DCGANConfig(clip_samples, cfg.latent_dim, cfg.dropout, classes)
        return dcgan.Generator(model_cfg), dcgan.Discriminator(model_cfg)
    model_cfg = wavegan.WaveGANConfig(
        clip_samples, cfg.latent_dim, cfg.model_dim, cfg.phase_shuffle, cfg.dropout, classes
    )
    return wavegan.Generator(model_cfg), wavegan.Discriminator(model_cfg)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
