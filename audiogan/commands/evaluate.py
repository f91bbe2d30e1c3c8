"""`audiogan evaluate`: generated clips scored beside real held-out clips (no Ray)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from audiogan.commands.common import add_output_options, emit, option, stderr


@dataclass(frozen=True)
class EvaluateOptions:
    # Clips to score, at most as many as the held-out real clips.
    n: int = 256
    # Noise seed.
    seed: int = 0


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="score generated clips beside real held-out clips",
        description="Generates N clips from CHECKPOINT (or reads the WAVs of --samples DIR) and "
        "prints mel_fd, the classifier Frechet distance, Inception Score (and, for a "
        "conditional model, label accuracy) beside the same figures for as many real clips the "
        "classifier never saw, with the ratio generated/real, then diagnostics (silent share, "
        "RMS, spectral centroid). Needs the dataset's evaluation classifier (audiogan evaluator "
        "fit). No Ray.",
    )
    parser.add_argument("--data", required=True, help="the prepared dataset G was trained on")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a checkpoint_XXXXXX folder or a run folder")
    source.add_argument("--samples", metavar="DIR", help="a folder of WAVs at the dataset's rate")
    option(parser, EvaluateOptions, "n")
    option(parser, EvaluateOptions, "seed")
    parser.add_argument("--evaluator", help="the classifier (default DEST/evaluator)")
    add_output_options(parser, local_ray=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from audiogan import evaluate

    result = evaluate.evaluate(
        args.data,
        checkpoint_url=args.checkpoint,
        samples_url=args.samples,
        n=args.n,
        seed=args.seed,
        evaluator_url=args.evaluator,
        log=stderr,
    )
    emit(result, args.json, evaluate.format_table(result))
