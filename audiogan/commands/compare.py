"""`audiogan compare`: training recipes side by side on the same data, minutes and classifier."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from audiogan.commands.common import (
    add_output_options,
    add_overrides,
    check_dataset,
    emit,
    option,
    start_ray,
    stderr,
)
from audiogan.config import RECIPES, SUITE_CLIPS_PER_CLASS, SUITE_DIR
from audiogan.errors import AudioganError


@dataclass(frozen=True)
class CompareOptions:
    # Training minutes per recipe.
    minutes: float = 20.0
    # G steps per recipe instead of minutes (0: minutes): what each recipe makes of a step,
    # whatever a step costs.
    steps: int = 0
    # Ray Train workers of each run.
    workers: int = 2
    # Comma-separated recipe names, or paths to YAML presets.
    recipes: str = ",".join(RECIPES)
    # Clips evaluated per recipe.
    n: int = 256
    # Files a class when a kind's dataset is made (cut into 1 s clips).
    clips_per_class: int = SUITE_CLIPS_PER_CLASS
    # A local folder where the kinds' datasets are kept.
    suite: str = SUITE_DIR


def add_parser(commands) -> None:
    from audiogan import synth

    parser = commands.add_parser(
        "compare",
        help="training recipes side by side: same data, same minutes, same classifier",
        description="Trains each recipe (a built-in preset) from scratch for the same "
        "number of minutes (or, with --steps, of G steps) on the same Ray Train workers into "
        "STORAGE/compare-RECIPE, fits the "
        "dataset's evaluation classifier if it has none, evaluates each with it, prints one "
        "table (G steps, mel_fd, classifier FD, Inception Score and its ratio to real data's) "
        "and writes STORAGE/compare.json. With --kinds instead of --data, it does so for each "
        "kind of the synthetic suite (synthesised and prepared into SUITE/KIND/ if missing; runs "
        "in STORAGE/KIND/), then prints a summary over the kinds and writes STORAGE/suite.json. "
        "Recipes: " + "; ".join(f"{name}: {about}" for name, (_, about) in RECIPES.items()) + ".",
    )
    parser.add_argument("--data", help="a prepared dataset with labels")
    parser.add_argument(
        "--kinds",
        metavar="KIND,...",
        help=f"compare on these kinds of the synthetic suite instead ({','.join(synth.KINDS)}"
        ", or all)",
    )
    option(parser, CompareOptions, "suite", unset=True)
    option(parser, CompareOptions, "clips_per_class", unset=True, metavar="N")
    parser.add_argument("--storage", required=True, help="runs folder: local path or s3://...")
    budget = parser.add_mutually_exclusive_group()
    option(budget, CompareOptions, "minutes")
    option(budget, CompareOptions, "steps", metavar="N")
    option(parser, CompareOptions, "workers")
    option(parser, CompareOptions, "recipes")
    option(parser, CompareOptions, "n")
    add_overrides(
        parser,
        "training keys set for every recipe (audiogan/config.py TrainConfig), e.g. batch_size=16",
    )
    again = parser.add_mutually_exclusive_group()
    again.add_argument(
        "--overwrite", action="store_true", help="start the compare-* runs again from scratch"
    )
    again.add_argument(
        "--resume",
        action="store_true",
        help="keep the recipes that compare.json holds from an earlier run of the same data, "
        "budget (--minutes or --steps), workers, --n and key=value settings, and train only "
        "the others (a run cut short starts again); a long comparison can so be run in parts",
    )
    add_output_options(parser, local_ray=True)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from audiogan import compare
    from audiogan.config import parse_overrides

    recipes = tuple(r.strip() for r in args.recipes.split(",") if r.strip())
    overrides = parse_overrides(args.overrides)
    compare.recipe_configs(recipes, args.minutes, overrides, args.steps)  # before Ray starts
    if (args.data is None) == (args.kinds is None):
        raise AudioganError(
            "give one of --data (a prepared dataset) and --kinds (kinds of the synthetic suite)"
        )
    if args.kinds is None and (args.clips_per_class is not None or args.suite is not None):
        raise AudioganError("--suite and --clips-per-class are for --kinds, not --data")
    if args.kinds is not None:
        _run_kinds(args, recipes, overrides)
        return
    check_dataset(args.data)
    start_ray(args, dashboard=True)
    result = compare.compare(
        args.data,
        args.storage,
        args.minutes,
        workers=args.workers,
        recipes=recipes,
        n=args.n,
        overwrite=args.overwrite,
        overrides=overrides,
        log=stderr,
        resume=args.resume,
        steps=args.steps,
    )
    emit(result, args.json, compare.format_table(result))


def _run_kinds(args: argparse.Namespace, recipes: tuple[str, ...], overrides: dict) -> None:
    from audiogan import compare

    kinds = compare.suite_kinds(args.kinds)
    clips_per_class = args.clips_per_class
    if clips_per_class is None:
        clips_per_class = CompareOptions.clips_per_class
    if clips_per_class < 5:
        raise AudioganError("--clips-per-class must be at least 5 (one file in five is held out)")
    start_ray(args, dashboard=True)
    result = compare.compare_kinds(
        args.suite or CompareOptions.suite, args.storage, args.minutes, kinds, args.workers,
        recipes, args.n, args.overwrite, overrides, clips_per_class, log=stderr,
        resume=args.resume, steps=args.steps,
    )  # fmt: skip
    emit(result, args.json, compare.format_kinds(result))
