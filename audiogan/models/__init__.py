"""Model families, one file each; `build` makes (G, D) from a TrainConfig and the dataset.

G is `cfg.model`'s; D is that model's own, unless `cfg.discriminator` names another family:
`wavegan` (WaveGAN's, whatever G is), `multiscale` (HiFi-GAN's multi-period and multi-scale
discriminators) or `stft` (a multi-resolution STFT discriminator). `cfg.spectral_norm` puts
spectral normalisation on every convolution and linear layer of D. `cfg.dropout` acts in every
D family: on each hidden feature map before the next layer (in `multiscale` and `stft` after the
map is kept for feature matching, so the matching loss compares undropped features).
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from audiogan.config import TrainConfig, discriminator_family
from audiogan.models import dcgan, ddsp, hybrid, multiscale, stft, wavegan


def build(
    cfg: TrainConfig, clip_samples: int, num_classes: int = 0, sample_rate_hz: int = 16000
) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) for `cfg.model`, emitting exactly `clip_samples`."""
    classes = num_classes if cfg.conditional else 0
    wavegan_cfg = wavegan.WaveGANConfig(
        clip_samples, cfg.latent_dim, cfg.model_dim, cfg.phase_shuffle, cfg.dropout, classes
    )
    dcgan_cfg = dcgan.DCGANConfig(clip_samples, cfg.latent_dim, cfg.dropout, classes)
    if cfg.model == "dcgan":
        generator = dcgan.Generator(dcgan_cfg)
    elif cfg.model in ("ddsp", "hybrid"):
        family = ddsp if cfg.model == "ddsp" else hybrid
        generator = family.Generator(
            ddsp.DDSPConfig(
                clip_samples, sample_rate_hz, cfg.latent_dim, cfg.model_dim, classes, cfg.sources
            )
        )
    else:
        generator = wavegan.Generator(wavegan_cfg)
    family = discriminator_family(cfg)
    if family == "dcgan":
        discriminator = dcgan.Discriminator(dcgan_cfg)
    elif family == "multiscale":
        discriminator = multiscale.Discriminator(
            multiscale.MultiScaleConfig(clip_samples, cfg.disc_channels, dropout=cfg.dropout)
        )
    elif family == "stft":
        discriminator = stft.Discriminator(
            stft.STFTConfig(
                clip_samples, cfg.disc_channels, num_classes=classes, dropout=cfg.dropout
            )
        )
    else:
        discriminator = wavegan.Discriminator(wavegan_cfg)
    if cfg.spectral_norm:
        add_spectral_norm(discriminator)
    return generator, discriminator


def add_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) on every convolution and linear layer: each
    weight, as a matrix (out, in x kernel), is divided by its largest singular value, estimated
    by one power iteration per training forward."""
    for layer in list(module.modules()):
        if isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Linear):
            spectral_norm(layer)
    return module


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
