"""Ray Tune sweeps over training keys: the sweep file, the search space, and the sweep itself.

Each trial is a function that builds the same TorchTrainer as `audiogan train`
(`train.train`), with Tune's `TuneReportCallback`, so every `ray.train.report` of rank 0 (with
`mel_fd`, and `classifier_fd` where the dataset has an evaluation classifier) is one Tune
result, judged on tune.metric, and ASHA (schedulers.ResumableASHA) can stop a trial that falls
behind. Under PBT (tune.scheduler=pbt) a trial is `population_trial`, which reports each result
with a pointer checkpoint that PBT can hand to another trial. The trial's training run has the
whole run layout under STORAGE/NAME/trials/TRIAL_ID/ (and TRIAL_ID-from-DONOR-STEP/ after a PBT
exploit); Tune's own experiment state is in STORAGE/NAME/tune/, from which a rerun of the same
command resumes. `confirm` trains the best settings and the preset's anew and scores both.

A sweep file is a training preset (its keys are every trial's base) with optional sections:

    base: small_cpu.yaml          # a preset to start from (beside this file, or a built-in)
    max_steps: 300                # any training key: fixed
    search: {...}                 # the search space, below
    points: [{lr_g: 1.0e-4}]      # trials to run first (other searched keys: the base values)
    tune: {trials: 6, grace_period_steps: 50}   # config.TuneConfig

In a sweep, checkpoints and samples follow eval_every, so that every point where ASHA may stop
a trial leaves a checkpoint and a report.

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

import csv
import dataclasses
import io
import itertools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from audiogan import console, runfolder, samples, storage, tracking
from audiogan.config import (
    SWITCH_KEYS,
    TUNE_METRICS,
    ConfigError,
    TrainConfig,
    TuneConfig,
    builtin_preset,
    discriminator_family,
    find_preset,
    from_dict,
    idle_keys,
    parse_overrides,
    preset_names,
    read_yaml,
    to_dict,
)
from audiogan.errors import AudioganError

# A trial's driver only waits for its trainer: a tenth of a CPU (Ray Train's workers and data
# reads hold the real resources).
DRIVER_CPUS = 0.1
# The variables a trial's process needs to reach S3 storage, handed over in memory (the same
# way Ray Data and Ray Train ship a filesystem with its keys), never written anywhere.
STORAGE_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)

# Files of STORAGE/NAME.
SWEEP_FILE = "sweep.json"
RESULTS_CSV = "results.csv"
BEST_JSON = "best.json"
TRIALS_DIR = "trials"
# `--confirm`: the best settings and the preset's trained anew, in STORAGE/NAME/confirm/, and
# scored on this many generated clips (as many real held-out ones, where the dataset has them).
CONFIRM_DIR = "confirm"
CONFIRM_JSON = "confirm.json"
CONFIRM_CLIPS = 256
# A population-based trial's Tune checkpoint: {"trial", "run", "step"} of its run folder.
POINTER_FILE = "pointer.json"
TUNE_DIR = "tune"


class TuneError(AudioganError):
    """A sweep that cannot start or resume."""


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


# ---------------------------------------------------------------------------------------------
# The sweep file


@dataclass(frozen=True)
class Sweep:
    """Everything a sweep's trials are drawn from: checked whole before Ray starts."""

    base: TrainConfig
    space: dict[str, Distribution]
    points: tuple[dict[str, Any], ...]
    tune: TuneConfig

    def describe(self) -> dict:
        """A JSON-ready copy, stored as sweep.json: a resume must find the same sweep."""
        return {
            "train": to_dict(self.base),
            "search": {key: dataclasses.asdict(d) for key, d in sorted(self.space.items())},
            "points": [dict(point) for point in self.points],
            "tune": to_dict(self.tune),
        }


def load_sweep(path: str | None, overrides: list[str], tune_values: dict | None = None) -> Sweep:
    """The sweep of a sweep file (or of the defaults), with `key=value` overrides (`tune.KEY=...`
    for the sweep's own keys) and `tune_values` from command-line flags applied last."""
    values = _read_sweep_file(find_preset(path)) if path else {}
    # The keys this sweep fixes itself: a sweep file's own over its base preset's.
    own = read_yaml(find_preset(path)) if path else {}
    own_fixed = set(own) - {"base", "search", "points", "tune"} if "base" in own else set()
    search = values.pop("search", None) or {}
    points = values.pop("points", None) or []
    tune_section = values.pop("tune", None) or {}
    if not isinstance(search, dict):
        raise ConfigError("search: expected a mapping of training keys to distributions")
    if not isinstance(points, list):
        raise ConfigError("points: expected a list of mappings of searched keys to values")
    if not isinstance(tune_section, dict):
        raise ConfigError("tune: expected a mapping (see audiogan/config.py TuneConfig)")
    fixed_here = {}
    for key, value in parse_overrides(overrides).items():
        if key.startswith("tune."):
            tune_section[key.removeprefix("tune.")] = value
        else:
            fixed_here[key] = value
    tune_section.update(tune_values or {})
    tune_cfg = from_dict(TuneConfig, tune_section)
    # The file's training keys are every trial's base; the search space (its defaults and the
    # file's `search`) draws over them; a key=value on the command line fixes a key outright.
    base = from_dict(TrainConfig, {**values, **fixed_here})
    search = {key: spec for key, spec in search.items() if key not in fixed_here}
    space, base = parse_space(search, base, use_defaults=tune_cfg.default_space)
    space = {key: d for key, d in space.items() if key not in fixed_here}
    fixed = (
        own_fixed
        | set(fixed_here)
        | {k for k in search if parse_distribution(k, search[k]) is None}
    )
    _refuse_idle(space, fixed, base, Path(path).name if path else "the built-in defaults")
    # Every evaluation, where ASHA may stop a trial, is also a checkpoint and sample step: a
    # stopped trial leaves a whole run folder, and best.json can name its best evaluation.
    base = dataclasses.replace(base, checkpoint_every=base.eval_every, sample_every=base.eval_every)
    if not space:
        raise ConfigError("the search space is empty: nothing to sweep")
    if base.max_minutes:
        raise ConfigError(
            "max_minutes: a sweep's trials stop at max_steps or when ASHA says (a time limit "
            "would look like an early stop); set max_steps instead"
        )
    points = [  # a key fixed on the command line is fixed in every trial, points included
        {k: v for k, v in point.items() if k not in fixed_here}
        if isinstance(point, dict)
        else point
        for point in points
    ]
    checked_points = tuple(_check_point(i, point, space, base) for i, point in enumerate(points))
    if len(checked_points) > tune_cfg.trials:
        raise ConfigError(
            f"points: {len(checked_points)} given for {tune_cfg.trials} trial(s); "
            "raise tune.trials or give fewer"
        )
    if tune_cfg.grace_period_steps >= base.max_steps:
        raise ConfigError(
            f"tune.grace_period_steps ({tune_cfg.grace_period_steps}) must be below max_steps "
            f"({base.max_steps}), or ASHA could never stop a trial"
        )
    if tune_cfg.scheduler == "pbt":
        base = _population_checks(space, base, tune_cfg)
    return Sweep(base, space, checked_points, tune_cfg)


def _population_checks(
    space: dict[str, Distribution], base: TrainConfig, tune_cfg: TuneConfig
) -> TrainConfig:
    """Refuses a PBT sweep that could not exploit or perturb anything; returns the base config
    keeping every checkpoint (one that another trial is about to take must still be there)."""
    if tune_cfg.search_alg != "random":
        raise ConfigError(
            "tune.scheduler=pbt draws its population at random (Ray's PBT refuses other "
            "search algorithms): drop tune.search_alg"
        )
    if tune_cfg.trials < 2:
        raise ConfigError("tune.scheduler=pbt needs a population: tune.trials of 2 or more")
    if not perturbed_ranges(space):
        raise ConfigError(
            "tune.scheduler=pbt perturbs the continuous searched keys (uniform or loguniform); "
            f"this sweep searches none ({', '.join(sorted(space))})"
        )
    interval = perturbation_interval(tune_cfg)
    if interval >= base.max_steps:
        raise ConfigError(
            f"the PBT perturbation interval ({interval} steps) must be below max_steps "
            f"({base.max_steps}), or no trial could ever exploit another"
        )
    return dataclasses.replace(base, keep_checkpoints=0)


def perturbation_interval(tune_cfg: TuneConfig) -> int:
    """G steps between a PBT trial's chances to exploit another."""
    return tune_cfg.perturbation_interval_steps or tune_cfg.grace_period_steps


def perturbed_ranges(space: dict[str, Distribution]) -> dict[str, tuple[str, float, float]]:
    """The keys PBT perturbs, with their ranges: the continuous ones. A choice or an integer
    may change the model's shape, which a checkpoint taken from another trial must keep."""
    return {
        key: (d.kind, d.low, d.high)
        for key, d in sorted(space.items())
        if d.kind in ("uniform", "loguniform")
    }


def _refuse_idle(
    space: dict[str, Distribution], fixed: set[str], base: TrainConfig, recipe: str
) -> None:
    """Refuses a searched or fixed key that acts in no trial: idle in the base config with
    every combination of the searched switch keys' values (config.idle_keys)."""
    switches = [key for key in SWITCH_KEYS if key in space]
    variants = []
    for values in itertools.product(*(space[key].examples() for key in switches)):
        try:
            drawn = dict(zip(switches, values, strict=True))
            variants.append(from_dict(TrainConfig, {**to_dict(base), **drawn}))
        except ConfigError:
            continue  # a combination no trial runs
    variants = variants or [base]
    family = discriminator_family(base)
    about = f"{recipe} (model={base.model}, discriminator={family}, loss={base.loss})"
    for key in [*sorted(space), *sorted(fixed - set(space))]:
        reasons = [idle_keys(variant).get(key) for variant in variants]
        if all(reasons):
            what = "searches" if key in space else "fixes"
            raise ConfigError(
                f"the sweep {what} {key}, which does nothing in {about}: {reasons[0]}; "
                f"take {key} out of the sweep"
            )


def _read_sweep_file(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A sweep file's values over those of its `base` preset (and that one's base, ...)."""
    values = read_yaml(path)
    parent = values.pop("base", None)
    if parent is None:
        return values
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: base must be a file name, got {parent!r}")
    parent_path = path.parent / parent
    if not parent_path.is_file() and "/" not in parent:
        parent_path = builtin_preset(parent)
        if parent_path is None:
            raise ConfigError(
                f"{path}: base {parent} is neither beside it nor a built-in preset (built-in: "
                f"{', '.join(preset_names())})"
            )
    parent_path = parent_path.resolve()
    if parent_path in seen or parent_path == path.resolve():
        raise ConfigError(f"{path}: base {parent} refers back to itself")
    inherited = _read_sweep_file(parent_path, (*seen, path.resolve()))
    for section in ("search", "tune"):
        if isinstance(inherited.get(section), dict) and isinstance(values.get(section), dict):
            values[section] = {**inherited[section], **values[section]}
    return {**inherited, **values}


def _check_point(index: int, point: Any, space: dict[str, Distribution], base: TrainConfig):
    if not isinstance(point, dict) or not point:
        raise ConfigError(f"points[{index}]: expected a mapping of searched keys to values")
    unknown = sorted(set(point) - set(space))
    if unknown:
        raise ConfigError(
            f"points[{index}]: {', '.join(unknown)} not searched (searched: "
            f"{', '.join(sorted(space))})"
        )
    values = to_dict(base)
    try:
        from_dict(TrainConfig, {**values, **point})
    except ConfigError as error:
        raise ConfigError(f"points[{index}]: {error}") from None
    # A searched key the point does not name takes the base config's value (Optuna needs all).
    return {key: point.get(key, values[key]) for key in sorted(space)}


# ---------------------------------------------------------------------------------------------
# The sweep on Ray Tune


@dataclass(frozen=True)
class SweepSpec:
    """Where a sweep reads and writes. Local paths become absolute (Tune runs each trial in a
    folder of its own, and sweep.json must name the same data from any working directory)."""

    data_url: str
    storage_url: str
    name: str
    gpu: bool = False
    verbose: bool = False  # Ray Train's own INFO lines in every trial (train.RunSpec.verbose)

    def __post_init__(self) -> None:
        if not storage.is_plain_name(self.name):
            raise TuneError(f"--name must be a plain folder name, got {self.name!r}")
        for field in ("data_url", "storage_url"):
            object.__setattr__(self, field, storage.absolute(getattr(self, field)))


def choose_metric(sweep: Sweep, data_url: str, log: Callable[[str], None] = print) -> Sweep:
    """The sweep with its metric decided (tune.metric): classifier_fd where the dataset has an
    evaluation classifier that can score its clips, else mel_fd. Refuses classifier_fd asked
    for on a dataset without a usable classifier."""
    from audiogan import evaluator
    from audiogan.dataset import read_manifest

    if sweep.tune.metric == "mel_fd":  # needs no classifier
        return sweep
    try:
        judge = evaluator.usable_judge(data_url, read_manifest(data_url))
        why = "" if judge else f"{storage.display(data_url)} has no evaluation classifier"
    except evaluator.EvaluatorError as error:
        judge, why = None, str(error)
    if sweep.tune.metric == "classifier_fd" and not judge:
        raise TuneError(
            f"tune.metric=classifier_fd: {why} (make one with: audiogan evaluator fit "
            f"--data {storage.display(data_url)})"
        )
    if sweep.tune.metric:
        return sweep
    if not judge:
        log(f"tune: ranking trials by mel_fd: {why}")
    metric = "classifier_fd" if judge else "mel_fd"
    return dataclasses.replace(sweep, tune=dataclasses.replace(sweep.tune, metric=metric))


def run_sweep(sweep: Sweep, spec: SweepSpec, log: Callable[[str], None] = print) -> dict:
    """Runs (or resumes) a sweep and writes results.csv, best.json and the plot; returns the
    summary (its `rows`: one per trial, best first)."""

    try:
        return _run_sweep(sweep, spec, log)
    except OSError as error:  # a store that is down or refuses us, at any point
        raise storage.unreachable(spec.storage_url, error) from None


def _run_sweep(sweep: Sweep, spec: SweepSpec, log: Callable[[str], None]) -> dict:
    import ray
    from ray import tune

    from audiogan.dataset import read_manifest

    read_manifest(spec.data_url)  # a missing dataset fails here, not in every trial
    sweep = choose_metric(sweep, spec.data_url, log)
    # Tune pickles this filesystem into the sweep's state: its keys come from the environment.
    fs, root = storage.resolve(spec.storage_url, embed_keys=False)
    sweep_root = storage.join(root, spec.name)
    experiment = storage.join(sweep_root, TUNE_DIR)
    settings = {**sweep.describe(), "data": spec.data_url, "gpu": spec.gpu}
    described = json.dumps(settings, indent=1, sort_keys=True)
    sweep_path = storage.join(sweep_root, SWEEP_FILE)
    mlflow_uri = tracking.tracking_uri(sweep.base)
    if mlflow_uri:
        tracking.check(mlflow_uri)  # installed, and no credentials in the URI

    def trainable():  # once the sweep is known to run
        return _trials(sweep, spec, mlflow_uri, fs, sweep_root, settings)

    if tune.Tuner.can_restore(experiment, storage_filesystem=fs):
        if storage.exists(fs, sweep_path):
            stored = json.loads(storage.read_bytes(fs, sweep_path))
            # A sweep stored before a training key existed ran with that key's default.
            if isinstance(stored.get("train"), dict):
                stored["train"] = {**to_dict(TrainConfig()), **stored["train"]}
            # One stored before tune.metric existed ranked its trials by mel_fd.
            if isinstance(stored.get("tune"), dict):
                stored["tune"] = {**to_dict(TuneConfig()), "metric": "mel_fd", **stored["tune"]}
            changed = _differences(stored, json.loads(described))  # tuples read back as lists
            if changed:
                raise TuneError(
                    f"{storage.display(spec.storage_url)}/{spec.name} holds a sweep with other "
                    f"settings ({', '.join(changed)}); use another --name, or the same settings "
                    "to resume it"
                )
        log(f"tune: resuming the sweep in {_shown(spec, TUNE_DIR)}")
        parent, function = trainable()
        tuner = tune.Tuner.restore(experiment, trainable=function, storage_filesystem=fs)
    else:
        concurrent = _concurrency(sweep.tune, spec.gpu, ray.cluster_resources())
        _announce(sweep, spec, concurrent, log)
        storage.write_bytes(fs, sweep_path, described.encode())
        parent, function = trainable()
        tuner = tune.Tuner(
            function,
            param_space=to_tune(sweep.space),
            tune_config=tune.TuneConfig(
                metric=sweep.tune.metric,
                mode="min",
                num_samples=sweep.tune.trials,
                search_alg=_searcher(sweep, concurrent),
                scheduler=_scheduler(sweep),
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=TUNE_DIR, storage_path=sweep_root, storage_filesystem=fs
            ),
        )
    grid = _fit(tuner, mlflow_uri, parent)
    # The state Tune saved, not the grid, tells an interrupted trial (saved while running, to
    # be resumed) from one ASHA stopped: after Ctrl-C the grid shows both as terminated.
    saved = tune.ExperimentAnalysis(experiment, storage_filesystem=fs)
    done = {trial.trial_id for trial in saved.trials if trial.status in ("TERMINATED", "ERROR")}
    summary = _write_results(grid, done, sweep, spec, fs, sweep_root)
    if parent:
        files = {
            name: storage.read_bytes(fs, storage.join(sweep_root, name))
            for name in (RESULTS_CSV, BEST_JSON)
            if storage.exists(fs, storage.join(sweep_root, name))
        }
        tracking.end_sweep(mlflow_uri, parent, files, failed=not summary["finished"])
    return summary


def _trials(sweep: Sweep, spec: SweepSpec, mlflow_uri: str, fs, sweep_root: str, settings: dict):
    """(the sweep's MLflow run id or "", the trial function): the run opens here, and the
    trials get the store's URI as resolved in this process (each runs in a folder of its
    own, where a relative SQLite path would name another database)."""
    from ray import tune

    parent = _sweep_mlflow_run(mlflow_uri, sweep, spec, fs, sweep_root, settings)
    if mlflow_uri:
        sweep = dataclasses.replace(
            sweep, base=dataclasses.replace(sweep.base, mlflow_uri=mlflow_uri)
        )
    return parent, tune.with_resources(_trainable(sweep, spec, parent), {"CPU": DRIVER_CPUS})


def _fit(tuner, mlflow_uri: str, parent: str):
    """tuner.fit(); on Ctrl-C or Tune's own failure the sweep's MLflow run ends FAILED."""
    try:
        return tuner.fit()
    except BaseException:
        if parent:
            tracking.end_sweep(mlflow_uri, parent, {}, failed=True)
        raise


def _sweep_mlflow_run(
    uri: str, sweep: Sweep, spec: SweepSpec, fs, sweep_root: str, settings: dict
) -> str:
    """The sweep's MLflow run (its trials' runs nest under it): the one a resumed sweep
    started, kept in STORAGE/NAME/mlflow.json, or a new one; "" without MLflow."""
    if not uri:
        return ""
    path = storage.join(sweep_root, tracking.RUN_FILE)
    kept = json.loads(storage.read_bytes(fs, path)) if storage.exists(fs, path) else {}
    if kept.get("run_id") and tracking.run_exists(uri, kept["run_id"]):
        return kept["run_id"]
    params = {key: value for key, value in settings.items() if key != "train"}
    run_id = tracking.start_sweep(uri, sweep.base.mlflow_experiment, spec.name, params)
    storage.write_bytes(fs, path, json.dumps({"run_id": run_id}).encode())
    return run_id


def confirm(sweep: Sweep, spec: SweepSpec, summary: dict, log: Callable[[str], None] = print):
    """The sweep's verdict tested anew: its best trial's settings and the base config's own
    (the preset's) each trained for max_steps on the sweep's workers with a seed no trial used,
    then scored by `audiogan evaluate` (CONFIRM_CLIPS clips against held-out real ones, with
    the dataset's evaluation classifier). Runs in STORAGE/NAME/confirm/{preset,best}/; a run
    that is there already is resumed (or, finished, only scored). Writes confirm.json."""
    from audiogan import evaluate, evaluator, train

    if not summary["best_trial"]:
        raise TuneError("nothing to confirm: no trial stored a checkpoint")
    best = next(row for row in summary["rows"] if row["trial"] == summary["best_trial"])
    keys = sorted(sweep.space)
    seed = sweep.base.seed + 1  # every trial trained with the base seed
    contenders = {
        "preset": {key: getattr(sweep.base, key) for key in keys},
        "best": {key: best[key] for key in keys},
    }
    clips = evaluator.read_labelled_clips(spec.data_url)  # once, for both evaluations
    fs, root = storage.resolve(spec.storage_url)
    rows = {}
    for name, params in contenders.items():
        cfg = dataclasses.replace(sweep.base, **params, seed=seed)
        log(f"tune: confirming {name} ({_settings(params)}): {cfg.max_steps} steps, seed {seed}")
        run = train.RunSpec(
            data_url=spec.data_url,
            storage_url=f"{spec.storage_url.rstrip('/')}/{spec.name}/{CONFIRM_DIR}",
            name=name,
            workers=sweep.tune.workers_per_trial,
            gpu=spec.gpu,
        )
        done = train.train(cfg, run)
        if done["error"]:
            raise TuneError(f"the confirmation run of {name} failed: {done['error']}")
        scored = evaluate.evaluate(
            spec.data_url, checkpoint_url=done["checkpoint"], n=CONFIRM_CLIPS, log=log, clips=clips
        )
        figures = scored["metrics"]
        rows[name] = {
            "searched": params,
            "steps": done["steps"],
            "checkpoint": done["checkpoint"],
            "classifier_fd": figures["classifier_fd"]["generated"],
            "classifier_fd_real": figures["classifier_fd"]["real"],
            "mel_fd": figures["mel_fd"]["generated"],
            "label_accuracy": figures.get("label_accuracy", {}).get("generated"),
            "clips": scored["generated_clips"],  # as many as the held-out real clips, at most
        }
    same = contenders["preset"] == contenders["best"]
    beats = rows["best"]["classifier_fd"] < rows["preset"]["classifier_fd"]
    result = {
        "trial": best["trial"],
        "seed": seed,
        "clips": min(row["clips"] for row in rows.values()),
        "runs": rows,
        "best_is_the_preset": same,
        "best_beats_preset": (not same) and beats,
        "ratio": round(rows["best"]["classifier_fd"] / rows["preset"]["classifier_fd"], 4),
    }
    path = storage.join(root, spec.name, CONFIRM_JSON)
    storage.write_bytes(fs, path, json.dumps(result, indent=1).encode())
    return result | {"path": _shown(spec, CONFIRM_JSON)}


def _settings(params: dict) -> str:
    return ", ".join(f"{key}={_value(value)}" for key, value in sorted(params.items()))


def format_confirmation(result: dict) -> list[str]:
    """The confirmation's table and its verdict in one line."""
    lines = [
        f"| run (seed {result['seed']}, {result['clips']} clips scored) | settings | steps | "
        "classifier FD (real) | mel_fd | label accuracy |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, row in result["runs"].items():
        accuracy = "-" if row["label_accuracy"] is None else f"{row['label_accuracy']:.3f}"
        lines.append(
            f"| {name} | {_settings(row['searched'])} | {row['steps']} | "
            f"{row['classifier_fd']:.2f} ({row['classifier_fd_real']:.2f}) | "
            f"{row['mel_fd']:.2f} | {accuracy} |"
        )
    if result["best_is_the_preset"]:
        verdict = "the sweep's best settings are the preset's own"
    elif result["best_beats_preset"]:
        verdict = (
            f"the sweep's best (trial {result['trial']}) beats the preset: classifier FD x"
            f"{result['ratio']:.2f} of the preset's"
        )
    else:
        verdict = (
            f"the sweep's best (trial {result['trial']}) does not beat the preset on a fresh seed "
            f"(classifier FD x{result['ratio']:.2f} of the preset's)"
        )
    return [*lines, "", f"  confirm: {verdict}"]


def _announce(sweep: Sweep, spec: SweepSpec, concurrent: int, log: Callable[[str], None]):
    """The sweep's first line: trials, room, what is searched and how trials are judged;
    refuses a PBT population larger than the room."""
    if sweep.tune.scheduler == "pbt" and concurrent < sweep.tune.trials:
        # A trial waiting for room would hold back every trial's exploits (Ray's PBT
        # pauses a trial at its interval while another is pending).
        raise TuneError(
            f"tune.scheduler=pbt runs its whole population at once: {sweep.tune.trials} "
            f"trials, room for {concurrent}; lower tune.trials or give the sweep more room"
        )
    if sweep.tune.scheduler == "pbt":
        judged = (
            f"PBT on {sweep.tune.metric} every {perturbation_interval(sweep.tune)} steps, "
            f"perturbing {', '.join(perturbed_ranges(sweep.space))}, to {sweep.base.max_steps}"
        )
    else:
        judged = (
            f"ASHA on {sweep.tune.metric} from step {sweep.tune.grace_period_steps} to "
            f"{sweep.base.max_steps}"
        )
    log(
        f"tune: {sweep.tune.trials} trial(s), {concurrent} at once, each "
        f"{sweep.tune.workers_per_trial} worker(s){' with a GPU' if spec.gpu else ''}; "
        f"searching {', '.join(sorted(sweep.space))}; {judged}"
    )


def _shown(spec: SweepSpec, *parts: str) -> str:
    return "/".join([storage.display(spec.storage_url.rstrip("/")), spec.name, *parts])


def _differences(old: dict, new: dict) -> list[str]:
    keys = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section), new.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += [f"{section}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            keys.append(section)
    return keys


def _trial_name(trial) -> str:
    """Trial folders named by the trial's id alone: STORAGE/NAME/trials/<id> and tune/<id>."""
    return trial.trial_id


def _trainable(sweep: Sweep, spec: SweepSpec, mlflow_parent: str = ""):
    """The trial function with its fixed arguments. `tune.with_parameters` keeps them in Ray's
    object store, where the storage keys stay in memory: Tune pickles the trainable itself
    into the sweep's state (in storage)."""
    from ray import tune

    run = {
        "data_url": spec.data_url,
        "storage_url": f"{spec.storage_url.rstrip('/')}/{spec.name}/{TRIALS_DIR}",
        "workers": sweep.tune.workers_per_trial,
        "gpu": spec.gpu,
        "cpus_per_worker": sweep.tune.cpus_per_worker,
        "cpus_per_read": sweep.tune.cpus_per_worker,
        "keep_best": sweep.tune.metric,
        "verbose": spec.verbose,
        "mlflow_parent": mlflow_parent,
    }
    env = {key: os.environ[key] for key in STORAGE_ENV if key in os.environ}
    trial = population_trial if sweep.tune.scheduler == "pbt" else audiogan_trial
    return tune.with_parameters(trial, base=to_dict(sweep.base), run=run, env=env)


def audiogan_trial(params: dict, base: dict, run: dict, env: dict) -> None:
    """One trial: the base config with the trial's draws, trained by `train.train` with Tune's
    report callback into STORAGE/NAME/trials/TRIAL_ID."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from audiogan import train

    os.environ.update(env)  # this process is the trial's own
    cfg = from_dict(TrainConfig, {**base, **params})
    spec = train.RunSpec(name=tune.get_context().get_trial_id(), **run)
    summary = train.train(cfg, spec, callbacks=[TuneReportCallback()])
    if summary["error"]:
        raise train.TrainError(f"training failed: {summary['error']}")


def population_trial(params: dict, base: dict, run: dict, env: dict) -> None:
    """One trial of a population-based sweep. Training runs as in `audiogan_trial`, in a thread,
    while this function reports each evaluation to Tune with a checkpoint that PBT can hand to
    another trial: a pointer to this trial's run folder and step (POINTER_FILE), not the weights.

    Tune starts the function again with the checkpoint it was handed: this trial's own (a resumed
    sweep: its run goes on), or, after an exploit, another trial's with that trial's settings
    perturbed (`params`): then a new run folder, TRIAL-from-DONOR-STEP, starts from the donor's
    checkpoint at that step (RunFolder.start_from), and its metrics.jsonl says so."""
    import tempfile
    import threading

    from ray import tune
    from ray.util.queue import Queue

    from audiogan import train
    from audiogan.schedulers import Forward

    os.environ.update(env)  # this process is the trial's own
    cfg = from_dict(TrainConfig, {**base, **params})
    me = tune.get_context().get_trial_id()
    name, pointer = me, _read_pointer(tune.get_checkpoint())
    if pointer and pointer["trial"] == me:
        name = pointer["run"]
    elif pointer:
        name = f"{me}-from-{pointer['trial']}-{pointer['step']}"
        fs, root = storage.resolve(run["storage_url"])
        url = storage.display(f"{run['storage_url'].rstrip('/')}/{name}")
        folder = runfolder.RunFolder(fs, storage.join(root, name), url, cfg.storage_retry_s)
        if not folder.exists(runfolder.METRICS):  # (started from it before a resume)
            lineage = {**pointer, "searched": params, "at": round(time.time(), 3)}
            folder.start_from(storage.join(root, pointer["run"]), pointer["step"], lineage)
            console.say(f"tune: {me} goes on from {pointer['run']} at step {pointer['step']}")
    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            spec = train.RunSpec(name=name, **run)
            outcome["summary"] = train.train(cfg, spec, callbacks=[Forward(queue)])
        except BaseException as error:  # noqa: BLE001 - raised below, in the trial's thread
            outcome["error"] = error
        finally:
            queue.put(None)

    threading.Thread(target=fit, name="audiogan-train", daemon=True).start()
    while (metrics := queue.get()) is not None:
        # Every report of a sweep is at a checkpoint step (checkpoint_every = eval_every).
        with tempfile.TemporaryDirectory() as folder:
            pointer = {"trial": me, "run": name, "step": metrics["step"]}
            Path(folder, POINTER_FILE).write_text(json.dumps(pointer))
            tune.report({**metrics, "run": name}, checkpoint=tune.Checkpoint.from_directory(folder))
    if "error" in outcome:
        raise outcome["error"]
    if outcome["summary"]["error"]:
        raise train.TrainError(f"training failed: {outcome['summary']['error']}")


def _read_pointer(checkpoint) -> dict | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return json.loads(Path(folder, POINTER_FILE).read_text())


def _concurrency(tune_cfg: TuneConfig, gpu: bool, resources: dict[str, float]) -> int:
    """Trials at once: what the cluster holds whole, so no trial's trainer waits on resources
    that another trial's driver has taken."""
    if tune_cfg.max_concurrent_trials:
        return tune_cfg.max_concurrent_trials
    workers, cpus, gpus = (
        tune_cfg.workers_per_trial,
        resources.get("CPU", 0),
        resources.get("GPU", 0),
    )
    # A trial: its driver, its workers (a whole CPU each beside a GPU) and one data read.
    cpus_per_trial = DRIVER_CPUS + workers * (1 if gpu else tune_cfg.cpus_per_worker)
    cpus_per_trial += tune_cfg.cpus_per_worker
    # (rounded first, so that 2 / 0.4 is 5 and not 4.999...)
    fits = int(round(cpus / cpus_per_trial, 6))
    need = f"{cpus_per_trial:g} CPU per trial; the cluster has {cpus:g}"
    if gpu and gpus // workers < fits:
        fits = int(gpus // workers)
        need = f"{workers} GPU(s) per trial; the cluster has {gpus:g}"
    if fits < 1:
        raise TuneError(
            f"no trial fits: {need} (an autoscaling cluster that starts empty needs "
            "tune.max_concurrent_trials=N)"
        )
    return min(fits, tune_cfg.trials)


def _searcher(sweep: Sweep, concurrent: int):
    """Random search (Tune's BasicVariantGenerator) or Optuna's TPE, either of them drawing no
    more than `concurrent` trials ahead (Tune ignores max_concurrent_trials for both)."""
    points = [dict(point) for point in sweep.points] or None
    if sweep.tune.search_alg == "optuna":
        try:
            import optuna  # noqa: F401 - Ray's OptunaSearch needs it, and fails late without
            from ray.tune.search import ConcurrencyLimiter
            from ray.tune.search.optuna import OptunaSearch
        except ImportError:
            raise TuneError(
                "search_alg optuna needs Optuna: pip install 'audiogan[optuna]'"
            ) from None
        searcher = OptunaSearch(points_to_evaluate=points, seed=sweep.tune.seed)
        return ConcurrencyLimiter(searcher, max_concurrent=concurrent)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(
        points_to_evaluate=points, max_concurrent=concurrent, random_state=sweep.tune.seed
    )


def _scheduler(sweep: Sweep):
    from audiogan.schedulers import ResumableASHA, population_based

    if sweep.tune.scheduler == "pbt":
        return population_based(
            perturbation_interval(sweep.tune), perturbed_ranges(sweep.space), sweep.base.max_steps
        )

    # Time is the G step every report carries, so rungs mean the same with any eval_every.
    return ResumableASHA(
        time_attr="step",
        max_t=sweep.base.max_steps,
        grace_period=sweep.tune.grace_period_steps,
        reduction_factor=sweep.tune.reduction_factor,
    )


# ---------------------------------------------------------------------------------------------
# Results


def _write_results(grid, done: set[str], sweep: Sweep, spec: SweepSpec, fs, sweep_root: str):
    metric = sweep.tune.metric
    rows = [_trial_row(result, sweep, spec, fs, sweep_root, done) for result in grid]
    finished = len(rows) == sweep.tune.trials and all(row["trial"] in done for row in rows)
    rows.sort(key=lambda row: (row["best"] is None, row["best"] or 0.0))
    # The best trial is the one whose best stored checkpoint scores lowest (a logged
    # evaluation whose checkpoint was never stored cannot be handed to generate).
    stored = [row for row in rows if row["checkpoint"]]
    best = min(stored, key=lambda row: row["checkpoint_score"]) if stored else None
    keys = sorted(sweep.space)
    measured = [m for m in TUNE_METRICS if any(row["at_best"].get(m) is not None for row in rows)]
    pbt = sweep.tune.scheduler == "pbt"
    csv_text = _csv(rows, keys, metric, measured, pbt)
    storage.write_bytes(fs, storage.join(sweep_root, RESULTS_CSV), csv_text.encode())
    curves = {row["trial"]: row["curve"] for row in rows}
    stopped = {row["trial"] for row in rows if row["status"] == "stopped early"}
    png = samples.sweep_png(curves, stopped, best and best["trial"], metric)
    storage.write_bytes(fs, storage.join(sweep_root, plot_path(metric)), png)
    best_path = storage.join(sweep_root, BEST_JSON)
    if best:
        params = {key: best[key] for key in keys}
        about = {
            "trial": best["trial"],
            "metric": metric,
            metric: best["checkpoint_score"],
            **{m: v for m, v in best["checkpoint_metrics"].items() if m != metric},
            "step": best["checkpoint_step"],
            "checkpoint": best["checkpoint"],
            "run": best["run"],
            **({"lineage": best["lineage"]} if pbt else {}),
            "searched": params,
            "config": to_dict(dataclasses.replace(sweep.base, **params)),
        }
        storage.write_bytes(fs, best_path, json.dumps(about, indent=1).encode())
    return {
        "sweep": _shown(spec),
        "metric": metric,
        "scheduler": sweep.tune.scheduler,
        "measured": measured,
        "finished": finished,
        "trials": len(rows),
        "completed": sum(row["status"] == "completed" for row in rows),
        "stopped_early": len(stopped),
        "errors": sum(row["status"] == "error" for row in rows),
        "unfinished": sweep.tune.trials - sum(row["status"] != "unfinished" for row in rows),
        "best_trial": best and best["trial"],
        "best_score": best and best["checkpoint_score"],
        "best_checkpoint": best and best["checkpoint"],
        "agreement": agreement([row["evaluations"] for row in rows]),
        "results": _shown(spec, RESULTS_CSV),
        "best": _shown(spec, BEST_JSON) if best else None,
        "plot": _shown(spec, plot_path(metric)),
        "searched": keys,
        "rows": rows,
    }


def plot_path(metric: str) -> str:
    """STORAGE/NAME's plot of every trial's metric over the steps."""
    return f"plots/{metric}.png"


def agreement(trials: list[dict[int, dict[str, float]]]) -> dict[str, int | float | None]:
    """How often mel_fd and classifier_fd order two trials alike: over every pair of trials
    at every step both evaluated with both metrics (a tie in either counts as no order)."""
    pairs = same = 0
    steps = sorted({step for trial in trials for step in trial})
    for step in steps:
        scored = [t[step] for t in trials if step in t and all(m in t[step] for m in TUNE_METRICS)]
        for a, b in itertools.combinations(scored, 2):
            mel = a["mel_fd"] - b["mel_fd"]
            classifier = a["classifier_fd"] - b["classifier_fd"]
            if mel and classifier:
                pairs += 1
                same += (mel > 0) == (classifier > 0)
    return {"pairs": pairs, "agree": same, "share": round(same / pairs, 3) if pairs else None}


def _trial_row(result, sweep: Sweep, spec: SweepSpec, fs, sweep_root: str, done: set[str]):
    metric = sweep.tune.metric
    trial = result.path.rstrip("/").rsplit("/", 1)[-1]
    # (step, the metrics measured there, the run folder) of every evaluation the trial made
    # itself, in order: in its own run, then in each run it started from another trial's
    # checkpoint (PBT), the donor's rows copied there left out.
    points, checkpoints, lineage, segments = [], [], [], []
    history: list[dict] = []
    for run, start, history in _generations(fs, sweep_root, trial):
        begun, segment = (start["step"] if start else 0), []
        if start:
            lineage.append(f"{start['step']} from {start['trial']}")
            # (the plot's segment begins at the donor's score there)
            segment = [
                (r["step"], r[metric]) for r in history if r["step"] == begun and metric in r
            ]
        own = [row for row in history if row["step"] > begun and _finite(row.get(metric))]
        scored = [
            (row["step"], {m: row[m] for m in TUNE_METRICS if _finite(row.get(m))}) for row in own
        ]
        points += [(step, figures, run) for step, figures in scored]
        segments.append(segment[-1:] + [(step, figures[metric]) for step, figures in scored])
        stored = _best_checkpoint(fs, run, {step: figures[metric] for step, figures in scored})
        if stored:  # (score, step, folder, every metric there)
            checkpoints.append((*stored, dict(scored)[stored[1]]))
        latest = run
    steps = history[-1]["step"] if history else 0
    if trial not in done:
        status = "unfinished"  # interrupted: running the command again resumes it
    elif result.error is not None:
        status = "error"
    elif steps >= sweep.base.max_steps:
        status = "completed"
    else:
        status = "stopped early"  # by the scheduler
    best_point = min(points, key=lambda point: point[1][metric]) if points else None
    config = _trial_config(result)
    params = {key: config.get(key) for key in sweep.space}
    prefix = "s3://" if storage.is_s3(spec.storage_url) else ""
    best_stored = min(checkpoints, key=lambda c: c[:2]) if checkpoints else (None,) * 3 + ({},)
    checkpoint_score, checkpoint_step, checkpoint_folder, at_checkpoint = best_stored
    error = None if result.error is None else _one_line(str(result.error))
    return {
        "trial": trial,
        "status": status,
        "steps": steps,
        "best": best_point and best_point[1][metric],
        "best_step": best_point and best_point[0],
        "at_best": best_point[1] if best_point else {},  # every metric at the best step
        "last": points[-1][1][metric] if points else None,
        **params,
        "checkpoint": checkpoint_folder and prefix + checkpoint_folder,
        "checkpoint_score": checkpoint_score,
        "checkpoint_metrics": at_checkpoint,
        "checkpoint_step": checkpoint_step,
        "run": prefix + latest,
        "lineage": "; ".join(lineage),
        "error": error,
        "curve": segments,  # one list of (step, score) per run the trial trained
        "evaluations": {step: figures for step, figures, _ in points},
    }


def _generations(fs, sweep_root: str, trial: str) -> list[tuple[str, dict | None, list[dict]]]:
    """A trial's run folders in the order it trained them, each with where it started (None for
    the trial's own first run; the lineage row of runfolder.start_from for one that went on
    from another trial's checkpoint) and its metrics rows."""
    trials = storage.join(sweep_root, TRIALS_DIR)
    own = storage.join(trials, trial)
    later = []
    for info in storage.list_folder(fs, trials, pafs.FileType.Directory):
        if info.base_name.startswith(f"{trial}-from-"):
            rows = runfolder.read_metrics(fs, info.path)
            # its own lineage row is the last (the donor's rows may hold the donor's own)
            start = next((row["exploited"] for row in reversed(rows) if "exploited" in row), None)
            if start:
                later.append((start["at"], info.path, start, rows))
    later.sort(key=lambda generation: generation[0])
    first = (own, None, runfolder.read_metrics(fs, own))
    return [first, *((path, start, rows) for _, path, start, rows in later)]


def _trial_config(result) -> dict:
    """The settings the trial drew. Tune keeps them in the trial's last result, which after a
    resume is empty for a trial that failed before it reported anything: then they come from the
    params.json Tune wrote in the trial's folder."""
    if result.config:
        return result.config
    try:
        stored = storage.read_bytes(result.filesystem, storage.join(result.path, "params.json"))
        return json.loads(stored)
    except (OSError, ValueError):
        return {}


def _best_checkpoint(fs, run: str, scores: dict[int, float]) -> tuple[float, int, str] | None:
    """(score, step, folder) of the run's stored checkpoint of lowest score (its step's
    evaluation)."""
    scored = []
    for folder in runfolder.all_checkpoints(fs, run):
        step = runfolder.step_of(folder)
        if step in scores:
            scored.append((scores[step], step, folder))
    return min(scored) if scored else None


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-2:])[:400]


def _csv(rows: list[dict], keys: list[str], metric: str, measured: list[str], pbt: bool) -> str:
    """results.csv: the sweep's metric named in its columns (best_mel_fd, ...), every measured
    metric at each trial's best step, and (PBT) each trial's lineage: the steps at which it went
    on from another trial's checkpoint, and whose."""
    columns = {
        "trial": "trial", "status": "status", "steps": "steps", "best": f"best_{metric}",
        "best_step": "best_step", "last": f"last_{metric}",
        **{m: f"{m}_at_best" for m in measured},
        **{key: key for key in keys},
        "checkpoint": "checkpoint", "checkpoint_score": f"checkpoint_{metric}",
        "checkpoint_step": "checkpoint_step", "run": "run",
        **({"lineage": "lineage"} if pbt else {}), "error": "error",
    }  # fmt: skip
    out = io.StringIO()
    writer = csv.DictWriter(out, list(columns.values()), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = {**row, **row["at_best"]}
        writer.writerow({name: values.get(field) for field, name in columns.items()})
    return out.getvalue()


def format_table(summary: dict) -> list[str]:
    """The printed table: one row per trial, best first, with every measured metric at the
    trial's best step."""
    keys, metric = summary["searched"], summary["metric"]
    measured, pbt = summary["measured"], summary["scheduler"] == "pbt"
    lines = [
        f"| trial | status | steps | best {metric} (step) | "
        + "".join(f"{m} there | " for m in measured if m != metric)
        + f"last {metric} | "
        + " | ".join(keys)
        + (" | went on from (step from trial)" if pbt else "")
        + " |",
        "|---|---|---:|---:|"
        + "---:|" * (len(measured) - (metric in measured) + 1 + len(keys))
        + ("---|" if pbt else ""),
    ]
    for row in summary["rows"]:
        best = f"{row['best']:.1f} ({row['best_step']})" if row["best"] is not None else "-"
        others = "".join(
            f"{_value(row['at_best'].get(m)) if m in row['at_best'] else '-'} | "
            for m in measured
            if m != metric
        )
        last = f"{row['last']:.1f}" if row["last"] is not None else "-"
        values = " | ".join(_value(row[key]) for key in keys)
        lineage = f" | {row['lineage'] or '-'}" if pbt else ""
        lines.append(
            f"| {row['trial']} | {row['status']} | {row['steps']} | {best} | {others}{last} | "
            f"{values}{lineage} |"
        )
    return lines


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.2e}"
    return str(value)
