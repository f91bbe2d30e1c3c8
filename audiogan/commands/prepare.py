"""`audiogan prepare SOURCE DEST`: audio files into a Parquet dataset of clips (Ray Data)."""

from __future__ import annotations

import argparse

from audiogan.commands.common import add_output_options, emit, in_flags, only_given, option
from audiogan.config import CROP_MODES, NORMALIZE_MODES, PAD_MODES, ConfigError, PrepareConfig

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
_METAVARS = {
    "sample_rate_hz": "HZ",
    "clip_seconds": "S",
    "silence_threshold_db": "DB",
    "max_windows": "N",
    "batch_size": "N",
    "labels": "LABEL,...",
}
_CHOICES = {"crop": CROP_MODES, "pad": PAD_MODES, "normalize": NORMALIZE_MODES}


def add_prepare_options(parser: argparse.ArgumentParser, on_ray: bool) -> None:
    """SOURCE and the options of a prepare job (PrepareConfig's fields, unset unless given);
    `on_ray`: the command itself starts Ray."""
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="FSDKaggle2018 root (train.csv + audio_train/) or a folder tree <label>/*.wav; "
        "local path or s3://bucket/prefix",
    )
    for key, flag in PREPARE_FLAGS.items():
        extra = {"type": str} if key == "labels" else {}
        if key in _METAVARS:
            extra["metavar"] = _METAVARS[key]
        if key in _CHOICES:
            extra["choices"] = _CHOICES[key]
        option(parser, PrepareConfig, key, flag, unset=True, **extra)
    add_output_options(parser, local_ray=on_ray)


def prepare_config_from_args(args: argparse.Namespace) -> PrepareConfig:
    """Only the options given on the command line; the dataclass holds every default. Errors
    name the options, not the config keys behind them."""
    given = only_given(args, PrepareConfig)
    if "labels" in given:
        given["labels"] = tuple(x.strip() for x in given["labels"].split(",") if x.strip())
    try:
        return PrepareConfig(**given)
    except ConfigError as error:
        raise in_flags(error, PREPARE_FLAGS) from None


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


def add_parser(commands) -> None:
    parser = commands.add_parser(
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
    add_prepare_options(parser, on_ray=True)
    parser.add_argument(
        "dest", metavar="DEST", help="output folder: local path or s3://bucket/prefix"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing dataset at DEST (default: refuse)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="let audio decoders print their own messages (say, an MP3 decoder's on a broken "
        "file); without it a bad file shows only as its reject row",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from audiogan import data
    from audiogan.commands.common import start_ray

    cfg = prepare_config_from_args(args)
    # SOURCE, DEST and the listing are checked before Ray starts (seconds, not tens of them).
    plan = data.plan_prepare(args.source, args.dest, cfg, overwrite=args.overwrite)
    start_ray(args)
    summary = data.run_prepare(plan, log=lambda m: print(m, flush=True), verbose=args.verbose)
    emit(summary, args.json, format_prepare_summary(summary))
