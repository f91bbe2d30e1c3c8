"""The one place that turns a URL into a filesystem (local folder or S3-compatible store).

Credentials come only from the standard AWS variables or the machine's role; they are never
logged, stored in a manifest or put in a message. pyarrow ignores `AWS_ENDPOINT_URL*` and asks
AWS for the bucket's region unless told, so both are passed explicitly.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from audiogan.errors import AudioganError

T = TypeVar("T")

# S3 errors (as pyarrow words them) that no retry can fix: wrong keys, no such bucket.
PERMANENT_S3_ERRORS = ("ACCESS_DENIED", "NO_SUCH_BUCKET", "INVALID_ACCESS_KEY_ID",
                       "SIGNATURE_DOES_NOT_MATCH", "INVALID_SIGNATURE")  # fmt: skip
# Waits between attempts grow from the first to the last, then stay there.
RETRY_FIRST_WAIT_S, RETRY_LONGEST_WAIT_S = 0.5, 30.0


class StorageError(AudioganError):
    """A URL that cannot be used, or a store that cannot be reached."""


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def display(url: str) -> str:
    """The URL as it may appear in logs and messages: no user info, no query string."""
    parts = urlsplit(url)
    if not parts.scheme:
        return url
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{parts.path}"


def s3_filesystem(
    env: Mapping[str, str] | None = None, embed_keys: bool = True
) -> pafs.S3FileSystem:
    """An S3 filesystem configured from the standard AWS variables.

    Without `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` it falls back to the AWS default chain
    (environment, instance profile, web identity), which is what a cluster with roles wants.
    `embed_keys=False` leaves the keys to that chain even when they are set, for a filesystem
    that others pickle into storage (Ray Tune's experiment state holds its filesystem).
    """
    env = os.environ if env is None else env
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    options: dict = {
        "region": region,
        "connect_timeout": 5,
        "request_timeout": 60,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=4),
    }
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        options["scheme"] = parts.scheme
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret and embed_keys:
        options.update(
            access_key=key, secret_key=secret, session_token=env.get("AWS_SESSION_TOKEN")
        )
    return pafs.S3FileSystem(**options)


def resolve(
    url: str, env: Mapping[str, str] | None = None, embed_keys: bool = True
) -> tuple[pafs.FileSystem, str]:
    """Returns (filesystem, path) for a local path, `file://` URL or `s3://bucket/prefix`.

    The path carries no scheme, as pyarrow and Ray expect when a filesystem is passed.
    """
    if is_s3(url):
        parts = urlsplit(url)
        if not parts.netloc:
            raise StorageError(f"{display(url)}: an S3 URL needs a bucket (s3://bucket/prefix)")
        if ".." in parts.path.split("/"):
            raise StorageError(f"{display(url)}: '..' is not allowed in an S3 URL")
        path = posixpath.normpath(f"{parts.netloc}/{parts.path.lstrip('/')}")
        return s3_filesystem(env, embed_keys), path.rstrip("/")
    if "://" in url and not url.startswith("file://"):
        raise StorageError(f"{display(url)}: only local paths and s3:// URLs are supported")
    path = url.removeprefix("file://")
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))


def absolute(url: str) -> str:
    """A local path made absolute, an s3:// URL as it is: Ray's workers and Tune's trials run
    in folders of their own, where a relative path names nothing."""
    return url if is_s3(url) else resolve(url)[1]


def is_plain_name(name: str) -> bool:
    """Whether a run or sweep name is one folder under its storage (no separator, not . or ..)."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


def join(root: str, *parts: str) -> str:
    return posixpath.join(root, *parts) if parts else root


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def why_not_a_folder(fs: pafs.FileSystem, path: str, url: str) -> str | None:
    """ "does not exist" or "is a file" for a path that should be a folder, else None; a store
    that cannot be asked is a StorageError naming `url`."""
    try:
        kind = fs.get_file_info(path).type
    except OSError as error:
        raise unreachable(url, error) from None
    if kind == pafs.FileType.Directory:
        return None
    return "does not exist" if kind == pafs.FileType.NotFound else "is a file"


def list_folder(
    fs: pafs.FileSystem, folder: str, kind: pafs.FileType = pafs.FileType.File
) -> list[pafs.FileInfo]:
    """The entries of one kind (files or folders) directly in a folder, sorted by name; a
    missing folder has none."""
    selector = pafs.FileSelector(folder, allow_not_found=True, recursive=False)
    entries = [info for info in fs.get_file_info(selector) if info.type == kind]
    return sorted(entries, key=lambda info: info.base_name)


def is_nonempty_dir(fs: pafs.FileSystem, path: str) -> bool:
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return True
    selector = pafs.FileSelector(path, allow_not_found=True, recursive=False)
    return len(fs.get_file_info(selector)) > 0


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as stream:
        return stream.read()


def write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Writes a whole file so that a reader sees the old file, the new one, or none.

    An S3 PUT is atomic; on a local disk the bytes go to a temporary name renamed into place.
    """
    parent = posixpath.dirname(path)
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(parent, recursive=True)
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            with fs.open_output_stream(temporary) as stream:
                stream.write(data)
            fs.move(temporary, path)
        except OSError:
            with contextlib.suppress(OSError):  # a full disk keeps no half-written copies
                fs.delete_file(temporary)
            raise
        return
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def delete(fs: pafs.FileSystem, path: str) -> None:
    """Deletes a file or a folder tree; a missing path is not an error."""
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        fs.delete_file(path)
    elif info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif isinstance(fs, pafs.S3FileSystem):
        # An S3 "folder" can exist only as a key prefix.
        fs.delete_dir_contents(path, missing_dir_ok=True)


def unreachable(url: str, error: BaseException) -> StorageError:
    """A StorageError naming the URL (never its credentials) for a failed storage call."""
    return StorageError(f"storage at {display(url)} failed: {' '.join(str(error).split())[:300]}")


def transient(error: BaseException) -> bool:
    """Whether a failed storage call may succeed if tried again: a store that is down, slow or
    unreachable, or a disk that is full, yes; a missing file, a refused permission or a wrong
    key, no."""
    if not isinstance(error, OSError) or isinstance(
        error, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
    ):
        return False
    return not any(token in str(error) for token in PERMANENT_S3_ERRORS)


def retrying(
    call: Callable[[], T],
    what: str,
    url: str,
    budget_s: float,
    log: Callable[[str], None] = print,
) -> T:
    """call(), tried again with growing waits while it fails transiently, for `budget_s` seconds
    (and at most one call longer: an attempt under way is not cut short).

    Once the time is up (or at the first permanent failure) raises a StorageError that names
    `what` was being done and the storage URL (as `display` shows it), never a credential.
    `log` hears of the first retry and of recovery, so an outage shows in the run's log.
    """
    started = time.monotonic()
    wait, attempts = RETRY_FIRST_WAIT_S, 0
    while True:
        attempts += 1
        try:
            result = call()
        except OSError as error:
            if not transient(error):
                raise unreachable(url, error) from None
            elapsed = time.monotonic() - started
            if elapsed >= budget_s:
                detail = " ".join(str(error).split())[:300]
                tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
                raise StorageError(
                    f"storage at {display(url)} unreachable: {what} kept failing for "
                    f"{elapsed:.0f} s ({tries} with growing waits; the limit is "
                    f"{budget_s:g} s); last error: {detail}"
                ) from None
            if attempts == 1:
                log(f"storage: {what} failed ({type(error).__name__}); retrying for up to "
                    f"{budget_s:g} s")  # fmt: skip
            time.sleep(min(wait, budget_s - elapsed))  # the last attempt comes at the limit
            wait = min(2 * wait, RETRY_LONGEST_WAIT_S)
            continue
        if attempts > 1:
            log(f"storage: {what} succeeded after {attempts} attempts")
        return result


def unshared_path(urls: list[str], flags: str) -> str | None:
    """Why these URLs cannot serve a Ray cluster of several nodes (a local path is each node's
    own disk), or None: on one node, or when every URL is s3://. `flags` names the options to
    give s3:// URLs, for the message."""
    import ray

    local = [url for url in urls if not is_s3(url)]
    if not local or not ray.is_initialized() or sum(n["Alive"] for n in ray.nodes()) <= 1:
        return None
    return (
        f"{display(local[0])} is a local path, but this Ray cluster has several nodes that do "
        f"not share it: use s3:// for {flags}"
    )


def retrying_filesystem(
    fs: pafs.FileSystem, root: str, url: str, budget_s: float
) -> pafs.FileSystem:
    """`fs` with every call retried as `retrying` does, for storage calls made by code that is
    not ours: Ray Train's controller writes its checkpoint snapshot, and each worker a marker
    file, with no retries of their own, so one refused connection would end the run."""
    return pafs.PyFileSystem(_RetryingHandler(fs, root, url, budget_s))


class _RetryingHandler(pafs.FileSystemHandler):
    """The calls of `retrying_filesystem`; messages name paths relative to `root`."""

    def __init__(self, fs: pafs.FileSystem, root: str, url: str, budget_s: float):
        self.fs, self.root, self.url, self.budget_s = fs, root, url, budget_s

    def _retry(self, what: str, path: str, call: Callable[[], T]) -> T:
        shown = posixpath.relpath(path, self.root) if path.startswith(self.root) else path
        return retrying(call, f"{what} {shown}", self.url, self.budget_s)

    def get_type_name(self) -> str:
        return f"retrying-{self.fs.type_name}"

    def normalize_path(self, path: str) -> str:
        return self.fs.normalize_path(path)

    def equals(self, other) -> bool:  # (pyarrow compares two handlers with ==)
        return self == other

    def __eq__(self, other) -> bool:
        """Equal over the same store, so that a copy in another process counts as the same
        filesystem (Ray Train tracks only checkpoints on its own storage filesystem)."""
        return isinstance(other, _RetryingHandler) and self.fs.equals(other.fs)

    __hash__ = None

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self._retry("reading", ",".join(paths), lambda: self.fs.get_file_info(paths))

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self._retry("listing", selector.base_dir, lambda: self.fs.get_file_info(selector))

    def create_dir(self, path: str, recursive: bool) -> None:
        self._retry("creating", path, lambda: self.fs.create_dir(path, recursive=recursive))

    def delete_dir(self, path: str) -> None:
        self._retry("deleting", path, lambda: self.fs.delete_dir(path))

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._retry("deleting", path, lambda: self.fs.delete_dir_contents(path, missing_dir_ok))

    def delete_root_dir_contents(self) -> None:
        raise StorageError(f"refusing to delete everything in {display(self.url)}")

    def delete_file(self, path: str) -> None:
        self._retry("deleting", path, lambda: self.fs.delete_file(path))

    def move(self, src: str, dest: str) -> None:
        self._retry("moving", src, lambda: self.fs.move(src, dest))

    def copy_file(self, src: str, dest: str) -> None:
        self._retry("copying", src, lambda: self.fs.copy_file(src, dest))

    def open_input_stream(self, path: str) -> pa.NativeFile:
        """The whole file, read with retries (these are small files: snapshots, markers)."""
        return pa.BufferReader(self._retry("reading", path, lambda: read_bytes(self.fs, path)))

    def open_input_file(self, path: str) -> pa.NativeFile:
        return self.open_input_stream(path)

    def open_output_stream(self, path: str, metadata=None) -> pa.NativeFile:
        """Bytes kept in memory and written in one call, with retries, when the stream closes."""
        return pa.PythonFile(_Upload(lambda data: self._write(path, data)), mode="w")

    def open_append_stream(self, path: str, metadata=None) -> pa.NativeFile:
        raise StorageError(f"appending is not supported in {display(self.url)}")

    def _write(self, path: str, data: bytes) -> None:
        self._retry("writing", path, lambda: write_bytes(self.fs, path, data))


class _Upload(io.RawIOBase):
    """A file open for writing that hands all its bytes to `write` when it is closed."""

    def __init__(self, write: Callable[[bytes], None]):
        self._buffer, self._write = io.BytesIO(), write

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self._buffer.write(data)

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._write(self._buffer.getvalue())
