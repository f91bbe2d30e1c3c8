"""`audiogan autoencode`: an encoder that inverts G, to hear which real clips G can make
(no Ray)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from audiogan.commands.common import add_output_options, emit, option, stderr


@dataclass(frozen=True)
class AutoencodeOptions:
    # Encoder training steps.
    steps: int = 300
    # Clips per encoder step.
    batch_size: int = 16
    # Seed of the encoder's weights and batches.
    seed: int = 0


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "autoencode",
        help="train an encoder that inverts G: which real clips can G reproduce?",
        description="Loads G from CHECKPOINT (frozen), trains an encoder shaped like D (ending in "
        "the latent size) so that G(encoder(x)) rebuilds real training clips x (waveform MSE "
        "plus log-mel L1), then writes held-out originals beside their reconstructions (WAVs, "
        "autoencode.png with waveforms, a 20 ms zoom and spectrograms) and the reconstruction "
        "errors (autoencode.json), by default into RUN/autoencode/. No Ray.",
    )
    parser.add_argument("--data", required=True, help="the prepared dataset")
    parser.add_argument(
        "--checkpoint", required=True, help="a checkpoint_XXXXXX folder or a run folder"
    )
    parser.add_argument("--out", help="output folder (default RUN/autoencode)")
    option(parser, AutoencodeOptions, "steps")
    option(parser, AutoencodeOptions, "batch_size")
    option(parser, AutoencodeOptions, "seed")
    add_output_options(parser, local_ray=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from audiogan import autoencode

    result = autoencode.autoencode(
        args.data,
        args.checkpoint,
        out_url=args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        log=stderr,
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
    emit(result, args.json, lines)
