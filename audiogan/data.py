"""Ray Data: list source files, turn each into clips with `audio.clips_from_file`, write Parquet.

The driver only lists files and reads the small train.csv; reading, decoding and writing happen
in Ray tasks, block by block, so a dataset larger than memory streams through and the same code
runs on a laptop or a multi-node cluster.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import math
import os
import posixpath
import stat
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs
import ray

from audiogan import dataset, storage
from audiogan.audio import Rejected, clips_from_file, decoder_output_hidden, resample_source_rate
from audiogan.config import PrepareConfig, from_dict, to_dict
from audiogan.dataset import (
    CLIP_PARQUET_OPTIONS,
    CLIPS,
    CUT_SCHEMA,
    CUTS,
    REJECT_SCHEMA,
    REJECTS,
    PrepareError,
    clips_table,
    write_rows,
)

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
# Marks a storage failure inside a task, so Ray Data retries the block (STORAGE_RETRIES times,
# with backoff) and the driver can tell it from a bug.
STORAGE_FAILURE = "audiogan storage failure"
STORAGE_RETRIES = 3
# train.csv is read whole; FSDKaggle2018's is 0.3 MiB.
MAX_CSV_BYTES = 256 * 2**20
# Most files in one Ray Data block: each block becomes one task and one Parquet file of clips.
FILES_PER_BLOCK = 64


@dataclass
class Listing:
    """What the driver found in SOURCE before any audio is read.

    Every entry of SOURCE (a train.csv row, or a name in the tree) is in exactly one place: a
    file to read, a reject row, or a count in `skipped` with its reason."""

    layout: str  # "fsd" or "tree"
    files: list[dict] = field(default_factory=list)  # path, source, label, size_bytes
    rejects: list[dict] = field(default_factory=list)  # rows of REJECT_SCHEMA
    skipped: Counter = field(default_factory=Counter)  # why entries were left out
    available_labels: set[str] = field(default_factory=set)  # before the --labels filter

    @property
    def labels(self) -> list[str]:
        return sorted({f["label"] for f in self.files if f["label"] is not None})

    @property
    def entries(self) -> int:
        return len(self.files) + len(self.rejects) + sum(self.skipped.values())

    def reject(self, source: str, reason: str, detail: str) -> None:
        self.rejects.append({"source": source, "reason": reason, "detail": detail})


# ---------------------------------------------------------------------------------------------
# Listing (driver side, no audio read)


@dataclass(frozen=True)
class _Found:
    """What a name in SOURCE turned out to be: a regular file (its size, and its real path
    relative to SOURCE, which two names of one file share), or why it is none."""

    kind: str  # "file", or a reject reason: missing, not_a_file, broken_link, link_loop, ...
    detail: str = ""
    size_bytes: int = 0
    real: str = ""


def _inside(root_real: str, real: str) -> bool:
    """Whether a resolved path lies in the resolved root."""
    return os.path.commonpath([root_real, real]) == root_real


# How a name that is no regular file is described, by its type.
_NOT_A_FILE = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
               (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
               (stat.S_ISSOCK, "a socket"))  # fmt: skip


def _what_is_local(root_real: str, path: str) -> _Found:
    """Looks at a local name without opening it: links are followed, and judged."""
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return _Found("missing", "no such file")
    except ValueError:  # a NUL byte in the name
        return _Found("bad_row", "a name no file can have")
    except OSError as error:
        if error.errno == errno.ELOOP:
            return _Found("link_loop", "a folder on its path is a link that leads back to itself")
        if error.errno == errno.ENAMETOOLONG:
            return _Found("bad_row", "a name longer than the system allows")
        return _Found("not_a_file", f"cannot be looked at ({error.strerror})")
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(path)
        try:
            info = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return _Found("broken_link", f"a link to {target}, which does not exist")
        except OSError as error:
            if error.errno == errno.ELOOP:
                return _Found("link_loop", f"a link to {target} that leads back to itself")
            return _Found("broken_link", f"a link to {target} that cannot be followed")
    real = os.path.realpath(path)
    if not _inside(root_real, real):
        return _Found("unsafe_path", "a link that leads outside SOURCE")
    if not stat.S_ISREG(info.st_mode):
        kinds = (what for is_kind, what in _NOT_A_FILE if is_kind(info.st_mode))
        return _Found("not_a_file", next(kinds, "not a regular file"))
    return _Found("file", size_bytes=info.st_size, real=os.path.relpath(real, root_real))


def _walk_local(root: str, listing: Listing) -> list[tuple[str, _Found]]:
    """(relative name, what it is) for every audio-named entry under a local root, sorted.

    Folders are walked without following links to folders: a link to a folder inside SOURCE
    is counted (its files are listed under their own names), one to a folder outside SOURCE
    is a reject. Hidden entries (.name) and names without an audio extension are counted.
    """
    root_real = os.path.realpath(root)
    found, folders = [], [""]
    while folders:
        folder = folders.pop()
        try:
            entries = sorted(os.scandir(os.path.join(root, folder)), key=lambda e: e.name)
        except OSError as error:
            listing.reject(folder or ".", "not_a_file", f"a folder that cannot be listed: {error}")
            continue
        for entry in entries:
            relative = f"{folder}/{entry.name}" if folder else entry.name
            why = _skip_reason(relative)
            if why == "hidden":
                listing.skipped[why] += 1
            elif entry.is_dir(follow_symlinks=False):
                folders.append(relative)
            elif entry.is_symlink() and os.path.isdir(entry.path):
                if _inside(root_real, os.path.realpath(entry.path)):
                    listing.skipped["link_to_a_folder_inside"] += 1
                else:
                    listing.reject(relative, "unsafe_path", "a link to a folder outside SOURCE")
            elif why:
                listing.skipped[why] += 1
            else:
                found.append((relative, _what_is_local(root_real, entry.path)))
    return sorted(found)


def _skip_reason(relative: str) -> str | None:
    """Why a tree leaves a name out (hidden, or no audio extension), or None."""
    if any(part.startswith(".") for part in relative.split("/")):
        return "hidden"
    return None if relative.lower().endswith(AUDIO_EXTENSIONS) else "not_audio"


def _list_store(fs: pafs.FileSystem, root: str) -> tuple[dict[str, int], set[str]]:
    """(relative path -> size of every object under root, relative folder names) on a store
    without links (S3)."""
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    prefix = root.rstrip("/") + "/"
    files, folders = {}, set()
    for info in fs.get_file_info(selector):
        if info.type == pafs.FileType.File:
            files[info.path[len(prefix) :]] = info.size
        elif info.type == pafs.FileType.Directory:
            folders.add(info.path[len(prefix) :])
    return dict(sorted(files.items())), folders


def _keep_once(named: list[tuple[str, dict]], listing: Listing) -> list[dict]:
    """One file per real file, from (real path, file) pairs: of its names, the one that is no
    link (its source is its real path), else the first; the others count as same_file_twice."""
    chosen: dict[str, dict] = {}
    for real, item in named:
        best = chosen.get(real)
        if best is None or (item["source"] == real and best["source"] != real):
            chosen[real] = item
    if len(named) > len(chosen):
        listing.skipped["same_file_twice"] += len(named) - len(chosen)
    kept = {id(item) for item in chosen.values()}
    return [item for _, item in named if id(item) in kept]


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


def _read_csv(fs: pafs.FileSystem, root: str) -> str:
    """train.csv's text, once it is known to be a regular file inside SOURCE of a sane size (a
    named pipe would block for ever, a link to /dev/zero read until memory ran out)."""
    path = storage.join(root, FSD_CSV)
    if isinstance(fs, pafs.LocalFileSystem):
        found = _what_is_local(os.path.realpath(root), path)
        if found.kind != "file":
            raise PrepareError(f"SOURCE's {FSD_CSV} is no file to read: {found.detail}")
        size = found.size_bytes
    else:
        size = fs.get_file_info(path).size or 0
    if size > MAX_CSV_BYTES:
        raise PrepareError(
            f"SOURCE's {FSD_CSV} is {size / 2**20:.0f} MiB; FSDKaggle2018's is 0.3 MiB and the "
            f"most read is {MAX_CSV_BYTES // 2**20} MiB"
        )
    try:
        return storage.read_bytes(fs, path).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise PrepareError(f"SOURCE's {FSD_CSV} is not UTF-8 text ({error.reason})") from None


def list_fsd(fs: pafs.FileSystem, root: str, cfg: PrepareConfig) -> Listing:
    """Rows of an FSDKaggle2018 train.csv, each looked up in audio_train/ under its own name.

    A file that several rows name (through links) is used once, under the row that names it
    where it really is, whatever the filters keep: its label does not depend on --labels.
    """
    listing = Listing("fsd")
    reader = csv.DictReader(io.StringIO(_read_csv(fs, root)))
    missing_columns = {"fname", "label"} - set(reader.fieldnames or [])
    if missing_columns:
        raise PrepareError(
            f"{FSD_CSV} lacks the column(s) {', '.join(sorted(missing_columns))}; "
            "expected fname,label,manually_verified"
        )
    local = isinstance(fs, pafs.LocalFileSystem)
    root_real = os.path.realpath(root) if local else ""
    store_files, store_folders = ({}, set()) if local else _list_store(fs, root)
    wanted = set(cfg.labels) if cfg.labels else None
    seen: set[str] = set()
    named: list[tuple[str, dict]] = []
    left_out: dict[int, str] = {}  # id(item) -> why the filters leave its row out
    for row in reader:
        fname, label = (row.get("fname") or "").strip(), (row.get("label") or "").strip() or None
        if label is not None:
            listing.available_labels.add(label)
        filtered = None
        if wanted is not None and label not in wanted:
            filtered = "label_filter"
        elif cfg.verified_only and not _parse_verified(row.get("manually_verified")):
            filtered = "unverified"
        relative = safe_relative_path(FSD_AUDIO, fname)
        if relative is not None and relative in seen:
            listing.skipped["duplicate_row"] += 1
            continue
        if relative is not None:
            seen.add(relative)
            if local:
                found = _what_is_local(root_real, os.path.join(root, relative))
            elif relative in store_files:
                found = _Found("file", size_bytes=store_files[relative], real=relative)
            elif relative in store_folders:
                found = _Found("not_a_file", "a folder")
            else:
                found = _Found("missing")
        if relative is not None and found.kind == "file":
            item = {
                "path": storage.join(root, relative),
                "source": relative,
                "label": label,
                "size_bytes": found.size_bytes,
            }
            named.append((found.real, item))
            if filtered:
                left_out[id(item)] = filtered
        elif filtered:
            listing.skipped[filtered] += 1
        elif not fname:
            listing.reject(f"{FSD_CSV}:{reader.line_num}", "bad_row", "a row with no fname")
        elif relative is None:
            listing.reject(fname, "unsafe_path", f"the path leaves {FSD_AUDIO}/")
        else:
            missing = f"{FSD_CSV} names a file that is not there"
            listing.reject(
                relative, found.kind, missing if found.kind == "missing" else found.detail
            )
    for item in _keep_once(named, listing):
        if id(item) in left_out:
            listing.skipped[left_out[id(item)]] += 1
        else:
            listing.files.append(item)
    return listing


def list_tree(fs: pafs.FileSystem, root: str, cfg: PrepareConfig) -> Listing:
    """Audio files under root; a file's label is its top-level folder (none at the root)."""
    if cfg.verified_only:
        raise PrepareError("--verified-only needs an FSDKaggle2018 root (train.csv)")
    listing = Listing("tree")
    if isinstance(fs, pafs.LocalFileSystem):
        found = _walk_local(root, listing)
    else:
        files, _ = _list_store(fs, root)
        found = []
        for relative, size in files.items():
            if why := _skip_reason(relative):
                listing.skipped[why] += 1
            else:
                found.append((relative, _Found("file", size_bytes=size, real=relative)))
    named: list[tuple[str, dict]] = []
    for relative, what in found:
        if what.kind != "file":
            listing.reject(relative, what.kind, what.detail)
            continue
        parts = relative.split("/")
        item = {
            "path": storage.join(root, relative),
            "source": relative,
            "label": parts[0] if len(parts) > 1 else None,
            "size_bytes": what.size_bytes,
        }
        named.append((what.real, item))
    # A file with several names is used under its real place, which gives its label.
    files = _keep_once(named, listing)
    listing.available_labels = {f["label"] for f in files if f["label"] is not None}
    wanted = set(cfg.labels) if cfg.labels else None
    listing.files = [f for f in files if wanted is None or f["label"] in wanted]
    if len(files) > len(listing.files):
        listing.skipped["label_filter"] += len(files) - len(listing.files)
    return listing


def list_source(fs: pafs.FileSystem, root: str, cfg: PrepareConfig, url: str) -> Listing:
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        raise PrepareError(f"SOURCE {storage.display(url)} is a file; give the dataset's folder")
    if info.type != pafs.FileType.Directory:
        raise PrepareError(f"SOURCE {storage.display(url)} is not a folder")
    is_fsd = storage.exists(fs, storage.join(root, FSD_CSV))
    listing = list_fsd(fs, root, cfg) if is_fsd else list_tree(fs, root, cfg)
    unknown = sorted(set(cfg.labels or ()) - listing.available_labels)
    if unknown:
        known = ", ".join(sorted(listing.available_labels)) or "none"
        raise PrepareError(
            f"--labels {','.join(unknown)}: not a label of SOURCE {storage.display(url)} "
            f"(its labels: {known})"
        )
    if not listing.files and not listing.rejects:
        what = "rows matching the filters" if is_fsd else "audio files"
        raise PrepareError(f"SOURCE {storage.display(url)} holds no {what}")
    return listing


# ---------------------------------------------------------------------------------------------
# The per-block work (runs in Ray tasks)


def _open(fs: pafs.FileSystem, path: str, size_bytes: int, whole_file_max_bytes: int):
    """A seekable file object: the whole file in memory if small, else ranged reads.

    A local file is opened without blocking and checked to be a regular file, in case a named
    pipe took its name after the listing (reading one would wait for ever)."""
    if isinstance(fs, pafs.LocalFileSystem):
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        handle = os.fdopen(descriptor, "rb", buffering=1 << 20)
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            handle.close()
            raise Rejected("not_a_file", "no longer a regular file when it was read")
        if size_bytes <= whole_file_max_bytes:
            with handle:
                return io.BytesIO(handle.read())
        return handle
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
    quiet: bool = True,
) -> tuple[list[dict], list[dict], list[dict]]:
    """Turns a list of source files into (clip rows, reject rows, cut rows: files `max_windows`
    cut short); one bad file never stops it. `quiet` hides what decoders print to stderr."""
    clips, rejects, cuts = [], [], []
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
            with handle, decoder_output_hidden(quiet):
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
        if decoded.cut:
            cuts.append(
                {
                    "source": source,
                    "source_seconds": decoded.source_seconds,
                    "windows": len(decoded.clips),
                    "seconds_left_out": decoded.seconds_left_out,
                }
            )
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
    return clips, rejects, cuts


def _storage_error_in_task(error: OSError) -> storage.StorageError:
    return storage.StorageError(f"{STORAGE_FAILURE}: {' '.join(str(error).split())}")


def _prepare_block(
    batch: pa.Table,
    *,
    fs: pafs.FileSystem,
    cfg_dict: dict,
    label_ids: dict[str, int],
    dest_root: str,
    dest_fs: pafs.FileSystem,
    quiet: bool,
) -> pa.Table:
    cfg = from_dict(PrepareConfig, cfg_dict)
    files = batch.to_pylist()
    try:
        clips, rejects, cuts = process_files(files, fs, cfg, label_ids, quiet=quiet)
        # Named by content, so a retried task rewrites the same file instead of adding one.
        digest = hashlib.sha1("\n".join(f["source"] for f in files).encode()).hexdigest()[:16]
        for rows, folder, schema in ((rejects, REJECTS, REJECT_SCHEMA), (cuts, CUTS, CUT_SCHEMA)):
            if rows:
                folder_path = storage.join(dest_root, folder)
                write_rows(dest_fs, folder_path, rows, f"part-{digest}.parquet", schema)
    except OSError as error:
        raise _storage_error_in_task(error) from None
    return clips_table(clips, cfg.clip_samples)


# ---------------------------------------------------------------------------------------------
# The driver


@dataclass
class Plan:
    """A prepare job checked and listed, before Ray starts: nothing is written yet."""

    source_url: str
    dest_url: str
    cfg: PrepareConfig
    overwrite: bool
    listing: Listing
    src_fs: pafs.FileSystem
    dst_fs: pafs.FileSystem
    dst_root: str


def plan_prepare(
    source_url: str, dest_url: str, cfg: PrepareConfig, overwrite: bool = False
) -> Plan:
    """Everything prepare can check without Ray: SOURCE and DEST, the options, the listing.

    Raises:
        PrepareError: a bad SOURCE or DEST (nothing is written or deleted).
        storage.StorageError: the store cannot be reached.
    """
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
        _check_destination(dst_fs, dst_root, dest_url, overwrite)
    except OSError as error:
        raise storage.unreachable(dest_url, error) from error
    return Plan(source_url, dest_url, cfg, overwrite, listing, src_fs, dst_fs, dst_root)


def prepare(
    source_url: str,
    dest_url: str,
    cfg: PrepareConfig,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    verbose: bool = False,
) -> dict:
    """Runs the whole prepare job (plan_prepare, then run_prepare) and returns its summary."""
    return run_prepare(plan_prepare(source_url, dest_url, cfg, overwrite), log, verbose)


def run_prepare(plan: Plan, log: Callable[[str], None] = print, verbose: bool = False) -> dict:
    """Reads, decodes and writes the planned job on Ray; returns its summary (also the
    manifest's counts). `verbose` lets decoders' own messages through to the console.

    Raises:
        PrepareError: no usable clip, or local paths on a cluster; DEST then has no manifest.
        storage.StorageError: the store cannot be reached.
    """
    started = time.perf_counter()
    listing, dst_fs, dst_root = plan.listing, plan.dst_fs, plan.dst_root
    unshared = storage.unshared_path([plan.source_url, plan.dest_url], "SOURCE and DEST")
    if unshared:
        raise PrepareError(unshared)
    try:
        _claim_destination(dst_fs, dst_root, plan.dest_url, plan.overwrite)
    except OSError as error:
        raise storage.unreachable(plan.dest_url, error) from error

    labels = listing.labels
    log(
        f"prepare: {len(listing.files)} files from {storage.display(plan.source_url)} "
        f"({listing.layout} layout, {len(labels)} labels), {len(listing.rejects)} rejected "
        f"while listing -> {storage.display(plan.dest_url)}"
    )
    if listing.rejects:
        rejects_dir = storage.join(dst_root, REJECTS)
        write_rows(dst_fs, rejects_dir, listing.rejects, "part-listing.parquet", REJECT_SCHEMA)
    if listing.files:
        _write_clips(plan, {label: index for index, label in enumerate(labels)}, verbose)

    written = dataset.count_written(dst_fs, dst_root)
    summary = _summary(plan, written, started)
    if written["cuts"]:
        log(_cuts_message(written["cuts"], plan.cfg))
    if summary["clips"] == 0:
        raise PrepareError(
            f"no usable clip in {storage.display(plan.source_url)}: {summary['rejects']} files "
            f"rejected {summary['rejects_by_reason']}; reasons are in "
            f"{storage.display(plan.dest_url)}/{REJECTS}/"
        )
    shown = storage.display(plan.source_url)
    manifest = dataset.build_manifest(shown, listing.layout, labels, plan.cfg, summary)
    dataset.write_manifest(dst_fs, dst_root, manifest)
    return summary


@contextlib.contextmanager
def _data_context(**settings):
    """Ray Data's process-wide DataContext with these settings, restored afterwards."""
    context = ray.data.DataContext.get_current()
    before = {name: getattr(context, name) for name in settings}
    for name, value in settings.items():
        setattr(context, name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            setattr(context, name, value)


def files_per_block(files: int, cpus: float) -> int:
    """Files in one block: at most FILES_PER_BLOCK, and few enough that every CPU of the
    cluster gets a block (20 files on 3 CPUs: blocks of 7, 7 and 6, not one of 20)."""
    return max(1, min(FILES_PER_BLOCK, math.ceil(files / max(1, int(cpus)))))


def _write_clips(plan: Plan, label_ids: dict[str, int], verbose: bool) -> None:
    """The Ray Data job: blocks of files (files_per_block), each decoded by one task whose
    clips go to DEST/clips (and its rejects and cuts to their folders)."""
    files = pa.Table.from_pylist(plan.listing.files)
    size = files_per_block(files.num_rows, ray.cluster_resources().get("CPU", 1))
    blocks = [files.slice(offset, size) for offset in range(0, files.num_rows, size)]
    settings = {
        "retried_map_errors": [STORAGE_FAILURE],
        "max_map_retries": STORAGE_RETRIES,
        # The pipeline is one fused operator (map, then write); reserving resources for other
        # operators only halves how many of its tasks run at once (seen: 1 task on 2 CPUs).
        "op_resource_reservation_enabled": False,
    }
    with _data_context(**settings):
        clips = ray.data.from_arrow(blocks).map_batches(
            _prepare_block,
            batch_format="pyarrow",
            batch_size=plan.cfg.batch_size,
            num_cpus=1,
            fn_kwargs={
                "fs": plan.src_fs,
                "cfg_dict": to_dict(plan.cfg),
                "label_ids": label_ids,
                "dest_root": plan.dst_root,
                "dest_fs": plan.dst_fs,
                "quiet": not verbose,
            },
        )
        clips_dir = storage.join(plan.dst_root, CLIPS)
        try:
            clips.write_parquet(clips_dir, filesystem=plan.dst_fs, **CLIP_PARQUET_OPTIONS)
        except ray.exceptions.RayTaskError as error:
            # Tasks raise only for storage trouble (a bad file is a reject row): name both ends.
            failure = storage_failure(error)
            if failure is None:
                raise
            ends = f"{storage.display(plan.source_url)} -> {storage.display(plan.dest_url)}"
            raise storage.StorageError(f"storage at {ends} failed: {failure[:300]}") from None
        except OSError as error:
            raise storage.unreachable(plan.dest_url, error) from error


def _summary(plan: Plan, written: dict, started: float) -> dict:
    """prepare's summary from what DEST holds (dataset.count_written)."""
    clip_labels, reject_reasons, cuts = (
        written["clip_labels"],
        written["reject_reasons"],
        written["cuts"],
    )
    seconds = time.perf_counter() - started
    clips = sum(clip_labels.values())
    return {
        "dest": storage.display(plan.dest_url),
        "clips": clips,
        "clips_per_label": dict(sorted((k, v) for k, v in clip_labels.items() if k is not None)),
        "unlabelled_clips": clip_labels.get(None, 0),
        "entries": plan.listing.entries,
        "files_used": written["files_used"],
        "rejects": sum(reject_reasons.values()),
        "rejects_by_reason": dict(sorted(reject_reasons.items())),
        "skipped": dict(sorted(plan.listing.skipped.items())),
        "files_cut": len(cuts),
        "seconds_left_out": round(sum(row["seconds_left_out"] for row in cuts), 3),
        "seconds": round(seconds, 3),
        "clips_per_second": round(clips / seconds, 2) if seconds > 0 else None,
    }


def _cuts_message(cuts: list[dict], cfg: PrepareConfig) -> str:
    """One line: which files --max-windows cut short, and how much of them is left out."""
    total = sum(row["seconds_left_out"] for row in cuts)
    shown = ", ".join(
        f"{row['source']} ({row['source_seconds']:,.0f} s, {row['seconds_left_out']:,.0f} s left)"
        for row in cuts[:3]
    )
    more = f" and {len(cuts) - 3} more" if len(cuts) > 3 else ""
    return (
        f"prepare: {len(cuts)} file(s) had sound past --max-windows {cfg.max_windows} "
        f"({cfg.max_windows} clips of {cfg.clip_seconds:g} s) or past what one read of an MP3 "
        f"holds, {total:,.0f} s left out in all: {shown}{more}; --max-windows 0 keeps every "
        f"window (listed in {CUTS}/)"
    )


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
    """Refusals that need no file read: overlapping folders (links resolved), a rate."""
    if storage.is_s3(source_url) == storage.is_s3(dest_url):
        pairs = [(src_root, dst_root)]
        if not storage.is_s3(source_url):
            pairs.append((os.path.realpath(src_root), os.path.realpath(dst_root)))
        for src, dst in pairs:
            if (src + "/").startswith(dst + "/") or (dst + "/").startswith(src + "/"):
                raise PrepareError(
                    "DEST must not be SOURCE, nor inside it, nor contain it"
                    + ("" if src == src_root and dst == dst_root else " (links resolved)")
                )
    for common_hz in (44100, 48000):
        try:
            resample_source_rate(common_hz, cfg.sample_rate_hz)
        except Rejected:
            raise PrepareError(
                f"--sample-rate {cfg.sample_rate_hz} cannot be reached exactly from common rates "
                "(44.1 or 48 kHz); choose a rate such as 8000, 16000, 22050, 24000 or 32000"
            ) from None


def _check_destination(fs: pafs.FileSystem, root: str, url: str, overwrite: bool) -> bool:
    """Refuses a DEST that is a file, or a non-empty one without --overwrite; returns whether
    it holds something to replace."""
    if fs.get_file_info(root).type == pafs.FileType.File:
        raise PrepareError(f"DEST {storage.display(url)} is a file; give a folder")
    if not storage.is_nonempty_dir(fs, root):
        return False
    if not overwrite:
        raise PrepareError(
            f"DEST {storage.display(url)} exists and is not empty; pass --overwrite to replace it"
        )
    return True


def _claim_destination(fs: pafs.FileSystem, root: str, url: str, overwrite: bool) -> None:
    """Checks DEST again (it may have changed since the plan), then clears an old dataset."""
    if _check_destination(fs, root, url, overwrite):
        dataset.clear(fs, root)
