"""The run folder on disk: every name in it, and its readers.

Training writes it (rank 0, through RunFolder, which retries while the storage is away);
generate, evaluate, autoencode, tune, compare and the report read it. No Ray.

    STORAGE/NAME/checkpoint_XXXXXX/        state.pt, then complete.json (audiogan/checkpoint.py)
    STORAGE/NAME/samples/step_XXXXXX/      the fixed noise batch's WAVs and clips.png (and, for a
                                           conditional model, labels.json: each WAV's class)
    STORAGE/NAME/samples/real/             real clips for the report (a conditional run's: one
                                           of each class, named in labels.json)
    STORAGE/NAME/plots/losses.png
    STORAGE/NAME/metrics.jsonl             one JSON object per logged step
    STORAGE/NAME/report.html
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow.fs as pafs

from audiogan import checkpoint, storage

METRICS = "metrics.jsonl"
REPORT = "report.html"
SAMPLES = "samples"
REAL_DIR = f"{SAMPLES}/real"
LOSSES_PLOT = "plots/losses.png"
SAMPLE_PNG = "clips.png"
# In a samples folder of a conditional run: {"sample_00.wav": "Kick", ...}, the class each clip
# was asked for (generated) or has (real).
LABELS_FILE = "labels.json"
CLASSES_PNG = "classes.png"  # a conditional run's sample step: a real and a generated clip a class
CHECKPOINT_FOLDER = re.compile(r"checkpoint_\d+")
STEP_FOLDER = re.compile(r"step_\d+")
# Where Ray Train 2.60 keeps the list of checkpoints it manages, in the run folder.
RAY_CHECKPOINT_SNAPSHOT = "checkpoint_manager_snapshot.json"
T = TypeVar("T")


def checkpoint_name(step: int) -> str:
    return f"checkpoint_{step:06d}"


def step_of(checkpoint_folder: str) -> int:
    """The step a checkpoint_XXXXXX folder (name or path) was saved at."""
    return int(checkpoint_folder.rstrip("/").rsplit("_", 1)[-1])


def samples_dir(step: int) -> str:
    return f"{SAMPLES}/step_{step:06d}"


def sample_wav(step: int, index: int) -> str:
    return f"{samples_dir(step)}/sample_{index:02d}.wav"


def real_wav(index: int) -> str:
    return f"{REAL_DIR}/real_{index:02d}.wav"


def read_labels(fs: pafs.FileSystem, folder: str) -> dict[str, str]:
    """A samples folder's labels.json: WAV name -> class; {} where there is none (an
    unconditional run, or one written before runs named classes)."""
    path = storage.join(folder, LABELS_FILE)
    if not storage.exists(fs, path):
        return {}
    labels = json.loads(storage.read_bytes(fs, path))
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def row_numbers(row: dict) -> dict[str, float]:
    """A metrics row's figures: every number but the step (what TensorBoard and MLflow plot
    against it)."""
    return {
        key: float(value)
        for key, value in row.items()
        if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)
    }


def metrics_bytes(history: list[dict]) -> bytes:
    """metrics.jsonl whole (S3 cannot append)."""
    return "".join(json.dumps(row) + "\n" for row in history).encode()


def read_metrics(fs: pafs.FileSystem, run: str) -> list[dict]:
    """The rows of a run folder's metrics.jsonl (none if it has none yet)."""
    path = storage.join(run, METRICS)
    if not storage.exists(fs, path):
        return []
    return [json.loads(line) for line in storage.read_bytes(fs, path).splitlines() if line]


def sample_steps(fs: pafs.FileSystem, run: str) -> list[str]:
    """The samples/step_XXXXXX folder names, oldest first; any other name is ignored (a name
    goes into the report's page, so only digits may follow `step_`)."""
    folders = storage.list_folder(fs, storage.join(run, SAMPLES), pafs.FileType.Directory)
    return [info.base_name for info in folders if STEP_FOLDER.fullmatch(info.base_name)]


def checkpoint_folders(fs: pafs.FileSystem, run: str) -> list[str]:
    """The paths of a run folder's checkpoint_XXXXXX folders, finished or not, oldest first."""
    return [
        f"{run.rstrip('/')}/{info.base_name}"
        for info in storage.list_folder(fs, run, pafs.FileType.Directory)
        if CHECKPOINT_FOLDER.fullmatch(info.base_name)
    ]


def all_checkpoints(fs: pafs.FileSystem, run: str) -> list[str]:
    """The paths of a run folder's finished checkpoint_XXXXXX folders, oldest first. Their
    bytes are checked when loaded."""
    return [folder for folder in checkpoint_folders(fs, run) if checkpoint.is_finished(fs, folder)]


def latest(fs: pafs.FileSystem, run: str) -> str | None:
    """The path of a run folder's newest finished checkpoint_XXXXXX folder, or None."""
    folders = all_checkpoints(fs, run)
    return folders[-1] if folders else None


def newest_loadable(
    fs: pafs.FileSystem, run: str, log: Callable[[str], None] = print
) -> tuple[str | None, dict[str, Any] | None]:
    """(folder, state) of the newest finished checkpoint whose bytes check out, or (None, None).
    A newer one that is unfinished or damaged is skipped, and `log` says which and why."""
    for folder in reversed(checkpoint_folders(fs, run)):
        name = folder.rsplit("/", 1)[-1]
        if not checkpoint.is_finished(fs, folder):
            log(
                f"resume: skipping {name}: unfinished (no {checkpoint.STATE_FILE} or no "
                f"{checkpoint.COMPLETE_FILE})"
            )
            continue
        try:
            return folder, checkpoint.load_from(fs, folder)
        except checkpoint.CheckpointError as error:
            log(f"resume: skipping {name}: {error}")
    return None, None


def locate(url: str, log: Callable[[str], None] = print) -> tuple[str, dict[str, Any]]:
    """(folder, state) of what a user gave as CHECKPOINT: a checkpoint_XXXXXX folder, its
    state.pt, or a run folder (its newest finished checkpoint whose bytes check out).

    Raises:
        CheckpointError: anything else, in one line that says what the path is and what to give.
    """
    fs, path = storage.resolve(url)
    shown = storage.display(url)
    give = "give a checkpoint_XXXXXX folder, or a run folder (STORAGE/NAME)"
    state_file, error_type = checkpoint.STATE_FILE, checkpoint.CheckpointError
    try:
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.NotFound:
            raise error_type(f"{shown} does not exist; {give}")
        if kind == pafs.FileType.File:
            if path.rsplit("/", 1)[-1] != state_file:
                raise error_type(f"{shown} is a file, not a checkpoint; {give}")
            path = path.rsplit("/", 1)[0]
        if storage.exists(fs, storage.join(path, state_file)):
            return path, checkpoint.load_from(fs, path)
        folders = checkpoint_folders(fs, path)
        if not folders:
            raise error_type(
                f"{shown} holds neither {state_file} nor checkpoint_XXXXXX folders; {give}"
            )
        folder, state = newest_loadable(fs, path, log=log)
    except OSError as error:
        raise storage.unreachable(url, error) from None
    if state is None:
        raise error_type(
            f"{shown} has no finished checkpoint: its {len(folders)} checkpoint folder(s) are "
            f"unfinished or damaged (each needs {state_file} and {checkpoint.COMPLETE_FILE})"
        )
    return folder, state


class RunFolder:
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

    def read(self, relative: str) -> bytes:
        path = storage.join(self.root, relative)
        return self.retry(f"reading {relative}", lambda: storage.read_bytes(self.fs, path))

    def newest_checkpoint(self, log: Callable[[str], None]) -> tuple[str | None, dict | None]:
        """(folder, state) of the newest checkpoint that loads (newest_loadable)."""
        return self.retry(
            "reading the checkpoints", lambda: newest_loadable(self.fs, self.root, log)
        )

    def latest_checkpoint(self) -> str | None:
        return self.retry("listing the checkpoints", lambda: latest(self.fs, self.root))

    def save_checkpoint(self, step: int, state: dict) -> str:
        """checkpoint_XXXXXX/ (state.pt, then complete.json); returns the folder's path."""
        name = checkpoint_name(step)
        folder = storage.join(self.root, name)
        self.retry(f"writing {name}", lambda: checkpoint.save(folder, state, self.fs))
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
            for folder in all_checkpoints(self.fs, self.root)
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

    def start_from(self, donor: str, step: int, lineage: dict) -> None:
        """A new run that goes on from another run's checkpoint (a population-based sweep's
        exploit): the donor run folder's checkpoint at `step` and its metrics rows up to it,
        then a row {"step": step, "exploited": lineage} that says where this run came from.
        Training resumes from that checkpoint as from its own."""
        name = checkpoint_name(step)
        source = storage.join(donor, name)
        files = self.retry(f"reading {source}", lambda: storage.list_folder(self.fs, source))
        if not files:
            raise checkpoint.CheckpointError(f"no checkpoint at {source} to go on from")
        # (complete.json holds state.pt's size and SHA-256: a copy cut short is never resumed)
        for info in files:
            read = lambda i=info: storage.read_bytes(self.fs, i.path)  # noqa: E731
            self.write(f"{name}/{info.base_name}", self.retry(f"reading {info.path}", read))
        rows = self.retry(f"reading {donor}", lambda: read_metrics(self.fs, donor))
        self.write_metrics(
            [row for row in rows if row["step"] <= step] + [{"step": step, "exploited": lineage}]
        )

    def write_metrics(self, history: list[dict]) -> None:
        self.write(METRICS, metrics_bytes(history))

    def read_metrics(self, up_to_step: int) -> list[dict]:
        rows = self.retry(f"reading {METRICS}", lambda: read_metrics(self.fs, self.root))
        return [row for row in rows if row["step"] <= up_to_step]
