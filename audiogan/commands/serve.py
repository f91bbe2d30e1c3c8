"""`audiogan serve CHECKPOINT`: the sound explorer and its HTTP API on Ray Serve."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from audiogan.commands.common import add_output_options, check_checkpoint, option, start_ray
from audiogan.errors import AudioganError


@dataclass(frozen=True)
class ServeOptions:
    # The address Ray Serve's HTTP proxy listens on: 127.0.0.1 answers this machine only; on a
    # cluster's head, 0.0.0.0 answers the network (put it behind your own gateway: no auth).
    host: str = "127.0.0.1"
    # Its port.
    port: int = 8000
    # Copies of the generator answering requests (Ray Serve spreads them over the cluster).
    replicas: int = 1
    # CPUs each replica reserves.
    cpus_per_replica: float = 1.0


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "serve",
        help="play a checkpoint's generator in a browser: an HTTP API and a page on Ray Serve",
        description="Loads CHECKPOINT (a checkpoint_XXXXXX folder or a run folder's newest, "
        "local or s3://; weights_only=True) into REPLICAS Ray Serve replicas and answers HTTP on "
        "HOST:PORT until Ctrl-C: / is the sound explorer (pick a class, press a pad for a new "
        "clip, drag between the last two); /generate?label=&seed=&n= returns n clips as one "
        "WAV; /interpolate?seed_a=&seed_b=&steps=&label=[&at=] the row of clips between two "
        "seeds (or clip number AT of it); /info the model's labels and rate. A bad label or "
        "seed is a 400 that says why. On a cluster: `python -m jobs.serve ...` as a job, or "
        "`serve run audiogan.serve:app checkpoint=URL replicas=N`.",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT")
    option(parser, ServeOptions, "host")
    option(parser, ServeOptions, "port")
    option(parser, ServeOptions, "replicas")
    option(parser, ServeOptions, "cpus_per_replica")
    add_output_options(parser, local_ray=True, json_line=False)  # it answers until stopped
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    import signal

    from audiogan import serve, storage

    if args.replicas < 1 or args.cpus_per_replica <= 0:
        raise AudioganError("--replicas must be at least 1 and --cpus-per-replica above 0")
    check_checkpoint(args.checkpoint)  # a bad path fails in a second, before Ray starts
    checkpoint = storage.absolute(args.checkpoint)  # the replicas run in folders of their own
    start_ray(args, dashboard=True)
    url = serve.start(checkpoint, args.host, args.port, args.replicas, args.cpus_per_replica)
    # `ray job stop` sends SIGTERM: stop as on Ctrl-C, removing the application. (Set after
    # Ray Serve has started: it sets a handler of its own.)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"serve: {args.checkpoint} on {args.replicas} replica(s): open {url} (Ctrl-C stops)",
          flush=True)  # fmt: skip
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.stop()
        print("serve: stopped; the application is removed", flush=True)
