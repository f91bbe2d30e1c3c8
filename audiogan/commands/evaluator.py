"""`audiogan evaluator fit`: the evaluation classifier behind Inception Score and classifier FD
(no Ray)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from audiogan.commands.common import add_output_options, emit, option, stderr


@dataclass(frozen=True)
class FitOptions:
    # Training epochs.
    epochs: int = 30
    # Seed of the initial weights and the batches' order.
    seed: int = 0


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "evaluator", help="the evaluation classifier behind Inception Score and classifier FD"
    )
    actions = parser.add_subparsers(dest="evaluator", required=True, metavar="ACTION")
    fit = actions.add_parser(
        "fit",
        help="train the evaluation classifier on a prepared dataset's labels",
        description="Trains a log-mel CNN (in the style of the WaveGAN paper's SC09 classifier) "
        "on DEST's labelled clips, holding out the clips of one source file in five, and saves "
        "it with its held-out accuracy (default DEST/evaluator/state.pt). `audiogan evaluate` "
        "uses it for Inception Score, the classifier Frechet distance and label accuracy. "
        "No Ray.",
    )
    fit.add_argument("--data", required=True, help="a prepared dataset with at least 2 labels")
    fit.add_argument("--out", help="where to save it, local or s3:// (default DEST/evaluator)")
    option(fit, FitOptions, "epochs")
    option(fit, FitOptions, "seed")
    add_output_options(fit, local_ray=False)
    fit.set_defaults(run=run_fit)


def run_fit(args: argparse.Namespace) -> None:
    from audiogan import evaluator

    summary = evaluator.fit(args.data, args.out, epochs=args.epochs, seed=args.seed, log=stderr)
    per_class = ", ".join(
        f"{label} {accuracy}" for label, accuracy in summary["held_out_accuracy_per_class"].items()
    )
    lines = [
        f"evaluator: {len(summary['labels'])} classes, {summary['train_clips']} training and "
        f"{summary['held_out_clips']} held-out clips, {summary['seconds']} s",
        f"  held-out accuracy {summary['held_out_accuracy']} ({per_class})",
        f"  saved: {summary['path']}",
    ]
    emit(summary, args.json, lines)
