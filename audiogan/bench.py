"""Benchmarks: they print a table and a JSON line; nothing here is asserted on time.

`bench_prepare` measures, on the same files in the same run:
  1. the naive baseline: one process, one file at a time, `librosa.load(path, sr=...)`, crop or
     pad, peak-normalise;
  2. audiogan's per-file work in one process, stage by stage (read, decode, resample,
     crop/normalise, Parquet write), the same functions the Ray tasks call;
  3. `audiogan prepare` end to end on Ray with 1, 2, ... CPUs, each in a fresh process.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
import pyarrow.parquet as pq

from audiogan import storage
from audiogan.config import PrepareConfig, to_dict
from audiogan.errors import AudioganError

STAGES = ("read", "decode", "resample", "crop_normalize", "write")


def naive_prepare(paths: list[str], cfg: PrepareConfig) -> tuple[int, float]:
    """The baseline loop on one BLAS thread; returns (clips, seconds)."""
    import librosa
    from threadpoolctl import threadpool_limits

    librosa.load(paths[0], sr=cfg.sample_rate_hz)  # first call loads and compiles; not timed
    with threadpool_limits(limits=1):
        started = time.perf_counter()
        for path in paths:
            audio, _ = librosa.load(path, sr=cfg.sample_rate_hz)
            audio = np.pad(audio[: cfg.clip_samples], (0, max(cfg.clip_samples - audio.size, 0)))
            peak = np.max(np.abs(audio))
            if peak > 0:
                audio = audio / peak
        seconds = time.perf_counter() - started
    return len(paths), seconds


def staged_prepare(files: list[dict], fs, cfg: PrepareConfig) -> tuple[int, dict[str, float]]:
    """audiogan's per-file functions in this process on one BLAS thread, as in a 1-CPU Ray
    task; returns (clips, seconds per stage)."""
    from threadpoolctl import threadpool_limits

    from audiogan.data import FILES_PER_BLOCK, process_files
    from audiogan.dataset import CLIP_PARQUET_OPTIONS, clips_table

    label_ids = {label: i for i, label in enumerate(sorted({str(f["label"]) for f in files}))}
    timings: dict[str, float] = {}
    with threadpool_limits(limits=1), tempfile.TemporaryDirectory() as folder:
        clips, _, _ = process_files(files, fs, cfg, label_ids, timings)
        started = time.perf_counter()
        # One Parquet file per block of files, as each Ray task writes.
        for first in range(0, len(clips), FILES_PER_BLOCK):
            table = clips_table(clips[first : first + FILES_PER_BLOCK], cfg.clip_samples)
            path = os.path.join(folder, f"clips-{first}.parquet")
            pq.write_table(table, path, **CLIP_PARQUET_OPTIONS)
        timings["write"] = time.perf_counter() - started
    return len(clips), timings


def ray_prepare(source: str, cfg: PrepareConfig, num_cpus: int) -> dict:
    """`audiogan prepare --json` in a fresh process with its own local Ray of `num_cpus` CPUs:
    its summary, with `wall_seconds` (the whole process: Python, Ray's start-up and shutdown)
    and `bytes_per_clip` (DEST/clips on disk over the clips)."""
    with tempfile.TemporaryDirectory() as dest:
        command = [
            sys.executable,
            "-m",
            "audiogan.cli",
            "prepare",
            source,
            dest,
            "--overwrite",
            "--json",
            "--num-cpus",
            str(num_cpus),
        ]
        command += _prepare_flags(cfg)
        started = time.perf_counter()
        summary = _json_of_local_run(command, f"prepare with {num_cpus} CPUs")
        wall = time.perf_counter() - started
        clips_dir = os.path.join(dest, "clips")
        written = sum(entry.stat().st_size for entry in os.scandir(clips_dir))
        return summary | {
            "wall_seconds": wall,
            "bytes_per_clip": written / max(summary["clips"], 1),
        }


STARTUP_PROBE = """
import json, sys, time
started = time.perf_counter()
import ray
from audiogan.connect import start_ray
imported = time.perf_counter()
start_ray(num_cpus=int(sys.argv[1]), log_to_driver=False)
up = time.perf_counter()
ray.shutdown()
print(json.dumps({"import_s": imported - started, "init_s": up - imported,
                  "shutdown_s": time.perf_counter() - up}))
"""


def ray_startup(num_cpus: int) -> dict:
    """Seconds a fresh process takes to import Ray, start a local instance of `num_cpus` CPUs
    (as prepare does) and shut it down: the fixed cost every local end-to-end run pays."""
    command = [sys.executable, "-c", STARTUP_PROBE, str(num_cpus)]
    seconds = _json_of_local_run(command, f"starting Ray with {num_cpus} CPUs")
    return {k: round(v, 2) for k, v in seconds.items()}


def _json_of_local_run(command: list[str], what: str) -> dict:
    """The JSON last line of `command`, run with a local Ray of its own (no RAY_ADDRESS)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise AudioganError(f"{what} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_bandwidth_gb_s(megabytes: int = 256, repeats: int = 3) -> float:
    """One core's copy bandwidth (bytes read plus bytes written, per second), best of repeats."""
    source = np.ones(megabytes << 18, dtype=np.float32)  # megabytes MiB
    target = np.empty_like(source)
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - started)
    return 2 * source.nbytes / best / 1e9


def _prepare_flags(cfg: PrepareConfig) -> list[str]:
    values = to_dict(cfg)
    flags = [
        "--sample-rate",
        str(cfg.sample_rate_hz),
        "--clip-seconds",
        str(cfg.clip_seconds),
        "--crop",
        cfg.crop,
        "--pad",
        cfg.pad,
        "--normalize",
        cfg.normalize,
        "--seed",
        str(cfg.seed),
        "--batch-size",
        str(cfg.batch_size),
        "--max-windows",
        str(cfg.max_windows),
    ]
    if values["labels"]:
        flags += ["--labels", ",".join(values["labels"])]
    if cfg.trim_silence:
        flags.append("--trim-silence")
    if cfg.verified_only:
        flags.append("--verified-only")
    return flags


def bench_prepare(
    source: str,
    cfg: PrepareConfig,
    sample_files: int = 300,
    cpu_counts: tuple[int, ...] = (1, 2),
    naive: bool = True,
    repeats: int = 3,
    log: Callable[[str], None] = print,
) -> dict:
    from audiogan.data import list_source

    fs, root = storage.resolve(source)
    listing = list_source(fs, root, cfg, source)
    sample = listing.files[:sample_files]
    result: dict = {
        "source": storage.display(source),
        "files": len(listing.files),
        "sample_files": len(sample),
        "cpu_count": os.cpu_count(),
        "config": to_dict(cfg),
        "rows": [],
    }

    for item in sample:  # both one-process rows start from the same (warm) page cache
        storage.read_bytes(fs, item["path"])

    if naive:
        if storage.is_s3(source):
            log("bench: the librosa baseline reads local files only; skipped for S3")
        else:
            # Over every file, as the end-to-end rows: their wall times compare directly.
            for item in listing.files[len(sample) :]:
                storage.read_bytes(fs, item["path"])
            log(f"bench: naive librosa.load loop on {len(listing.files)} files ...")
            clips, seconds = naive_prepare([f["path"] for f in listing.files], cfg)
            result["rows"].append(_row("naive librosa.load, 1 process", clips, seconds, 1))

    log(f"bench: audiogan stages in one process on {len(sample)} files ...")
    clips, timings = staged_prepare(sample, fs, cfg)
    result["stages"] = {
        stage: {
            "ms_per_clip": round(1000 * timings.get(stage, 0.0) / max(clips, 1), 3),
            "clips_per_second": round(clips / timings[stage], 1) if timings.get(stage) else None,
        }
        for stage in STAGES
    }
    result["rows"].append(_row("audiogan stages, 1 process", clips, sum(timings.values()), 1))

    result["rows"] += [_prepare_row(source, cfg, cpus, repeats, log) for cpus in cpu_counts]

    naive_row = next((r for r in result["rows"] if r["pipeline"].startswith("naive")), None)
    for row in result["rows"]:
        if naive_row:
            row["x_naive_per_core"] = round(
                row["clips_per_second_per_core"] / naive_row["clips_per_second_per_core"], 2
            )
            if "wall_seconds" in row:
                # the same listed files end to end: how many times faster, start-up in (three
                # significant digits: a few files against Ray's start-up are well under 0.01)
                ratio = naive_row["seconds"] / row["wall_seconds"]
                row["x_naive_wall"] = float(f"{ratio:.3g}")
    result["limits"] = _limits(result["stages"], sample, cfg)
    if cpu_counts:
        log(f"bench: Ray's start-up and shutdown alone, {max(cpu_counts)} CPU(s) ...")
        result["ray_startup"] = ray_startup(max(cpu_counts)) | {"cpus": max(cpu_counts)}
    ray_rows = [r for r in result["rows"] if "on Ray" in r["pipeline"]]
    if len(ray_rows) >= 2:
        first, last = ray_rows[0], ray_rows[-1]
        result["scaling"] = {
            "cpus": [first["cores"], last["cores"]],
            "speedup": round(last["clips_per_second"] / first["clips_per_second"], 2),
        }
    return result


def _prepare_row(source: str, cfg: PrepareConfig, cpus: int, repeats: int, log) -> dict:
    """The end-to-end row of `cpus` CPUs: the median of `repeats` fresh runs, each listed."""
    runs = []
    for run in range(1, repeats + 1):
        log(f"bench: audiogan prepare on Ray, {cpus} CPU(s), run {run}/{repeats} ...")
        runs.append(ray_prepare(source, cfg, cpus))
    seconds = sorted(summary["seconds"] for summary in runs)
    row = _row(
        f"audiogan prepare on Ray, {cpus} CPU",
        runs[0]["clips"],
        statistics.median_high(seconds),
        cpus,
    )
    row["seconds_all_runs"] = seconds
    row["wall_seconds"] = round(statistics.median_high(r["wall_seconds"] for r in runs), 2)
    row["bytes_per_clip"] = round(runs[0]["bytes_per_clip"])
    return row


def _limits(stages: dict, sample: list[dict], cfg: PrepareConfig) -> dict:
    """What one core can do at best: the per-clip stages with nothing else (compute), and the
    least memory traffic a clip needs (its source file read once, its 16-bit clip written once)
    at the measured copy bandwidth."""
    compute_ms = sum(stage["ms_per_clip"] for stage in stages.values())
    source_bytes = statistics.fmean(item["size_bytes"] for item in sample) if sample else 0.0
    moved = source_bytes + 2 * cfg.clip_samples
    bandwidth = memory_bandwidth_gb_s()
    return {
        "compute_ms_per_clip": round(compute_ms, 3),
        "compute_clips_per_second_per_core": round(1000 / compute_ms, 1) if compute_ms else None,
        "memory_gb_per_second": round(bandwidth, 2),
        "bytes_moved_per_clip": round(moved),
        "memory_clips_per_second_per_core": round(bandwidth * 1e9 / moved, 1) if moved else None,
    }


def _row(pipeline: str, clips: int, seconds: float, cores: int) -> dict:
    per_second = clips / seconds if seconds > 0 else 0.0
    return {
        "pipeline": pipeline,
        "clips": clips,
        "seconds": round(seconds, 2),
        "cores": cores,
        "clips_per_second": round(per_second, 1),
        "clips_per_second_per_core": round(per_second / cores, 1),
    }


def format_prepare_table(result: dict) -> list[str]:
    lines = [
        f"prepare benchmark: {result['files']} files in {result['source']} "
        f"({result['sample_files']} for the one-process rows), {result['cpu_count']} cores",
        "",
        "| pipeline | clips | seconds | clips/s | clips/s per core | x naive per core "
        "| wall s, Ray's start-up in | x naive, wall | bytes a clip | seconds of each run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]

    def shown(value) -> str:
        return "" if value is None else str(value)

    for row in result["rows"]:
        runs = ", ".join(str(s) for s in row.get("seconds_all_runs", []))
        lines.append(
            f"| {row['pipeline']} | {row['clips']} | {row['seconds']} | {row['clips_per_second']} "
            f"| {row['clips_per_second_per_core']} | {shown(row.get('x_naive_per_core'))} "
            f"| {shown(row.get('wall_seconds'))} | {shown(row.get('x_naive_wall'))} "
            f"| {shown(row.get('bytes_per_clip'))} | {runs} |"
        )
    lines += ["", "| stage (one process) | ms per clip | clips/s |", "|---|---:|---:|"]
    for stage, figures in result["stages"].items():
        lines.append(f"| {stage} | {figures['ms_per_clip']} | {figures['clips_per_second']} |")
    if "scaling" in result:
        s = result["scaling"]
        lines += ["", f"scaling: {s['cpus'][0]} -> {s['cpus'][1]} CPUs: x{s['speedup']}"]
    if "ray_startup" in result:
        up = result["ray_startup"]
        lines += [
            "",
            f"Ray alone, {up['cpus']} CPU(s): import {up['import_s']} s, local instance up in "
            f"{up['init_s']} s, shut down in {up['shutdown_s']} s",
        ]
    limit = result["limits"]
    lines += [
        "",
        f"limits per core: the stages alone {limit['compute_ms_per_clip']} ms a clip "
        f"({limit['compute_clips_per_second_per_core']} clips/s); memory copy "
        f"{limit['memory_gb_per_second']} GB/s over {limit['bytes_moved_per_clip']} bytes a clip "
        f"(its file read, its clip written) = {limit['memory_clips_per_second_per_core']} clips/s",
    ]
    return lines


# ---------------------------------------------------------------------------------------------
# Training


@contextlib.contextmanager
def _one_torch_thread():
    """torch on one thread inside, as a half-CPU Ray worker runs; the old setting after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def matmul_peak_gflops(size: int = 1024, repeats: int = 10) -> float:
    """fp32 matrix-product throughput of one thread: the yardstick for achieved FLOP/s."""
    import torch

    with _one_torch_thread():
        a, b = torch.rand(size, size), torch.rand(size, size)
        a @ b
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        seconds = (time.perf_counter() - started) / repeats
    return 2 * size**3 / seconds / 1e9


def count_flops(run) -> int:
    """FLOPs of the matrix products and convolutions `run()` executes (torch's own formulas).

    FlopCounterMode's module tracker cannot follow the gradient penalty's autograd.grad, so the
    same formula registry is applied from a plain dispatch mode.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    registry = FlopCounterMode(display=False).flop_registry

    class Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = registry.get(func._overloadpacket)
            if formula is not None:
                Counter.total += formula(*args, **kwargs, out_val=out)
            return out

    with Counter():
        run()
    return Counter.total


# A conditional model is sized and timed with this many classes (build ignores it otherwise).
COUNTED_CLASSES = 2


def step_flops(gan, real, labels) -> float:
    """FLOPs of one gan_step, averaged over `r1_every` consecutive steps: with lazy R1 only one
    step in that many carries the penalty's double backward."""
    from audiogan.step import gan_step

    every = gan.cfg.r1_every if gan.cfg.r1_weight else 1
    return sum(count_flops(lambda: gan_step(gan, real, labels)) for _ in range(every)) / every


def _window_rates(
    step: Callable[[], object],
    clips_per_step: int,
    steps: int,
    window: int,
    synchronize: Callable[[], object] = lambda: None,
) -> list[float]:
    """clips/s of `step()` in each of steps // window (at least one) windows of `window` steps;
    `synchronize` waits for queued device work before a window's clock stops."""
    rates = []
    for _ in range(max(steps // window, 1)):
        started = time.perf_counter()
        for _ in range(window):
            step()
        synchronize()
        rates.append(window * clips_per_step / (time.perf_counter() - started))
    return rates


def plain_training_rate(cfg, clip_samples: int, steps: int, window: int) -> dict:
    """The same gan_step in a plain loop: one process, one thread, tensors already in memory,
    in the preset's precision (cfg.precision on this CPU).

    Timed in windows of `window` steps, as the Ray runs log them; the rate is the median window.
    """
    import torch

    from audiogan.models import build
    from audiogan.step import autocast_for, gan_step, make_gan

    with _one_torch_thread():
        torch.manual_seed(cfg.seed)
        generator, discriminator = build(cfg, clip_samples, COUNTED_CLASSES)
        gan = make_gan(generator, discriminator, cfg)
        real = [torch.rand(cfg.batch_size, 1, clip_samples) * 2 - 1 for _ in range(cfg.n_critic)]
        label = torch.arange(cfg.batch_size) % COUNTED_CLASSES
        labels = [label if cfg.conditional else None] * cfg.n_critic
        autocast = autocast_for(cfg.precision, torch.device("cpu"))
        gan_step(gan, real, labels, autocast)  # warm-up
        flops = step_flops(gan, real, labels)
        clips_per_step = cfg.n_critic * cfg.batch_size
        rates = _window_rates(
            lambda: gan_step(gan, real, labels, autocast), clips_per_step, steps, window
        )
    rate = statistics.median(rates)
    return {
        "samples_per_s": rate,
        "window_rates": [round(r, 1) for r in rates],
        "seconds_per_step": cfg.n_critic * cfg.batch_size / rate,
        "flops_per_step": flops,
    }


def r1_period(cfg) -> int:
    """G steps from one lazy R1 update to the next (1 without R1): a timing window of a multiple
    of it carries R1's share of the cost, where a shorter one would have it or not."""
    if not cfg.r1_weight or cfg.loss == "wgan-gp":
        return 1
    return math.lcm(cfg.r1_every, cfg.n_critic) // cfg.n_critic


def whole_windows(cfg, window: int, steps: int, log=print) -> tuple[int, int]:
    """(window, steps): `window` rounded up to a multiple of cfg's R1 period, and `steps` to a
    multiple of the window, saying so when either changes."""
    period = r1_period(cfg)
    rounded = -(-window // period) * period
    if rounded != window:
        log(f"bench: windows of {rounded} steps, not {window}: R1 runs on one step in {period}")
    whole = -(-steps // rounded) * rounded
    if whole != steps:
        log(f"bench: {whole} steps, not {steps}: whole windows of {rounded}")
    return rounded, whole


def ray_training_rate(cfg, data_url: str, workers: int, runs_dir: str, skip: int) -> dict:
    """samples/s of `audiogan train` with N workers: the median of its logged windows after the
    first `skip` (the first epoch streams from Ray Data; later ones come from the shard cache)."""
    from audiogan import runfolder, train

    spec = train.RunSpec(data_url, runs_dir, f"bench-{cfg.model}-{workers}", workers, False)
    summary = train.train(cfg, spec)
    if summary["error"]:
        raise AudioganError(f"training with {workers} worker(s) failed: {summary['error']}")
    fs, root = storage.resolve(runs_dir)
    history = runfolder.read_metrics(fs, storage.join(root, spec.name))
    measured = history[skip:] or history
    return {
        "samples_per_s": statistics.median(row["samples_per_s"] for row in measured),
        "window_rates": [row["samples_per_s"] for row in measured],
        "data_wait": statistics.median(row["data_wait"] for row in measured),
    }


# A Ray run's first windows stream the first epoch from Ray Data; the rate is of the others.
RAY_SKIPPED_WINDOWS = 2


def bench_train(
    config_path: str,
    overrides: dict | None = None,
    clip_seconds: float = 1.0,
    steps: int = 60,
    window: int = 5,
    worker_counts: tuple[int, ...] = (1, 2),
    log=print,
) -> dict:
    """Plain loop vs Ray Train with 1 and 2 CPU workers, on a preset (with `overrides`) at a
    clip length. Evaluation, samples and the EMA are off: the figure is the training step's.

    Every pipeline runs `steps` training steps timed in windows of `window` steps (rounded up to
    a multiple of the preset's R1 period, and `steps` to whole windows); each rate is the median
    window, which the page cache and other processes disturb far less than a mean.
    """
    from audiogan import synth
    from audiogan.config import TrainConfig, load_config
    from audiogan.connect import start_ray
    from audiogan.data import prepare

    budget = {"max_steps": steps, "log_every": window, "checkpoint_every": steps,
              "sample_every": 10**9, "eval_every": 10**9, "ema_decay": 0.0}  # fmt: skip
    cfg = load_config(TrainConfig, config_path, (overrides or {}) | budget)
    window, steps = whole_windows(cfg, window, steps, log)
    if steps < (RAY_SKIPPED_WINDOWS + 2) * window:
        raise AudioganError(
            f"--steps must be at least {RAY_SKIPPED_WINDOWS + 2} windows of {window} steps (a "
            f"Ray run's first {RAY_SKIPPED_WINDOWS} are not counted), got {steps}"
        )
    timed = {"max_steps": steps, "log_every": window, "checkpoint_every": steps}
    cfg = load_config(TrainConfig, config_path, (overrides or {}) | budget | timed)
    prepare_cfg = PrepareConfig(clip_seconds=clip_seconds)
    result: dict = {
        "model": cfg.model,
        "preset": os.path.basename(config_path),
        "overrides": overrides or {},
        "clip_seconds": clip_seconds,
        "steps": steps,
        "window": window,
        "config": to_dict(cfg),
        "rows": [],
    }

    log("bench: matrix-product peak (fp32, 1 thread) ...")
    peak = matmul_peak_gflops()
    result["matmul_peak_gflops"] = round(peak, 1)
    log(f"bench: plain gan_step loop, {cfg.model}, {steps} steps ...")
    plain = plain_training_rate(cfg, prepare_cfg.clip_samples, steps, window)
    result["flops_per_step"] = plain["flops_per_step"]
    result["rows"].append(_plain_row(cfg, plain, peak))

    with tempfile.TemporaryDirectory() as scratch:
        raw, prepared = os.path.join(scratch, "raw"), os.path.join(scratch, "prepared")
        synth.synthesize(raw, clips_per_class=8, seed=0)
        start_ray(dashboard=True, log_to_driver=False)  # unless the command started it
        prepare(raw, prepared, prepare_cfg, log=lambda _: None)
        for workers in worker_counts:
            log(f"bench: Ray Train, {workers} CPU worker(s), {steps} steps ...")
            runs = os.path.join(scratch, "runs")
            rate = ray_training_rate(cfg, prepared, workers, runs, skip=RAY_SKIPPED_WINDOWS)
            result["rows"].append(_ray_row(cfg, workers, rate, plain, peak))

    result |= _ray_costs(result["rows"])
    return result


def _plain_row(cfg, plain: dict, peak: float) -> dict:
    """The table's row for the plain loop; its FLOP/s against one thread's matmul peak."""
    achieved = plain["flops_per_step"] / plain["seconds_per_step"] / 1e9
    return {
        "pipeline": "plain PyTorch loop, 1 process, 1 thread",
        "workers": 1,
        "samples_per_s": round(plain["samples_per_s"], 1),
        "g_steps_per_minute": _g_steps_per_minute(cfg, plain["samples_per_s"], 1),
        "window_rates": plain["window_rates"],
        "gflops": round(achieved, 2),
        "percent_of_peak": round(100 * achieved / peak, 1),
    }


def _ray_row(cfg, workers: int, rate: dict, plain: dict, peak: float) -> dict:
    """The table's row for Ray Train with `workers` workers. Its FLOP/s take the plain loop's
    count per step: the step is the same gan_step, only its clips per second differ."""
    gflops = rate["samples_per_s"] / (cfg.n_critic * cfg.batch_size) * plain["flops_per_step"] / 1e9
    return {
        "pipeline": f"Ray Train, {workers} CPU worker(s)",
        "workers": workers,
        "samples_per_s": round(rate["samples_per_s"], 1),
        "g_steps_per_minute": _g_steps_per_minute(cfg, rate["samples_per_s"], workers),
        "window_rates": rate["window_rates"],
        "data_wait": rate["data_wait"],
        "gflops": round(gflops, 2),
        "percent_of_peak": round(100 * gflops / (peak * workers), 1),
    }


def _g_steps_per_minute(cfg, samples_per_s: float, workers: int) -> float:
    """G steps a minute of a run whose workers together put `samples_per_s` real clips
    through D: each step takes n_critic batches on every worker."""
    return round(60 * samples_per_s / (cfg.n_critic * cfg.batch_size * workers), 1)


def _ray_costs(rows: list[dict]) -> dict:
    """Ray's overhead (1 worker against the plain loop, rows[0]) and the 2-worker scaling
    efficiency, for the worker counts that ran."""
    by_workers = {row["workers"]: row for row in rows[1:]}
    plain_rate = rows[0]["samples_per_s"]
    costs = {}
    if 1 in by_workers:
        costs["ray_overhead_percent"] = round(
            100 * (1 - by_workers[1]["samples_per_s"] / plain_rate), 1
        )
    if 1 in by_workers and 2 in by_workers:
        costs["scaling_efficiency_2_workers"] = round(
            by_workers[2]["samples_per_s"] / (2 * by_workers[1]["samples_per_s"]), 2
        )
    return costs


def format_train_table(result: dict) -> list[str]:
    settings = " ".join(f"{k}={v}" for k, v in result.get("overrides", {}).items())
    lines = [
        f"training benchmark: {result['model']} ({result['preset']}"
        f"{' ' + settings if settings else ''}), {result.get('clip_seconds', '?')} s clips, "
        f"{result['flops_per_step'] / 1e9:.2f} GFLOP per gan_step, "
        f"matrix-product peak {result['matmul_peak_gflops']} GFLOP/s per thread",
        "",
        f"{result['steps']} steps per pipeline, timed in windows of {result['window']}; "
        "samples/s is the median window",
        "",
        "| pipeline | samples/s | G steps a minute | GFLOP/s | % of peak | waiting for data "
        "| every window |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        wait = row.get("data_wait")
        lines.append(
            f"| {row['pipeline']} | {row['samples_per_s']} | {row.get('g_steps_per_minute', '')} "
            f"| {row['gflops']} "
            f"| {row['percent_of_peak']} | {'' if wait is None else f'{100 * wait:.1f}%'} "
            f"| {', '.join(str(r) for r in row['window_rates'])} |"
        )
    if "ray_overhead_percent" in result:
        lines.append(f"\nRay overhead (1 worker vs plain): {result['ray_overhead_percent']}%")
    if "scaling_efficiency_2_workers" in result:
        lines.append(f"2-worker scaling efficiency: {result['scaling_efficiency_2_workers']}")
    return lines


# ---------------------------------------------------------------------------------------------
# model: what one training step costs, for sizing a cluster

RING_WORKERS = (2, 4, 8, 16)


def bench_model(
    config_path: str, overrides: dict, clip_seconds: float = 4.0, sample_rate_hz: int = 16000
) -> dict:
    """Parameters of G and D, FLOPs of one gan_step per worker, and the gradient bytes DDP
    all-reduces per step, for a preset at a clip length. No Ray, no timing.

    FLOPs are counted on a batch of 2 and scaled to the preset's batch: every counted operation
    (matrix products and convolutions) grows linearly with the batch. DDP all-reduces the fp32
    gradients of the module each backward pass trains: D's in each of the n_critic D updates,
    G's (D frozen) in the G update. Not counted: DDP's broadcast of buffers (the BatchNorm
    statistics of the DCGAN baseline) before each forward pass. A conditional model is counted
    with COUNTED_CLASSES classes (its label embeddings grow with the number of classes).
    """
    import dataclasses

    import torch

    from audiogan.config import TrainConfig, load_config
    from audiogan.models import build
    from audiogan.step import make_gan

    cfg = load_config(TrainConfig, config_path, overrides)
    clip_samples = PrepareConfig(
        clip_seconds=clip_seconds, sample_rate_hz=sample_rate_hz
    ).clip_samples
    counted_batch = min(2, cfg.batch_size)
    small = dataclasses.replace(cfg, batch_size=counted_batch)
    torch.manual_seed(cfg.seed)
    generator, discriminator = build(small, clip_samples, COUNTED_CLASSES, sample_rate_hz)
    gan = make_gan(generator, discriminator, small)
    real = [torch.rand(counted_batch, 1, clip_samples) * 2 - 1 for _ in range(cfg.n_critic)]
    label = torch.zeros(counted_batch, dtype=torch.long)
    labels = [label if cfg.conditional else None] * cfg.n_critic
    flops = round(step_flops(gan, real, labels) * cfg.batch_size / counted_batch)

    def trained(module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    g_params, d_params = trained(generator), trained(discriminator)
    allreduce_bytes = 4 * (g_params + cfg.n_critic * d_params)
    clips_per_step = cfg.batch_size * cfg.n_critic
    return {
        "model": cfg.model,
        "preset": os.path.basename(config_path),
        "clip_samples": clip_samples,
        "clip_seconds": clip_seconds,
        "sample_rate_hz": sample_rate_hz,
        "batch_size": cfg.batch_size,
        "n_critic": cfg.n_critic,
        "g_params": g_params,
        "d_params": d_params,
        "flops_per_step": flops,
        "clips_per_step": clips_per_step,
        "flops_per_clip": flops // clips_per_step,
        "allreduce_bytes_per_step": allreduce_bytes,
        # A ring all-reduce sends (and receives) 2 (N - 1) / N of the buffer per worker.
        "ring_bytes_per_worker": {n: 2 * (n - 1) * allreduce_bytes // n for n in RING_WORKERS},
    }


def format_model_table(result: dict) -> list[str]:
    mb = lambda n: f"{n / 1e6:.1f} MB"  # noqa: E731
    rows = [
        ("G", result["g_params"], 1),
        ("D", result["d_params"], result["n_critic"]),
    ]
    lines = [
        f"model size: {result['model']} ({result['preset']}), {result['clip_samples']}-sample "
        f"clips ({result['clip_seconds']} s at {result['sample_rate_hz']} Hz), batch "
        f"{result['batch_size']} per worker, n_critic {result['n_critic']}",
        "",
        "| network | parameters | fp32 gradients | backward passes a step | all-reduced a step |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, params, passes in rows:
        lines.append(
            f"| {name} | {params:,} | {mb(4 * params)} | {passes} | {mb(4 * params * passes)} |"
        )
    ring = ", ".join(
        f"{n} workers {mb(sent)}" for n, sent in result["ring_bytes_per_worker"].items()
    )
    lines += [
        "",
        f"per step and worker: {result['flops_per_step'] / 1e9:.1f} GFLOP for "
        f"{result['clips_per_step']} real clips, {result['flops_per_clip'] / 1e9:.2f} GFLOP a "
        "clip (torch's formulas, counted at batch 2 and scaled)",
        f"all-reduced per step: {mb(result['allreduce_bytes_per_step'])}; a ring all-reduce "
        f"sends and receives per worker: {ring}",
    ]
    return lines


# What bench_step's result repeats of bench_model's, for its table's heading.
STEP_MODEL_KEYS = ("preset", "model", "clip_samples", "batch_size", "n_critic", "flops_per_step")


def bench_step(
    config_path: str,
    overrides: dict,
    device: str = "cuda",
    clip_seconds: float = 4.0,
    steps: int = 30,
    window: int = 5,
    profile_top: int = 0,
    log=print,
) -> dict:
    """samples/s and achieved FLOP/s of one worker's training step on one device, the way a Ray
    Train worker runs it: G and D each under DDP (NCCL on a GPU, gloo on the CPU, in a group of
    one process, so every gradient still goes through the all-reduce), bf16 autocast on a GPU
    (and fp32 beside it), batches already on the device. No Ray: its per-step cost is what
    `bench train` measures; this is the device's part. On the CPU it runs on one thread, as a
    training worker of the 2-core machine does, beside one thread's matrix-product peak.
    `profile_top` > 0 adds profile_step's table of the costliest operators. `window` is rounded
    up to a multiple of the preset's R1 period, and `steps` to whole windows (whole_windows).
    """
    import torch
    import torch.distributed as dist

    from audiogan.config import TrainConfig, load_config
    from audiogan.step import resolved_precision

    if device == "cuda" and not torch.cuda.is_available():
        raise AudioganError("bench step --device cuda needs a CUDA GPU; none is visible")
    cfg = load_config(TrainConfig, config_path, overrides)
    window, steps = whole_windows(cfg, window, steps, log)
    model = bench_model(config_path, overrides, clip_seconds)  # sizes and FLOPs of one step
    target = torch.device(device)
    backend = "nccl" if target.type == "cuda" else "gloo"
    # bf16 wherever the device computes in it natively (every GPU here; a CPU with AVX512-BF16
    # or AMX), float32 beside it; the profile is of the precision the preset trains in.
    precisions = ("bf16", "fp32") if resolved_precision("bf16", target) == "bf16" else ("fp32",)
    trained_in = resolved_precision(cfg.precision, target)

    cudnn_before = torch.backends.cudnn.benchmark
    cudnn_benchmark = target.type == "cuda"  # as the training workers set it
    torch.backends.cudnn.benchmark = cudnn_benchmark
    # A group of one process meets in an in-memory store: no port to open.
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    threads = contextlib.nullcontext() if target.type == "cuda" else _one_torch_thread()
    try:
        with threads:
            rows = [
                _measure_step(cfg, model, target, precision, steps, window)
                for precision in precisions
            ]
            profiled = profile_top and profile_step(
                cfg, model, target, trained_in, window, profile_top
            )
            peak = None if target.type == "cuda" else matmul_peak_gflops()
    finally:
        dist.destroy_process_group()
        torch.backends.cudnn.benchmark = cudnn_before  # a process-wide flag: left as it was
    for row in rows:
        if peak:
            gflops = model["flops_per_step"] / row["seconds_per_step"] / 1e9
            row["percent_of_peak"] = round(100 * gflops / peak, 2)
    return {
        "device": torch.cuda.get_device_name(target) if target.type == "cuda" else "cpu",
        "cudnn_benchmark": cudnn_benchmark,
        "backend": backend,
        **{key: model[key] for key in STEP_MODEL_KEYS},
        "steps": steps,
        "window": window,
        "torch": torch.__version__,
        "threads": None if target.type == "cuda" else 1,
        "matmul_peak_gflops": peak and round(peak, 1),
        "rows": rows,
        **({"profile": profiled} if profiled else {}),
    }


def _measure_step(cfg, model: dict, target, precision: str, steps: int, window: int) -> dict:
    """One precision's row of bench_step: fresh G and D under DDP, warmed up, then timed.

    `model` is bench_model's result for the same preset: its clip length and its FLOPs and
    clips per step.
    """
    import torch

    from audiogan.step import gan_step

    gan, real, labels, autocast = _step_inputs(cfg, model, target, precision)

    def synchronize():
        if target.type == "cuda":
            torch.cuda.synchronize()

    if target.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(3):  # warm-up: cuDNN picks its algorithms here
        gan_step(gan, real, labels, autocast)
    synchronize()
    rates = _window_rates(
        lambda: gan_step(gan, real, labels, autocast),
        model["clips_per_step"],
        steps,
        window,
        synchronize,
    )
    rate = statistics.median(rates)
    step_s = model["clips_per_step"] / rate
    memory = torch.cuda.max_memory_allocated() / 2**30 if target.type == "cuda" else None
    return {
        "precision": precision,
        "samples_per_s": round(rate, 1),
        "window_rates": [round(r, 1) for r in rates],
        "seconds_per_step": round(step_s, 4),
        "tflops": round(model["flops_per_step"] / step_s / 1e12, 2),
        "peak_memory_gib": None if memory is None else round(memory, 2),
    }


def _step_inputs(cfg, model: dict, target, precision: str):
    """(gan, real batches, label batches, autocast) for timing or profiling gan_step."""
    import torch

    from audiogan.step import autocast_for

    torch.manual_seed(cfg.seed)
    gan = _ddp_gan(cfg, model["clip_samples"], target)
    real = [
        torch.rand(cfg.batch_size, 1, model["clip_samples"], device=target) * 2 - 1
        for _ in range(cfg.n_critic)
    ]
    label = torch.zeros(cfg.batch_size, dtype=torch.long, device=target)
    labels = [label if cfg.conditional else None] * cfg.n_critic
    return gan, real, labels, autocast_for(precision, target)


def profile_step(cfg, model: dict, target, precision: str, steps: int, top: int) -> dict:
    """torch.profiler over `steps` gan_steps (after 3 of warm-up): the `top` operators by their
    own time (on the GPU, its kernels' time), each per step and as a share of the total."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from audiogan.step import gan_step

    gan, real, labels, autocast = _step_inputs(cfg, model, target, precision)
    for _ in range(3):
        gan_step(gan, real, labels, autocast)
    on_gpu = target.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as profiler:
        for _ in range(steps):
            gan_step(gan, real, labels, autocast)
        if on_gpu:
            torch.cuda.synchronize()
    key = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    events = [e for e in profiler.key_averages() if getattr(e, key) > 0]
    total_us = sum(getattr(e, key) for e in events)
    events.sort(key=lambda e: getattr(e, key), reverse=True)
    return {
        "precision": precision,
        "steps": steps,
        "clock": "GPU kernels" if on_gpu else "CPU",
        "ms_per_step": round(total_us / steps / 1000, 2),
        "top": [
            {
                "operator": e.key,
                "ms_per_step": round(getattr(e, key) / steps / 1000, 2),
                "percent": round(100 * getattr(e, key) / total_us, 1),
                "calls_per_step": round(e.count / steps, 1),
            }
            for e in events[:top]
        ],
    }


def _ddp_gan(cfg, clip_samples: int, target):
    """G and D built (with COUNTED_CLASSES classes, as bench_model counts them) on `target`,
    each under DDP as a Ray Train worker wraps them, so every gradient goes through the
    all-reduce."""
    from torch.nn.parallel import DistributedDataParallel

    from audiogan.models import build
    from audiogan.step import make_gan

    generator, discriminator = (
        DistributedDataParallel(
            net.to(target), device_ids=[target] if target.type == "cuda" else None
        )
        for net in build(cfg, clip_samples, COUNTED_CLASSES)
    )
    return make_gan(generator, discriminator, cfg)


def format_step_table(result: dict) -> list[str]:
    lines = [
        f"one worker's training step on {result['device']} ({result['backend']} DDP, one "
        f"process): {result['model']} ({result['preset']}), {result['clip_samples']}-sample "
        f"clips, batch {result['batch_size']} x n_critic {result['n_critic']}, "
        f"{result['flops_per_step'] / 1e12:.2f} TFLOP a step; the median of timing windows "
        f"of {result.get('window', '?')} over {result['steps']} steps (torch {result['torch']}, "
        f"cuDNN benchmark {'on' if result['cudnn_benchmark'] else 'off'})",
        "",
        "| precision | clips/s | s/step | achieved TFLOP/s | peak memory |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        memory = "-" if row["peak_memory_gib"] is None else f"{row['peak_memory_gib']:.1f} GiB"
        lines.append(
            f"| {row['precision']} | {row['samples_per_s']:,.1f} | {row['seconds_per_step']:.3f} "
            f"| {row['tflops']:.2f} | {memory} |"
        )
    if result.get("matmul_peak_gflops"):
        shares = ", ".join(f"{row['percent_of_peak']}%" for row in result["rows"])
        lines += [
            "",
            f"on 1 thread; its fp32 matrix-product peak: {result['matmul_peak_gflops']} GFLOP/s "
            f"(the step reaches {shares} of it)",
        ]
    if "profile" in result:
        profiled = result["profile"]
        lines += [
            "",
            f"profile ({profiled['precision']}, {profiled['steps']} steps, {profiled['clock']} "
            f"time {profiled['ms_per_step']} ms a step): the costliest operators by their own time",
            "",
            "| operator | ms a step | share | calls a step |",
            "|---|---:|---:|---:|",
        ]
        for op in profiled["top"]:
            lines.append(
                f"| {op['operator']} | {op['ms_per_step']} | {op['percent']}% "
                f"| {op['calls_per_step']} |"
            )
    return lines
