"""storage.py: URLs to filesystems (credentials from the environment only, never shown),
whole-file writes, and the retries of a store that goes away."""

from __future__ import annotations

import re
import time

import pyarrow.fs as pafs
import pytest
from conftest import free_port

from audiogan import storage


def test_local_paths_resolve_to_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = storage.resolve("data/x")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "data" / "x")
    assert storage.resolve(f"file://{tmp_path}")[1] == str(tmp_path)


def test_s3_urls_take_endpoint_region_and_keys_from_the_environment():
    env = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "secret",
    }
    fs, path = storage.resolve("s3://bucket/some/prefix/", env)
    assert path == "bucket/some/prefix"
    assert isinstance(fs, pafs.S3FileSystem)
    assert fs.region == "eu-west-1"
    assert "127.0.0.1:9000" in repr(fs.__reduce__())
    s3_only = storage.s3_filesystem({"AWS_ENDPOINT_URL_S3": "https://minio.local"})
    assert "minio.local" in repr(s3_only.__reduce__())


def test_bad_urls_are_refused():
    with pytest.raises(storage.StorageError, match="needs a bucket"):
        storage.resolve("s3:///prefix")
    with pytest.raises(storage.StorageError, match="only local paths and s3://"):
        storage.resolve("gs://bucket/x")


def test_display_drops_credentials_and_query():
    assert storage.display("s3://key:secret@bucket/p?x=1") == "s3://bucket/p"
    assert storage.display("/local/path") == "/local/path"


def test_write_bytes_replaces_a_file_whole(tmp_path):
    fs, root = storage.resolve(str(tmp_path))
    target = storage.join(root, "a", "manifest.json")
    storage.write_bytes(fs, target, b"one")
    storage.write_bytes(fs, target, b"two")
    assert storage.read_bytes(fs, target) == b"two"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["manifest.json"]
    storage.delete(fs, storage.join(root, "a"))
    assert not storage.exists(fs, storage.join(root, "a"))


def test_a_transient_failure_is_retried_with_growing_waits_until_it_succeeds():
    calls, said = [], []

    def flaky():
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionRefusedError("connection refused")
        return "done"

    assert storage.retrying(flaky, "writing x", "s3://b/run", 30, said.append) == "done"
    waits = [later - earlier for earlier, later in zip(calls, calls[1:], strict=False)]
    assert waits[0] >= storage.RETRY_FIRST_WAIT_S and waits[1] >= 2 * storage.RETRY_FIRST_WAIT_S
    assert said == [
        "storage: writing x failed (ConnectionRefusedError); retrying for up to 30 s",
        "storage: writing x succeeded after 3 attempts",
    ]


@pytest.mark.parametrize(
    "error",
    [PermissionError("denied"), FileNotFoundError("gone"), OSError("AWS Error ACCESS_DENIED")],
)
def test_a_permanent_failure_is_not_retried(error):
    calls = []

    def refused():
        calls.append(1)
        raise error

    with pytest.raises(storage.StorageError, match=r"^storage at s3://b/run failed: "):
        storage.retrying(refused, "writing x", "s3://key:secret@b/run", 30)
    assert len(calls) == 1


def test_a_store_that_stays_away_fails_after_the_time_limit_naming_the_url_only():
    """A real S3 client against a port nobody listens on."""
    port = free_port()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "id",
           "AWS_SECRET_ACCESS_KEY": "secret-value"}  # fmt: skip
    fs, path = storage.resolve("s3://bucket/runs", env)
    started = time.monotonic()
    with pytest.raises(storage.StorageError) as raised:
        storage.retrying(
            lambda: storage.write_bytes(fs, f"{path}/x", b"x"), "writing x", "s3://bucket/runs", 1,
            log=lambda _: None,
        )  # fmt: skip
    message = str(raised.value)
    assert message.startswith("storage at s3://bucket/runs unreachable: writing x kept failing")
    assert "the limit is 1 s" in message and "secret-value" not in message
    assert time.monotonic() - started < 30


@pytest.mark.s3
def test_a_missing_bucket_is_not_retried(s3_env):
    fs, path = storage.resolve(f"s3://{s3_env}-missing/runs")
    started = time.monotonic()
    with pytest.raises(storage.StorageError, match="NO_SUCH_BUCKET"):
        storage.retrying(lambda: storage.write_bytes(fs, f"{path}/x", b"x"), "writing x",
                         f"s3://{s3_env}-missing/runs", 60)  # fmt: skip
    assert time.monotonic() - started < 10  # one attempt, not a minute of them


@pytest.mark.s3
def test_the_retrying_filesystem_handed_to_ray_train_reads_writes_and_pickles(s3_env):
    """What Ray Train does with its storage (a marker, its snapshot written and read back,
    listings, a checkpoint deleted) through the wrapper, before and after a pickle trip."""
    import pickle

    fs, root = storage.resolve(f"s3://{s3_env}/runs")
    wrapped = pickle.loads(pickle.dumps(storage.retrying_filesystem(fs, root, "s3://x", 5)))
    snapshot = f"{root}/run/checkpoint_manager_snapshot.json"
    wrapped.create_dir(f"{root}/run")
    with wrapped.open_output_stream(snapshot) as stream:
        stream.write(b'{"checkpoint_results": []}')
    with wrapped.open_input_stream(snapshot) as stream:
        assert stream.read() == b'{"checkpoint_results": []}'
    assert storage.read_bytes(fs, snapshot) == b'{"checkpoint_results": []}'  # really in S3
    storage.write_bytes(fs, f"{root}/run/checkpoint_000002/state.pt", b"state")
    listed = wrapped.get_file_info(pafs.FileSelector(f"{root}/run", recursive=True))
    assert {info.path.rsplit("/", 1)[-1] for info in listed} >= {"state.pt", "checkpoint_000002"}
    wrapped.delete_dir(f"{root}/run/checkpoint_000002")
    assert not storage.exists(fs, f"{root}/run/checkpoint_000002/state.pt")
    with pytest.raises(storage.StorageError, match="failed: .*(not found|NotFound|No such)"):
        wrapped.open_input_stream(f"{root}/run/missing.json")  # permanent: at once


def test_the_retrying_filesystem_gives_up_on_a_store_that_stays_away_naming_the_url():
    """Ray Train's snapshot write against a port nobody listens on: retried for the limit,
    then one StorageError naming the run's URL and the file, never the key."""
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_ACCESS_KEY_ID": "id",
           "AWS_SECRET_ACCESS_KEY": "secret-value"}  # fmt: skip
    fs, root = storage.resolve("s3://bucket/runs", env)
    wrapped = storage.retrying_filesystem(fs, root, "s3://bucket/runs", 1)
    started = time.monotonic()
    with pytest.raises(storage.StorageError) as raised:
        with wrapped.open_output_stream(f"{root}/cut/checkpoint_manager_snapshot.json") as f:
            f.write(b"{}")
    message = str(raised.value)
    assert re.match(
        r"storage at s3://bucket/runs unreachable: writing cut/checkpoint_manager_snapshot.json "
        r"kept failing for \d+ s \(.*the limit is 1 s\)",
        message,
    ), message
    assert "secret-value" not in message and time.monotonic() - started < 30
