"""audiogan from Python: a trained generator in one line, for a notebook or a server.

    import audiogan
    g = audiogan.load("runs/demo")                 # a run folder or checkpoint, local or s3://
    audio, rate = g.generate(4, label=g.labels[0], seed=0)    # (4, T) float32 in [-1, 1]
    row, rate = g.interpolate(seed_a=0, seed_b=1, steps=8)     # (8, T): seed 0's clip to 1's

No Ray: the checkpoint loads with `torch.load(..., weights_only=True)` on this process's CPU.
The same seed (and label) gives the same clip on every call, as `audiogan generate` does.
"""

from __future__ import annotations

import secrets

import numpy as np
import torch

from audiogan.errors import AudioganError
from audiogan.generate import load_generator, render
from audiogan.step import sample_latent

# Seeds are torch.Generator seeds: non-negative and below 2**63.
MAX_SEED = 2**63 - 1


class GeneratorError(AudioganError, ValueError):
    """A request the generator cannot answer: an unknown label, a bad seed or count."""


class TrainedGenerator:
    """A checkpoint's generator (its EMA copy where it kept one), ready to make clips.

    Attributes:
        labels: the classes a conditional model makes on request, in label_id order; [] for an
            unconditional one.
        sample_rate_hz: the clips' rate.
        clip_samples: the samples of one clip.
        step: the training step the checkpoint was written at.
        conditional: whether `label=` chooses the class.
    """

    def __init__(self, checkpoint_url: str):
        self.model, self.cfg, state = load_generator(checkpoint_url)
        dataset = state["dataset"]
        self.labels: list[str] = list(dataset["labels"]) if self.cfg.conditional else []
        self.sample_rate_hz: int = dataset["sample_rate_hz"]
        self.clip_samples: int = dataset["clip_samples"]
        self.step: int = state["step"]
        self.conditional: bool = self.cfg.conditional

    def __repr__(self) -> str:
        classes = f", labels={self.labels}" if self.conditional else ""
        return (
            f"TrainedGenerator({self.cfg.model}, step {self.step}, "
            f"{self.clip_samples / self.sample_rate_hz:g} s at {self.sample_rate_hz} Hz{classes})"
        )

    def generate(
        self, n: int = 1, label: str | None = None, seed: int | None = None
    ) -> tuple[np.ndarray, int]:
        """`n` clips and their rate: (n, clip_samples) float32 in [-1, 1].

        Args:
            n: how many clips.
            label: the class to make, one of `labels`; None on a conditional model makes the
                classes in turn (clip i is labels[i % len(labels)]).
            seed: the noise's seed (the same seed, the same clips); None draws one.
        """
        _check_count(n, "n")
        label_id = self._label_id(label, required=False)
        z = self._latent(self._seed(seed), n)
        if not self.conditional:
            return render(self.model, z), self.sample_rate_hz
        ids = [i % len(self.labels) if label_id is None else label_id for i in range(n)]
        return render(self.model, z, torch.tensor(ids)), self.sample_rate_hz

    def interpolate(
        self, seed_a: int, seed_b: int, steps: int = 8, label: str | None = None
    ) -> tuple[np.ndarray, int]:
        """A row of `steps` clips from seed_a's clip (`generate(1, label, seed_a)`) to
        seed_b's, through the noise between them, and their rate.

        The noise moves in a straight line for WaveGAN's uniform prior (it stays inside its
        cube) and along the great circle for a Gaussian prior (whose samples all lie near
        one radius). A conditional model needs `label`: one class across the row.
        """
        _check_count(steps, "steps", least=2)
        label_id = self._label_id(label, required=True)
        start = self._latent(self._seed(seed_a), 1)[0]
        end = self._latent(self._seed(seed_b), 1)[0]
        weights = torch.linspace(0, 1, steps)[:, None]  # (steps, 1)
        if self.cfg.model == "dcgan":  # N(0, 1): spherical
            z = _slerp(start, end, weights)
        else:
            z = (1 - weights) * start + weights * end  # (steps, latent_dim)
        ids = None if label_id is None else torch.full((steps,), label_id)
        return render(self.model, z, ids), self.sample_rate_hz

    def _latent(self, seed: int, n: int) -> torch.Tensor:
        return sample_latent(self.cfg, n, "cpu", torch.Generator().manual_seed(seed))

    def _seed(self, seed: int | None) -> int:
        if seed is None:
            return secrets.randbelow(2**31)
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise GeneratorError(f"seed must be a whole number, got {seed!r}")
        if not 0 <= seed <= MAX_SEED:
            raise GeneratorError(f"seed must be between 0 and 2**63 - 1, got {seed}")
        return int(seed)

    def _label_id(self, label: str | None, required: bool) -> int | None:
        if label is None:
            if required and self.conditional:
                raise GeneratorError(
                    f"this model is conditional: give label=, one of {', '.join(self.labels)}"
                )
            return None
        if not self.conditional:
            raise GeneratorError(
                f"label={label!r}: this model is unconditional (trained with conditional=false)"
            )
        if label not in self.labels:
            raise GeneratorError(
                f"label {label!r} is not one of the model's: {', '.join(self.labels)}"
            )
        return self.labels.index(label)


def _check_count(value: int, name: str, least: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise GeneratorError(f"{name} must be a whole number of at least {least}, got {value!r}")


def _slerp(start: torch.Tensor, end: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Points along the arc from `start` to `end` in the plane they span (slerp)."""
    cos = torch.dot(start, end) / (start.norm() * end.norm())
    angle = torch.arccos(cos.clamp(-1, 1))
    if angle < 1e-4:  # the same direction: a straight line is the arc
        return (1 - weights) * start + weights * end
    return (
        torch.sin((1 - weights) * angle) * start + torch.sin(weights * angle) * end
    ) / torch.sin(angle)


def load(checkpoint_url: str) -> TrainedGenerator:
    """The generator of a checkpoint folder, or of a run folder's newest finished checkpoint,
    local or s3:// (credentials from the environment, as every command reads them)."""
    return TrainedGenerator(checkpoint_url)
