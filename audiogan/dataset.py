"""The prepared dataset on disk: its names, schemas and manifest.

`audiogan prepare` writes it (audiogan/data.py, on Ray Data); training, evaluation and
generation read it. This module is their one contract and imports no Ray, so that evaluation
and the classifier read a dataset with pyarrow alone.

    DEST/clips/*.parquet     one row per training clip (clip_schema)
    DEST/rejects/*.parquet   files that gave no clip, with a reason (REJECT_SCHEMA)
    DEST/cuts/*.parquet      files crop=windows kept only part of (CUT_SCHEMA)
    DEST/evaluator/          the evaluation classifier fitted on the clips, if any
    DEST/manifest.json       written last: a DEST without one is an unfinished dataset
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from audiogan import __version__, storage
from audiogan.config import PrepareConfig, to_dict
from audiogan.errors import AudioganError

# /2 stores each clip's audio as 16-bit PCM, little-endian, in one fixed-size binary value
# (half the bytes of /1's float32; Parquet has no 2-byte integer type: an int16 column is
# written as INT32, 4 bytes a sample). Readers read both formats.
FORMAT = "audiogan.prepared/2"
READABLE_FORMATS = ("audiogan.prepared/1", FORMAT)
# int16 sample = round(float sample x PCM_SCALE): prepare's clips lie in [-1, 1] (normalize
# clips them), so nothing saturates, and the error is at most 0.5 / PCM_SCALE (1.5e-5), 98 dB
# below a full-scale sine.
PCM_SCALE = 32767
MANIFEST = "manifest.json"
CLIPS = "clips"
REJECTS = "rejects"
CUTS = "cuts"
# Where `audiogan evaluator fit` keeps the classifier it fitted on DEST's clips.
EVALUATOR_DIR = "evaluator"

# Audio samples barely compress and cost 2.5x the write time with snappy: store them plain.
CLIP_PARQUET_OPTIONS = {
    "compression": {"audio": "none"},
    "use_dictionary": ["clip_id", "label", "source"],
}

REJECT_SCHEMA = pa.schema(
    [("source", pa.string()), ("reason", pa.string()), ("detail", pa.string())]
)
# Files crop=windows kept only part of (max_windows): how long they are, what was left out.
CUT_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("source_seconds", pa.float64()),
        ("windows", pa.int32()),
        ("seconds_left_out", pa.float64()),
    ]
)


class PrepareError(AudioganError):
    """prepare cannot run or produced nothing usable, or a folder is no finished dataset; the
    message says what to do."""


def clip_schema(clip_samples: int) -> pa.Schema:
    """The Parquet schema of DEST/clips."""
    return pa.schema(
        [
            ("clip_id", pa.string()),
            ("label", pa.string()),
            ("label_id", pa.int32()),
            ("source", pa.string()),
            ("source_sample_rate", pa.int32()),
            ("source_seconds", pa.float32()),
            ("window", pa.int32()),
            ("audio", pa.binary(2 * clip_samples)),  # int16 little-endian (to_pcm16)
        ]
    )


def to_pcm16(
    audio: np.ndarray, out: np.ndarray | None = None, scratch: np.ndarray | None = None
) -> np.ndarray:
    """Float samples in [-1, 1] as little-endian int16 (rounded to the nearest step), into
    `out` if given, through a float32 `scratch` of the same length if given."""
    scaled = np.multiply(audio, PCM_SCALE, out=scratch, dtype=np.float32)
    np.rint(scaled, out=scaled)
    if out is None:
        return scaled.astype("<i2")
    out[:] = scaled
    return out


def from_pcm16(samples: np.ndarray) -> np.ndarray:
    """float32 samples from stored ones: int16 (format /2) scaled back, float32 (/1) as is."""
    if samples.dtype.kind == "i" and samples.dtype.itemsize == 2:  # int16 of either byte order
        return np.multiply(samples, np.float32(1 / PCM_SCALE), dtype=np.float32)
    return np.asarray(samples, dtype=np.float32)


def clips_table(clips: list[dict], clip_samples: int) -> pa.Table:
    """Clip rows (float32 audio) as an Arrow table of clip_schema: the audio in 16 bits."""
    schema = clip_schema(clip_samples)
    arrays = [
        pa.array([clip[name] for clip in clips], type=schema.field(name).type)
        for name in schema.names
        if name != "audio"
    ]
    # Clip by clip into one buffer: a fresh buffer costs its first-touch page faults, which
    # were most of the write's time (a float32 copy of the block and its scaled copy).
    pcm = np.empty(len(clips) * clip_samples, dtype="<i2")
    scaled = np.empty(clip_samples, dtype=np.float32)
    for index, clip in enumerate(clips):
        to_pcm16(clip["audio"], pcm[index * clip_samples : (index + 1) * clip_samples], scaled)
    audio_type = schema.field("audio").type
    arrays.append(
        pa.FixedSizeBinaryArray.from_buffers(audio_type, len(clips), [None, pa.py_buffer(pcm)])
    )
    return pa.Table.from_arrays(arrays, schema=schema)


def audio_as_int16(table: pa.Table) -> pa.Table:
    """Clip rows whose audio column is fixed_size_list<int16>[clip_samples], a view of the
    stored bytes (format /2); a format /1 table (float32 lists) comes back as it is."""
    column = table.column("audio")
    if not pa.types.is_fixed_size_binary(column.type):
        return table
    if column.null_count or sys.byteorder != "little":
        raise PrepareError("clip audio with missing values, or a big-endian machine: unreadable")
    samples = column.type.byte_width // 2
    chunks = [
        pa.FixedSizeListArray.from_arrays(
            pa.Array.from_buffers(
                pa.int16(),
                len(chunk) * samples,
                [None, chunk.buffers()[1]],
                offset=chunk.offset * samples,
            ),
            samples,
        )
        for chunk in column.chunks
    ]
    index = table.schema.get_field_index("audio")
    as_list = pa.chunked_array(chunks, type=pa.list_(pa.int16(), samples))
    return table.set_column(index, pa.field("audio", as_list.type), as_list)


def clip_audio(table: pa.Table, clip_samples: int) -> np.ndarray:
    """The audio column of clip rows as float32 (clips, clip_samples), of either format."""
    flat = audio_as_int16(table).column("audio").combine_chunks().flatten().to_numpy()
    return from_pcm16(flat).reshape(-1, clip_samples)


def write_rows(
    fs: pafs.FileSystem, folder: str, rows: list[dict], name: str, schema: pa.Schema
) -> None:
    """One small Parquet file of rejects or cuts."""
    table = pa.Table.from_pylist(rows, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_bytes(fs, storage.join(folder, name), sink.getvalue().to_pybytes())


def read_columns(fs: pafs.FileSystem, folder: str, columns: list[str]) -> pa.Table | None:
    """Some columns of every Parquet file in a folder of DEST; None when it has no folder."""
    if not storage.exists(fs, folder):
        return None
    return pads.dataset(folder, filesystem=fs, format="parquet").to_table(columns=columns)


def read_clips(data_url: str, columns: list[str]) -> pa.Table:
    """Columns of every clip of a dataset whose manifest the caller has read (read_manifest:
    that it is a finished one)."""
    fs, root = storage.resolve(data_url)
    return pq.read_table(storage.join(root, CLIPS), filesystem=fs, columns=columns)


def count_written(fs: pafs.FileSystem, root: str) -> dict:
    """What DEST holds, counted from its files: clips per label (None: unlabelled), reject
    reasons, the files cut (sorted by source) and how many source files gave clips."""
    clip_rows = read_columns(fs, storage.join(root, CLIPS), ["label", "source"])
    reject_rows = read_columns(fs, storage.join(root, REJECTS), ["reason"])
    cut_rows = read_columns(fs, storage.join(root, CUTS), CUT_SCHEMA.names)
    return {
        "clip_labels": Counter(clip_rows.column("label").to_pylist() if clip_rows else []),
        "reject_reasons": Counter(reject_rows.column("reason").to_pylist() if reject_rows else []),
        "cuts": sorted(cut_rows.to_pylist(), key=lambda row: row["source"]) if cut_rows else [],
        "files_used": len(set(clip_rows.column("source").to_pylist())) if clip_rows else 0,
    }


def build_manifest(
    source: str, layout: str, labels: list[str], cfg: PrepareConfig, summary: dict
) -> dict:
    """The manifest of a finished dataset, from prepare's summary of what it wrote."""
    return {
        "format": FORMAT,
        "audiogan_version": __version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        "layout": layout,
        "sample_rate_hz": cfg.sample_rate_hz,
        "clip_samples": cfg.clip_samples,
        "clip_seconds": cfg.clip_seconds,
        "crop": cfg.crop,
        "pad": cfg.pad,
        "trim_silence": cfg.trim_silence,
        "normalize": cfg.normalize,
        "max_windows": cfg.max_windows,
        "labels": labels,
        "counts": {
            "clips": summary["clips"],
            "per_label": summary["clips_per_label"],
            "unlabelled": summary["unlabelled_clips"],
            "entries": summary["entries"],
            "files_used": summary["files_used"],
            "skipped": summary["skipped"],
            "files_cut": summary["files_cut"],
            "seconds_left_out": summary["seconds_left_out"],
        },
        "rejects": summary["rejects_by_reason"],
        "config": to_dict(cfg),
    }


def write_manifest(fs: pafs.FileSystem, root: str, manifest: dict) -> None:
    """Written last: a DEST without a manifest is an unfinished dataset."""
    storage.write_bytes(fs, storage.join(root, MANIFEST), json.dumps(manifest, indent=2).encode())


def clear(fs: pafs.FileSystem, root: str) -> None:
    """Deletes a dataset's parts. The manifest goes first, so an interrupted overwrite never
    looks like a finished dataset; a classifier fitted on the old clips goes too, or evaluate
    would judge by it."""
    for name in (MANIFEST, CLIPS, REJECTS, CUTS, EVALUATOR_DIR):
        storage.delete(fs, storage.join(root, name))


def read_manifest(dest_url: str) -> dict:
    """The manifest of a finished dataset; raises PrepareError for an unfinished one."""
    fs, root = storage.resolve(dest_url)
    shown = storage.display(dest_url)
    why = storage.why_not_a_folder(fs, root, dest_url)
    if why:
        raise PrepareError(f"{shown} {why}; give a dataset folder (audiogan prepare DEST)")
    try:
        path = storage.join(root, MANIFEST)
        if not storage.exists(fs, path):
            raise PrepareError(
                f"{shown} has no {MANIFEST}: not a dataset, or one whose prepare did not finish"
            )
        text = storage.read_bytes(fs, path)
    except OSError as error:
        raise storage.unreachable(dest_url, error) from None
    try:
        manifest = json.loads(text)
    except ValueError:
        raise PrepareError(f"{shown}/{MANIFEST} is damaged (not JSON)") from None
    if not isinstance(manifest, dict) or "clip_samples" not in manifest:
        raise PrepareError(f"{shown}/{MANIFEST} is not an audiogan dataset manifest")
    if manifest.get("format") not in READABLE_FORMATS:
        raise PrepareError(
            f"{shown} is in format {manifest.get('format')!r}, which this audiogan "
            f"({__version__}) cannot read (it reads {', '.join(READABLE_FORMATS)}): rewrite it "
            f"with this version, audiogan prepare SOURCE {shown} --overwrite"
        )
    return manifest
