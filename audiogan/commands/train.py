"""`audiogan train`: a GAN on a prepared dataset with Ray Train (resumes an existing run)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from audiogan.commands.common import (
    add_output_options,
    add_overrides,
    add_verbose,
    check_dataset,
    emit,
    in_flags,
    option,
    start_ray,
)
from audiogan.config import DEFAULT_PRESETS, DEFAULT_RECIPE, MODELS, ConfigError
from audiogan.errors import AudioganError


@dataclass(frozen=True)
class TrainOptions:
    """Where a run trains (everything about how is TrainConfig's)."""

    # Ray Train workers; 0 runs the loop in this process; MIN-MAX (e.g. 1-4) is an elastic run,
    # which starts with as many as the cluster has room for, at least MIN, goes on with fewer
    # when a node is lost and grows back when room appears (batch_size stays per worker).
    workers: int | tuple[int, int] = 2


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "train",
        help="train a GAN on a prepared dataset with Ray Train (resumes an existing run)",
        description="Trains G and D with DDP on N Ray Train workers (gloo on CPU, NCCL and bf16 "
        "on GPU), each reading its shard of DEST/clips. Writes STORAGE/NAME/checkpoint_XXXXXX/, "
        "samples/step_XXXXXX/ (WAVs and a PNG), metrics.jsonl, plots/losses.png and report.html. "
        "Running the same command again continues from the latest checkpoint (raise "
        "--max-steps to go on). "
        "Configuration: the dataclass defaults (audiogan/config.py TrainConfig), then --config "
        "(a built-in preset's name, or a YAML file), then key=value pairs. With neither "
        f"--config nor --model it trains the default recipe, {DEFAULT_RECIPE} (preset "
        f"{DEFAULT_PRESETS['cpu'].stem}; with --gpu {DEFAULT_PRESETS['gpu'].stem}, the same "
        "recipe at GPU scale, meant for 4 s clips, with bf16), made unconditional "
        "(conditional=false) for data with fewer than two classes or with unlabelled clips.",
    )
    add_overrides(parser)
    parser.add_argument("--data", required=True, help="a prepared dataset (audiogan prepare DEST)")
    parser.add_argument("--storage", required=True, help="runs folder: local path or s3://...")
    parser.add_argument("--name", required=True, help="run name; the same name resumes the run")
    parser.add_argument("--model", choices=MODELS, help="shorthand for model=...")
    option(parser, TrainOptions, "workers", type=workers_count, metavar="N|MIN-MAX")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--max-steps", type=int, metavar="N", help="shorthand for max_steps=N")
    parser.add_argument(
        "--config",
        metavar="PRESET",
        help="a built-in preset's name (audiogan/presets/, e.g. wavegan) or a YAML file "
        f"(default: {DEFAULT_RECIPE}, see above)",
    )
    add_output_options(parser, local_ray=True)
    add_verbose(parser)
    parser.set_defaults(run=run)


def workers_count(text: str) -> int | tuple[int, int]:
    """--workers: N, or MIN-MAX for an elastic run."""
    low, dash, high = text.strip().partition("-")
    try:
        if not dash:
            count = int(low)
            if count < 0:
                raise ValueError
            return count
        span = int(low), int(high)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of workers (0: in this process) or MIN-MAX, got {text!r}"
        ) from None
    if not 1 <= span[0] <= span[1]:
        raise argparse.ArgumentTypeError(f"MIN-MAX needs 1 <= MIN <= MAX, got {text!r}")
    return span


def train_config_from_args(args: argparse.Namespace, manifest: dict | None = None):
    """The training config and, for the default recipe, a line on what was chosen and why.

    With --config: the dataclass defaults, the preset, then the key=value pairs. With neither
    --config nor a model named: the default recipe for --data (its manifest, read unless
    given), then the pairs. A model named without --config takes the dataclass defaults, as
    a preset of another model would not fit it. A bad --config fails before --data is read."""
    from audiogan.config import TrainConfig, default_preset, load_config, parse_overrides

    overrides = parse_overrides(args.overrides)
    flags = {}
    if args.model:
        overrides["model"], flags["model"] = args.model, "--model"
    if args.max_steps is not None:
        overrides["max_steps"], flags["max_steps"] = args.max_steps, "--max-steps"
    path, chosen = args.config, None
    if path is None and "model" not in overrides:
        manifest = manifest or check_dataset(args.data)
        path, needs, why = default_preset(args.gpu, manifest)
        if "conditional" in overrides:
            why = f"conditional={str(overrides['conditional']).lower()} as given"
        chosen = f"train: no --config: the default, {path.name} ({why})"
        overrides = needs | overrides  # what the user set wins
    try:
        return load_config(TrainConfig, path, overrides), chosen
    except ConfigError as error:
        if chosen:  # the user never named the preset whose keys the error may be about
            error = ConfigError(f"{error} (on the default preset {path.name}; see --help)")
        raise in_flags(error, flags) from None


def _workers_said(workers: int | tuple[int, int]) -> str:
    if isinstance(workers, tuple):
        return f"{workers[0]} to {workers[1]} workers (elastic)"
    return f"{workers or 'in-process'} worker(s)"


def run(args: argparse.Namespace) -> None:
    from audiogan import runfolder, train

    cfg, chosen = train_config_from_args(args)
    if chosen:  # the default's choice has read --data already
        print(chosen, flush=True)
    else:
        check_dataset(args.data)
    spec = train.RunSpec(
        args.data, args.storage, args.name, args.workers, args.gpu, verbose=args.verbose
    )
    start_ray(args, dashboard=True)
    print(
        f"train: {cfg.model} ({cfg.loss}, D: {cfg.discriminator}) on {args.data}, "
        f"{_workers_said(args.workers)}{' with GPUs' if args.gpu else ''}, "
        f"to step {cfg.max_steps} -> "
        f"{spec.storage_url.rstrip('/')}/{spec.name}",
        flush=True,
    )
    summary = train.train(cfg, spec)
    if summary["error"]:
        raise AudioganError(f"training failed: {summary['error']}")
    run_url = summary["run"]
    lines = [
        f"train: {summary['steps']} steps in {run_url}: d_loss {summary['d_loss']}, "
        f"g_loss {summary['g_loss']}, {summary['samples_per_s']} samples/s",
        f"  checkpoint: {summary['checkpoint']}",
        f"  samples:    {run_url}/{runfolder.SAMPLES}/",
        f"  plots:      {run_url}/{runfolder.LOSSES_PLOT}",
        f"  metrics:    {run_url}/{runfolder.METRICS}",
        f"  report:     {run_url}/{runfolder.REPORT}",
    ]
    emit(summary, args.json, lines)
