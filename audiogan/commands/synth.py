"""`audiogan synth OUT_DIR`: a synthetic dataset of one kind of sound (no Ray)."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from audiogan import synth
from audiogan.commands.common import add_output_options, emit, option, stderr


@dataclass(frozen=True)
class SynthOptions:
    # Clips of each class.
    clips_per_class: int = 40
    # The kind of sound.
    kind: str = synth.DEFAULT_KIND
    # Seed: the output depends only on it.
    seed: int = 0
    # fsd: train.csv + audio_train/; tree: <label>/<file>.wav.
    layout: str = "fsd"


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "synth",
        help="write a synthetic dataset of one kind of sound (FSDKaggle2018 layout)",
        description="Writes 44.1 kHz 16-bit WAVs of one kind of sound with train.csv, as "
        "FSDKaggle2018 lays them out. Kinds: instruments (plucked string, reed, brass, bowed "
        "string), percussion (kick, snare, hi-hat, tom, hand clap), speech (the syllables ba, "
        "ti, su, mo, ke from a source-filter model), textures (rain, wind, fire crackle, "
        "applause), polyphonic (strummed and organ chords, two instruments at once). The "
        "output depends only on the seed.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR")
    option(parser, SynthOptions, "clips_per_class", metavar="N")
    option(parser, SynthOptions, "kind", choices=tuple(synth.KINDS))
    option(parser, SynthOptions, "seed")
    option(parser, SynthOptions, "layout", choices=("fsd", "tree"))
    add_output_options(parser, local_ray=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    last_shown = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if done == total or now - last_shown[0] > 2:
            last_shown[0] = now
            stderr(f"synth: {done}/{total} clips")

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
    line = (
        f"synth: wrote {summary['clips']} {summary['kind']} clips ({per_label}; "
        f"{summary['verified']} verified) to {args.out_dir} in {summary['seconds']} s"
    )
    emit(summary, args.json, [line])
