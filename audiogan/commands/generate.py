"""`audiogan generate CHECKPOINT OUT_DIR`: new clips from a checkpoint (no Ray)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from audiogan.commands.common import add_output_options, emit, option


@dataclass(frozen=True)
class GenerateOptions:
    # Clips to write.
    n: int = 8
    # The class to generate (conditional models only); none: every class in turn.
    label: str | None = None
    # Noise seed.
    seed: int = 0


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "generate",
        help="write new clips from a checkpoint (WAV and a PNG)",
        description="Loads CHECKPOINT (a checkpoint_XXXXXX folder, local or s3://) with "
        "weights_only=True and writes N clips from its EMA generator (or G) as 16-bit WAVs at "
        "the dataset's sample rate, plus generated.png, into OUT_DIR.",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT")
    parser.add_argument("out_dir", metavar="OUT_DIR")
    option(parser, GenerateOptions, "n")
    option(parser, GenerateOptions, "label", type=str)
    option(parser, GenerateOptions, "seed")
    add_output_options(parser, local_ray=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from audiogan import generate

    summary = generate.generate(args.checkpoint, args.out_dir, args.n, args.label, args.seed)
    line = (
        f"generate: {summary['clips']} clips at {summary['sample_rate_hz']} Hz from step "
        f"{summary['step']} -> {summary['out']} (generated_*.wav, generated.png)"
    )
    emit(summary, args.json, [line])
