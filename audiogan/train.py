"""Ray Train: `train_loop_per_worker` and `build_trainer`, the only Ray Train code.

The loop adapts a Ray dataset shard to `step.gan_step` and follows `loop.plan_step`; rank 0's
`loop.Monitor` writes samples, plots and metrics.jsonl into the run folder (Ray Train V2 does
not sync workers' files), and `_report` makes the `ray.train.report` call every rank makes
equally often, rank 0's with the checkpoint attached.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs
import ray
import ray.train
import ray.train.torch
import torch
from ray.data.expressions import col

from audiogan import checkpoint, console, evaluator, models, runfolder, storage, tracking
from audiogan.config import TrainConfig, from_dict, to_dict
from audiogan.dataset import CLIPS, audio_as_int16, read_manifest
from audiogan.errors import AudioganError
from audiogan.loop import (
    Monitor,
    StepPlan,
    Throughput,
    agree,
    cached_batches,
    must_agree,
    plan_step,
)
from audiogan.runfolder import RunFolder
from audiogan.step import autocast_for, gan_step, make_gan, resolved_precision, unwrap


class TrainError(AudioganError):
    """A run that cannot start: no dataset, a bad storage URL, too few resources."""


@dataclass(frozen=True)
class RunSpec:
    """Where a run reads and writes; shipped to the workers with the config."""

    data_url: str
    storage_url: str
    name: str
    # A fixed number, or (min, max) for an elastic run, which starts with what the cluster has
    # room for (at least min), shrinks when a node is lost and grows into room that appears.
    workers: int | tuple[int, int]
    gpu: bool
    # CPUs of each CPU worker, and of each Ray Data read task. Half a CPU per worker and a whole
    # one per read fit a 2-worker run on 2 cores (2 full-CPU workers there starve the reads and
    # the run hangs); a sweep running two trials at once gives each a quarter of both.
    cpus_per_worker: float = 0.5
    cpus_per_read: float = 1.0
    # Keep the keep_checkpoints checkpoints of lowest value of this metric (mel_fd or
    # classifier_fd; and the latest) instead of the newest: a sweep's best.json points at its
    # best trial's best checkpoint. "": the newest.
    keep_best: str = ""
    # Ray Train's own INFO lines on the console (a "Reporting training result" line per rank
    # and report, the worker group's start): off unless asked for; its log files keep them.
    verbose: bool = False
    # A sweep's MLflow run, which this run's nests under (where MLflow is used).
    mlflow_parent: str = ""

    def __post_init__(self) -> None:
        # One folder under the storage: Ray Train records checkpoint paths under it verbatim.
        if not storage.is_plain_name(self.name):
            raise TrainError(f"--name must be a plain folder name, got {self.name!r}")
        if isinstance(self.workers, tuple) and not 1 <= self.workers[0] <= self.workers[1]:
            raise TrainError(
                f"elastic workers MIN-MAX need 1 <= MIN <= MAX, got {self.workers[0]}-"
                f"{self.workers[1]}"
            )

    @property
    def local(self) -> bool:
        """Ray Train's local mode: the loop runs in the driver's process."""
        return self.workers == 0

    @property
    def run_url(self) -> str:
        """STORAGE/NAME as a URL (or path), for messages: storage.display hides credentials."""
        return self.storage_url.rstrip("/") + "/" + self.name


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: G and D under DDP on this worker's shard, from the run folder's
    newest checkpoint, until max_steps, max_minutes or a diverged loss."""
    cfg = from_dict(TrainConfig, config["train"])
    dataset = config["dataset"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if not config["verbose"]:
        _quiet_reports()
    gan = _build_gan(cfg, dataset)
    say = console.say if rank == 0 else lambda _: None
    folder = RunFolder(
        config["storage_fs"], config["run_dir"], config["run_url"], cfg.storage_retry_s, say
    )
    step = _resume(gan, folder, world, say)
    # One line from every rank: where it runs, and (at the end) its G, which DDP keeps equal.
    where = f"rank {rank}/{world} on node {ray.get_runtime_context().get_node_id()[:12]}"
    console.say(f"{where} ({ray.util.get_node_ip_address()}): from step {step}")
    noise_seed = cfg.seed * 1000 + rank + step  # different noise and order per rank and restart
    torch.manual_seed(noise_seed)
    # Every step has the same shapes, so cuDNN may time its algorithms once and keep the
    # fastest: on an H200 that doubled the bf16 WaveGAN step (`audiogan bench step`).
    torch.backends.cudnn.benchmark = device.type == "cuda"
    autocast = autocast_for(cfg.precision, device)
    if cfg.precision == "bf16" and resolved_precision(cfg.precision, device) == "fp32":
        # Every rank that falls back says so: a cluster's nodes may have different CPUs.
        console.say(f"{where}: precision=bf16, but its CPU has no native bf16 (AVX512-BF16 or "
                    "AMX): it trains in float32")  # fmt: skip
    batches = cached_batches(
        _shard_stream(cfg), cfg.batch_size, cfg.shard_cache_mb, noise_seed, device,
        epoch_done=lambda clips: console.say(f"{where}: its shard is {clips} clips"),
    )  # fmt: skip
    monitor = None
    if rank == 0:
        url = config["judge_url"]
        mlflow = config["mlflow"]
        tracker = mlflow and tracking.Tracker(
            mlflow["uri"], folder, cfg, dataset, mlflow["run_name"], mlflow["parent"]
        )
        monitor = Monitor(
            cfg, dataset, device, folder, step, url and evaluator.load_judge(url), tracker
        )
    meter = Throughput(world)
    while step < cfg.max_steps:
        reals, labels = zip(*meter.next_batches(batches, cfg.n_critic), strict=True)
        if monitor:
            monitor.keep_real(reals, labels)
        result = gan_step(
            gan, reals, labels if cfg.conditional else [None] * cfg.n_critic, autocast
        )
        step += 1
        meter.stepped(reals)
        time_up, diverged = False, False
        if must_agree(cfg, step):
            time_up, diverged = agree(cfg, meter.step_done - meter.started, result, world, device)
        if diverged:
            # Nothing after a NaN or an infinity is worth a checkpoint: the last good one stays,
            # and the run ends here without an error Ray Train would retry (it would diverge
            # again); train() reports the divergence from this metrics row.
            if monitor:
                monitor.diverged(step, result)
            break
        plan = plan_step(cfg, step, time_up)
        if monitor:
            monitor.after_step(gan, step, result, plan, meter)
        if plan.evaluate:
            _report(gan, step, result, rank, world, plan, folder, dataset, config["local"])
        if plan.last:
            console.say(f"{where}: stopped at step {step}, G checksum {g_checksum(gan):.6f}")
            break


def _quiet_reports() -> None:
    """No "Reporting training result N: TrainingReport(...)" line per rank and report.

    Ray Train 2.60 logs it at INFO from a logger named after its module's file path, outside
    the `ray.train` namespace that RunConfig's LoggingConfig(log_level=...) governs, so it
    reaches the console through the root logger whatever that level says."""
    import logging

    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _build_gan(cfg: TrainConfig, dataset: dict):
    """G and D (the same initial weights on every rank), wrapped for DDP, and their optimisers."""
    torch.manual_seed(cfg.seed)
    generator, discriminator = models.build(
        cfg, dataset["clip_samples"], len(dataset["labels"]), dataset["sample_rate_hz"]
    )
    generator = ray.train.torch.prepare_model(generator)
    discriminator = ray.train.torch.prepare_model(discriminator)
    return make_gan(generator, discriminator, cfg)


def _resume(gan, folder: RunFolder, world: int, say: Callable[[str], None]) -> int:
    """The step of the run folder's newest checkpoint, loaded into `gan` (0: a new run). Every
    checkpoint is written there by rank 0 (Ray Train only tracks them), so a run can also
    switch between local and distributed, and change its number of workers."""
    newest, state = folder.newest_checkpoint(log=say)
    if not newest:
        return 0
    step = checkpoint.restore(gan, state)
    say(f"resume: from {newest.rsplit('/', 1)[-1]} (step {step})")
    before = state.get("world_size")  # (checkpoints before it was recorded have none)
    if before and before != world:
        batch = gan.cfg.batch_size
        say(
            f"elastic: {before} -> {world} worker(s) from step {step}: batch_size {batch} per "
            f"worker and the learning rates as before, so the global batch goes "
            f"{batch * before} -> {batch * world}"
        )
    return step


def _shard_stream(cfg: TrainConfig) -> Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """One epoch of this worker's Ray Data shard as (audio (B, 1, T), label_id (B,)) batches.

    The shard is fetched at the first batch: fetching is a barrier of every rank (rank 0 starts
    the split there), and so counts in the first timing window, as waiting for data."""
    shard = None

    def stream():
        nonlocal shard
        if shard is None:
            shard = ray.train.get_dataset_shard("train")
        for batch in shard.iter_torch_batches(batch_size=cfg.batch_size, drop_last=True):
            yield batch["audio"].unsqueeze(1), batch["label_id"].long()  # audio as stored

    return stream


def g_checksum(gan) -> float:
    """The sum of G's weights: DDP must keep it the same on every rank."""
    return sum(p.double().sum().item() for p in unwrap(gan.generator).parameters())


def _report(
    gan,
    step: int,
    result: dict,
    rank: int,
    world: int,
    plan: StepPlan,
    folder: RunFolder,
    dataset: dict,
    local: bool,
) -> None:
    """The ray.train.report every rank makes at every evaluation step (Ray Train requires as
    many from each), with its G's checksum: DDP must keep them identical. Rank 0's metrics
    (with mel_fd) are what Tune sees; at a checkpoint step rank 0 also saves the checkpoint."""
    metrics = {"step": step, **result, "rank": rank, "g_checksum": g_checksum(gan)}
    if not plan.checkpoint or rank != 0:
        ray.train.report(metrics)
        return
    state = checkpoint.training_state(gan, step, dataset, world)
    if local:
        # Ray Train's local mode stores no checkpoints: rank 0 (the only one) writes its own in
        # the same layout and keeps the newest keep_checkpoints.
        folder.write_checkpoint(step, state, gan.cfg.keep_checkpoints)
        ray.train.report(metrics)
        return
    # Written by rank 0 with the run folder's retries, then handed to Ray Train, which tracks
    # it (and deletes old ones) without copying it again: on Ray Train's own filesystem (the
    # same store, retrying), as it tracks only checkpoints there.
    ray_fs = ray.train.get_context().get_storage().storage_filesystem
    ray.train.report(
        metrics,
        checkpoint=ray.train.Checkpoint(folder.save_checkpoint(step, state), filesystem=ray_fs),
        checkpoint_dir_name=runfolder.checkpoint_name(step),
        checkpoint_upload_mode=ray.train.CheckpointUploadMode.NO_UPLOAD,
    )


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
    if cfg.worker_resource:
        resources[cfg.worker_resource] = 1
    best_first = {"checkpoint_score_attribute": spec.keep_best, "checkpoint_score_order": "min"}
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
            "local": spec.local,
            "verbose": spec.verbose,
            "mlflow": _mlflow(cfg, spec),
            # The dataset's evaluation classifier: rank 0 adds classifier_fd to mel_fd.
            "judge_url": _judge(spec.data_url, manifest),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec.workers,
            use_gpu=spec.gpu,
            resources_per_worker=resources,
            placement_strategy=cfg.placement_strategy,
            elastic_resize_monitor_interval_s=cfg.elastic_resize_s,
        ),
        run_config=ray.train.RunConfig(
            name=spec.name,
            storage_path=run_root,
            # Ray Train's own calls (its checkpoint snapshot, its marker files) retried as
            # ours are: one refused connection would otherwise end the run.
            storage_filesystem=storage.retrying_filesystem(
                run_fs, run_root, spec.storage_url, cfg.storage_retry_s
            ),
            checkpoint_config=keep,
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            callbacks=callbacks or [],
            logging_config=ray.train.LoggingConfig(log_level="INFO" if spec.verbose else "WARNING"),
        ),
        datasets={"train": train_data},
    )


def _mlflow(cfg: TrainConfig, spec: RunSpec) -> dict | None:
    """Where rank 0 logs to MLflow, or None; a missing mlflow package fails here, at once."""
    uri = tracking.tracking_uri(cfg)
    if not uri:
        return None
    tracking.check(uri)
    return {"uri": uri, "run_name": spec.name, "parent": spec.mlflow_parent}


def _judge(data_url: str, manifest: dict) -> str | None:
    """The dataset's evaluation classifier, if it has one that can score its clips; a run goes
    on without classifier_fd (and says why) when the one it has cannot."""
    try:
        return evaluator.usable_judge(data_url, manifest)
    except evaluator.EvaluatorError as error:
        print(f"train: no classifier_fd: {error}", file=sys.stderr, flush=True)
        return None


def _read_clips(path: str, fs: pafs.FileSystem, cpus: float) -> ray.data.Dataset:
    """The clips' audio and labels, read by tasks of `cpus` CPUs each."""
    context = ray.data.DataContext.get_current()
    v2 = context.use_datasource_v2
    # Ray Data 2.60's newer Parquet reader (its default) lists the files and reads their footers
    # in a task of a whole CPU whatever num_cpus says: two sweep trials on 2 cores would wait for
    # it forever, and on a 2-core machine it took 3-6 s to read 20 clips where the older reader
    # takes 0.2 s, at every start of every run. The older one lists the files in the driver and
    # runs every task at `cpus`. (The dataset keeps a copy of the context made here.)
    context.use_datasource_v2 = False
    try:
        clips = ray.data.read_parquet(path, filesystem=fs, num_cpus=cpus)
    finally:
        context.use_datasource_v2 = v2
    # Format /2's audio is stored as bytes: viewed as int16 lists in the read's own task (a
    # view, no copy), so the shard streams and caches 2 bytes a sample and the float comes on
    # the device (loop.cached_batches).
    return clips.select_columns(["audio", "label_id"]).map_batches(
        audio_as_int16, batch_format="pyarrow", batch_size=None, zero_copy_batch=True, num_cpus=cpus
    )


def train(cfg: TrainConfig, spec: RunSpec, callbacks: list | None = None) -> dict:
    """Runs (or resumes) a training run and returns its summary."""
    fs, root = storage.resolve(spec.storage_url)
    url = spec.run_url
    folder = RunFolder(fs, storage.join(root, spec.name), url, cfg.storage_retry_s)
    try:  # no retries here: before training starts, failing at once loses nothing
        newest, state = runfolder.newest_loadable(fs, folder.root, log=lambda _: None)
    except OSError as error:  # (the workers say which checkpoint they resume from)
        raise storage.unreachable(url, error) from None
    if newest:  # refuse an incompatible resume here, not in every worker
        checkpoint.check_compatible(cfg, state)
    _check_shared(spec)
    try:
        bars = spec.verbose or sys.stdout.isatty()
        with _worker_start_timeout(cfg.worker_start_timeout_s), ray_data_bars(bars):
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
    newest = folder.latest_checkpoint()
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


@contextlib.contextmanager
def ray_data_bars(on: bool) -> Iterator[None]:
    """Ray Data's progress bars on or off while a run is built and trained, as they were after.

    They update in place on a terminal; in a file or a job's log each redraw is one more line.
    The training data's are drawn by its split coordinator (a Ray actor), which takes the
    DataContext that Ray Train's fit() copies from this process's."""
    context = ray.data.DataContext.get_current()
    before = context.enable_progress_bars
    context.enable_progress_bars = on
    try:
        yield
    finally:
        context.enable_progress_bars = before


def _check_shared(spec: RunSpec) -> None:
    """Refuses local paths on a cluster of several nodes: each node would see its own disk."""
    if spec.local:  # the driver's process alone: one disk
        return
    unshared = storage.unshared_path([spec.data_url, spec.storage_url], "--data and --storage")
    if unshared:
        raise TrainError(unshared)


@contextlib.contextmanager
def _worker_start_timeout(seconds: float) -> Iterator[None]:
    """Ray Train reads how long a worker group may take to start from the driver's environment
    (and hands it to its controller)."""
    name = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
    before = os.environ.get(name)
    os.environ[name] = str(seconds)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


# How Ray says that a worker's node is gone.
LOST_NODE = re.compile(r"its node has died\. Node Id: (\w+)")


def _failure(error: ray.train.TrainingFailedError, url: str) -> AudioganError:
    """The error a failed run ends with: a worker's StorageError as it is (it names the run's
    URL and how long it retried), a storage call of Ray Train's own that failed as one naming
    the URL, and anything else as the end of the worker's traceback."""
    controller = getattr(error, "controller_failure", None)
    # A worker's StorageError, or one of Ray Train's storage calls (retrying_filesystem): as it
    # is. Ray Train wraps a worker's exception with its traceback text (_base_exc).
    for failure in [*getattr(error, "worker_failures", {}).values(), controller]:
        for inner in (
            failure,
            getattr(failure, "_base_exc", None),
            getattr(failure, "cause", None),
        ):
            if isinstance(inner, storage.StorageError):
                return inner
    lost = _lost_nodes(error)
    if lost:
        return TrainError(
            f"training failed: {lost} was lost; max_failures=N lets the run go on from its "
            "newest checkpoint on the nodes left (or on a node that joins), --workers MIN-MAX "
            "with fewer workers"
        )
    # pyarrow's storage errors are plain OSErrors; Ray's own connection errors are not.
    if isinstance(controller, OSError) and not isinstance(controller, ConnectionError):
        return storage.unreachable(url, controller)
    return TrainError(f"training failed: {_last_lines(str(error))}")


def _lost_nodes(error: ray.train.TrainingFailedError) -> str:
    """ "the node X of rank 1" for each rank whose worker died with its node; "" for none."""
    lost = {}
    for rank, failure in sorted(getattr(error, "worker_failures", {}).items()):
        found = LOST_NODE.search(str(failure))
        if found:
            lost.setdefault(found.group(1)[:12], []).append(str(rank))
    return ", ".join(
        f"the node {node} (of rank {', '.join(ranks)})" for node, ranks in lost.items()
    )


def _last_lines(text: str, count: int = 3) -> str:
    """The end of a worker's traceback, where the exception and its message are."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:])[:600]
