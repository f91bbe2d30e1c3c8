"""`audiogan bench prepare|train|model|step`: benchmarks that print tables and a JSON line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from audiogan.commands.common import (
    add_output_options,
    add_overrides,
    emit,
    field_help,
    option,
    start_ray,
)
from audiogan.commands.common import stderr as log
from audiogan.commands.prepare import add_prepare_options, prepare_config_from_args
from audiogan.errors import AudioganError


@dataclass(frozen=True)
class PrepareBenchOptions:
    # Files for the in-process measurements.
    sample_files: int = 300
    # CPU counts of the end-to-end Ray runs, comma-separated.
    cpus: str = "1,2"
    # End-to-end runs per CPU count; the table shows the median.
    repeats: int = 3


@dataclass(frozen=True)
class TrainBenchOptions:
    # A CPU model at its preset and clip length: dcgan (dcgan.yaml, 4 s) or wavegan
    # (small_cpu.yaml, 1 s); --config instead names any preset.
    model: str = "wavegan"
    # A training preset (a built-in's name or a YAML file), instead of --model.
    config: str = ""
    # --config's clip length in seconds.
    clip_seconds: float = 1.0
    # Training steps per pipeline.
    steps: int = 60
    # Steps per timing window (rounded up to a multiple of the preset's R1 period); each rate
    # is the median window.
    window: int = 5


@dataclass(frozen=True)
class PresetBenchOptions:
    """What bench model and bench step size: a preset at a clip length."""

    # A training preset: a built-in's name or a YAML file.
    config: str = "wavegan"
    # Clip length in seconds.
    clip_seconds: float = 4.0


@dataclass(frozen=True)
class ModelBenchOptions(PresetBenchOptions):
    # Sample rate in Hz.
    sample_rate: int = 16000


@dataclass(frozen=True)
class StepBenchOptions(PresetBenchOptions):
    # Where to run.
    device: str = "cuda"
    # Timed steps per precision.
    steps: int = 30
    # Steps per timing window (rounded up to a multiple of the preset's R1 period, and the
    # steps to whole windows); the rate is the median window.
    window: int = 5
    # With N > 0, also profile `window` steps and list the N costliest operators.
    profile: int = 0


def add_parser(commands) -> None:
    parser = commands.add_parser("bench", help="benchmarks that print tables and a JSON line")
    benches = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    _add_prepare(benches)
    _add_train(benches)
    _add_model(benches)
    _add_step(benches)


def _add_prepare(benches) -> None:
    parser = benches.add_parser(
        "prepare",
        help="clips/s of prepare, per stage and per core, against a naive librosa loop",
        description="Measures a naive one-process librosa.load loop, audiogan's per-file stages "
        "in one process, and `audiogan prepare` end to end on Ray with 1 and 2 CPUs, on the "
        "files of SOURCE (make one with `audiogan synth`).",
    )
    add_prepare_options(parser, on_ray=False)  # its runs start Ray of their own
    option(parser, PrepareBenchOptions, "sample_files", metavar="N")
    option(parser, PrepareBenchOptions, "cpus", metavar="LIST")
    option(parser, PrepareBenchOptions, "repeats", metavar="N")
    parser.add_argument("--no-naive", action="store_true", help="skip the librosa baseline")
    parser.set_defaults(run=run_prepare)


def _add_train(benches) -> None:
    parser = benches.add_parser(
        "train",
        help="samples/s of training: a plain gan_step loop vs Ray Train with 1 and 2 workers",
        description="Measures, in one run, samples/s of the same gan_step in a plain "
        "single-process loop and under Ray Train with 1 and 2 CPU workers (on a small synthetic "
        "dataset it prepares itself), Ray's overhead, 2-worker scaling, and achieved FLOP/s "
        "against a matrix-product peak measured here.",
    )
    which = parser.add_mutually_exclusive_group()
    option(which, TrainBenchOptions, "model", choices=("dcgan", "wavegan"))
    which.add_argument(
        "--config", metavar="PRESET", default="", help=field_help(TrainBenchOptions, "config")
    )
    option(parser, TrainBenchOptions, "clip_seconds", unset=True)
    add_overrides(parser, "training keys of --config's preset, e.g. precision=fp32")
    option(parser, TrainBenchOptions, "steps")
    option(parser, TrainBenchOptions, "window")
    add_output_options(parser, local_ray=True)
    parser.set_defaults(run=run_train)


def _add_preset_options(parser: argparse.ArgumentParser) -> None:
    """key=value overrides, --config and --clip-seconds: what bench model and bench step size."""
    add_overrides(parser)
    option(parser, PresetBenchOptions, "config", metavar="PRESET")
    option(parser, PresetBenchOptions, "clip_seconds")


def _add_model(benches) -> None:
    parser = benches.add_parser(
        "model",
        help="what one training step of a preset costs: parameters, FLOPs, all-reduced bytes",
        description="For sizing a cluster: the parameters of G and D, the FLOPs of one gan_step "
        "per worker (torch's formulas, counted on the CPU at batch 2 and scaled to the preset's "
        "batch) and the gradient bytes DDP all-reduces per step, with the ring all-reduce's "
        "traffic per worker for 2 to 16 workers. No Ray and no timing; takes seconds.",
    )
    _add_preset_options(parser)
    option(parser, ModelBenchOptions, "sample_rate")
    add_output_options(parser, local_ray=False)
    parser.set_defaults(run=run_model)


def _add_step(benches) -> None:
    parser = benches.add_parser(
        "step",
        help="clips/s and achieved TFLOP/s of one worker's training step on a GPU (or the CPU)",
        description="Times the training step of a preset on one device as a Ray Train worker "
        "runs it: G and D under DDP (NCCL on a GPU, gloo on the CPU) in a one-process group, "
        "bf16 autocast and fp32 on a GPU, batches already on the device, no Ray. Prints clips/s, "
        "seconds per step, achieved TFLOP/s (from bench model's FLOP count) and peak memory.",
    )
    _add_preset_options(parser)
    option(parser, StepBenchOptions, "device", choices=("cuda", "cpu"))
    option(parser, StepBenchOptions, "steps")
    option(parser, StepBenchOptions, "window")
    option(parser, StepBenchOptions, "profile", metavar="N")
    add_output_options(parser, local_ray=False)
    parser.set_defaults(run=run_step)


def run_prepare(args: argparse.Namespace) -> None:
    from audiogan import bench

    result = bench.bench_prepare(
        args.source,
        prepare_config_from_args(args),
        sample_files=args.sample_files,
        cpu_counts=tuple(int(x) for x in args.cpus.split(",")),
        naive=not args.no_naive,
        repeats=args.repeats,
        log=log,
    )
    emit(result, args.json, bench.format_prepare_table(result))


# --model's clip length: WaveGAN's small CPU preset at 1 s, the 2019 baseline at its 4 s.
CPU_CLIP_SECONDS = {"wavegan": 1.0, "dcgan": 4.0}


def run_train(args: argparse.Namespace) -> None:
    from audiogan import bench
    from audiogan.config import CPU_PRESETS, TrainConfig, find_preset, load_config, parse_overrides

    if args.config:
        preset, overrides = str(find_preset(args.config)), parse_overrides(args.overrides)
        load_config(TrainConfig, preset, overrides)  # unknown keys and bad values: before Ray
        clip_seconds = args.clip_seconds or TrainBenchOptions.clip_seconds
    elif args.overrides or args.clip_seconds is not None:
        raise AudioganError("key=value settings and --clip-seconds are for --config, not --model")
    else:
        preset, clip_seconds = str(CPU_PRESETS[args.model]), CPU_CLIP_SECONDS[args.model]
        overrides = {}
    start_ray(args, dashboard=True)
    result = bench.bench_train(
        preset, overrides, clip_seconds, steps=args.steps, window=args.window, log=log
    )
    emit(result, args.json, bench.format_train_table(result))


def run_model(args: argparse.Namespace) -> None:
    from audiogan import bench
    from audiogan.config import find_preset, parse_overrides

    preset = str(find_preset(args.config))  # the table names the file, as for a path
    result = bench.bench_model(
        preset, parse_overrides(args.overrides), args.clip_seconds, args.sample_rate
    )
    emit(result, args.json, bench.format_model_table(result))


def run_step(args: argparse.Namespace) -> None:
    from audiogan import bench
    from audiogan.config import find_preset, parse_overrides

    result = bench.bench_step(
        str(find_preset(args.config)),
        parse_overrides(args.overrides),
        args.device,
        args.clip_seconds,
        args.steps,
        args.window,
        args.profile,
        log=log,
    )
    emit(result, args.json, bench.format_step_table(result))
