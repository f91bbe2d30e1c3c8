"""The `audiogan` commands, one module each: its options (from dataclass fields, so that each
default and help is written once), its parser and its `run`. The library they call knows
nothing of argparse."""

from __future__ import annotations

import argparse

from audiogan import __version__
from audiogan.commands import (
    autoencode,
    bench,
    compare,
    evaluate,
    evaluator,
    generate,
    prepare,
    serve,
    synth,
    train,
    tune,
)

# In the order `audiogan --help` lists them: the pipeline's, then evaluation's, then bench.
COMMANDS = (
    synth, prepare, train, tune, generate, serve, evaluator, evaluate, autoencode, compare, bench
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audiogan",
        description="Train GANs on raw audio with Ray: synthesise or prepare a dataset, "
        "then train, sweep and evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"audiogan {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser
