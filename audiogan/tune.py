"""Ray Tune sweeps over training keys: the search space (this part needs no Ray until
`to_tune`).

A search space maps TrainConfig keys to distributions, written in YAML as

    search:
      lr_g: {loguniform: [1.0e-5, 1.0e-3]}
      latent_dim: {choice: [64, 128]}
      dropout: {uniform: [0.0, 0.5]}
      n_critic: {randint: [1, 6]}   # 1..5: the upper bound is excluded, as in Ray Tune
      batch_size: 16                # a plain value fixes the key and takes it out of the search

Entries extend or override DEFAULT_SPACE; `parse_space(..., use_defaults=False)` starts from an
empty space.
Every key must be a training key, and every bound and choice must make a valid TrainConfig, so a
typo or an impossible range fails before any trial starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from audiogan.config import ConfigError, TrainConfig, from_dict, to_dict

KINDS = ("choice", "uniform", "loguniform", "randint")


@dataclass(frozen=True)
class Distribution:
    """One key's distribution: `choice` over `values`, or a range `low`..`high`."""

    kind: str
    values: tuple = ()
    low: float = 0.0
    high: float = 0.0

    def examples(self) -> list:
        """The values that bound the distribution: each choice, or both ends of the range."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "randint":
            return [int(self.low), int(self.high) - 1]
        return [self.low, self.high]


# The default: latent size, dropout, and the two learning rates.
DEFAULT_SPACE = {
    "latent_dim": Distribution("choice", values=(64, 100, 128, 256, 500)),
    "dropout": Distribution("uniform", low=0.0, high=0.5),
    "lr_g": Distribution("loguniform", low=1e-5, high=1e-3),
    "lr_d": Distribution("loguniform", low=1e-5, high=1e-3),
}


def parse_distribution(key: str, spec: Any) -> Distribution | None:
    """A YAML entry as a Distribution, or None for a plain (fixed) value."""
    if not isinstance(spec, dict):
        return None
    if len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ConfigError(
            f"search.{key}: expected one of {', '.join(f'{{{k}: ...}}' for k in KINDS)} "
            f"or a plain value, got {spec!r}"
        )
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"search.{key}: choice needs a non-empty list, got {args!r}")
        return Distribution(
            kind, values=tuple(tuple(v) if isinstance(v, list) else v for v in args)
        )
    if (
        not isinstance(args, list)
        or len(args) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in args)
    ):
        raise ConfigError(f"search.{key}: {kind} needs [low, high] numbers, got {args!r}")
    low, high = args
    if not low < high:
        raise ConfigError(f"search.{key}: {kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"search.{key}: loguniform needs low > 0, got {low}")
    if kind == "randint" and not (isinstance(low, int) and isinstance(high, int)):
        raise ConfigError(f"search.{key}: randint needs integer bounds, got [{low}, {high}]")
    return Distribution(kind, low=low, high=high)


def parse_space(
    search: dict | None, base: TrainConfig, use_defaults: bool = True
) -> tuple[dict[str, Distribution], TrainConfig]:
    """(the search space, the base config with the fixed values applied) from a YAML `search:`.

    Raises ConfigError for an unknown key, a malformed distribution, or a bound or choice that
    TrainConfig would refuse.
    """
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    space = dict(DEFAULT_SPACE) if use_defaults else {}
    fixed: dict[str, Any] = {}
    for key, spec in (search or {}).items():
        if key not in fields:
            raise ConfigError(f"search.{key}: not a training key (see audiogan/config.py)")
        distribution = parse_distribution(key, spec)
        if distribution is None:
            fixed[key] = spec
            space.pop(key, None)
        else:
            space[key] = distribution
    base = from_dict(TrainConfig, {**to_dict(base), **fixed})
    for key, distribution in space.items():
        for value in distribution.examples():
            try:
                from_dict(TrainConfig, {**to_dict(base), key: value})
            except ConfigError as error:
                raise ConfigError(
                    f"search.{key}: {value!r} is not a valid value: {error}"
                ) from None
    return space, base


def to_tune(space: dict[str, Distribution]) -> dict[str, Any]:
    """The space as Ray Tune sample objects (`tune.choice`, `tune.uniform`, ...)."""
    from ray import tune

    samplers = {
        "choice": lambda d: tune.choice(list(d.values)),
        "uniform": lambda d: tune.uniform(d.low, d.high),
        "loguniform": lambda d: tune.loguniform(d.low, d.high),
        "randint": lambda d: tune.randint(int(d.low), int(d.high)),
    }
    return {key: samplers[d.kind](d) for key, d in space.items()}
