"""prepare from S3 to S3 against a real S3 API (moto_server on 127.0.0.1)."""

from __future__ import annotations

import json
import socket
import time

import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pytest

from audiogan import data, dataset, storage
from audiogan.config import PrepareConfig

pytestmark = [pytest.mark.ray, pytest.mark.s3]


def test_prepare_reads_and_writes_s3(ray_session, s3_env, synth_root):
    bucket = s3_env
    fs, _ = storage.resolve(f"s3://{bucket}")
    pafs.copy_files(str(synth_root), f"{bucket}/raw/fsd", destination_filesystem=fs)

    summary = data.prepare(
        f"s3://{bucket}/raw/fsd", f"s3://{bucket}/prepared/v1", PrepareConfig(), log=lambda _: None
    )
    assert summary["clips"] == 20 and summary["dest"] == f"s3://{bucket}/prepared/v1"

    manifest = dataset.read_manifest(f"s3://{bucket}/prepared/v1")
    assert manifest["counts"]["clips"] == 20 and manifest["source"] == f"s3://{bucket}/raw/fsd"
    table = pads.dataset(f"{bucket}/prepared/v1/clips", filesystem=fs, format="parquet").to_table()
    assert table.num_rows == 20 and table.schema == dataset.clip_schema(64000)
    # No credential reaches what prepare writes.
    text = storage.read_bytes(fs, f"{bucket}/prepared/v1/manifest.json").decode()
    assert "testing-secret-value" not in text and "AWS_" not in text
    assert json.loads(text)["labels"] == manifest["labels"]

    with pytest.raises(data.PrepareError, match="--overwrite"):
        data.prepare(f"s3://{bucket}/raw/fsd", f"s3://{bucket}/prepared/v1", PrepareConfig())
    again = data.prepare(
        f"s3://{bucket}/raw/fsd",
        f"s3://{bucket}/prepared/v1",
        # Every file through ranged reads, as files over whole_file_max_bytes are read.
        PrepareConfig(labels=("Trumpet",), whole_file_max_bytes=0),
        overwrite=True,
        log=lambda _: None,
    )
    assert again["clips"] == 5
    table = pads.dataset(f"{bucket}/prepared/v1/clips", filesystem=fs, format="parquet").to_table()
    assert table.num_rows == 5


def test_a_missing_s3_source_is_a_clear_error(ray_session, s3_env):
    with pytest.raises(data.PrepareError, match="does not exist"):
        data.prepare(f"s3://{s3_env}/nothing/here", f"s3://{s3_env}/out", PrepareConfig())


def test_a_storage_server_that_is_down_is_named_without_credentials(monkeypatch, tmp_path):
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-value")
    started = time.monotonic()
    with pytest.raises(storage.StorageError) as caught:
        data.prepare("s3://bucket/raw", str(tmp_path / "out"), PrepareConfig())
    assert time.monotonic() - started < 60
    message = str(caught.value)
    assert "s3://bucket/raw" in message and "testing-secret-value" not in message
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_dest_bucket_that_does_not_exist_is_named(ray_session, s3_env, synth_root):
    with pytest.raises(storage.StorageError) as caught:
        data.prepare(str(synth_root), "s3://no-such-bucket-here/out", PrepareConfig())
    assert "s3://no-such-bucket-here/out" in str(caught.value)
    assert "testing-secret-value" not in str(caught.value)
