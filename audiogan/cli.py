"""The `audiogan` command: synth, prepare, train, tune, generate, evaluator fit, evaluate,
autoencode, compare and bench."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from collections.abc import Sequence

from audiogan import __version__
from audiogan.config import (
    CROP_MODES,
    DEFAULT_PRESETS,
    DEFAULT_RECIPE,
    MODELS,
    NORMALIZE_MODES,
    PAD_MODES,
    PRESETS_DIR,
    RECIPES,
    ConfigError,
    PrepareConfig,
)
from audiogan.errors import AudioganError


def _default(cls, name: str):
    return {f.name: f.default for f in dataclasses.fields(cls)}[name]


def _start_ray(args: argparse.Namespace, dashboard: bool = False) -> None:
    """Joins --address's (or RAY_ADDRESS's) cluster, or starts a local Ray instance of its own.

    Commands that run Ray Train ask for the dashboard: it serves Ray's state API, which Ray
    Train's placement-group cleaner polls to see that a trainer has gone. Without it the cleaner
    logs a warning every few seconds of a run, and the workers of a Tune trial ASHA stopped keep
    their CPUs, so later trials wait forever."""
    from audiogan.connect import start_ray

    start_ray(args.address, args.num_cpus, dashboard=dashboard)


def _in_flags(error: ConfigError, flags: dict[str, str]) -> ConfigError:
    """The error with the config keys the user gave as options named as those options."""
    message = str(error)
    for key, flag in flags.items():
        message = re.sub(rf"\b{key}\b", flag, message)
    return ConfigError(message)


def _stderr(message: str) -> None:
    """Progress goes to stderr, so that stdout holds only the result (and --json's line)."""
    print(message, file=sys.stderr, flush=True)


def _emit(summary: dict, as_json: bool, lines: Sequence[str]) -> None:
    for line in lines:
        print(line)
    if as_json:
        print(json.dumps(summary, sort_keys=True))


# ---------------------------------------------------------------------------------------------
# synth


def cmd_synth(args: argparse.Namespace) -> None:
    from audiogan import synth

    started = time.perf_counter()
    last_shown = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if done == total or now - last_shown[0] > 2:
            last_shown[0] = now
            _stderr(f"synth: {done}/{total} clips")

    summary = synth.synthesize(
        args.out_dir,
        clips_per_class=args.clips_per_class,
        seed=args.seed,
        layout=args.layout,
        progress=progress,
        kind=args.kind,
    )
    summary["seconds"] = round(time.perf_counter() - started, 2)
    per_label = ", ".join(f"{k} {v}" for k, v in summary["per_label"].items())
    _emit(
        summary,
        args.json,
        [
            f"synth: wrote {summary['clips']} {summary['kind']} clips ({per_label}; "
            f"{summary['verified']} verified) "
            f"to {args.out_dir} in {summary['seconds']} s",
        ],
    )


# ---------------------------------------------------------------------------------------------
# prepare


# The options of prepare and the config key each one sets.
PREPARE_FLAGS = {
    "sample_rate_hz": "--sample-rate",
    "clip_seconds": "--clip-seconds",
    "crop": "--crop",
    "pad": "--pad",
    "trim_silence": "--trim-silence",
    "silence_threshold_db": "--silence-threshold-db",
    "normalize": "--normalize",
    "max_windows": "--max-windows",
    "labels": "--labels",
    "verified_only": "--verified-only",
    "seed": "--seed",
    "batch_size": "--batch-size",
}


def prepare_config_from_args(args: argparse.Namespace) -> PrepareConfig:
    """Only the options given on the command line; the dataclass holds every default. Errors
    name the options, not the config keys behind them."""
    # Each option's argparse name is its flag's (--sample-rate: args.sample_rate).
    given = {key: getattr(args, flag[2:].replace("-", "_")) for key, flag in PREPARE_FLAGS.items()}
    if given["labels"] is not None:
        given["labels"] = tuple(x.strip() for x in given["labels"].split(",") if x.strip())
    given = {k: v for k, v in given.items() if v is not None and v is not False}  # False: unset
    try:
        return PrepareConfig(**given)
    except ConfigError as error:
        raise _in_flags(error, PREPARE_FLAGS) from None


def format_prepare_summary(summary: dict) -> list[str]:
    lines = [
        f"prepare: {summary['clips']} clips from {summary['files_used']} files written to "
        f"{summary['dest']} in {summary['seconds']:.1f} s ({summary['clips_per_second']} "
        f"clips/s); {summary['entries']} entries in SOURCE",
    ]
    rows = [(label, count) for label, count in summary["clips_per_label"].items()]
    if summary["unlabelled_clips"]:
        rows.append(("(no label)", summary["unlabelled_clips"]))
    rows += [(f"reject: {reason}", n) for reason, n in summary["rejects_by_reason"].items()]
    rows += [(f"skipped: {why}", n) for why, n in summary["skipped"].items()]
    if summary["files_cut"]:
        rows.append(("files cut by --max-windows", summary["files_cut"]))
    width = max(len(name) for name, _ in rows)
    return lines + [f"  {name:<{width}}  {count:>7}" for name, count in rows]


def cmd_prepare(args: argparse.Namespace) -> None:
    from audiogan import data

    cfg = prepare_config_from_args(args)
    # SOURCE, DEST and the listing are checked before Ray starts (seconds, not tens of them).
    plan = data.plan_prepare(args.source, args.dest, cfg, overwrite=args.overwrite)
    _start_ray(args)
    summary = data.run_prepare(plan, log=lambda m: print(m, flush=True), verbose=args.verbose)
    _emit(summary, args.json, format_prepare_summary(summary))


# ---------------------------------------------------------------------------------------------
# train and generate


def train_config_from_args(args: argparse.Namespace, manifest: dict | None = None):
    """The training config and, for the default recipe, a line on what was chosen and why.

    With --config: the dataclass defaults, the file, then the key=value pairs. With neither
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
        manifest = manifest or _check_dataset(args.data)
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
        raise _in_flags(error, flags) from None


def _check_dataset(data_url: str) -> dict:
    """A missing or unfinished --data fails here, in a second, not after Ray has started."""
    from audiogan.data import read_manifest

    return read_manifest(data_url)


def cmd_train(args: argparse.Namespace) -> None:
    from audiogan import train

    if args.workers < 0:
        raise AudioganError("--workers must be 0 (in-process) or more")
    cfg, chosen = train_config_from_args(args)
    if chosen:  # the default's choice has read --data already
        print(chosen, flush=True)
    else:
        _check_dataset(args.data)
    spec = train.RunSpec(args.data, args.storage, args.name, args.workers, args.gpu)
    _start_ray(args, dashboard=True)
    print(
        f"train: {cfg.model} ({cfg.loss}, D: {cfg.discriminator}) on {args.data}, "
        f"{args.workers or 'in-process'} "
        f"worker(s){' with GPUs' if args.gpu else ''}, to step {cfg.max_steps} -> "
        f"{spec.storage_url.rstrip('/')}/{spec.name}",
        flush=True,
    )
    summary = train.train(cfg, spec)
    if summary["error"]:
        raise AudioganError(f"training failed: {summary['error']}")
    lines = [
        f"train: {summary['steps']} steps in {summary['run']}: d_loss {summary['d_loss']}, "
        f"g_loss {summary['g_loss']}, {summary['samples_per_s']} samples/s",
        f"  checkpoint: {summary['checkpoint']}",
        f"  samples:    {summary['run']}/samples/",
        f"  plots:      {summary['run']}/plots/losses.png",
        f"  metrics:    {summary['run']}/metrics.jsonl",
        f"  report:     {summary['run']}/report.html",
    ]
    _emit(summary, args.json, lines)


def cmd_tune(args: argparse.Namespace) -> None:
    from audiogan import tune

    flags = {"trials": args.trials, "workers_per_trial": args.workers_per_trial}
    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"max_steps={args.max_steps}")
    sweep = tune.load_sweep(
        args.config, overrides, {key: value for key, value in flags.items() if value is not None}
    )
    spec = tune.SweepSpec(args.data, args.storage, args.name, args.gpu)
    _check_dataset(args.data)
    _start_ray(args, dashboard=True)
    summary = tune.run_sweep(sweep, spec, log=_stderr)
    import ray

    ray.shutdown()  # so that no late worker log line lands after the summary (or --json's line)
    lines = [
        "",
        f"tune: {summary['trials']} trial(s) in {summary['sweep']}: {summary['completed']} "
        f"completed, {summary['stopped_early']} stopped early by ASHA, {summary['errors']} "
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
        f"  results: {summary['results']}",
        f"  plot:    {summary['plot']}",
        f"  trials:  {summary['sweep']}/{tune.TRIALS_DIR}/TRIAL/ (report.html, samples, ...)",
    ]
    if summary["best"]:
        lines += [
            f"  best:    {summary['best']} ({tune.METRIC} {summary['best_mel_fd']:.1f}, "
            f"trial {summary['best_trial']})",
            f"  audiogan generate {summary['best_checkpoint']} OUT_DIR",
        ]
    else:
        lines.append("  best:    none (no trial stored a checkpoint)")
    brief = {key: value for key, value in summary.items() if key != "rows"}
    _emit(brief, args.json, lines)
    if not summary["finished"]:
        raise AudioganError(
            f"interrupted with {summary['unfinished']} trial(s) to go: run the same command "
            "again to resume"
        )
    if summary["trials"] and summary["errors"] == summary["trials"]:
        first = next(row["error"] for row in summary["rows"] if row["error"])
        raise AudioganError(f"every trial failed; the first: {first}")


def cmd_generate(args: argparse.Namespace) -> None:
    from audiogan import generate

    summary = generate.generate(args.checkpoint, args.out_dir, args.n, args.label, args.seed)
    _emit(
        summary,
        args.json,
        [
            f"generate: {summary['clips']} clips at {summary['sample_rate_hz']} Hz from step "
            f"{summary['step']} -> {summary['out']} (generated_*.wav, generated.png)"
        ],
    )


# ---------------------------------------------------------------------------------------------
# evaluation


def cmd_evaluator_fit(args: argparse.Namespace) -> None:
    from audiogan import evaluator

    summary = evaluator.fit(args.data, args.out, epochs=args.epochs, seed=args.seed, log=_stderr)
    per_class = ", ".join(
        f"{label} {accuracy}" for label, accuracy in summary["held_out_accuracy_per_class"].items()
    )
    lines = [
        f"evaluator: {len(summary['labels'])} classes, {summary['train_clips']} training and "
        f"{summary['held_out_clips']} held-out clips, {summary['seconds']} s",
        f"  held-out accuracy {summary['held_out_accuracy']} ({per_class})",
        f"  saved: {summary['path']}",
    ]
    _emit(summary, args.json, lines)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from audiogan import evaluate

    result = evaluate.evaluate(
        args.data,
        checkpoint_url=args.checkpoint,
        samples_url=args.samples,
        n=args.n,
        seed=args.seed,
        evaluator_url=args.evaluator,
        log=_stderr,
    )
    _emit(result, args.json, evaluate.format_table(result))


def cmd_autoencode(args: argparse.Namespace) -> None:
    from audiogan import autoencode

    result = autoencode.autoencode(
        args.data,
        args.checkpoint,
        out_url=args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        log=_stderr,
    )
    held = result["held_out"]
    lines = [
        f"autoencode: {result['model']} at step {result['step']}, encoder trained "
        f"{result['encoder_steps']} steps on {result['train_clips']} clips ({result['seconds']} s)",
        f"  held-out reconstruction: SNR {held['snr_db']} dB, waveform MSE "
        f"{held['waveform_mse']}, log-mel L1 {held['log_mel_l1']} "
        f"(silence would score {held['log_mel_l1_of_silence']})",
        f"  written: {result['out']} (original_*.wav, reconstruction_*.wav, autoencode.png, "
        "autoencode.json)",
    ]
    _emit(result, args.json, lines)


def cmd_compare(args: argparse.Namespace) -> None:
    from audiogan import compare
    from audiogan.config import parse_overrides

    recipes = tuple(r.strip() for r in args.recipes.split(",") if r.strip())
    overrides = parse_overrides(args.overrides)
    compare.recipe_configs(recipes, args.minutes, overrides)  # refusals before Ray starts
    if (args.data is None) == (args.kinds is None):
        raise AudioganError(
            "give one of --data (a prepared dataset) and --kinds (kinds of the synthetic suite)"
        )
    if args.kinds is None and (args.clips_per_class is not None or args.suite is not None):
        raise AudioganError("--suite and --clips-per-class are for --kinds, not --data")
    if args.kinds is not None:
        kinds = compare.suite_kinds(args.kinds)
        clips_per_class = args.clips_per_class
        if clips_per_class is None:
            clips_per_class = compare.SUITE_CLIPS_PER_CLASS
        if clips_per_class < 5:
            raise AudioganError(
                "--clips-per-class must be at least 5 (one file in five is held out)"
            )
        _start_ray(args, dashboard=True)
        result = compare.compare_kinds(
            args.suite or compare.SUITE_DIR, args.storage, args.minutes, kinds, args.workers,
            recipes, args.n, args.overwrite, overrides, clips_per_class, log=_stderr,
            resume=args.resume,
        )  # fmt: skip
        _emit(result, args.json, compare.format_kinds(result))
        return
    _check_dataset(args.data)
    _start_ray(args, dashboard=True)
    result = compare.compare(
        args.data,
        args.storage,
        args.minutes,
        workers=args.workers,
        recipes=recipes,
        n=args.n,
        overwrite=args.overwrite,
        overrides=overrides,
        log=_stderr,
        resume=args.resume,
    )
    _emit(result, args.json, compare.format_table(result))


# ---------------------------------------------------------------------------------------------
# bench


def cmd_bench_prepare(args: argparse.Namespace) -> None:
    from audiogan import bench

    cfg = prepare_config_from_args(args)
    result = bench.bench_prepare(
        args.source,
        cfg,
        sample_files=args.sample_files,
        cpu_counts=tuple(int(x) for x in args.cpus.split(",")),
        naive=not args.no_naive,
        repeats=args.repeats,
        log=_stderr,
    )
    _emit(result, args.json, bench.format_prepare_table(result))


def cmd_bench_train(args: argparse.Namespace) -> None:
    from audiogan import bench

    _start_ray(args, dashboard=True)
    result = bench.bench_train(
        args.model,
        steps=args.steps,
        window=args.window,
        log=_stderr,
    )
    _emit(result, args.json, bench.format_train_table(result))


def cmd_bench_model(args: argparse.Namespace) -> None:
    from audiogan import bench
    from audiogan.config import parse_overrides

    result = bench.bench_model(
        args.config, parse_overrides(args.overrides), args.clip_seconds, args.sample_rate
    )
    _emit(result, args.json, bench.format_model_table(result))


def cmd_bench_step(args: argparse.Namespace) -> None:
    from audiogan import bench
    from audiogan.config import parse_overrides

    result = bench.bench_step(
        args.config,
        parse_overrides(args.overrides),
        args.device,
        args.clip_seconds,
        args.steps,
        args.window,
    )
    _emit(result, args.json, bench.format_step_table(result))


# ---------------------------------------------------------------------------------------------
# parser


def _add_preset_options(parser: argparse.ArgumentParser) -> None:
    """key=value overrides, --config and --clip-seconds: what bench model and bench step size."""
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.add_argument(
        "--config",
        metavar="FILE.yaml",
        default=str(PRESETS_DIR / "wavegan.yaml"),
        help="a training preset (default: jobs/configs/wavegan.yaml, the GPU WaveGAN)",
    )
    parser.add_argument(
        "--clip-seconds", type=float, default=4.0, help="clip length in seconds (default 4)"
    )


def _add_prepare_options(parser: argparse.ArgumentParser, on_ray: bool) -> None:
    """SOURCE and the options of a prepare job; `on_ray`: the command itself starts Ray."""
    d = lambda name: _default(PrepareConfig, name)  # noqa: E731
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="FSDKaggle2018 root (train.csv + "
        "audio_train/) or a folder tree <label>/*.wav; local path or s3://bucket/prefix",
    )
    parser.add_argument("--labels", help="comma-separated labels to keep (default: all)")
    parser.add_argument(
        "--verified-only",
        action="store_true",
        help="FSDKaggle2018: keep only rows with manually_verified=1",
    )
    parser.add_argument(
        "--sample-rate",
        type=int,
        metavar="HZ",
        help=f"output sample rate (default {d('sample_rate_hz')})",
    )
    parser.add_argument(
        "--clip-seconds",
        type=float,
        metavar="S",
        help=f"clip length in seconds (default {d('clip_seconds')})",
    )
    parser.add_argument(
        "--crop",
        choices=CROP_MODES,
        help="which part of a longer file to keep; windows cuts it into several "
        f"clips; random is seeded (default {d('crop')})",
    )
    parser.add_argument(
        "--pad",
        choices=PAD_MODES,
        help=f"where a short file's zeros go; none rejects it as too_short (default {d('pad')})",
    )
    parser.add_argument(
        "--trim-silence",
        action="store_true",
        help="trim leading and trailing silence before cropping",
    )
    parser.add_argument(
        "--silence-threshold-db",
        type=float,
        metavar="DB",
        help=f"peak level counted as silence (default {d('silence_threshold_db')})",
    )
    parser.add_argument(
        "--normalize",
        choices=NORMALIZE_MODES,
        help=f"scale each clip by its peak or RMS (default {d('normalize')})",
    )
    parser.add_argument(
        "--max-windows",
        type=int,
        metavar="N",
        help="--crop windows keeps at most N clips of a file, so that one long recording cannot "
        "swamp its class; prepare lists the files it cut and the seconds left out "
        f"(0: no limit; default {d('max_windows')})",
    )
    parser.add_argument("--seed", type=int, help=f"seed of the random crop (default {d('seed')})")
    parser.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help=f"files per Ray Data batch (default {d('batch_size')})",
    )
    _add_output_options(parser, local_ray=on_ray)


def _add_output_options(parser: argparse.ArgumentParser, local_ray: bool) -> None:
    """--json for every command; --address and --num-cpus for those that run on Ray."""
    if local_ray:
        parser.add_argument(
            "--address",
            metavar="ADDR",
            help="the Ray cluster to run on: HOST:PORT of its head (GCS), ray://HOST:PORT, or "
            "auto (the one `ray start` last recorded on this machine). Default: RAY_ADDRESS; "
            "with neither, a new local Ray instance of this command's own, never another's",
        )
        parser.add_argument(
            "--num-cpus",
            type=int,
            metavar="N",
            help="CPUs of a local Ray instance (default: all; ignored on a cluster)",
        )
    parser.add_argument(
        "--json", action="store_true", help="print the figures as one JSON object on the last line"
    )


def build_parser() -> argparse.ArgumentParser:
    from audiogan import synth as synth_kinds

    parser = argparse.ArgumentParser(
        prog="audiogan",
        description="Train GANs on raw audio with Ray: synthesise or prepare a dataset, "
        "then train, sweep and evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"audiogan {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = commands.add_parser(
        "synth",
        help="write a synthetic dataset of one kind of sound (FSDKaggle2018 layout)",
        description="Writes 44.1 kHz 16-bit WAVs of one kind of sound with train.csv, as "
        "FSDKaggle2018 lays them out. Kinds: instruments (plucked string, reed, brass, bowed "
        "string), percussion (kick, snare, hi-hat, tom, hand clap), speech (the syllables ba, "
        "ti, su, mo, ke from a source-filter model), textures (rain, wind, fire crackle, "
        "applause), polyphonic (strummed and organ chords, two instruments at once). The "
        "output depends only on the seed.",
    )
    synth.add_argument("out_dir", metavar="OUT_DIR")
    synth.add_argument(
        "--clips-per-class",
        type=int,
        default=40,
        metavar="N",
        help="clips of each class (default 40)",
    )
    synth.add_argument(
        "--kind",
        choices=tuple(synth_kinds.KINDS),
        default=synth_kinds.DEFAULT_KIND,
        help=f"the kind of sound (default {synth_kinds.DEFAULT_KIND})",
    )
    synth.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    synth.add_argument(
        "--layout",
        choices=("fsd", "tree"),
        default="fsd",
        help="fsd: train.csv + audio_train/; tree: <label>/<file>.wav (default fsd)",
    )
    _add_output_options(synth, local_ray=False)
    synth.set_defaults(run=cmd_synth)

    prepare = commands.add_parser(
        "prepare",
        help="turn audio files into a Parquet dataset of fixed-length clips (Ray Data)",
        description="Decodes every file of SOURCE (any rate, channels and length; WAV, FLAC, "
        "OGG, MP3), mixes to mono, resamples, crops or pads to a fixed length and normalises, "
        "writing DEST/clips/*.parquet, DEST/rejects/*.parquet (files that could not be used, "
        "with a reason), DEST/cuts/*.parquet (files --max-windows kept only part of) and, last, "
        "DEST/manifest.json. SOURCE, DEST and the options are checked before Ray starts. Runs "
        "on the cluster of --address or RAY_ADDRESS if set, else on a new local Ray instance. "
        "S3 credentials and endpoint come from the standard AWS variables (AWS_ENDPOINT_URL "
        "for S3-compatible stores).",
    )
    _add_prepare_options(prepare, on_ray=True)
    prepare.add_argument(
        "dest", metavar="DEST", help="output folder: local path or s3://bucket/prefix"
    )
    prepare.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing dataset at DEST (default: refuse)",
    )
    prepare.add_argument(
        "--verbose",
        action="store_true",
        help="let audio decoders print their own messages (say, an MP3 decoder's on a broken "
        "file); without it a bad file shows only as its reject row",
    )
    prepare.set_defaults(run=cmd_prepare)

    train = commands.add_parser(
        "train",
        help="train a GAN on a prepared dataset with Ray Train (resumes an existing run)",
        description="Trains G and D with DDP on N Ray Train workers (gloo on CPU, NCCL and bf16 "
        "on GPU), each reading its shard of DEST/clips. Writes STORAGE/NAME/checkpoint_XXXXXX/, "
        "samples/step_XXXXXX/ (WAVs and a PNG), metrics.jsonl, plots/losses.png and report.html. "
        "Running the same command again continues from the latest checkpoint (raise "
        "--max-steps to go on). "
        "Configuration: the dataclass defaults, then --config FILE.yaml, then key=value pairs "
        "(see jobs/configs/ and audiogan/config.py TrainConfig). With neither --config nor "
        f"--model it trains the default recipe, {DEFAULT_RECIPE} (jobs/configs/"
        f"{DEFAULT_PRESETS['cpu'].name}; with --gpu {DEFAULT_PRESETS['gpu'].name}, the same "
        "recipe at GPU scale, meant for 4 s clips, with bf16), made unconditional "
        "(conditional=false) for data with fewer than two classes or with unlabelled clips.",
    )
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    train.add_argument("--data", required=True, help="a prepared dataset (audiogan prepare DEST)")
    train.add_argument("--storage", required=True, help="runs folder: local path or s3://...")
    train.add_argument("--name", required=True, help="run name; the same name resumes the run")
    train.add_argument("--model", choices=MODELS, help="shorthand for model=...")
    train.add_argument(
        "--workers",
        type=int,
        default=2,
        help="Ray Train workers; 0 runs the loop in this process (default 2)",
    )
    train.add_argument("--gpu", action="store_true", help="one GPU per worker")
    train.add_argument("--max-steps", type=int, metavar="N", help="shorthand for max_steps=N")
    train.add_argument(
        "--config",
        metavar="FILE.yaml",
        help=f"a preset, e.g. jobs/configs/wavegan.yaml (default: {DEFAULT_RECIPE}, see above)",
    )
    _add_output_options(train, local_ray=True)
    train.set_defaults(run=cmd_train)

    tune_parser = commands.add_parser(
        "tune",
        help="sweep training settings with Ray Tune; ASHA stops trials that fall behind",
        description="Runs --trials training runs (each on --workers-per-trial Ray Train "
        "workers) with settings drawn from a search space: by default latent_dim in {64, 100, "
        "128, 256, 500}, dropout in [0, 0.5], lr_g and lr_d log-uniform in [1e-5, 1e-3]. ASHA "
        "stops a trial whose mel_fd falls behind the others' at the same step. Every trial's "
        "run (checkpoints, samples, metrics, report.html) is in STORAGE/NAME/trials/TRIAL/; at "
        "the end STORAGE/NAME/results.csv, best.json (the best checkpoint, for generate and "
        "evaluate) and plots/mel_fd.png. Running the same command again resumes an interrupted "
        "sweep. --config takes a sweep file: training keys, `search`, `points` and `tune` "
        "sections (see jobs/configs/sweep_small.yaml); key=value fixes a training key, "
        "tune.KEY=value sets a sweep key (audiogan/config.py TuneConfig).",
    )
    tune_parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="training keys to fix, or tune.KEY=value"
    )
    tune_parser.add_argument(
        "--data", required=True, help="a prepared dataset (audiogan prepare DEST)"
    )
    tune_parser.add_argument("--storage", required=True, help="sweeps folder: local path or s3://")
    tune_parser.add_argument(
        "--name", required=True, help="sweep name; the same name resumes the sweep"
    )
    tune_parser.add_argument(
        "--trials", type=int, metavar="N", help="trials to run (default 8; tune.trials)"
    )
    tune_parser.add_argument(
        "--workers-per-trial",
        type=int,
        metavar="W",
        help="Ray Train workers per trial (default 2; tune.workers_per_trial)",
    )
    tune_parser.add_argument(
        "--gpu", action="store_true", help="one GPU per worker; trials at once = GPUs // W"
    )
    tune_parser.add_argument("--max-steps", type=int, metavar="N", help="G steps of a full trial")
    tune_parser.add_argument(
        "--config", metavar="FILE.yaml", help="a sweep file or a training preset"
    )
    _add_output_options(tune_parser, local_ray=True)
    tune_parser.set_defaults(run=cmd_tune)

    generate = commands.add_parser(
        "generate",
        help="write new clips from a checkpoint (WAV and a PNG)",
        description="Loads CHECKPOINT (a checkpoint_XXXXXX folder, local or s3://) with "
        "weights_only=True and writes N clips from its EMA generator (or G) as 16-bit WAVs at "
        "the dataset's sample rate, plus generated.png, into OUT_DIR.",
    )
    generate.add_argument("checkpoint", metavar="CHECKPOINT")
    generate.add_argument("out_dir", metavar="OUT_DIR")
    generate.add_argument("--n", type=int, default=8, help="clips to write (default 8)")
    generate.add_argument("--label", help="class to generate (conditional models only)")
    generate.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    _add_output_options(generate, local_ray=False)
    generate.set_defaults(run=cmd_generate)

    evaluator_parser = commands.add_parser(
        "evaluator", help="the evaluation classifier behind Inception Score and classifier FD"
    )
    evaluator_commands = evaluator_parser.add_subparsers(
        dest="evaluator", required=True, metavar="ACTION"
    )
    fit = evaluator_commands.add_parser(
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
    fit.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    fit.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    _add_output_options(fit, local_ray=False)
    fit.set_defaults(run=cmd_evaluator_fit)

    evaluate = commands.add_parser(
        "evaluate",
        help="score generated clips beside real held-out clips",
        description="Generates N clips from CHECKPOINT (or reads the WAVs of --samples DIR) and "
        "prints mel_fd, the classifier Frechet distance, Inception Score (and, for a "
        "conditional model, label accuracy) beside the same figures for as many real clips the "
        "classifier never saw, with the ratio generated/real, then diagnostics (silent share, "
        "RMS, spectral centroid). Needs the dataset's evaluation classifier (audiogan evaluator "
        "fit). No Ray.",
    )
    evaluate.add_argument("--data", required=True, help="the prepared dataset G was trained on")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a checkpoint_XXXXXX folder or a run folder")
    source.add_argument("--samples", metavar="DIR", help="a folder of WAVs at the dataset's rate")
    evaluate.add_argument(
        "--n",
        type=int,
        default=256,
        help="clips to score (default 256; at most as many as the held-out real clips)",
    )
    evaluate.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    evaluate.add_argument("--evaluator", help="the classifier (default DEST/evaluator)")
    _add_output_options(evaluate, local_ray=False)
    evaluate.set_defaults(run=cmd_evaluate)

    autoencode = commands.add_parser(
        "autoencode",
        help="train an encoder that inverts G: which real clips can G reproduce?",
        description="Loads G from CHECKPOINT (frozen), trains an encoder shaped like D (ending in "
        "the latent size) so that G(encoder(x)) rebuilds real training clips x (waveform MSE "
        "plus log-mel L1), then writes held-out originals beside their reconstructions (WAVs, "
        "autoencode.png with waveforms, a 20 ms zoom and spectrograms) and the reconstruction "
        "errors (autoencode.json), by default into RUN/autoencode/. No Ray.",
    )
    autoencode.add_argument("--data", required=True, help="the prepared dataset")
    autoencode.add_argument(
        "--checkpoint", required=True, help="a checkpoint_XXXXXX folder or a run folder"
    )
    autoencode.add_argument("--out", help="output folder (default RUN/autoencode)")
    autoencode.add_argument("--steps", type=int, default=300, help="encoder steps (default 300)")
    autoencode.add_argument("--batch-size", type=int, default=16, help="clips per step")
    autoencode.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    _add_output_options(autoencode, local_ray=False)
    autoencode.set_defaults(run=cmd_autoencode)

    compare = commands.add_parser(
        "compare",
        help="training recipes side by side: same data, same minutes, same classifier",
        description="Trains each recipe (a preset in jobs/configs/) from scratch for the same "
        "number of minutes on the same Ray Train workers into STORAGE/compare-RECIPE, fits the "
        "dataset's evaluation classifier if it has none, evaluates each with it, prints one "
        "table (G steps, mel_fd, classifier FD, Inception Score and its ratio to real data's) "
        "and writes STORAGE/compare.json. With --kinds instead of --data, it does so for each "
        "kind of the synthetic suite (synthesised and prepared into SUITE/KIND/ if missing; runs "
        "in STORAGE/KIND/), then prints a summary over the kinds and writes STORAGE/suite.json. "
        "Recipes: " + "; ".join(f"{name}: {about}" for name, (_, about) in RECIPES.items()) + ".",
    )
    compare.add_argument("--data", help="a prepared dataset with labels")
    compare.add_argument(
        "--kinds",
        metavar="KIND,...",
        help=f"compare on these kinds of the synthetic suite instead ({','.join(synth_kinds.KINDS)}"
        ", or all)",
    )
    compare.add_argument(
        "--suite",
        help="a local folder where the kinds' datasets are kept (default data/suite)",
    )
    compare.add_argument(
        "--clips-per-class",
        type=int,
        metavar="N",
        help="files a class when a kind's dataset is made (default 100, cut into 1 s clips)",
    )
    compare.add_argument("--storage", required=True, help="runs folder: local path or s3://...")
    compare.add_argument(
        "--minutes", type=float, default=20.0, help="training minutes per recipe (default 20)"
    )
    compare.add_argument("--workers", type=int, default=2, help="Ray Train workers (default 2)")
    compare.add_argument(
        "--recipes",
        default=",".join(RECIPES),
        help="comma-separated recipe names, or paths to YAML presets (default: all, "
        f"{','.join(RECIPES)})",
    )
    compare.add_argument(
        "--n", type=int, default=256, help="clips evaluated per recipe (default 256)"
    )
    compare.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="training keys set for every recipe (audiogan/config.py TrainConfig), e.g. "
        "batch_size=16",
    )
    again = compare.add_mutually_exclusive_group()
    again.add_argument(
        "--overwrite", action="store_true", help="start the compare-* runs again from scratch"
    )
    again.add_argument(
        "--resume",
        action="store_true",
        help="keep the recipes that compare.json holds from an earlier run of the same data, "
        "minutes, workers, --n and key=value settings, and train only the others (a run cut "
        "short starts again); a long comparison can so be run in parts",
    )
    _add_output_options(compare, local_ray=True)
    compare.set_defaults(run=cmd_compare)

    bench = commands.add_parser("bench", help="benchmarks that print tables and a JSON line")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    bench_prepare = benches.add_parser(
        "prepare",
        help="clips/s of prepare, per stage and per core, against a naive librosa loop",
        description="Measures a naive one-process librosa.load loop, audiogan's per-file stages "
        "in one process, and `audiogan prepare` end to end on Ray with 1 and 2 CPUs, on the "
        "files of SOURCE (make one with `audiogan synth`).",
    )
    _add_prepare_options(bench_prepare, on_ray=False)  # its runs start Ray of their own
    bench_prepare.add_argument(
        "--sample-files",
        type=int,
        default=300,
        metavar="N",
        help="files for the in-process measurements (default 300)",
    )
    bench_prepare.add_argument(
        "--cpus",
        default="1,2",
        metavar="LIST",
        help="CPU counts of the end-to-end Ray runs (default 1,2)",
    )
    bench_prepare.add_argument(
        "--repeats",
        type=int,
        default=3,
        metavar="N",
        help="end-to-end runs per CPU count; the table shows the median (default 3)",
    )
    bench_prepare.add_argument("--no-naive", action="store_true", help="skip the librosa baseline")
    bench_prepare.set_defaults(run=cmd_bench_prepare)

    bench_train = benches.add_parser(
        "train",
        help="samples/s of training: a plain gan_step loop vs Ray Train with 1 and 2 workers",
        description="Measures, in one run, samples/s of the same gan_step in a plain "
        "single-process loop and under Ray Train with 1 and 2 CPU workers (on a small synthetic "
        "dataset it prepares itself), Ray's overhead, 2-worker scaling, and achieved FLOP/s "
        "against a matrix-product peak measured here. Sizes: jobs/configs/dcgan.yaml (4 s) and "
        "jobs/configs/small_cpu.yaml (WaveGAN, 1 s).",
    )
    bench_train.add_argument("--model", choices=("dcgan", "wavegan"), default="wavegan")
    bench_train.add_argument(
        "--steps", type=int, default=60, help="training steps per pipeline (default 60)"
    )
    bench_train.add_argument(
        "--window",
        type=int,
        default=5,
        help="steps per timing window; each rate is the median window (default 5)",
    )
    _add_output_options(bench_train, local_ray=True)
    bench_train.set_defaults(run=cmd_bench_train)

    bench_model = benches.add_parser(
        "model",
        help="what one training step of a preset costs: parameters, FLOPs, all-reduced bytes",
        description="For sizing a cluster: the parameters of G and D, the FLOPs of one gan_step "
        "per worker (torch's formulas, counted on the CPU at batch 2 and scaled to the preset's "
        "batch) and the gradient bytes DDP all-reduces per step, with the ring all-reduce's "
        "traffic per worker for 2 to 16 workers. No Ray and no timing; takes seconds.",
    )
    _add_preset_options(bench_model)
    bench_model.add_argument(
        "--sample-rate", type=int, default=16000, help="sample rate in Hz (default 16000)"
    )
    _add_output_options(bench_model, local_ray=False)
    bench_model.set_defaults(run=cmd_bench_model)

    bench_step = benches.add_parser(
        "step",
        help="clips/s and achieved TFLOP/s of one worker's training step on a GPU (or the CPU)",
        description="Times the training step of a preset on one device as a Ray Train worker "
        "runs it: G and D under DDP (NCCL on a GPU, gloo on the CPU) in a one-process group, "
        "bf16 autocast and fp32 on a GPU, batches already on the device, no Ray. Prints clips/s, "
        "seconds per step, achieved TFLOP/s (from bench model's FLOP count) and peak memory.",
    )
    _add_preset_options(bench_step)
    bench_step.add_argument(
        "--device", choices=("cuda", "cpu"), default="cuda", help="where to run (default cuda)"
    )
    bench_step.add_argument(
        "--steps", type=int, default=30, help="timed steps per precision (default 30)"
    )
    bench_step.add_argument(
        "--window",
        type=int,
        default=5,
        help="steps per timing window; the rate is the median window (default 5)",
    )
    _add_output_options(bench_step, local_ray=False)
    bench_step.set_defaults(run=cmd_bench_step)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except AudioganError as error:
        print(f"audiogan {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
