"""Training state <-> a checkpoint folder; no Ray. A checkpoint is data, never code."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
from collections.abc import Callable
from typing import Any

import pyarrow.fs as pafs
import torch

from audiogan import storage
from audiogan.config import TrainConfig, from_dict, to_dict
from audiogan.errors import AudioganError
from audiogan.step import GAN, unwrap

STATE_FILE = "state.pt"
# Written after state.pt: its size and SHA-256. A folder is a finished checkpoint only once this
# exists and matches, so a copy cut short (a lost node, a full disk, a store that went away)
# is never resumed from.
COMPLETE_FILE = "complete.json"
CHECKPOINT_FOLDER = re.compile(r"checkpoint_\d+")
FORMAT = "audiogan.checkpoint/1"


class CheckpointError(AudioganError):
    """A checkpoint that is missing, unfinished, incompatible or unsafe to load."""


def training_state(gan: GAN, step: int, dataset: dict[str, Any]) -> dict[str, Any]:
    """Everything a resumed run needs, as tensors and plain values (loadable weights_only)."""
    return {
        "format": FORMAT,
        "step": step,
        "config": to_dict(gan.cfg),
        "dataset": dataset,  # sample rate, clip samples, labels: what generate needs
        "generator": unwrap(gan.generator).state_dict(),
        "discriminator": unwrap(gan.discriminator).state_dict(),
        "opt_g": gan.opt_g.state_dict(),
        "opt_d": gan.opt_d.state_dict(),
        "ema": None if gan.ema is None else gan.ema.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }


def _checkpoint_folders(fs: pafs.FileSystem, run: str) -> list[str]:
    """The paths of a run folder's checkpoint_XXXXXX folders, finished or not, oldest first."""
    return [
        f"{run.rstrip('/')}/{info.base_name}"
        for info in storage.list_folder(fs, run, pafs.FileType.Directory)
        if CHECKPOINT_FOLDER.fullmatch(info.base_name)
    ]


def _finished(fs: pafs.FileSystem, folder: str) -> bool:
    """Whether a checkpoint folder holds state.pt and, written after it, complete.json."""
    infos = fs.get_file_info([f"{folder}/{STATE_FILE}", f"{folder}/{COMPLETE_FILE}"])
    return all(info.type == pafs.FileType.File for info in infos)


def all_checkpoints(fs: pafs.FileSystem, run: str) -> list[str]:
    """The paths of a run folder's finished checkpoint_XXXXXX folders, oldest first. Their
    bytes are checked when loaded."""
    return [folder for folder in _checkpoint_folders(fs, run) if _finished(fs, folder)]


def latest(fs: pafs.FileSystem, run: str) -> str | None:
    """The path of a run folder's newest finished checkpoint_XXXXXX folder, or None."""
    folders = all_checkpoints(fs, run)
    return folders[-1] if folders else None


def save(folder: str, state: dict[str, Any], fs: pafs.FileSystem | None = None) -> str:
    """Writes folder/state.pt whole (local by default), then complete.json with its size and
    SHA-256: the commit mark, written last."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    fs = fs or pafs.LocalFileSystem()
    path = storage.join(folder, STATE_FILE)
    storage.write_bytes(fs, path, data)
    mark = {"file": STATE_FILE, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    storage.write_bytes(fs, storage.join(folder, COMPLETE_FILE), json.dumps(mark).encode())
    return path


def _verify(fs: pafs.FileSystem, folder: str, data: bytes) -> None:
    """Refuses state.pt bytes that are not what complete.json recorded (when it exists)."""
    mark_path = storage.join(folder, COMPLETE_FILE)
    if not storage.exists(fs, mark_path):
        return
    try:
        mark = json.loads(storage.read_bytes(fs, mark_path))
        expected = (int(mark["bytes"]), str(mark["sha256"]))
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{folder}/{COMPLETE_FILE} is damaged") from None
    if (len(data), hashlib.sha256(data).hexdigest()) != expected:
        raise CheckpointError(
            f"{folder}/{STATE_FILE} is damaged: {len(data)} bytes where {expected[0]} were "
            "written, or other bytes (its SHA-256 differs)"
        )


def load(folder_or_file: str) -> dict[str, Any]:
    """Loads a local checkpoint with weights_only=True: tensors and plain values, no code."""
    path = folder_or_file
    if os.path.isdir(path):
        path = os.path.join(path, STATE_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {folder_or_file} (expected {STATE_FILE})")
    with open(path, "rb") as file:
        data = file.read()
    _verify(pafs.LocalFileSystem(), os.path.dirname(os.path.abspath(path)), data)
    return _load(io.BytesIO(data), path)


def load_from(fs: pafs.FileSystem, folder: str) -> dict[str, Any]:
    """Loads folder/state.pt from any filesystem (local or S3) without a local copy."""
    path = storage.join(folder, STATE_FILE)
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise CheckpointError(f"no checkpoint at {folder} (expected {STATE_FILE})")
    data = storage.read_bytes(fs, path)
    _verify(fs, folder, data)
    return _load(io.BytesIO(data), path)


def newest_loadable(
    fs: pafs.FileSystem, run: str, log: Callable[[str], None] = print
) -> tuple[str | None, dict[str, Any] | None]:
    """(folder, state) of the newest finished checkpoint whose bytes check out, or (None, None).
    A newer one that is unfinished or damaged is skipped, and `log` says which and why."""
    for folder in reversed(_checkpoint_folders(fs, run)):
        name = folder.rsplit("/", 1)[-1]
        if not _finished(fs, folder):
            log(f"resume: skipping {name}: unfinished (no {STATE_FILE} or no {COMPLETE_FILE})")
            continue
        try:
            return folder, load_from(fs, folder)
        except CheckpointError as error:
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
    try:
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.NotFound:
            raise CheckpointError(f"{shown} does not exist; {give}")
        if kind == pafs.FileType.File:
            if path.rsplit("/", 1)[-1] != STATE_FILE:
                raise CheckpointError(f"{shown} is a file, not a checkpoint; {give}")
            path = path.rsplit("/", 1)[0]
        if storage.exists(fs, storage.join(path, STATE_FILE)):
            return path, load_from(fs, path)
        folders = _checkpoint_folders(fs, path)
        if not folders:
            raise CheckpointError(
                f"{shown} holds neither {STATE_FILE} nor checkpoint_XXXXXX folders; {give}"
            )
        folder, state = newest_loadable(fs, path, log=log)
    except OSError as error:
        raise storage.unreachable(url, error) from None
    if state is None:
        raise CheckpointError(
            f"{shown} has no finished checkpoint: its {len(folders)} checkpoint folder(s) are "
            f"unfinished or damaged (each needs {STATE_FILE} and {COMPLETE_FILE})"
        )
    return folder, state


def _load(source, path: str) -> dict[str, Any]:
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        lines = [line.strip() for line in str(error).splitlines()]
        # The safe loader met a function or class: a pickle that could run code names them.
        names = [line for line in lines if "global" in line.lower()]
        if names:
            raise CheckpointError(
                f"{path} holds more than tensors and plain values; refused ({names[0][:200]})"
            ) from None
        # An instruction it does not allow: damaged bytes, or a pickle of a newer protocol
        # (one way to smuggle in code); refused either way.
        refused = [line for line in lines if "operand" in line.lower()]
        detail = "not a torch file"
        if refused:
            detail = f"refused by the safe loader: {refused[0][:200]}"
        raise CheckpointError(f"{path} is not a readable checkpoint ({detail})") from None
    except Exception as error:  # noqa: BLE001 - foreign or damaged bytes fail in many ways
        message = " ".join(str(error).split())[:200]  # (a text file gives a KeyError)
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(error).__name__}: {message})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an audiogan checkpoint")
    return state


def check_compatible(cfg: TrainConfig, state: dict[str, Any]) -> None:
    """Refuses to resume a run with a differently shaped model."""
    saved = from_dict(TrainConfig, state["config"])
    shape = [
        "model", "latent_dim", "model_dim", "sources", "conditional", "discriminator",
        "spectral_norm",
    ]  # fmt: skip
    if cfg.discriminator in ("multiscale", "stft"):  # the only families it sizes
        shape.append("disc_channels")
    if any(getattr(saved, key) != getattr(cfg, key) for key in shape):
        raise CheckpointError(
            f"the checkpoint's model ({', '.join(shape)}) = "
            f"({', '.join(str(getattr(saved, key)) for key in shape)}) differs from this run's "
            f"({', '.join(str(getattr(cfg, key)) for key in shape)}); use another --name"
        )


def restore(gan: GAN, state: dict[str, Any]) -> int:
    """Loads the networks, optimisers, EMA and RNG from a state; returns the step it was at."""
    check_compatible(gan.cfg, state)
    unwrap(gan.generator).load_state_dict(state["generator"])
    unwrap(gan.discriminator).load_state_dict(state["discriminator"])
    gan.opt_g.load_state_dict(state["opt_g"])
    gan.opt_d.load_state_dict(state["opt_d"])
    if gan.ema is not None and state["ema"] is not None:
        gan.ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["torch_rng"])
    gan.g_steps = int(state["step"])
    return gan.g_steps
