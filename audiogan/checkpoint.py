"""Training state <-> a checkpoint folder; no Ray. A checkpoint is data, never code.

Where checkpoint folders sit in a run, and finding them, is audiogan/runfolder.py's.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
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
FORMAT = "audiogan.checkpoint/1"


class CheckpointError(AudioganError):
    """A checkpoint that is missing, unfinished, incompatible or unsafe to load."""


def training_state(
    gan: GAN, step: int, dataset: dict[str, Any], world_size: int = 1
) -> dict[str, Any]:
    """Everything a resumed run needs, as tensors and plain values (loadable weights_only), and
    the number of workers that trained it (an elastic run says when that changes)."""
    return {
        "format": FORMAT,
        "step": step,
        "world_size": world_size,
        "config": to_dict(gan.cfg),
        "dataset": dataset,  # sample rate, clip samples, labels: what generate needs
        "generator": unwrap(gan.generator).state_dict(),
        "discriminator": unwrap(gan.discriminator).state_dict(),
        "opt_g": gan.opt_g.state_dict(),
        "opt_d": gan.opt_d.state_dict(),
        "ema": None if gan.ema is None else gan.ema.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }


def is_finished(fs: pafs.FileSystem, folder: str) -> bool:
    """Whether a checkpoint folder holds state.pt and, written after it, complete.json."""
    infos = fs.get_file_info([f"{folder}/{STATE_FILE}", f"{folder}/{COMPLETE_FILE}"])
    return all(info.type == pafs.FileType.File for info in infos)


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
    """Loads the networks, optimisers (with gan.cfg's learning rates and betas), EMA and RNG
    from a state; returns the step it was at."""
    check_compatible(gan.cfg, state)
    unwrap(gan.generator).load_state_dict(state["generator"])
    unwrap(gan.discriminator).load_state_dict(state["discriminator"])
    gan.opt_g.load_state_dict(state["opt_g"])
    gan.opt_d.load_state_dict(state["opt_d"])
    # The run's config, not the checkpoint's, sets the learning rates and betas (a resume may
    # change them; a population-based sweep's exploit perturbs them): the moments stay.
    for optimizer, lr in ((gan.opt_g, gan.cfg.lr_g), (gan.opt_d, gan.cfg.lr_d)):
        for group in optimizer.param_groups:
            group["lr"], group["betas"] = lr, tuple(gan.cfg.betas)
    if gan.ema is not None and state["ema"] is not None:
        gan.ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["torch_rng"])
    gan.g_steps = int(state["step"])
    return gan.g_steps
