"""Typed, frozen configuration for each stage; defaults live here and nowhere else."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from audiogan.errors import AudioganError


class ConfigError(AudioganError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


CROP_MODES = ("start", "center", "random", "windows")
PAD_MODES = ("end", "center", "none")
NORMALIZE_MODES = ("peak", "rms")
# What D's inputs may go through, real and generated alike (audiogan/augment.py).
AUGMENTATIONS = ("shift", "gain", "noise")
# Longer than any clip a GAN here trains on (1-4 s); 60 s at 192 kHz is 46 MB a clip.
MAX_CLIP_SECONDS = 60.0


@dataclass(frozen=True)
class PrepareConfig:
    """How `audiogan prepare` turns source files into fixed-length training clips."""

    # Output sample rate: 16 kHz keeps speech and most instrument timbre while making 4 s only
    # 64,000 samples.
    sample_rate_hz: int = 16000
    # Clip length in seconds: the 2019 experiment used 4 s clips; WaveGAN used ~1 s.
    clip_seconds: float = 4.0
    # Which part of a longer file becomes the clip; `windows` cuts it into several clips.
    crop: str = "start"
    # Where a short file's zeros go; `none` rejects files shorter than a clip as too_short.
    pad: str = "end"
    # Trim leading and trailing silence before cropping, so a clip starts where the sound does.
    trim_silence: bool = False
    # Anything quieter than this (peak, dB full scale) counts as silence.
    silence_threshold_db: float = -60.0
    # peak: scale the clip's peak to `peak_target`; rms: scale to `rms_target_db`, peak-capped.
    normalize: str = "peak"
    # Slightly under 1 so a generator's tanh never has to saturate to match the data.
    peak_target: float = 0.99
    # -20 dBFS RMS leaves headroom for transients in typical instrument recordings.
    rms_target_db: float = -20.0
    # Files shorter than this are rejected as too_short even when padding is allowed.
    min_source_seconds: float = 0.1
    # crop=windows keeps at most this many clips of a file (0: all), so that one long recording
    # cannot swamp its class; prepare says which files were cut and by how much.
    max_windows: int = 600
    # Only these labels (None: all; on the command line, comma-separated).
    labels: tuple[str, ...] | None = None
    # FSDKaggle2018 only: keep rows whose label a person verified.
    verified_only: bool = False
    # Seeds the random crop; each file's offset depends only on (seed, source path).
    seed: int = 0
    # Files per Ray Data batch; small batches keep memory flat with long files.
    batch_size: int = 16
    # Files up to this size are fetched in one request; larger ones are read by range.
    whole_file_max_bytes: int = 64 * 1024 * 1024
    # Sinc resampling filter half-width in zero crossings (Kaiser window); 16 keeps a 1 kHz
    # tone ~120 dB above the error, as well as 64 does, at a quarter of the cost.
    resample_filter_width: int = 16

    @property
    def clip_samples(self) -> int:
        return round(self.sample_rate_hz * self.clip_seconds)

    def __post_init__(self) -> None:
        check_types(self)
        _require(self.sample_rate_hz >= 1000, "sample_rate_hz must be at least 1000")
        _require(self.sample_rate_hz <= 192000, "sample_rate_hz must be at most 192000")
        _require(self.clip_seconds > 0, "clip_seconds must be positive")
        _require(
            self.clip_seconds <= MAX_CLIP_SECONDS,
            f"clip_seconds must be at most {MAX_CLIP_SECONDS:g} (one training clip)",
        )
        _require(self.clip_samples >= 16, "clip_seconds x sample_rate_hz gives under 16 samples")
        _require(self.crop in CROP_MODES, f"crop must be one of {', '.join(CROP_MODES)}")
        _require(self.pad in PAD_MODES, f"pad must be one of {', '.join(PAD_MODES)}")
        _require(
            self.normalize in NORMALIZE_MODES,
            f"normalize must be one of {', '.join(NORMALIZE_MODES)}",
        )
        _require(0 < self.peak_target <= 1, "peak_target must be in (0, 1]")
        _require(self.rms_target_db < 0, "rms_target_db must be below 0 dBFS")
        _require(self.silence_threshold_db < 0, "silence_threshold_db must be below 0 dBFS")
        _require(self.min_source_seconds >= 0, "min_source_seconds must be >= 0")
        _require(
            self.clip_seconds >= self.min_source_seconds,
            f"clip_seconds must be at least {self.min_source_seconds:g} (min_source_seconds, "
            "the shortest sound kept)",
        )
        _require(self.max_windows >= 0, "max_windows must be >= 0 (0: no limit)")
        _require(self.batch_size >= 1, "batch_size must be at least 1")
        _require(self.whole_file_max_bytes >= 0, "whole_file_max_bytes must be >= 0")
        _require(self.resample_filter_width >= 4, "resample_filter_width must be at least 4")
        _require(self.labels is None or len(self.labels) > 0, "labels must not be empty")


MODELS = ("dcgan", "wavegan", "ddsp", "hybrid")
# The built-in YAML presets, packaged with audiogan (`--config NAME` finds one by name), and
# the one each model trains with on a CPU: the 2019 baseline as it was, and the demo's WaveGAN.
PRESETS_DIR = Path(__file__).resolve().parent / "presets"
CPU_PRESETS = {"dcgan": PRESETS_DIR / "dcgan.yaml", "wavegan": PRESETS_DIR / "small_cpu.yaml"}
# The recipes, in the table's order: name -> (its preset in audiogan/presets/, what it is).
RECIPES = {
    "dcgan": ("dcgan.yaml", "the 2019 baseline: BCE, BatchNorm, dropout, one shared Adam"),
    "wavegan-gp": ("wavegan_gp.yaml", "textbook WaveGAN-GP, d = 16: 5 critic steps, lambda 10"),
    "hinge-r1": ("hinge_r1.yaml", "WaveGAN G and D, hinge, 1 critic step, lazy R1, SN, lr_d 4x"),
    "multiscale": ("multiscale.yaml", "WaveGAN G, HiFi-GAN's MPD + MSD, feature matching"),
    "stft": ("stft.yaml", "WaveGAN G, multi-resolution STFT D, feature matching"),
    "ddsp-stft": ("ddsp_stft.yaml", "harmonic-plus-noise G, STFT D, hinge, lazy R1, FM, EMA"),
    "ddsp-stft-cond": ("ddsp_stft_cond.yaml", "ddsp-stft, class-conditional (label in G and D)"),
    "ddsp2-stft-cond": (
        "ddsp2_stft_cond.yaml",
        "ddsp-stft-cond with two sources, each with its own pitch (two notes at once)",
    ),
    "hybrid-stft": (
        "hybrid_stft.yaml",
        "two pitched sources, noise at 8 and 2 ms, a waveform residual; STFT D as ddsp-stft",
    ),
    "hybrid-stft-cond": ("hybrid_stft_cond.yaml", "hybrid-stft, class-conditional"),
}


# `audiogan compare --kinds`: the files a class of each kind of the synthetic suite, and where
# the kinds' prepared datasets are kept unless --suite says.
SUITE_CLIPS_PER_CLASS = 100
SUITE_DIR = "data/suite"


# `audiogan train` without --config: the recipe that did best over the suite of kinds
# (docs/recipes.md), at CPU scale or (--gpu) GPU scale; `default_preset` says which, and
# makes it unconditional for data without classes.
DEFAULT_RECIPE = "ddsp-stft-cond"
DEFAULT_PRESETS = {
    "cpu": PRESETS_DIR / RECIPES[DEFAULT_RECIPE][0],
    "gpu": PRESETS_DIR / "ddsp_stft_gpu.yaml",  # its keys at GPU scale: 4 s clips, bf16
}


def default_preset(gpu: bool, manifest: dict) -> tuple[Path, dict, str]:
    """The default preset for a dataset (its manifest), the overrides it needs, and why, in
    words: the class-conditional recipe on data of two or more classes (that have clips)
    where every clip has one; the same recipe with conditional=false otherwise, as it would
    leave unlabelled clips out, and one class conditions nothing."""
    preset = DEFAULT_PRESETS["gpu" if gpu else "cpu"]
    counts = manifest["counts"]
    classes = sum(1 for clips in counts["per_label"].values() if clips)
    unlabelled = counts["unlabelled"]
    if classes >= 2 and not unlabelled:
        return preset, {}, f"{classes} classes: class-conditional"
    why = f"{unlabelled} unlabelled clips" if unlabelled else f"{classes} class(es)"
    return preset, {"conditional": False}, f"{why}: unconditional (conditional=false)"


LOSSES = ("bce", "wgan-gp", "hinge")
PRECISIONS = ("auto", "bf16", "fp32")
# Ray's placement group strategies, for a run's workers.
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
# "model": the model family's own D (ddsp has none); the others are WaveGAN's D whatever G is,
# and audiogan/models/multiscale.py and stft.py.
DISCRIMINATORS = ("model", "wavegan", "multiscale", "stft")


@dataclass(frozen=True)
class TrainConfig:
    """One GAN training run: model, optimisation, bookkeeping; flat, so Tune can search any key."""

    # dcgan: the 2019 baseline; wavegan: Donahue et al. 2019; ddsp: a harmonic-plus-noise
    # synthesiser whose controls G draws (audiogan/models/ddsp.py; needs a `discriminator`);
    # hybrid: two pitched sources with free contours, noise at 8 and 2 ms and a learned
    # waveform residual, for sounds ddsp cannot make (audiogan/models/hybrid.py; the same).
    model: str = "wavegan"
    # bce: cross-entropy, non-saturating for G (the baseline's); wgan-gp: Wasserstein with
    # WaveGAN's gradient penalty; hinge: SAGAN's and BigGAN's, best with spectral_norm and R1.
    loss: str = "wgan-gp"
    # model: the model family's own D; wavegan: WaveGAN's; multiscale: HiFi-GAN's multi-period
    # (2, 3, 5, 7, 11) and multi-scale (x1, x2, x4) ones; stft: a multi-resolution STFT one.
    discriminator: str = "model"
    # Width of the multiscale and stft sub-discriminators (their first layer; stft's are 8x).
    disc_channels: int = 16
    # Spectral normalisation of every convolution and linear layer of D: each weight divided by
    # its largest singular value, which keeps D's slopes in check (SAGAN, BigGAN).
    spectral_norm: bool = False
    # Size of the noise vector z (WaveGAN used 100, the baseline 500).
    latent_dim: int = 100
    # Dropout on D's hidden feature maps, in every D family (and the baseline G's); WaveGAN used
    # none.
    dropout: float = 0.0
    # Width d: channels grow as d, 2d, 4d, ... (64 in the WaveGAN paper; small for CPU runs).
    model_dim: int = 64
    # model=ddsp: oscillator banks, each with its own pitch; 1 plays one note at a time, 2 or
    # more chords and two instruments at once.
    sources: int = 1
    # WaveGAN's phase shuffle: D's activations move by up to this many samples per layer.
    phase_shuffle: int = 2
    # Adam for G and D separately, WaveGAN's defaults (two learning rates, so Tune can search both).
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: tuple[float, ...] = (0.5, 0.9)
    # Clips per worker per D update.
    batch_size: int = 64
    # D updates per G update (WGAN-GP uses 5; the baseline 1).
    n_critic: int = 5
    # WGAN-GP's lambda.
    gp_weight: float = 10.0
    # R1's gamma: D's loss gains gamma / 2 * E||grad D(real)||^2; 0: none (any loss but wgan-gp).
    # D(real) is a clip's score: the mean of a patch discriminator's logits, averaged over its
    # sub-discriminators (as the losses weigh them), so the same gamma is gentler there.
    r1_weight: float = 0.0
    # Lazy regularisation (StyleGAN2): R1 on one D update in this many, weighed by as many.
    r1_every: int = 1
    # Feature matching (MelGAN, HiFi-GAN): G's loss gains this times the L1 distance between
    # D's feature maps of real and generated clips; 0: none.
    fm_weight: float = 0.0
    # G's update reuses what its step's last D update computed: the generated clips, as
    # HiFi-GAN's loop does (G runs once a step, and is judged on the clips D was just trained
    # on), and with fm_weight D's features of the real clips, taken by D before that update
    # (HiFi-GAN takes them again after it), so feature matching's targets are one D update old.
    # One pass of G and one of D fewer a step; checked for quality at equal steps
    # (docs/recipes.md).
    share_passes: bool = False
    # bf16 autocast of G's and D's layers (the synthesiser, spectrograms, losses and penalties
    # stay float32). auto: bf16 on GPU workers, float32 on CPU ones; bf16: on CPU workers too,
    # where the CPU has native bf16 (AVX512-BF16 or AMX; elsewhere they train in float32 and say
    # so); fp32: float32 everywhere.
    precision: str = "auto"
    # Differentiable augmentations of every clip D sees, real and generated alike (DiffAugment):
    # any of shift, gain, noise; () none. They keep a D trained on a few hundred clips from
    # learning them by heart.
    augment: tuple[str, ...] = ()
    # The probability each augmentation is applied to a clip.
    augment_p: float = 0.5
    # One model for all classes of the dataset (label embedding in G, projection in D).
    conditional: bool = False
    # Decay of the EMA copy of G used for samples; 0 keeps no copy. It warms up: at G step t
    # the decay is min(ema_decay, (1 + t) / (10 + t)), so early samples are not of the init.
    ema_decay: float = 0.999
    # G updates in the whole run (a resumed run may raise it).
    max_steps: int = 2000
    # Also stop (with a checkpoint) once this invocation has trained this long; 0: no limit.
    # Checked every log_every steps, so every rank stops at the same step.
    max_minutes: float = 0.0
    # How often (in G steps) to log metrics, write samples, evaluate and save a checkpoint.
    log_every: int = 10
    sample_every: int = 200
    eval_every: int = 200
    checkpoint_every: int = 200
    # Checkpoints kept in storage (oldest deleted first); 0 keeps all.
    keep_checkpoints: int = 3
    # Clips in the fixed noise batch written at each sample step.
    num_samples: int = 8
    # Generated and real clips compared by mel_fd at each evaluation step (rank 0).
    eval_clips: int = 64
    # A worker keeps its shard in memory (reshuffled each epoch) when it fits in this many MiB,
    # instead of restarting Ray Data's streaming split every epoch; 0 always streams.
    shard_cache_mb: int = 1024
    # Worker failures Ray Train recovers from (restarting from the latest checkpoint); a lost
    # node counts as one.
    max_failures: int = 0
    # How Ray places a run's workers: PACK onto as few nodes as it can (the all-reduce stays
    # inside a node), SPREAD over as many; STRICT_ forms refuse to start otherwise.
    placement_strategy: str = "PACK"
    # A custom Ray resource each worker takes one unit of (a node started with
    # `--resources='{"NAME": 1}'` holds one worker); "" none.
    worker_resource: str = ""
    # An elastic run (--workers MIN-MAX) looks this often (seconds) for room to grow into.
    elastic_resize_s: float = 60.0
    # How long a start (or restart) of the workers waits for their room before that attempt
    # fails: an elastic run then starts again with what the cluster has.
    worker_start_timeout_s: float = 60.0
    # How long a write or read of the run folder is retried (with growing waits) while the
    # storage cannot be reached, before the run fails naming it; the finished checkpoints stay.
    storage_retry_s: float = 300.0
    # An MLflow tracking URI (pip install 'audiogan[mlflow]'): rank 0 logs the run's params,
    # metrics and report there (a sweep: one run per trial under one for the sweep). "":
    # MLFLOW_TRACKING_URI where it is set, else no MLflow. Credentials go in the environment
    # (MLFLOW_TRACKING_USERNAME and _PASSWORD, or _TOKEN), never in the URI.
    mlflow_uri: str = ""
    # The MLflow experiment the runs go into.
    mlflow_experiment: str = "audiogan"
    seed: int = 0

    def __post_init__(self) -> None:
        check_types(self)
        _require(self.model in MODELS, f"model must be one of {', '.join(MODELS)}")
        _require(self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}")
        _require(
            self.discriminator in DISCRIMINATORS,
            f"discriminator must be one of {', '.join(DISCRIMINATORS)}",
        )
        _require(
            not (self.model in ("ddsp", "hybrid") and self.discriminator == "model"),
            f"model={self.model} has no discriminator of its own: set discriminator=wavegan, "
            "multiscale or stft",
        )
        _require(self.disc_channels >= 1, "disc_channels must be at least 1")
        _require(
            not (self.conditional and self.discriminator == "multiscale"),
            "conditional=true needs discriminator=model, wavegan or stft (they project the label "
            "onto their features)",
        )
        _require(self.latent_dim >= 1, "latent_dim must be at least 1")
        _require(0 <= self.dropout < 1, "dropout must be in [0, 1)")
        _require(self.model_dim >= 1, "model_dim must be at least 1")
        _require(self.sources >= 1, "sources must be at least 1")
        _require(
            self.sources == 1 or self.model == "ddsp",
            "sources is model=ddsp's (hybrid has two sources of its own)",
        )
        _require(self.phase_shuffle >= 0, "phase_shuffle must be >= 0")
        _require(self.lr_g > 0 and self.lr_d > 0, "lr_g and lr_d must be positive")
        _require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "betas must be two numbers in [0, 1)",
        )
        _require(self.batch_size >= 1, "batch_size must be at least 1")
        _require(self.n_critic >= 1, "n_critic must be at least 1")
        _require(self.gp_weight >= 0, "gp_weight must be >= 0")
        _require(self.r1_weight >= 0, "r1_weight must be >= 0")
        _require(
            not (self.r1_weight and self.loss == "wgan-gp"),
            "r1_weight is for loss=bce or hinge; wgan-gp has its own penalty (gp_weight)",
        )
        _require(self.r1_every >= 1, "r1_every must be at least 1")
        _require(
            not (
                (self.r1_weight or self.fm_weight)
                and self.model == "dcgan"
                and self.discriminator == "model"
            ),
            "r1_weight and fm_weight need a discriminator without BatchNorm (not the baseline's: "
            "a second forward before the backward breaks BatchNorm under DDP)",
        )
        _require(self.fm_weight >= 0, "fm_weight must be >= 0")
        _require(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}")
        unknown = sorted(set(self.augment) - set(AUGMENTATIONS))
        _require(
            not unknown,
            f"augment: unknown {', '.join(unknown)}; known: {', '.join(AUGMENTATIONS)}",
        )
        _require(0 <= self.augment_p <= 1, "augment_p must be in [0, 1]")
        _require(0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)")
        _require(self.max_steps >= 1, "max_steps must be at least 1")
        _require(self.max_minutes >= 0, "max_minutes must be >= 0 (0: no limit)")
        for name in ("log_every", "sample_every", "eval_every", "checkpoint_every"):
            _require(getattr(self, name) >= 1, f"{name} must be at least 1")
        _require(self.keep_checkpoints >= 0, "keep_checkpoints must be >= 0")
        _require(self.num_samples >= 1, "num_samples must be at least 1")
        _require(self.eval_clips >= 2, "eval_clips must be at least 2")
        _require(self.shard_cache_mb >= 0, "shard_cache_mb must be >= 0")
        _require(self.max_failures >= -1, "max_failures must be >= -1 (-1: unlimited)")
        _require(
            self.placement_strategy in PLACEMENT_STRATEGIES,
            f"placement_strategy must be one of {', '.join(PLACEMENT_STRATEGIES)}",
        )
        _require(
            self.worker_resource not in ("CPU", "GPU", "memory"),
            "worker_resource names a custom resource; CPUs and GPUs are --workers' and --gpu's",
        )
        _check_where_it_runs(self)


def _check_where_it_runs(cfg: TrainConfig) -> None:
    """TrainConfig's keys of how a run runs and reports, not of what it trains."""
    _require(cfg.elastic_resize_s >= 0, "elastic_resize_s must be >= 0")
    _require(cfg.worker_start_timeout_s > 0, "worker_start_timeout_s must be > 0")
    _require(cfg.storage_retry_s >= 0, "storage_retry_s must be >= 0 (0: no retries)")
    _require(
        not has_credentials(cfg.mlflow_uri),
        "mlflow_uri must not hold credentials (user:password@): MLflow reads them from "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)",
    )
    _require(bool(cfg.mlflow_experiment.strip()), "mlflow_experiment must not be empty")


def has_credentials(url: str) -> bool:
    """Whether a URL carries a user name or password (user:password@host)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return bool(parts.username or parts.password)


def discriminator_family(cfg: TrainConfig) -> str:
    """The D family a config trains: its model's own, or the one `discriminator` names."""
    return cfg.model if cfg.discriminator == "model" else cfg.discriminator


# The keys whose values decide whether another key acts (idle_keys).
SWITCH_KEYS = ("model", "discriminator", "loss", "r1_weight", "augment")


def idle_keys(cfg: TrainConfig) -> dict[str, str]:
    """The training keys that change nothing in `cfg`'s recipe, each with the reason: a sweep
    that searches one, or fixes one, would report a setting that did nothing. Every other key
    acts in every recipe (dropout among them: every D family drops its hidden feature maps)."""
    family = discriminator_family(cfg)
    idle = {}
    if cfg.loss != "wgan-gp":
        idle["gp_weight"] = f"only loss=wgan-gp has a gradient penalty (loss is {cfg.loss})"
    if not cfg.r1_weight:
        idle["r1_every"] = "r1_weight is 0: there is no R1 penalty to space out"
    if not cfg.augment:
        idle["augment_p"] = "augment is empty: there is no augmentation to apply"
    if family != "wavegan":
        idle["phase_shuffle"] = f"phase shuffle is in WaveGAN's D only (D is {family})"
    if family not in ("multiscale", "stft"):
        idle["disc_channels"] = (
            f"disc_channels is the multiscale and stft Ds' width (D is {family})"
        )
    if cfg.model == "dcgan" and family == "dcgan":
        idle["model_dim"] = "the 2019 baseline's G and D have fixed widths"
    if cfg.model != "ddsp":
        idle["sources"] = f"sources is model=ddsp's (model is {cfg.model})"
    return idle


SEARCH_ALGS = ("random", "optuna")
# What a sweep ranks trials by (lower is better): mel_fd, or the evaluation classifier's FD.
TUNE_METRICS = ("mel_fd", "classifier_fd")
# asha: stop the trials that fall behind; pbt: population-based training.
TUNE_SCHEDULERS = ("asha", "pbt")


@dataclass(frozen=True)
class TuneConfig:
    """A sweep: how many trials, how they are drawn, stopped and sized. The training keys, and
    max_steps (ASHA's longest trial) among them, live in TrainConfig."""

    # Trials to run (Tune's num_samples), the `points` of the sweep file among them.
    trials: int = 8
    # random: Tune's random search; optuna: Optuna's TPE sampler (pip install 'audiogan[optuna]').
    search_alg: str = "random"
    # What ASHA, the best checkpoint and best.json rank trials by: mel_fd or classifier_fd
    # (the dataset's evaluation classifier's FD, `audiogan evaluator fit`); "": classifier_fd
    # where the dataset has a classifier, else mel_fd.
    metric: str = ""
    # asha: ASHA stops trials that fall behind. pbt: population-based training (Jaderberg et
    # al. 2017): every trial runs at once, and at every perturbation_interval_steps one in the
    # worst quarter takes a trial of the best quarter's checkpoint and settings and perturbs the
    # continuous searched keys (uniform and loguniform: the learning rates, dropout, ...).
    scheduler: str = "asha"
    # pbt: G steps between a trial's chances to exploit another; 0: grace_period_steps.
    perturbation_interval_steps: int = 0
    # ASHA stops no trial before this many G steps; later, at steps grace * factor^k (judged on
    # the first evaluation at or after each).
    grace_period_steps: int = 200
    # At each of those steps ASHA keeps the best 1/reduction_factor of the trials seen there.
    reduction_factor: int = 2
    # Ray Train workers per trial (one GPU each with --gpu).
    workers_per_trial: int = 2
    # CPUs per worker and per data read of a CPU trial: with a quarter, two 2-worker trials and
    # their reads share 2 cores (see audiogan/train.py RunSpec).
    cpus_per_worker: float = 0.25
    # Trials at once; 0: as many as the cluster's GPUs (CPUs without --gpu) hold at the start.
    max_concurrent_trials: int = 0
    # Search latent_dim, dropout, lr_g and lr_d (audiogan/tune.py DEFAULT_SPACE) besides the
    # sweep file's `search` entries; false searches those entries only.
    default_space: bool = True
    # Seeds the draws of the search.
    seed: int = 0

    def __post_init__(self) -> None:
        check_types(self)
        _require(self.trials >= 1, "trials must be at least 1")
        _require(
            self.search_alg in SEARCH_ALGS, f"search_alg must be one of {', '.join(SEARCH_ALGS)}"
        )
        _require(
            self.metric in ("", *TUNE_METRICS),
            f"metric must be one of {', '.join(TUNE_METRICS)} (or empty: chosen by the data)",
        )
        _require(
            self.scheduler in TUNE_SCHEDULERS,
            f"scheduler must be one of {', '.join(TUNE_SCHEDULERS)}",
        )
        _require(
            self.perturbation_interval_steps >= 0,
            "perturbation_interval_steps must be >= 0 (0: grace_period_steps)",
        )
        _require(self.grace_period_steps >= 1, "grace_period_steps must be at least 1")
        _require(self.reduction_factor >= 2, "reduction_factor must be at least 2")
        _require(
            self.workers_per_trial >= 1,
            "workers_per_trial must be at least 1 (Tune hears a trial through its Ray Train "
            "workers; there is no in-process trial)",
        )
        _require(0 < self.cpus_per_worker <= 64, "cpus_per_worker must be in (0, 64]")
        _require(self.max_concurrent_trials >= 0, "max_concurrent_trials must be >= 0 (0: auto)")


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-4` as a string; this loader reads it as the float everyone means."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def _yaml(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def parse_overrides(pairs: list[str]) -> dict[str, typing.Any]:
    """`key=value` strings into a dict; values are read as YAML (`1e-4`, `[0.5, 0.9]`, `true`)."""
    values = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected key=value, got {pair!r}")
        values[key.strip()] = _yaml(text)
    return values


def preset_names() -> list[str]:
    """The built-in presets' names (audiogan/presets/NAME.yaml)."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def builtin_preset(name: str) -> Path | None:
    """The built-in preset called `name` (`wavegan` or `wavegan.yaml`), or None."""
    path = PRESETS_DIR / f"{Path(name).name.removesuffix('.yaml')}.yaml"
    return path if Path(name).parent == Path(".") and path.is_file() else None


def find_preset(name_or_path: str | Path) -> Path:
    """A YAML file as given, or else the built-in preset of that name (`wavegan` or
    `wavegan.yaml`). A path with a folder in it is only ever a path.

    Raises:
        ConfigError: a bare name that is neither a file here nor a built-in preset.
    """
    path = Path(name_or_path)
    if path.is_file() or path.parent != Path("."):
        return path  # read_yaml says why a missing one cannot be read
    builtin = builtin_preset(str(path))
    if builtin:
        return builtin
    raise ConfigError(
        f"no config file {name_or_path}, and no built-in preset of that name (built-in: "
        f"{', '.join(preset_names())})"
    )


def load_config(cls: type, path: str | Path | None = None, overrides: dict | None = None):
    """A config from defaults, then a YAML file (a path or a built-in preset's name), then
    overrides; unknown keys are errors."""
    values = read_yaml(find_preset(path)) if path else {}
    values.update(overrides or {})
    return from_dict(cls, values)


def read_yaml(path: str | Path) -> dict[str, typing.Any]:
    """A YAML file that holds a mapping (an empty file is an empty one)."""
    try:
        with open(path) as handle:
            loaded = _yaml(handle.read()) or {}
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values")
    return loaded


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def from_dict(cls: type, values: dict[str, typing.Any]):
    """Builds a config dataclass from a mapping, refusing unknown keys.

    Lists become tuples where the field is a tuple; everything else must already have the
    field's type (an int is accepted for a float).
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} key(s): {', '.join(unknown)}; "
            f"known: {', '.join(sorted(names))}"
        )
    hints = typing.get_type_hints(cls)
    converted = {}
    for key, value in values.items():
        if isinstance(value, list) and _allows(hints[key], tuple):
            value = tuple(value)
        converted[key] = value
    return cls(**converted)


def to_dict(cfg) -> dict[str, typing.Any]:
    """A JSON-ready copy of a config (tuples become lists)."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in dataclasses.asdict(cfg).items()
    }


def check_types(cfg) -> None:
    """Raises ConfigError where a field's value does not match its annotation."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not _matches(value, hints[f.name]):
            raise ConfigError(f"{f.name} must be {_describe(hints[f.name])}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{f.name} must be finite, got {value!r}")


def _matches(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return isinstance(value, tuple) and all(_matches(v, item) for v in value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _allows(hint, kind: type) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_allows(arg, kind) for arg in typing.get_args(hint))
    return typing.get_origin(hint) is kind or hint is kind


def _describe(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


__all__ = [
    "CROP_MODES",
    "ConfigError",
    "DISCRIMINATORS",
    "LOSSES",
    "MODELS",
    "NORMALIZE_MODES",
    "PAD_MODES",
    "PrepareConfig",
    "TrainConfig",
    "TuneConfig",
    "find_preset",
    "load_config",
    "preset_names",
    "parse_overrides",
    "read_yaml",
    "check_types",
    "discriminator_family",
    "idle_keys",
    "from_dict",
    "to_dict",
]
