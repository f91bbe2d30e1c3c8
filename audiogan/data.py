"""Ray Data: list source files, turn each into clips with `audio.clips_from_file`, write Parquet.

The driver only lists files and reads the small train.csv; reading, decoding and writing happen
in Ray tasks, block by block, so a dataset larger than memory streams through and the same code
runs on a laptop or a multi-node cluster.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import posixpath
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray

from audiogan import __version__, storage
from audiogan.audio import Rejected, clips_from_file, resample_source_rate
from audiogan.config import PrepareConfig, from_dict, to_dict
from audiogan.errors import AudioganError

AUDIO_EXTENSIONS = (
    ".wav",
    ".wave",
    ".flac",
    ".ogg",
    ".oga",
    ".mp3",
    ".aif",
    ".aiff",
    ".aifc",
    ".au",
    ".caf",
    ".w64",
    ".rf64",
)
FSD_CSV = "train.csv"
FSD_AUDIO = "audio_train"
MANIFEST = "manifest.json"
CLIPS = "clips"
REJECTS = "rejects"
# Marks a storage failure inside a task, so Ray Data retries the block (STORAGE_RETRIES times,
# with backoff) and the driver can tell it from a bug.
STORAGE_FAILURE = "audiogan storage failure"
STORAGE_RETRIES = 3
# Files per Ray Data block: each block becomes one task and one Parquet file of clips.
FILES_PER_BLOCK = 64

# Audio samples barely compress and cost 2.5x the write time with snappy: store them plain.
CLIP_PARQUET_OPTIONS = {
    "compression": {"audio.list.element": "none"},
    "use_dictionary": ["clip_id", "label", "source"],
}

REJECT_SCHEMA = pa.schema(
    [("source", pa.string()), ("reason", pa.string()), ("detail", pa.string())]
)


def clip_schema(clip_samples: int) -> pa.Schema:
    """The Parquet schema of DEST/clips (DESIGN.md, Prepared dataset)."""
    return pa.schema(
        [
            ("clip_id", pa.string()),
            ("label", pa.string()),
            ("label_id", pa.int32()),
            ("source", pa.string()),
            ("source_sample_rate", pa.int32()),
            ("source_seconds", pa.float32()),
            ("window", pa.int32()),
            ("audio", pa.list_(pa.float32(), clip_samples)),
        ]
    )


class PrepareError(AudioganError):
    """prepare cannot run or produced nothing usable; the message says what to do."""


@dataclass
class Listing:
    """What the driver found in SOURCE before any audio is read."""

    layout: str  # "fsd" or "tree"
    files: list[dict] = field(default_factory=list)  # path, source, label, size_bytes
    rejects: list[dict] = field(default_factory=list)  # rows of REJECT_SCHEMA
    skipped: Counter = field(default_factory=Counter)  # why rows or files were left out

    @property
    def labels(self) -> list[str]:
        return sorted({f["label"] for f in self.files if f["label"] is not None})


# ---------------------------------------------------------------------------------------------
# Listing (driver side, no audio read)


def _list_files(fs: pafs.FileSystem, root: str, skipped: Counter) -> dict[str, int]:
    """Relative path -> size for every file under root (sorted by path), in one listing.

    On a local disk a file reachable twice (a folder link, a link loop) is kept once, under
    the first of its names in sorted order, and counted in skipped["same_file_twice"].
    """
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    prefix = root.rstrip("/") + "/"
    infos = sorted(
        (info for info in fs.get_file_info(selector) if info.type == pafs.FileType.File),
        key=lambda info: info.path,
    )
    files: dict[str, int] = {}
    seen: set[str] = set()
    for info in infos:
        if isinstance(fs, pafs.LocalFileSystem):
            real = os.path.realpath(info.path)
            if real in seen:
                continue
            seen.add(real)
        files[info.path[len(prefix) :]] = info.size
    if len(infos) > len(files):
        skipped["same_file_twice"] = len(infos) - len(files)
    return files


def _escape_check(fs: pafs.FileSystem, root: str) -> Callable[[str], bool]:
    """A test for `relative`: is it a local link that resolves outside the dataset root? (Only
    a local disk has links; the root is resolved once.)"""
    if not isinstance(fs, pafs.LocalFileSystem):
        return lambda relative: False
    real_root = os.path.realpath(root)

    def escapes(relative: str) -> bool:
        real = os.path.realpath(os.path.join(root, relative))
        return os.path.commonpath([real_root, real]) != real_root

    return escapes


def safe_relative_path(folder: str, name: str) -> str | None:
    """`folder/name` normalised, or None when `name` is absolute or climbs out of `folder`."""
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return None
    joined = posixpath.normpath(posixpath.join(folder, name.replace("\\", "/")))
    if not joined.startswith(folder + "/"):
        return None
    return joined


def _parse_verified(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def list_fsd(fs: pafs.FileSystem, root: str, cfg: PrepareConfig) -> Listing:
    """Rows of an FSDKaggle2018 train.csv, matched against the files in audio_train/."""
    listing = Listing("fsd")
    text = storage.read_bytes(fs, storage.join(root, FSD_CSV)).decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    missing_columns = {"fname", "label"} - set(reader.fieldnames or [])
    if missing_columns:
        raise PrepareError(
            f"{FSD_CSV} lacks the column(s) {', '.join(sorted(missing_columns))}; "
            "expected fname,label,manually_verified"
        )
    present = _list_files(fs, storage.join(root, FSD_AUDIO), listing.skipped)
    escapes = _escape_check(fs, root)
    wanted = set(cfg.labels) if cfg.labels else None
    seen: set[str] = set()
    for row in reader:
        fname, label = (row.get("fname") or "").strip(), (row.get("label") or "").strip() or None
        if wanted is not None and label not in wanted:
            listing.skipped["label_filter"] += 1
            continue
        if cfg.verified_only and not _parse_verified(row.get("manually_verified")):
            listing.skipped["unverified"] += 1
            continue
        relative = safe_relative_path(FSD_AUDIO, fname)
        if relative is None or escapes(relative):
            listing.rejects.append(
                {"source": fname, "reason": "unsafe_path", "detail": "path leaves the dataset root"}
            )
            continue
        if relative in seen:
            listing.skipped["duplicate_row"] += 1
            continue
        seen.add(relative)
        inner = relative[len(FSD_AUDIO) + 1 :]
        if inner not in present:
            listing.rejects.append(
                {
                    "source": relative,
                    "reason": "missing",
                    "detail": f"{FSD_CSV} names a missing file",
                }
            )
            continue
        listing.files.append(
            {
                "path": storage.join(root, relative),
                "source": relative,
                "label": label,
                "size_bytes": present[inner],
            }
        )
    return listing


def list_tree(fs: pafs.FileSystem, root: str, cfg: PrepareConfig) -> Listing:
    """Audio files under root; a file's label is its top-level folder (none at the root)."""
    if cfg.verified_only:
        raise PrepareError("--verified-only needs an FSDKaggle2018 root (train.csv)")
    listing = Listing("tree")
    wanted = set(cfg.labels) if cfg.labels else None
    escapes = _escape_check(fs, root)
    for relative, size in _list_files(fs, root, listing.skipped).items():
        parts = relative.split("/")
        if any(part.startswith(".") for part in parts):
            continue
        if not relative.lower().endswith(AUDIO_EXTENSIONS):
            listing.skipped["not_audio"] += 1
            continue
        label = parts[0] if len(parts) > 1 else None
        if wanted is not None and label not in wanted:
            listing.skipped["label_filter"] += 1
            continue
        if escapes(relative):
            listing.rejects.append(
                {
                    "source": relative,
                    "reason": "unsafe_path",
                    "detail": "link leaves the dataset root",
                }
            )
            continue
        listing.files.append(
            {
                "path": storage.join(root, relative),
                "source": relative,
                "label": label,
                "size_bytes": size,
            }
        )
    return listing


def list_source(fs: pafs.FileSystem, root: str, cfg: PrepareConfig, url: str) -> Listing:
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        raise PrepareError(f"SOURCE {storage.display(url)} is a file; give the dataset's folder")
    is_fsd = storage.exists(fs, storage.join(root, FSD_CSV))
    listing = list_fsd(fs, root, cfg) if is_fsd else list_tree(fs, root, cfg)
    if not listing.files and not listing.rejects:
        what = "rows matching the filters" if is_fsd else "audio files"
        raise PrepareError(f"SOURCE {storage.display(url)} holds no {what}")
    return listing


# ---------------------------------------------------------------------------------------------
# The per-block work (runs in Ray tasks)


def _open(fs: pafs.FileSystem, path: str, size_bytes: int, whole_file_max_bytes: int):
    """A seekable file object: the whole file in memory if small, else ranged reads."""
    if size_bytes <= whole_file_max_bytes:
        with fs.open_input_file(path) as handle:
            return io.BytesIO(handle.read())
    return io.BufferedReader(fs.open_input_file(path), buffer_size=1 << 20)


def process_files(
    files: list[dict],
    fs: pafs.FileSystem,
    cfg: PrepareConfig,
    label_ids: dict[str, int],
    timings: dict[str, float] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Turns a list of source files into (clip rows, reject rows); one bad file never stops it."""
    clips, rejects = [], []
    for item in files:
        source = item["source"]
        try:
            start = time.perf_counter()
            try:
                handle = _open(fs, item["path"], item["size_bytes"], cfg.whole_file_max_bytes)
            except FileNotFoundError:
                raise Rejected("missing", "the file disappeared after listing") from None
            if timings is not None:
                timings["read"] = timings.get("read", 0.0) + time.perf_counter() - start
            with handle:
                decoded = clips_from_file(handle, item["size_bytes"], cfg, source, timings)
        except Rejected as rejected:
            rejects.append({"source": source, "reason": rejected.reason, "detail": rejected.detail})
            continue
        except OSError as error:
            if not isinstance(fs, pafs.LocalFileSystem):
                # The store failing (after the S3 client's own retries) is the job's problem,
                # not this file's: prepare turns it into a StorageError naming the store.
                raise
            detail = f"unreadable: {' '.join(str(error).split())[:200]}"
            rejects.append({"source": source, "reason": "decode_error", "detail": detail})
            continue
        except Exception as error:  # noqa: BLE001 - any decoder failure must only cost this file
            detail = f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
            rejects.append({"source": source, "reason": "decode_error", "detail": detail})
            continue
        label = item["label"]
        for window, audio in decoded.clips:
            clips.append(
                {
                    "clip_id": f"{source}#{window}",
                    "label": label,
                    "label_id": label_ids.get(label, -1),
                    "source": source,
                    "source_sample_rate": decoded.source_sample_rate_hz,
                    "source_seconds": decoded.source_seconds,
                    "window": window,
                    "audio": audio,
                }
            )
    return clips, rejects


def clips_table(clips: list[dict], clip_samples: int) -> pa.Table:
    """Clip rows as an Arrow table whose audio column is fixed_size_list<float32>[clip_samples]."""
    schema = clip_schema(clip_samples)
    arrays = [
        pa.array([clip[name] for clip in clips], type=schema.field(name).type)
        for name in schema.names
        if name != "audio"
    ]
    flat = np.concatenate([clip["audio"] for clip in clips]) if clips else np.zeros(0, np.float32)
    arrays.append(
        pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), clip_samples)
    )
    return pa.Table.from_arrays(arrays, schema=schema)


def write_rejects(fs: pafs.FileSystem, folder: str, rows: list[dict], name: str) -> None:
    table = pa.Table.from_pylist(rows, schema=REJECT_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_bytes(fs, storage.join(folder, name), sink.getvalue().to_pybytes())


def _storage_error_in_task(error: OSError) -> storage.StorageError:
    return storage.StorageError(f"{STORAGE_FAILURE}: {' '.join(str(error).split())}")


def _prepare_block(
    batch: pa.Table,
    *,
    fs: pafs.FileSystem,
    cfg_dict: dict,
    label_ids: dict[str, int],
    rejects_dir: str,
    rejects_fs: pafs.FileSystem,
) -> pa.Table:
    cfg = from_dict(PrepareConfig, cfg_dict)
    files = batch.to_pylist()
    try:
        clips, rejects = process_files(files, fs, cfg, label_ids)
        if rejects:
            # Named by content, so a retried task rewrites the same file instead of adding one.
            digest = hashlib.sha1("\n".join(f["source"] for f in files).encode()).hexdigest()[:16]
            write_rejects(rejects_fs, rejects_dir, rejects, f"part-{digest}.parquet")
    except OSError as error:
        raise _storage_error_in_task(error) from None
    return clips_table(clips, cfg.clip_samples)


# ---------------------------------------------------------------------------------------------
# The driver


def _read_column_counts(fs: pafs.FileSystem, folder: str, column: str) -> Counter:
    if not storage.exists(fs, folder):
        return Counter()
    dataset = pads.dataset(folder, filesystem=fs, format="parquet")
    values = dataset.to_table(columns=[column]).column(column).to_pylist()
    return Counter(values)


def prepare(
    source_url: str,
    dest_url: str,
    cfg: PrepareConfig,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Runs the whole prepare job and returns its summary (also the manifest's counts).

    Raises:
        PrepareError: a bad SOURCE or DEST, or no usable clip; DEST then has no manifest.
        storage.StorageError: the store cannot be reached.
    """
    started = time.perf_counter()
    src_fs, src_root = storage.resolve(source_url)
    dst_fs, dst_root = storage.resolve(dest_url)
    _check_job(source_url, dest_url, src_root, dst_root, cfg)
    try:
        if not storage.exists(src_fs, src_root):
            raise PrepareError(f"SOURCE {storage.display(source_url)} does not exist")
        listing = list_source(src_fs, src_root, cfg, source_url)
    except OSError as error:
        raise storage.unreachable(source_url, error) from error
    try:
        _claim_destination(dst_fs, dst_root, dest_url, overwrite)
    except OSError as error:
        raise storage.unreachable(dest_url, error) from error

    labels = listing.labels
    label_ids = {label: index for index, label in enumerate(labels)}
    log(
        f"prepare: {len(listing.files)} files from {storage.display(source_url)} "
        f"({listing.layout} layout, {len(labels)} labels), {len(listing.rejects)} rejected "
        f"while listing -> {storage.display(dest_url)}"
    )
    rejects_dir = storage.join(dst_root, REJECTS)
    clips_dir = storage.join(dst_root, CLIPS)
    if listing.rejects:
        write_rejects(dst_fs, rejects_dir, listing.rejects, "part-listing.parquet")

    if listing.files:
        files = pa.Table.from_pylist(listing.files)
        blocks = [
            files.slice(offset, FILES_PER_BLOCK)
            for offset in range(0, files.num_rows, FILES_PER_BLOCK)
        ]
        context = ray.data.DataContext.get_current()
        context.retried_map_errors = [STORAGE_FAILURE]
        context.max_map_retries = STORAGE_RETRIES
        # The pipeline is one fused operator (map, then write); reserving resources for other
        # operators only halves how many of its tasks run at once (seen: 1 task on 2 CPUs).
        context.op_resource_reservation_enabled = False
        dataset = ray.data.from_arrow(blocks).map_batches(
            _prepare_block,
            batch_format="pyarrow",
            batch_size=cfg.batch_size,
            num_cpus=1,
            fn_kwargs={
                "fs": src_fs,
                "cfg_dict": to_dict(cfg),
                "label_ids": label_ids,
                "rejects_dir": rejects_dir,
                "rejects_fs": dst_fs,
            },
        )
        try:
            dataset.write_parquet(clips_dir, filesystem=dst_fs, **CLIP_PARQUET_OPTIONS)
        except ray.exceptions.RayTaskError as error:
            # Tasks raise only for storage trouble (a bad file is a reject row): name both ends.
            failure = storage_failure(error)
            if failure is None:
                raise
            ends = f"{storage.display(source_url)} -> {storage.display(dest_url)}"
            raise storage.StorageError(f"storage at {ends} failed: {failure[:300]}") from None
        except OSError as error:
            raise storage.unreachable(dest_url, error) from error

    clip_labels = _read_column_counts(dst_fs, clips_dir, "label")
    reject_reasons = _read_column_counts(dst_fs, rejects_dir, "reason")
    seconds = time.perf_counter() - started
    clips = sum(clip_labels.values())
    summary = {
        "dest": storage.display(dest_url),
        "clips": clips,
        "clips_per_label": {str(k): v for k, v in sorted(clip_labels.items(), key=str)},
        "files": len(listing.files) + len(listing.rejects),
        "rejects": sum(reject_reasons.values()),
        "rejects_by_reason": dict(sorted(reject_reasons.items())),
        "skipped": dict(listing.skipped),
        "seconds": round(seconds, 3),
        "clips_per_second": round(clips / seconds, 2) if seconds > 0 else None,
    }
    if clips == 0:
        raise PrepareError(
            f"no usable clip in {storage.display(source_url)}: {summary['rejects']} files "
            f"rejected {summary['rejects_by_reason']}; reasons are in "
            f"{storage.display(dest_url)}/{REJECTS}/"
        )
    manifest = {
        "format": "audiogan.prepared/1",
        "audiogan_version": __version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": storage.display(source_url),
        "layout": listing.layout,
        "sample_rate_hz": cfg.sample_rate_hz,
        "clip_samples": cfg.clip_samples,
        "clip_seconds": cfg.clip_seconds,
        "crop": cfg.crop,
        "pad": cfg.pad,
        "trim_silence": cfg.trim_silence,
        "normalize": cfg.normalize,
        "labels": labels,
        "counts": {
            "clips": clips,
            "per_label": summary["clips_per_label"],
            "files": summary["files"],
        },
        "rejects": summary["rejects_by_reason"],
        "config": to_dict(cfg),
    }
    # Written last: a DEST without a manifest is an unfinished dataset.
    storage.write_bytes(
        dst_fs, storage.join(dst_root, MANIFEST), json.dumps(manifest, indent=2).encode()
    )
    return summary


def storage_failure(error: BaseException) -> str | None:
    """The message of a storage failure inside a Ray task, or None for any other failure.

    Ray Data hands the driver a RayTaskError(UserCodeException) that keeps the task's
    exception only as text, so tasks mark storage failures with STORAGE_FAILURE.
    """
    for line in str(error).splitlines():
        if STORAGE_FAILURE in line:
            return line.split(STORAGE_FAILURE, 1)[1].lstrip(": ").strip()
    return None


def _check_job(source_url: str, dest_url: str, src_root: str, dst_root: str, cfg) -> None:
    """Refusals that need no file read: overlapping folders, local paths on a cluster, a rate."""
    if storage.is_s3(source_url) == storage.is_s3(dest_url):
        inside = (src_root + "/").startswith(dst_root + "/") or (dst_root + "/").startswith(
            src_root + "/"
        )
        if inside:
            raise PrepareError("DEST must not be SOURCE, nor inside it, nor contain it")
    local = [url for url in (source_url, dest_url) if not storage.is_s3(url)]
    if local and ray.is_initialized() and sum(n["Alive"] for n in ray.nodes()) > 1:
        raise PrepareError(
            f"{storage.display(local[0])} is a local path, but this Ray cluster has several "
            "nodes that do not share it: use s3:// for SOURCE and DEST"
        )
    for common_hz in (44100, 48000):
        try:
            resample_source_rate(common_hz, cfg.sample_rate_hz)
        except Rejected:
            raise PrepareError(
                f"--sample-rate {cfg.sample_rate_hz} cannot be reached exactly from common rates "
                "(44.1 or 48 kHz); choose a rate such as 8000, 16000, 22050, 24000 or 32000"
            ) from None


def _claim_destination(fs: pafs.FileSystem, root: str, url: str, overwrite: bool) -> None:
    if not storage.is_nonempty_dir(fs, root):
        return
    if not overwrite:
        raise PrepareError(
            f"DEST {storage.display(url)} exists and is not empty; pass --overwrite to replace it"
        )
    # The manifest goes first, so an interrupted overwrite never looks like a finished dataset.
    for name in (MANIFEST, CLIPS, REJECTS):
        storage.delete(fs, storage.join(root, name))


def read_manifest(dest_url: str) -> dict:
    """The manifest of a finished dataset; raises PrepareError for an unfinished one."""
    fs, root = storage.resolve(dest_url)
    path = storage.join(root, MANIFEST)
    if not storage.exists(fs, path):
        raise PrepareError(f"{storage.display(dest_url)} has no {MANIFEST}: not a finished dataset")
    return json.loads(storage.read_bytes(fs, path))
