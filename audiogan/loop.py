"""The pieces of the training loop that know nothing of Ray (audiogan/train.py runs them).

- `plan_step`: what a step does besides its gan_step (log, evaluate, sample, checkpoint, stop),
  a pure function of the config, the step and whether the time is up.
- `Monitor`: rank 0's bookkeeping: metrics.jsonl, the progress line, mel_fd, samples, plots
  and the report, all through the run folder's retries.
- `cached_batches`: a shard's batches, epoch after epoch, kept in memory once they fit (as
  stored: 16-bit PCM, made float on the device).
- `agree`: the stop flags every rank must share.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from audiogan import console, events, metrics, report, runfolder, samples
from audiogan.config import TrainConfig, to_dict
from audiogan.dataset import PCM_SCALE
from audiogan.evaluator import Judge
from audiogan.generate import render
from audiogan.report import QUALITY_KEYS
from audiogan.step import sample_latent, sampling_generator

Batch = tuple[torch.Tensor, torch.Tensor]  # audio (B, 1, T), label_id (B,)
LOOK_STEPS = 500  # how long rank 0 looks in its batches for a real clip of each class


@dataclass(frozen=True)
class StepPlan:
    """What one G step does after its gan_step."""

    log: bool  # a metrics row and a progress line
    evaluate: bool  # mel_fd on rank 0, and every rank reports to Ray Train
    sample: bool  # samples/step_XXXXXX/ and plots/losses.png
    checkpoint: bool  # checkpoint_XXXXXX/ and report.html
    last: bool  # the run ends after this step


def must_agree(cfg: TrainConfig, step: int) -> bool:
    """Whether the ranks decide together, after this step, if the time is up or a loss
    diverged: at the steps where something happens, so every rank stops at the same one."""
    intervals = (cfg.log_every, cfg.eval_every, cfg.checkpoint_every, cfg.sample_every)
    return step == cfg.max_steps or any(step % every == 0 for every in intervals)


def plan_step(cfg: TrainConfig, step: int, time_up: bool) -> StepPlan:
    """The schedule. A run on a time budget ends at the next log step once the time is up;
    the last step samples and checkpoints; every checkpoint is evaluated (Tune's scheduler
    and the best-checkpoint choice rank by mel_fd), and every evaluation is logged."""
    last = step == cfg.max_steps or (time_up and step % cfg.log_every == 0)
    checkpoint = step % cfg.checkpoint_every == 0 or last
    evaluate = step % cfg.eval_every == 0 or checkpoint
    return StepPlan(
        log=step % cfg.log_every == 0 or evaluate,
        evaluate=evaluate,
        sample=step % cfg.sample_every == 0 or last,
        checkpoint=checkpoint,
        last=last,
    )


def agree(
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


def cached_batches(
    stream: Callable[[], Iterable[Batch]],
    batch_size: int,
    cache_mb: int,
    seed: int,
    device: torch.device,
    epoch_done: Callable[[int], None] = lambda clips: None,
) -> Iterator[Batch]:
    """Endless float32 batches on `device`: the first epoch from `stream()`, and the following
    ones from memory, reshuffled, if the epoch fit in `cache_mb` MiB; else `stream()` every
    epoch. `epoch_done` hears how many clips the first epoch held.

    Every epoch of a Ray Data shard restarts its streaming split (about a second here), which
    a shard that fits in memory need not pay. Audio is kept and moved as `stream()` gives it
    (int16 from a dataset of format /2: half the memory and the copy to the device) and made
    float on the device."""
    cached: list[Batch] | None = []
    cached_bytes = clips = 0
    for audio, labels in stream():
        clips += len(audio)
        if cached is not None:
            cached_bytes += audio.nbytes
            if cached_bytes <= cache_mb << 20:
                cached.append((audio, labels))
            else:
                cached = None
        yield as_float(audio.to(device)), labels.to(device)
    epoch_done(clips)
    if not cached:
        while True:
            for audio, labels in stream():
                yield as_float(audio.to(device)), labels.to(device)
    audio = torch.cat([a for a, _ in cached]).to(device)  # (N, 1, T)
    labels = torch.cat([lab for _, lab in cached]).to(device)
    order_rng = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(audio), generator=order_rng)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            pick = order[start : start + batch_size].to(device)
            yield as_float(audio[pick]), labels[pick]


def as_float(audio: torch.Tensor) -> torch.Tensor:
    """A batch of stored audio as float32 in [-1, 1]: int16 PCM scaled, float as it is."""
    if audio.dtype == torch.int16:
        return audio.float().mul_(1 / PCM_SCALE)
    return audio.float()


class Throughput:
    """Samples per second and the share of time spent waiting for batches, over a window that
    runs from the end of one logged step's gan_step to the end of the next one's (so the
    evaluation, samples and checkpoint of a step count in the next window)."""

    def __init__(self, world: int = 1):
        self.started = self.window_start = self.step_done = time.perf_counter()
        self.samples, self.data_s = 0, 0.0
        self.world, self.global_batch = world, 0

    def next_batches(self, batches: Iterator[Batch], count: int) -> list[Batch]:
        waited = time.perf_counter()
        taken = [next(batches) for _ in range(count)]
        self.data_s += time.perf_counter() - waited
        return taken

    def stepped(self, batches: list[Batch] | tuple) -> None:
        """A G step is done, after D updates on `batches` on each of the world's ranks."""
        self.global_batch = len(batches[0]) * self.world
        self.samples += len(batches) * self.global_batch
        self.step_done = time.perf_counter()

    def row(self) -> dict[str, float]:
        """The window's figures, and a new window begins."""
        elapsed = self.step_done - self.window_start
        figures = {
            "samples_per_s": round(self.samples / elapsed, 2),
            # The share of the window spent waiting for batches: high means input-bound.
            "data_wait": round(self.data_s / elapsed, 4),
            "wall_s": round(time.perf_counter() - self.started, 2),
            # The workers that trained the step (an elastic run's may change), and the clips
            # one D update took on all of them together.
            "world_size": self.world,
            "global_batch": self.global_batch,
        }
        self.window_start, self.samples, self.data_s = self.step_done, 0, 0.0
        return figures


def _fixed_batch(
    cfg: TrainConfig, n: int, seed: int, num_labels: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The same noise (and, for a conditional model, the labels in turn) at every call."""
    z = sample_latent(cfg, n, "cpu", torch.Generator().manual_seed(seed)).to(device)
    if not cfg.conditional:
        return z, None
    return z, (torch.arange(n) % max(num_labels, 1)).to(device)


class Monitor:
    """Rank 0's view of a run: the metrics rows and progress line, quality (a fixed set of real
    clips from its shard, the first `eval_clips` it trains on, against which a fixed noise
    batch's clips are scored with mel_fd), the samples of another fixed noise batch, the
    loss plot and the report, written through the run folder's retries."""

    def __init__(
        self,
        cfg: TrainConfig,
        dataset: dict,
        device,
        folder: runfolder.RunFolder,
        step: int,
        judge: Judge | None = None,
        tracker=None,
    ):
        self.cfg, self.folder, self.rate = cfg, folder, dataset["sample_rate_hz"]
        self.tracker = tracker  # an MLflow run (audiogan/tracking.py), where one was asked for
        self.judge = judge  # the dataset's evaluation classifier, for classifier_fd
        self.history = folder.read_metrics(step)
        self.events = events.EventLog(folder, resumed_at=step)  # TensorBoard's view of the run
        self.last_line = step, 0.0  # (step, wall_s) of the last progress line: for the ETA
        self.real: list[torch.Tensor] = []
        self.kept = 0
        self.reference: metrics.MelReference | None = None
        # A conditional run names the class of every clip it shows: its samples make each
        # class (in turn, at least num_samples clips), beside one real clip of each class.
        self.labels: list[str] = list(dataset["labels"]) if cfg.conditional else []
        self.real_by_class: dict[int, np.ndarray] = {}
        self.looked = 0  # keep_real's calls: it looks for a clip of each class for LOOK_STEPS
        self.real_written = 0  # classes in samples/real/ (written again as more are found)
        classes = len(dataset["labels"])
        self.eval_z, self.eval_labels = _fixed_batch(
            cfg, cfg.eval_clips, cfg.seed + 1, classes, device
        )
        self.sample_z, self.sample_labels = _fixed_batch(
            cfg, max(cfg.num_samples, len(self.labels)), cfg.seed, classes, device
        )

    def keep_real(
        self, batches: Iterable[torch.Tensor], labels: Iterable[torch.Tensor] | None = None
    ) -> None:
        """The first eval_clips real clips, mel_fd's reference; and, for a conditional run,
        the first clip of each class the shard holds (`labels`: each batch's label ids)."""
        batches = list(batches)
        self.looked += 1
        # Looking costs a device-to-host copy of the labels: a class the shard has not shown
        # in its first LOOK_STEPS steps is left out of the pictures rather than sought forever.
        looking = self.looked <= LOOK_STEPS and len(self.real_by_class) < len(self.labels)
        if looking and labels is not None:
            for batch, ids in zip(batches, labels, strict=True):
                for row, label_id in enumerate(ids.tolist()):
                    if label_id not in self.real_by_class:
                        self.real_by_class[label_id] = batch[row, 0].float().cpu().numpy()
        for batch in batches:
            if self.kept >= self.cfg.eval_clips:
                return
            clips = batch[: self.cfg.eval_clips - self.kept, 0].float().cpu()
            self.real.append(clips)
            self.kept += len(clips)

    def after_step(self, gan, step: int, result: dict, plan: StepPlan, meter: Throughput) -> None:
        """mel_fd into `result` (which Ray Train then hears), the metrics row and progress
        line, samples and plot, and the report: what `plan` asks for at this step."""
        if plan.evaluate:
            result.update(self.quality(gan))
        if plan.log:
            row = {"step": step, **{k: round(v, 6) for k, v in result.items()}, **meter.row()}
            self.history.append(row)
            self.folder.write_metrics(self.history)
            self.events.scalars(step, row)
            if self.tracker:
                self.tracker.metrics(step, row)
            console.say(self.progress(row))
        if plan.sample:
            self.write_samples(gan, step)
            self.folder.write(runfolder.LOSSES_PLOT, samples.losses_png(self.history))
        if plan.log or plan.sample:
            self.events.flush()
        if plan.checkpoint:
            config, history = to_dict(self.cfg), self.history
            self.folder.retry(
                f"writing {runfolder.REPORT}",
                lambda: report.write(self.folder.fs, self.folder.root, config, history),
            )
            if self.tracker:
                self.tracker.report()
        if plan.last and self.tracker:
            self.tracker.finish()

    def diverged(self, step: int, result: dict) -> None:
        """The row train() reports the divergence from; nothing after it is worth keeping."""
        self.history.append({"step": step, **result, "diverged": True})
        self.folder.write_metrics(self.history)
        if self.tracker:
            self.tracker.finish(failed=True)

    def progress(self, row: dict) -> str:
        """The step's line: losses, samples/s, and how long the run has left (the time a step
        took since the last line, times the steps to go; or, on a time budget, its minutes
        left), with the quality figures when it was evaluated."""
        quality = "".join(f"  {key} {row[key]:.3f}" for key in QUALITY_KEYS if key in row)
        done_step, done_s = self.last_line
        self.last_line = row["step"], row["wall_s"]
        if self.cfg.max_minutes:  # compare sets max_steps out of reach: a budget of minutes
            step = str(row["step"])
            left = f"{max(0.0, self.cfg.max_minutes - row['wall_s'] / 60):.1f} min left"
        else:
            step = f"{row['step']}/{self.cfg.max_steps}"
            per_step = (row["wall_s"] - done_s) / max(1, row["step"] - done_step)
            left = f"ETA {console.duration(per_step * (self.cfg.max_steps - row['step']))}"
        return (
            f"step {step}  d_loss {row['d_loss']:.4f}  g_loss {row['g_loss']:.4f}  "
            f"gp {row['gp']:.4f}  {row['samples_per_s']:.1f} samples/s  {left}{quality}"
        )

    def real_examples(self, n: int) -> np.ndarray:
        return torch.cat(self.real)[:n].numpy()

    def quality(self, gan) -> dict[str, float]:
        """mel_fd of the fixed evaluation batch's clips, and their classifier_fd if there is a
        judge."""
        reference = self.reference or metrics.MelReference(torch.cat(self.real), self.rate)
        if self.kept >= self.cfg.eval_clips:  # fixed from here on; until then, what there is
            self.reference = reference
        fakes = render(sampling_generator(gan), self.eval_z, self.eval_labels)
        figures = {"mel_fd": reference.distance(fakes)}
        if self.judge:
            figures["classifier_fd"] = self.judge.distance(fakes)
        return figures

    def write_samples(self, gan, step: int) -> None:
        """samples/step_XXXXXX/: the fixed noise batch as WAVs and a PNG beside real clips; real
        clips themselves go to samples/real/ for the report: once, or for a conditional run
        again whenever the shard has shown a class more. A conditional run's folders name each
        clip's class in labels.json, and its PNG in the titles."""
        audio = render(sampling_generator(gan), self.sample_z, self.sample_labels)
        real, real_names = self.real_shown()
        if len(real_names) > self.real_written or not self.folder.exists(runfolder.REAL_DIR):
            for i, clip in enumerate(real):
                self.folder.write(runfolder.real_wav(i), samples.wav_bytes(clip, self.rate))
            if self.labels:
                self._write_labels(runfolder.REAL_DIR, runfolder.real_wav, real_names)
            self.real_written = len(real_names)
            self.events.audio(step, _tagged("real", real, real_names), self.rate)
        for i, clip in enumerate(audio):
            self.folder.write(runfolder.sample_wav(step, i), samples.wav_bytes(clip, self.rate))
        names = []
        if self.labels:
            names = [self.labels[i] for i in self.sample_labels.tolist()]
            self._write_labels(
                runfolder.samples_dir(step), partial(runfolder.sample_wav, step), names
            )
        self.events.audio(step, _tagged("generated", audio, names), self.rate)
        # The report shows this picture for its first and last sample steps.
        png = samples.clips_png(
            audio[: report.CLIPS_SHOWN], self.rate, real[:2], title=f"step {step}",
            names=names[: report.CLIPS_SHOWN], real_names=real_names[:2],
        )  # fmt: skip
        self.folder.write(f"{runfolder.samples_dir(step)}/{runfolder.SAMPLE_PNG}", png)
        self.events.image(step, "pictures/clips", png)
        if self.labels:
            rows = samples.class_rows(self.labels, real, real_names, audio, names)
            png = samples.classes_png(rows, self.rate, title=f"step {step}, by class")
            self.folder.write(f"{runfolder.samples_dir(step)}/{runfolder.CLASSES_PNG}", png)
            self.events.image(step, "pictures/by class", png)

    def real_shown(self) -> tuple[np.ndarray, list[str]]:
        """The real clips the report plays, and their classes: one of each class found so far
        (in label order) for a conditional run, else the first CLIPS_SHOWN, unnamed."""
        if self.labels and self.real_by_class:
            found = sorted(self.real_by_class)
            return np.stack([self.real_by_class[i] for i in found]), [self.labels[i] for i in found]
        return self.real_examples(report.CLIPS_SHOWN), []

    def _write_labels(self, folder: str, wav: Callable[[int], str], names: list[str]) -> None:
        labels = {wav(i).rsplit("/", 1)[-1]: name for i, name in enumerate(names)}
        self.folder.write(f"{folder}/{runfolder.LABELS_FILE}", json.dumps(labels).encode())


def _tagged(kind: str, clips, names: list[str]) -> list[tuple[str, np.ndarray]]:
    """TensorBoard tags for clips: kind/00, or kind/00 CLASS where the class is known."""
    return [
        (f"{kind}/{i:02d} {names[i]}" if i < len(names) else f"{kind}/{i:02d}", clip)
        for i, clip in enumerate(clips)
    ]
