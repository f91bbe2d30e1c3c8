"""Ray Train: `train_loop_per_worker` and `build_trainer`, the only Ray Train code.

The loop adapts a Ray dataset shard to `step.gan_step`; rank 0 writes samples, plots and
metrics.jsonl into the run folder (Ray Train V2 does not sync workers' files), and attaches the
checkpoint to `ray.train.report`, which every rank calls equally often.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pyarrow.fs as pafs
import ray
import ray.train
import ray.train.torch
import torch
from ray.data.expressions import col

from audiogan import checkpoint, models, report, samples, storage
from audiogan import metrics as quality_metrics
from audiogan.config import TrainConfig, from_dict, to_dict
from audiogan.data import CLIPS, read_manifest
from audiogan.errors import AudioganError
from audiogan.generate import render
from audiogan.step import gan_step, make_gan, sample_latent, sampling_generator, unwrap

# Where Ray Train 2.60 keeps the list of checkpoints it manages, in the run folder.
RAY_CHECKPOINT_SNAPSHOT = "checkpoint_manager_snapshot.json"
T = TypeVar("T")


class TrainError(AudioganError):
    """A run that cannot start: no dataset, a bad storage URL, too few resources."""


@dataclass(frozen=True)
class RunSpec:
    """Where a run reads and writes; shipped to the workers with the config."""

    data_url: str
    storage_url: str
    name: str
    workers: int
    gpu: bool
    # CPUs of each CPU worker, and of each Ray Data read task. Half a CPU per worker and a whole
    # one per read fit a 2-worker run on 2 cores (2 full-CPU workers there starve the reads and
    # the run hangs); a sweep running two trials at once gives each a quarter of both.
    cpus_per_worker: float = 0.5
    cpus_per_read: float = 1.0
    # Keep the keep_checkpoints checkpoints of lowest mel_fd (and the latest) instead of the
    # newest: a sweep's best.json points at its best trial's best checkpoint.
    keep_best: bool = False

    def __post_init__(self) -> None:
        # One folder under the storage: Ray Train records checkpoint paths under it verbatim.
        if not storage.is_plain_name(self.name):
            raise TrainError(f"--name must be a plain folder name, got {self.name!r}")

    @property
    def run_url(self) -> str:
        """STORAGE/NAME as a URL (or path), for messages: storage.display hides credentials."""
        return self.storage_url.rstrip("/") + "/" + self.name


def _batches(cfg: TrainConfig, device, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (audio (B, 1, T), label_id (B,)) batches of this shard, epoch after epoch.

    Every epoch of a Ray Data shard restarts its streaming split (about a second here), so a
    shard that fits in `cfg.shard_cache_mb` is kept after the first epoch and reshuffled in
    memory; a larger one streams every epoch.
    """
    shard = ray.train.get_dataset_shard("train")

    def stream():
        for batch in shard.iter_torch_batches(batch_size=cfg.batch_size, drop_last=True):
            yield batch["audio"].float().unsqueeze(1), batch["label_id"].long()

    cached, cached_bytes = [], 0
    for audio, labels in stream():
        if cached is not None:
            cached_bytes += audio.nbytes
            if cached_bytes <= cfg.shard_cache_mb << 20:
                cached.append((audio, labels))
            else:
                cached = None
        yield audio.to(device), labels.to(device)
    if not cached:
        while True:
            for audio, labels in stream():
                yield audio.to(device), labels.to(device)
    audio = torch.cat([a for a, _ in cached]).to(device)  # (N, 1, T)
    labels = torch.cat([lab for _, lab in cached]).to(device)
    order_rng = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(audio), generator=order_rng)
        for start in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):
            pick = order[start : start + cfg.batch_size].to(device)
            yield audio[pick], labels[pick]


class _RunFolder:
    """Reads and writes in STORAGE/NAME: samples, plots, metrics.jsonl, the report, checkpoints.

    Each is retried with growing waits for `retry_s` seconds while the storage cannot be
    reached (storage.retrying), then fails with a StorageError naming the run's URL: a short
    outage costs a pause, a long one ends the run with its finished checkpoints intact.
    """

    def __init__(
        self,
        fs: pafs.FileSystem,
        root: str,
        url: str,
        retry_s: float,
        log: Callable[[str], None] = print,
    ):
        self.fs, self.root, self.url, self.retry_s, self.log = fs, root, url, retry_s, log

    def retry(self, what: str, call: Callable[[], T]) -> T:
        return storage.retrying(call, what, self.url, self.retry_s, self.log)

    def write(self, relative: str, data: bytes) -> None:
        path = storage.join(self.root, relative)
        self.retry(f"writing {relative}", lambda: storage.write_bytes(self.fs, path, data))

    def exists(self, relative: str) -> bool:
        path = storage.join(self.root, relative)
        return self.retry(f"reading {relative}", lambda: storage.exists(self.fs, path))

    def newest_checkpoint(self, log: Callable[[str], None]) -> tuple[str | None, dict | None]:
        """(folder, state) of the newest checkpoint that loads (checkpoint.newest_loadable)."""
        return self.retry(
            "reading the checkpoints", lambda: checkpoint.newest_loadable(self.fs, self.root, log)
        )

    def save_checkpoint(self, step: int, state: dict) -> str:
        """checkpoint_XXXXXX/ (state.pt, then complete.json); returns the folder's path."""
        folder = storage.join(self.root, f"checkpoint_{step:06d}")
        self.retry(
            f"writing checkpoint_{step:06d}", lambda: checkpoint.save(folder, state, self.fs)
        )
        return folder

    def write_checkpoint(self, step: int, state: dict, keep: int) -> None:
        """save_checkpoint, then all but the newest `keep` deleted (0 keeps all): local mode,
        where Ray Train manages no checkpoints."""
        self.save_checkpoint(step, state)
        if keep:
            self.retry("deleting old checkpoints", lambda: self._prune(keep))

    def _prune(self, keep: int) -> None:
        # Not those Ray Train's checkpoint manager tracks (from distributed runs of the same
        # name): deleting them would break its next resume.
        tracked = self._ray_tracked()
        if tracked is None:
            return  # an unreadable snapshot: keep everything rather than guess
        ours = [
            folder
            for folder in checkpoint.all_checkpoints(self.fs, self.root)
            if folder.rstrip("/").rsplit("/", 1)[-1] not in tracked
        ]
        for old in ours[:-keep]:
            storage.delete(self.fs, old)

    def _ray_tracked(self) -> set[str] | None:
        """Checkpoint folder names in Ray Train 2.60's checkpoint_manager_snapshot.json (None
        when it cannot be read)."""
        path = storage.join(self.root, RAY_CHECKPOINT_SNAPSHOT)
        if not storage.exists(self.fs, path):
            return set()
        try:
            snapshot = json.loads(storage.read_bytes(self.fs, path))
            return {item["checkpoint_dir_name"] for item in snapshot["checkpoint_results"]}
        except (ValueError, KeyError, TypeError):
            return None

    def write_metrics(self, history: list[dict]) -> None:
        """metrics.jsonl whole (S3 cannot append), one JSON object per log step."""
        self.write(report.METRICS, "".join(json.dumps(row) + "\n" for row in history).encode())

    def read_metrics(self, up_to_step: int) -> list[dict]:
        rows = self.retry(
            f"reading {report.METRICS}", lambda: report.read_metrics(self.fs, self.root)
        )
        return [row for row in rows if row["step"] <= up_to_step]

    def write_report(self, config: dict, history: list[dict]) -> None:
        self.retry(
            f"writing {report.REPORT}", lambda: report.write(self.fs, self.root, config, history)
        )


def train_loop_per_worker(config: dict[str, Any]) -> None:
    cfg = from_dict(TrainConfig, config["train"])
    dataset = config["dataset"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    generator, discriminator = models.build(
        cfg, dataset["clip_samples"], len(dataset["labels"]), dataset["sample_rate_hz"]
    )
    generator = ray.train.torch.prepare_model(generator)
    discriminator = ray.train.torch.prepare_model(discriminator)
    gan = make_gan(generator, discriminator, cfg)

    say = print if rank == 0 else lambda _: None
    folder = _RunFolder(
        config["storage_fs"], config["run_dir"], config["run_url"], cfg.storage_retry_s, say
    )
    step = 0
    # The run folder's newest checkpoint: every checkpoint is written there by rank 0 (Ray
    # Train only tracks them), so a run can also switch between local and distributed.
    newest, state = folder.newest_checkpoint(log=say)
    if newest:
        step = checkpoint.restore(gan, state)
        if rank == 0:
            print(f"resume: from {newest.rsplit('/', 1)[-1]} (step {step})", flush=True)
    noise_seed = cfg.seed * 1000 + rank + step  # different noise and order per rank and restart
    torch.manual_seed(noise_seed)

    history = folder.read_metrics(step) if rank == 0 else []
    use_bf16 = device.type == "cuda"
    # Every step has the same shapes, so cuDNN may time its algorithms once and keep the
    # fastest: on an H200 that doubled the bf16 WaveGAN step (`audiogan bench step`).
    torch.backends.cudnn.benchmark = device.type == "cuda"

    def autocast():
        if use_bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    batches = _batches(cfg, device, seed=noise_seed)
    quality = _Quality(cfg, dataset, device) if rank == 0 else None
    window_start, window_samples, window_data_s = time.perf_counter(), 0, 0.0
    started = time.perf_counter()

    while step < cfg.max_steps:
        waited = time.perf_counter()
        reals, labels = zip(*(next(batches) for _ in range(cfg.n_critic)), strict=True)
        window_data_s += time.perf_counter() - waited
        if quality is not None:
            quality.keep_real(reals)
        result = gan_step(
            gan, reals, labels if cfg.conditional else [None] * cfg.n_critic, autocast
        )
        step += 1
        window_samples += cfg.n_critic * cfg.batch_size * world
        step_done = time.perf_counter()
        intervals = (cfg.log_every, cfg.eval_every, cfg.checkpoint_every, cfg.sample_every)
        time_up, diverged = False, False
        if step == cfg.max_steps or any(step % every == 0 for every in intervals):
            time_up, diverged = _agree(cfg, step_done - started, result, world, device)
        if diverged:
            # Nothing after a NaN or an infinity is worth a checkpoint: the last good one stays,
            # and the run ends here without an error Ray Train would retry (it would diverge
            # again); train() reports the divergence from this metrics row.
            if rank == 0:
                history.append({"step": step, **result, "diverged": True})
                folder.write_metrics(history)
            break
        last = step == cfg.max_steps or (time_up and step % cfg.log_every == 0)
        checkpointing = step % cfg.checkpoint_every == 0 or last
        # Every report (at evaluation and checkpoint steps) carries mel_fd: Tune's scheduler
        # and the best-checkpoint choice rank by it.
        evaluating = step % cfg.eval_every == 0 or checkpointing
        if quality is not None and evaluating:
            result["mel_fd"] = quality.mel_fd(gan)

        if step % cfg.log_every == 0 or evaluating:
            # A window runs from the end of one logged step to the end of the next one's
            # gan_step, so evaluation, samples and checkpoints count in the next window.
            elapsed = step_done - window_start
            row = {
                "step": step,
                **{k: round(v, 6) for k, v in result.items()},
                "samples_per_s": round(window_samples / elapsed, 2),
                # The share of the window spent waiting for batches: high means input-bound.
                "data_wait": round(window_data_s / elapsed, 4),
                "wall_s": round(time.perf_counter() - started, 2),
            }
            window_start, window_samples, window_data_s = step_done, 0, 0.0
            if rank == 0:
                history.append(row)
                folder.write_metrics(history)
                quality_note = f"  mel_fd {row['mel_fd']:.3f}" if "mel_fd" in row else ""
                # A run on a time budget (compare sets max_steps out of reach) counts minutes.
                progress = (
                    f"{step} ({row['wall_s'] / 60:.1f}/{cfg.max_minutes:g} min)"
                    if cfg.max_minutes
                    else f"{step}/{cfg.max_steps}"
                )
                print(
                    f"step {progress}  d_loss {row['d_loss']:.4f}  "
                    f"g_loss {row['g_loss']:.4f}  gp {row['gp']:.4f}  "
                    f"{row['samples_per_s']:.1f} samples/s{quality_note}",
                    flush=True,
                )

        if quality is not None and (step % cfg.sample_every == 0 or last):
            quality.write_samples(gan, folder, step)
            folder.write("plots/losses.png", samples.losses_png(history))

        if rank == 0 and checkpointing:
            folder.write_report(to_dict(cfg), history)

        if checkpointing or evaluating:
            # Every rank reports equally often (Ray Train requires it), with its G's checksum:
            # DDP must keep them identical. Rank 0's metrics (with mel_fd) are what Tune sees.
            checksum = sum(p.double().sum().item() for p in unwrap(gan.generator).parameters())
            metrics = {"step": step, **result, "rank": rank, "g_checksum": checksum}
            if checkpointing and config["local"]:
                # Ray Train's local mode stores no checkpoints: rank 0 (the only one) writes its
                # own in the same layout and keeps the newest cfg.keep_checkpoints.
                state = checkpoint.training_state(gan, step, dataset)
                folder.write_checkpoint(step, state, cfg.keep_checkpoints)
                ray.train.report(metrics)
            elif checkpointing and rank == 0:
                # Written by rank 0 with the run folder's retries, then handed to Ray Train,
                # which tracks it (and deletes old ones) without copying it again.
                state = checkpoint.training_state(gan, step, dataset)
                ray.train.report(
                    metrics,
                    checkpoint=ray.train.Checkpoint(
                        folder.save_checkpoint(step, state), filesystem=folder.fs
                    ),
                    checkpoint_dir_name=f"checkpoint_{step:06d}",
                    checkpoint_upload_mode=ray.train.CheckpointUploadMode.NO_UPLOAD,
                )
            else:
                ray.train.report(metrics)
        if last:
            break


def _agree(
    cfg: TrainConfig, seconds: float, result: dict[str, float], world: int, device: torch.device
) -> tuple[bool, bool]:
    """(cfg.max_minutes have passed, a loss is NaN or infinite), decided together: the slowest
    rank's clock and any rank's losses count for all, so every rank stops at the same step (a
    rank that stopped alone would hang DDP)."""
    time_up = bool(cfg.max_minutes) and seconds >= 60 * cfg.max_minutes
    diverged = not all(math.isfinite(value) for value in result.values())
    flags = torch.tensor([float(time_up), float(diverged)], device=device)
    if world > 1:
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    time_up, diverged = flags.tolist()  # one device-to-host copy
    return bool(time_up), bool(diverged)


def _fixed_batch(
    cfg: TrainConfig, n: int, seed: int, num_labels: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The same noise (and, for a conditional model, the labels in turn) at every call."""
    z = sample_latent(cfg, n, "cpu", torch.Generator().manual_seed(seed)).to(device)
    if not cfg.conditional:
        return z, None
    return z, (torch.arange(n) % max(num_labels, 1)).to(device)


class _Quality:
    """Rank 0's view of quality during training: a fixed set of real clips from its shard (the
    first `eval_clips` it trains on) and their log-mel Gaussian; a fixed noise batch whose
    clips are scored against it with `mel_fd` at every evaluation step; and the fixed noise
    batch whose clips are written at every sample step."""

    def __init__(self, cfg: TrainConfig, dataset: dict, device: torch.device):
        self.cfg, self.rate = cfg, dataset["sample_rate_hz"]
        self.real: list[torch.Tensor] = []
        self.kept = 0
        self.reference: quality_metrics.MelReference | None = None
        classes = len(dataset["labels"])
        self.eval_z, self.eval_labels = _fixed_batch(
            cfg, cfg.eval_clips, cfg.seed + 1, classes, device
        )
        self.sample_z, self.sample_labels = _fixed_batch(
            cfg, cfg.num_samples, cfg.seed, classes, device
        )

    def keep_real(self, batches: tuple[torch.Tensor, ...]) -> None:
        for batch in batches:
            if self.kept >= self.cfg.eval_clips:
                return
            clips = batch[: self.cfg.eval_clips - self.kept, 0].float().cpu()
            self.real.append(clips)
            self.kept += len(clips)

    def real_examples(self, n: int) -> np.ndarray:
        return torch.cat(self.real)[:n].numpy()

    def mel_fd(self, gan) -> float:
        reference = self.reference or quality_metrics.MelReference(torch.cat(self.real), self.rate)
        if self.kept >= self.cfg.eval_clips:  # fixed from here on; until then, what there is
            self.reference = reference
        fakes = render(sampling_generator(gan), self.eval_z, self.eval_labels)
        return reference.distance(fakes)

    def write_samples(self, gan, folder: _RunFolder, step: int) -> None:
        """samples/step_XXXXXX/: the fixed noise batch as WAVs and a PNG beside real clips; real
        clips themselves go to samples/real/ once, for the report."""
        audio = render(sampling_generator(gan), self.sample_z, self.sample_labels)
        real = self.real_examples(report.CLIPS_SHOWN)
        if not folder.exists(report.REAL_DIR):
            for i, clip in enumerate(real):
                name = f"{report.REAL_DIR}/real_{i:02d}.wav"
                folder.write(name, samples.wav_bytes(clip, self.rate))
        prefix = f"samples/step_{step:06d}"
        for i, clip in enumerate(audio):
            folder.write(f"{prefix}/sample_{i:02d}.wav", samples.wav_bytes(clip, self.rate))
        png = samples.clips_png(audio[:4], self.rate, real[:2], title=f"step {step}")
        folder.write(f"{prefix}/clips.png", png)


def build_trainer(
    cfg: TrainConfig, spec: RunSpec, callbacks: list | None = None
) -> ray.train.torch.TorchTrainer:
    """The TorchTrainer of a run; `audiogan train` and the Tune trials both build it here."""
    manifest = read_manifest(spec.data_url)
    data_fs, data_root = storage.resolve(spec.data_url)
    run_fs, run_root = storage.resolve(spec.storage_url)
    dataset_info = {
        "clip_samples": manifest["clip_samples"],
        "sample_rate_hz": manifest["sample_rate_hz"],
        "labels": manifest["labels"],
    }
    train_data = _read_clips(storage.join(data_root, CLIPS), data_fs, spec.cpus_per_read)
    if cfg.conditional:
        if not manifest["labels"]:
            raise TrainError(f"conditional=true needs labels; {spec.data_url} has none")
        # Clips without a label (label_id -1) cannot condition anything.
        train_data = train_data.filter(expr=col("label_id") >= 0)
    resources = {"CPU": 1, "GPU": 1} if spec.gpu else {"CPU": spec.cpus_per_worker}
    best_first = {"checkpoint_score_attribute": "mel_fd", "checkpoint_score_order": "min"}
    keep = ray.train.CheckpointConfig(
        num_to_keep=cfg.keep_checkpoints or None, **(best_first if spec.keep_best else {})
    )
    return ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "train": to_dict(cfg),
            "dataset": dataset_info,
            "storage_fs": run_fs,
            "run_dir": storage.join(run_root, spec.name),
            "run_url": storage.display(spec.run_url),
            "local": spec.workers == 0,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec.workers, use_gpu=spec.gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=spec.name,
            storage_path=run_root,
            storage_filesystem=run_fs,
            checkpoint_config=keep,
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            callbacks=callbacks or [],
        ),
        datasets={"train": train_data},
    )


def _read_clips(path: str, fs: pafs.FileSystem, cpus: float) -> ray.data.Dataset:
    """The clips' audio and labels, read by tasks of `cpus` CPUs each."""
    context = ray.data.DataContext.get_current()
    v2 = context.use_datasource_v2
    # Ray Data 2.60's newer Parquet reader lists files in a task of a whole CPU whatever
    # num_cpus says: two sweep trials on 2 cores would wait for it forever. The older reader
    # runs every task at `cpus`. (The dataset keeps a copy of the context made here.)
    context.use_datasource_v2 = v2 and cpus >= 1
    try:
        clips = ray.data.read_parquet(path, filesystem=fs, num_cpus=cpus)
    finally:
        context.use_datasource_v2 = v2
    return clips.select_columns(["audio", "label_id"])


def train(cfg: TrainConfig, spec: RunSpec, callbacks: list | None = None) -> dict:
    """Runs (or resumes) a training run and returns its summary."""
    fs, root = storage.resolve(spec.storage_url)
    url = spec.run_url
    folder = _RunFolder(fs, storage.join(root, spec.name), url, cfg.storage_retry_s)
    try:  # no retries here: before training starts, failing at once loses nothing
        newest, state = checkpoint.newest_loadable(fs, folder.root, log=lambda _: None)
    except OSError as error:  # (the workers say which checkpoint they resume from)
        raise storage.unreachable(url, error) from None
    if newest:  # refuse an incompatible resume here, not in every worker
        checkpoint.check_compatible(cfg, state)
    try:
        result = build_trainer(cfg, spec, callbacks).fit()
    except ray.train.TrainingFailedError as error:
        raise _failure(error, url) from None
    history = folder.read_metrics(cfg.max_steps)
    last = history[-1] if history else {}
    if last.get("diverged"):
        losses = ", ".join(
            f"{key} {last[key]}" for key in ("d_loss", "gp", "g_loss") if key in last
        )
        raise TrainError(f"training diverged at step {last['step']}: {losses}")
    newest = folder.retry("listing the checkpoints", lambda: checkpoint.latest(fs, folder.root))
    if newest and storage.is_s3(spec.storage_url):
        newest = f"s3://{newest}"
    return {
        "run": storage.display(url),
        "steps": last.get("step", 0),
        "d_loss": last.get("d_loss"),
        "g_loss": last.get("g_loss"),
        "samples_per_s": last.get("samples_per_s"),
        "checkpoint": newest,
        "error": None if result.error is None else str(result.error),
    }


def _failure(error: ray.train.TrainingFailedError, url: str) -> AudioganError:
    """The error a failed run ends with: a worker's StorageError as it is (it names the run's
    URL and how long it retried), a storage call of Ray Train's own that failed as one naming
    the URL, and anything else as the end of the worker's traceback."""
    for failure in getattr(error, "worker_failures", {}).values():
        # Ray Train wraps a worker's exception with its traceback text (_base_exc).
        for inner in (
            failure,
            getattr(failure, "_base_exc", None),
            getattr(failure, "cause", None),
        ):
            if isinstance(inner, storage.StorageError):
                return inner
    controller = getattr(error, "controller_failure", None)
    # pyarrow's storage errors are plain OSErrors; Ray's own connection errors are not.
    if isinstance(controller, OSError) and not isinstance(controller, ConnectionError):
        return storage.unreachable(url, controller)
    return TrainError(f"training failed: {_last_lines(str(error))}")


def _last_lines(text: str, count: int = 3) -> str:
    """The end of a worker's traceback, where the exception and its message are."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:])[:600]
