"""Benchmarks: they print a table and a JSON line; nothing here is asserted on time.

`bench_prepare` measures, on the same files in the same run:
  1. the naive baseline: one process, one file at a time, `librosa.load(path, sr=...)`, crop or
     pad, peak-normalise;
  2. audiogan's per-file work in one process, stage by stage (read, decode, resample,
     crop/normalise, Parquet write), the same functions the Ray tasks call;
  3. `audiogan prepare` end to end on Ray with 1, 2, ... CPUs, each in a fresh process.
"""

from __future__ import annotations

import json
import os
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

    from audiogan.data import CLIP_PARQUET_OPTIONS, FILES_PER_BLOCK, clips_table, process_files

    label_ids = {label: i for i, label in enumerate(sorted({str(f["label"]) for f in files}))}
    timings: dict[str, float] = {}
    with threadpool_limits(limits=1), tempfile.TemporaryDirectory() as folder:
        clips, _ = process_files(files, fs, cfg, label_ids, timings)
        started = time.perf_counter()
        # One Parquet file per block of files, as each Ray task writes.
        for first in range(0, len(clips), FILES_PER_BLOCK):
            table = clips_table(clips[first : first + FILES_PER_BLOCK], cfg.clip_samples)
            path = os.path.join(folder, f"clips-{first}.parquet")
            pq.write_table(table, path, **CLIP_PARQUET_OPTIONS)
        timings["write"] = time.perf_counter() - started
    return len(clips), timings


def ray_prepare(source: str, cfg: PrepareConfig, num_cpus: int) -> dict:
    """`audiogan prepare --json` in a fresh process with its own local Ray of `num_cpus` CPUs."""
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
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise AudioganError(f"prepare with {num_cpus} CPUs failed:\n{done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


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
            log(f"bench: naive librosa.load loop on {len(sample)} files ...")
            clips, seconds = naive_prepare([f["path"] for f in sample], cfg)
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

    for cpus in cpu_counts:
        runs = []
        for run in range(1, repeats + 1):
            log(f"bench: audiogan prepare on Ray, {cpus} CPU(s), run {run}/{repeats} ...")
            runs.append(ray_prepare(source, cfg, cpus))
        seconds = sorted(summary["seconds"] for summary in runs)
        row = _row(
            f"audiogan prepare on Ray, {cpus} CPU",
            runs[0]["clips"],
            seconds[len(seconds) // 2],
            cpus,
        )
        row["seconds_all_runs"] = seconds
        result["rows"].append(row)

    naive_row = next((r for r in result["rows"] if r["pipeline"].startswith("naive")), None)
    for row in result["rows"]:
        if naive_row:
            row["x_naive_per_core"] = round(
                row["clips_per_second_per_core"] / naive_row["clips_per_second_per_core"], 2
            )
    ray_rows = [r for r in result["rows"] if "on Ray" in r["pipeline"]]
    if len(ray_rows) >= 2:
        first, last = ray_rows[0], ray_rows[-1]
        result["scaling"] = {
            "cpus": [first["cores"], last["cores"]],
            "speedup": round(last["clips_per_second"] / first["clips_per_second"], 2),
        }
    return result


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
        "| seconds of each run |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        ratio = row.get("x_naive_per_core")
        runs = ", ".join(str(s) for s in row.get("seconds_all_runs", []))
        lines.append(
            f"| {row['pipeline']} | {row['clips']} | {row['seconds']} | {row['clips_per_second']} "
            f"| {row['clips_per_second_per_core']} | {'' if ratio is None else ratio} | {runs} |"
        )
    lines += ["", "| stage (one process) | ms per clip | clips/s |", "|---|---:|---:|"]
    for stage, figures in result["stages"].items():
        lines.append(f"| {stage} | {figures['ms_per_clip']} | {figures['clips_per_second']} |")
    if "scaling" in result:
        s = result["scaling"]
        lines += ["", f"scaling: {s['cpus'][0]} -> {s['cpus'][1]} CPUs: x{s['speedup']}"]
    return lines
