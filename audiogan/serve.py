"""`audiogan serve`: a trained generator behind HTTP on Ray Serve, with a page to play it.

    GET /                    the sound explorer: pick a class, press a pad for a new clip (the
                             drum machine of WaveGAN's demo), drag between the last two sounds
    GET /info                the model: labels, rate, clip length, step (JSON)
    GET /generate?label=&seed=&n=
                             n clips (default 1) one after another as one 16-bit WAV
    GET /interpolate?seed_a=&seed_b=&steps=&label=[&at=]
                             the row of `steps` clips from seed_a's to seed_b's as one WAV, or
                             only its clip number `at`

A bad request (an unknown label, a seed that is not a whole number from 0 to 2**63 - 1, too
many clips) is a 400 whose body says what was wrong. Each replica loads the checkpoint once
(its EMA generator) and runs on CPU. Nothing here imports Ray until a deployment is built.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import numpy as np

from audiogan import api, samples

MAX_CLIPS = 16  # n of /generate and steps of /interpolate: one request stays a few seconds
PAGE = "explorer.html"


class BadRequest(ValueError):
    """What the client asked for cannot be answered: a 400 with this message."""


class SoundExplorer:
    """The deployment's class: what each HTTP path answers (Ray Serve calls `__call__`)."""

    def __init__(self, checkpoint_url: str):
        self.generator = api.load(checkpoint_url)
        self.page = resources.files("audiogan").joinpath(PAGE).read_text()

    def info(self) -> dict[str, Any]:
        g = self.generator
        return {
            "labels": g.labels,
            "sample_rate_hz": g.sample_rate_hz,
            "clip_seconds": g.clip_samples / g.sample_rate_hz,
            "step": g.step,
            "max_clips": MAX_CLIPS,
        }

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of `path` with `query`: the whole API,
        without HTTP, so that it can be tested without a server too."""
        try:
            if path in ("/", "/index.html"):
                return 200, "text/html; charset=utf-8", self.page.encode()
            if path == "/info":
                return 200, "application/json", json.dumps(self.info()).encode()
            if path == "/generate":
                n = _whole(query, "n", 1, least=1, most=MAX_CLIPS)
                audio, rate = self.generator.generate(
                    n, label=query.get("label") or None, seed=_whole(query, "seed", None)
                )
                return 200, "audio/wav", samples.wav_bytes(np.concatenate(audio), rate)
            if path == "/interpolate":
                steps = _whole(query, "steps", 8, least=2, most=MAX_CLIPS)
                row, rate = self.generator.interpolate(
                    _whole(query, "seed_a", None, required=True),
                    _whole(query, "seed_b", None, required=True),
                    steps,
                    label=query.get("label") or None,
                )
                at = _whole(query, "at", None, least=0, most=steps - 1)
                clips = row if at is None else row[at : at + 1]
                return 200, "audio/wav", samples.wav_bytes(np.concatenate(clips), rate)
        except (BadRequest, api.GeneratorError) as error:
            return 400, "text/plain; charset=utf-8", str(error).encode()
        return 404, "text/plain; charset=utf-8", f"no such page: {path}".encode()

    def __call__(self, request):
        # A plain def: Ray Serve runs it in a thread of the replica, so one request's torch
        # work does not hold up the replica's event loop (and the requests queued on it).
        from starlette.responses import Response

        status, kind, body = self.answer(request.url.path, dict(request.query_params))
        return Response(body, status_code=status, media_type=kind)


def _whole(
    query: dict[str, str],
    name: str,
    default: int | None,
    least: int = 0,
    most: int = api.MAX_SEED,
    required: bool = False,
) -> int | None:
    """The query's `name` as a whole number in [least, most]; `default` where it is absent."""
    text = query.get(name, "").strip()
    if not text:
        if required:
            raise BadRequest(f"{name} is required: a whole number from {least} to {most}")
        return default
    if not re.fullmatch(r"[0-9]{1,30}", text):
        raise BadRequest(f"{name} must be a whole number from {least} to {most}, got {text!r}")
    value = int(text)
    if not least <= value <= most:
        raise BadRequest(f"{name} must be from {least} to {most}, got {value}")
    return value


def application(checkpoint_url: str, replicas: int = 1, cpus_per_replica: float = 1.0):
    """The Ray Serve application: `replicas` copies of the explorer over one checkpoint."""
    from ray import serve

    deployment = serve.deployment(
        SoundExplorer,
        name="sound_explorer",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": cpus_per_replica},
    )
    return deployment.bind(checkpoint_url)


def app(args: dict[str, str]):
    """For `serve run audiogan.serve:app checkpoint=URL [replicas=N] [cpus_per_replica=C]`
    (Ray Serve's application builder): the same application as `audiogan serve`."""
    unknown = set(args) - {"checkpoint", "replicas", "cpus_per_replica"}
    if "checkpoint" not in args or unknown:
        raise ValueError(
            "serve run audiogan.serve:app takes checkpoint=URL [replicas=N] "
            f"[cpus_per_replica=C]; got {sorted(args)}"
        )
    return application(
        args["checkpoint"], int(args.get("replicas", 1)), float(args.get("cpus_per_replica", 1))
    )


def start(
    checkpoint_url: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
    cpus_per_replica: float = 1.0,
) -> str:
    """Runs the application on the Ray instance this process has joined, with Serve's HTTP
    proxy on host:port, and returns the page's URL once every replica has loaded."""
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    serve.run(
        application(checkpoint_url, replicas, cpus_per_replica),
        name="audiogan",
        route_prefix="/",
    )
    return f"http://{host}:{port}/"


def stop() -> None:
    """Removes the application: Ray Serve's controller and proxies outlive this process on
    a cluster, and would go on answering."""
    from ray import serve

    serve.delete("audiogan")
