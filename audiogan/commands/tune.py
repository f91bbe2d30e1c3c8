"""`audiogan tune`: a sweep of training settings with Ray Tune; ASHA stops the laggards."""

from __future__ import annotations

import argparse

from audiogan.commands.common import (
    add_output_options,
    add_overrides,
    add_verbose,
    check_dataset,
    emit,
    option,
    start_ray,
    stderr,
)
from audiogan.config import TuneConfig
from audiogan.errors import AudioganError


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "tune",
        help="sweep training settings with Ray Tune; ASHA stops trials that fall behind",
        description="Runs --trials training runs (each on --workers-per-trial Ray Train "
        "workers) with settings drawn from a search space: by default latent_dim in {64, 100, "
        "128, 256, 500}, dropout in [0, 0.5], lr_g and lr_d log-uniform in [1e-5, 1e-3]. Trials "
        "are judged on tune.metric: classifier_fd (the FD of the dataset's evaluation "
        "classifier, `audiogan evaluator fit`) where the dataset has one, else mel_fd; ASHA "
        "stops a trial that falls behind the others at the same step. A key the recipe does "
        "not use is refused. Every trial's "
        "run (checkpoints, samples, metrics, report.html) is in STORAGE/NAME/trials/TRIAL/; at "
        "the end STORAGE/NAME/results.csv, best.json (the best checkpoint, for generate and "
        "evaluate) and plots/METRIC.png. Running the same command again resumes an interrupted "
        "sweep. --config takes a sweep file: training keys, `search`, `points` and `tune` "
        "sections (see the built-in sweep_small); key=value fixes a training key, "
        "tune.KEY=value sets a sweep key (audiogan/config.py TuneConfig).",
    )
    add_overrides(parser, "training keys to fix, or tune.KEY=value")
    parser.add_argument("--data", required=True, help="a prepared dataset (audiogan prepare DEST)")
    parser.add_argument("--storage", required=True, help="sweeps folder: local path or s3://")
    parser.add_argument("--name", required=True, help="sweep name; the same name resumes the sweep")
    # Unset unless given: a sweep file's `tune` section may set them too.
    option(parser, TuneConfig, "trials", unset=True, metavar="N")
    option(parser, TuneConfig, "workers_per_trial", unset=True, metavar="W")
    parser.add_argument(
        "--gpu", action="store_true", help="one GPU per worker; trials at once = GPUs // W"
    )
    parser.add_argument("--max-steps", type=int, metavar="N", help="G steps of a full trial")
    parser.add_argument(
        "--confirm",
        action="store_true",
        help="after the sweep, train the best trial's settings and the preset's own (the sweep "
        "file's base) anew for max_steps with a seed no trial used, and score both with the "
        "dataset's evaluation classifier (audiogan evaluate): STORAGE/NAME/confirm.json",
    )
    parser.add_argument(
        "--config",
        metavar="PRESET",
        help="a sweep file or a training preset: a built-in's name or a YAML file",
    )
    add_output_options(parser, local_ray=True)
    add_verbose(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from audiogan import tune

    flags = {"trials": args.trials, "workers_per_trial": args.workers_per_trial}
    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"max_steps={args.max_steps}")
    sweep = tune.load_sweep(
        args.config, overrides, {key: value for key, value in flags.items() if value is not None}
    )
    spec = tune.SweepSpec(args.data, args.storage, args.name, args.gpu, args.verbose)
    check_dataset(args.data)
    sweep = tune.choose_metric(sweep, spec.data_url, log=stderr)  # before Ray starts
    if args.confirm:
        _check_confirmable(spec.data_url)
    start_ray(args, dashboard=True)
    summary = tune.run_sweep(sweep, spec, log=stderr)
    brief = {key: value for key, value in summary.items() if key != "rows"}
    lines = _lines(summary)
    if args.confirm and summary["finished"] and summary["best_trial"]:
        brief["confirm"] = tune.confirm(sweep, spec, summary, log=stderr)
        lines += ["", *tune.format_confirmation(brief["confirm"])]
    import ray

    ray.shutdown()  # so that no late worker log line lands after the summary (or --json's line)
    emit(brief, args.json, lines)
    if not summary["finished"]:
        raise AudioganError(
            f"interrupted with {summary['unfinished']} trial(s) to go: run the same command "
            "again to resume"
        )
    if summary["trials"] and summary["errors"] == summary["trials"]:
        first = next(row["error"] for row in summary["rows"] if row["error"])
        raise AudioganError(f"every trial failed; the first: {first}")


def _lines(summary: dict) -> list[str]:
    from audiogan import tune

    lines = [
        "",
        f"tune: {summary['trials']} trial(s) in {summary['sweep']}: {summary['completed']} "
        f"completed, {summary['stopped_early']} stopped early by "
        f"{summary['scheduler'].upper()}, {summary['errors']} "
        "failed"
        + (
            ""
            if summary["finished"]
            else f"; interrupted with {summary['unfinished']} trial(s) to go: run the same "
            "command again to resume"
        ),
        "",
        *tune.format_table(summary),
        "",
        *_agreement(summary),
        f"  results: {summary['results']}",
        f"  plot:    {summary['plot']}",
        f"  trials:  {summary['sweep']}/{tune.TRIALS_DIR}/TRIAL/ (report.html, samples, ...)",
    ]
    if summary["best"]:
        lines += [
            f"  best:    {summary['best']} ({summary['metric']} {summary['best_score']:.1f}, "
            f"trial {summary['best_trial']})",
            f"  audiogan generate {summary['best_checkpoint']} OUT_DIR",
        ]
    else:
        lines.append("  best:    none (no trial stored a checkpoint)")
    return lines


def _agreement(summary: dict) -> list[str]:
    share = summary["agreement"]["share"]
    if share is None:
        return []
    pairs = summary["agreement"]["pairs"]
    return [
        f"  mel_fd and classifier_fd order {share:.0%} of {pairs} trial pairs alike (at equal "
        "steps)",
        "",
    ]


def _check_confirmable(data_url: str) -> None:
    """--confirm scores with the dataset's evaluation classifier: refused before Ray starts
    where there is none that can."""
    from audiogan import evaluator
    from audiogan.dataset import read_manifest

    if evaluator.usable_judge(data_url, read_manifest(data_url)) is None:
        raise AudioganError(
            f"--confirm scores with the dataset's evaluation classifier, and {data_url} has "
            f"none: audiogan evaluator fit --data {data_url}"
        )
