"""prepare end to end on the shared Ray instance."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest
import soundfile as sf
from conftest import dominant_hz, tone, write_fsd

from audiogan import data, dataset, storage
from audiogan.audio import clips_from_file
from audiogan.cli import main
from audiogan.config import PrepareConfig

pytestmark = pytest.mark.ray


def read_clips(dest: Path) -> pa.Table:
    return pads.dataset(str(dest / "clips"), format="parquet").to_table()


def stored_audio(row: dict) -> np.ndarray:
    """A clip row's 16-bit audio as the float32 samples readers see."""
    return dataset.from_pcm16(np.frombuffer(row["audio"], dtype="<i2"))


def read_rejects(dest: Path) -> dict[str, str]:
    table = pads.dataset(str(dest / "rejects"), format="parquet").to_table()
    return dict(
        zip(table.column("source").to_pylist(), table.column("reason").to_pylist(), strict=True)
    )


def run_prepare(source, dest, cfg=None, **kwargs) -> dict:
    return data.prepare(
        str(source), str(dest), cfg or PrepareConfig(), log=lambda _: None, **kwargs
    )


def test_blocks_give_every_cpu_of_the_cluster_work_and_hold_at_most_64_files():
    assert data.files_per_block(20, 3) == 7  # 7, 7 and 6 files: one task a CPU
    assert data.files_per_block(20, 1) == 20
    assert data.files_per_block(5, 8) == 1
    assert data.files_per_block(10_000, 4) == data.FILES_PER_BLOCK == 64
    assert data.files_per_block(0, 2) == 1 and data.files_per_block(20, 0.5) == 20


def test_synthetic_fsd_dataset_becomes_the_documented_contract(ray_session, synth_root, tmp_path):
    import ray

    context = ray.data.DataContext.get_current()
    settings = ("retried_map_errors", "max_map_retries", "op_resource_reservation_enabled")
    before = {name: getattr(context, name) for name in settings}
    dest = tmp_path / "prepared"
    summary = run_prepare(synth_root, dest)
    # prepare's settings of Ray Data's process-wide context last only as long as its job.
    assert {name: getattr(context, name) for name in settings} == before
    rows = list(csv.DictReader(open(synth_root / "train.csv")))
    assert summary["clips"] == len(rows) == 20 and summary["rejects"] == 0

    table = read_clips(dest)
    assert table.schema == dataset.clip_schema(64000)
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["labels"] == sorted({r["label"] for r in rows})
    assert manifest["clip_samples"] == 64000 and manifest["sample_rate_hz"] == 16000
    assert manifest["counts"]["clips"] == 20
    assert sum(manifest["counts"]["per_label"].values()) == 20

    by_source = {row["source"]: row for row in table.to_pylist()}
    assert set(by_source) == {f"audio_train/{r['fname']}" for r in rows}
    for row in rows:
        clip = by_source[f"audio_train/{row['fname']}"]
        assert clip["label"] == row["label"]
        assert clip["label_id"] == manifest["labels"].index(row["label"])
        assert clip["clip_id"] == f"audio_train/{row['fname']}#0"
        assert clip["source_sample_rate"] == 44100
        audio = stored_audio(clip)
        assert audio.shape == (64000,) and np.max(np.abs(audio)) == pytest.approx(0.99, abs=1e-4)
        # The stored audio is exactly what the pure function makes of the file, in 16 bits.
        raw = (synth_root / "audio_train" / row["fname"]).read_bytes()
        expected = clips_from_file(io.BytesIO(raw), len(raw), PrepareConfig(), clip["source"])
        assert clip["audio"] == dataset.to_pcm16(expected.clips[0][1]).tobytes()


@pytest.fixture(scope="module")
def zoo(synth_root, tmp_path_factory):
    """Good synthetic clips beside every kind of bad and unusual file, in FSDKaggle2018 layout."""
    root = tmp_path_factory.mktemp("zoo")
    audio_dir = root / "audio_train"
    audio_dir.mkdir()
    files: dict[str, tuple[str | None, bool]] = {}
    for row in csv.DictReader(open(synth_root / "train.csv")):
        (audio_dir / row["fname"]).write_bytes(
            (synth_root / "audio_train" / row["fname"]).read_bytes()
        )
        files[row["fname"]] = (row["label"], row["manually_verified"] == "1")

    def add(name, audio_or_bytes, rate=16000, label="Odd", **kwargs):
        path = audio_dir / name
        if isinstance(audio_or_bytes, bytes):
            path.write_bytes(audio_or_bytes)
        else:
            sf.write(str(path), audio_or_bytes, rate, **kwargs)
        files[name] = (label, True)

    good = io.BytesIO()
    sf.write(good, tone(440, 1.0, 16000), 16000, format="WAV", subtype="PCM_16")
    nan = tone(440, 1.0, 16000)
    nan[::100] = np.nan
    # bad
    add("zero.wav", b"")
    add("truncated.wav", good.getvalue()[:9000])
    add("text.wav", b"just some text pretending to be audio\n" * 20)
    add("nan.wav", nan, subtype="FLOAT")
    add("one_sample.wav", np.array([0.3], np.float32))
    add("silent.wav", np.zeros(32000, np.float32))
    # unusual but valid: each a 440 Hz tone
    add(
        "eight_channels_96k.wav",
        np.tile(tone(440, 3.0, 96000)[:, None], (1, 8)),
        96000,
        subtype="PCM_24",
    )
    add("low_8k.wav", tone(440, 3.0, 8000), 8000, subtype="PCM_16")
    add("pcm24.wav", tone(440, 3.0, 44100), 44100, subtype="PCM_24")
    add("float32.wav", tone(440, 3.0, 22050), 22050, subtype="FLOAT")
    add("float64.wav", tone(440, 3.0, 48000), 48000, subtype="DOUBLE")
    add("tone.flac", tone(440, 3.0, 44100), 44100, format="FLAC")
    add("tone.ogg", tone(440, 3.0, 44100), 44100, format="OGG", subtype="VORBIS")
    (root / "outside.wav").write_bytes(good.getvalue())
    os.symlink(root / "outside.wav", audio_dir / "link_out.wav")
    files["link_out.wav"] = ("Odd", True)
    outside = tmp_path_factory.mktemp("elsewhere") / "secret.wav"
    outside.write_bytes(good.getvalue())
    os.symlink(outside, audio_dir / "link_far.wav")
    files["link_far.wav"] = ("Odd", True)
    # Things that are not files, under names train.csv lists.
    os.mkfifo(audio_dir / "fifo.wav")
    (audio_dir / "folder.wav").mkdir()
    os.symlink("nowhere.wav", audio_dir / "dangling.wav")
    os.symlink("loop.wav", audio_dir / "loop.wav")
    for name in ("fifo.wav", "folder.wav", "dangling.wav", "loop.wav"):
        files[name] = ("Odd", True)
    # Second names of good files: one not listed that sorts first, one listed beside the file.
    first = sorted(files)[0]
    os.symlink(first, audio_dir / "0alias.wav")
    os.symlink(first, audio_dir / "zz_alias.wav")
    files["zz_alias.wav"] = (files[first][0], True)
    write_fsd(
        root,
        files,
        extra_rows=[
            "not_there.wav,Odd,1",
            "../../etc/passwd,Odd,1",
            "/etc/passwd,Odd,1",
            "sub/../../train.csv,Odd,1",
            ",Odd,1",  # no fname: line 46 of train.csv
            "tone.flac,Odd,1",  # the same row twice
        ],
    )
    return root


UNUSUAL = [
    "eight_channels_96k.wav",
    "low_8k.wav",
    "pcm24.wav",
    "float32.wav",
    "float64.wav",
    "tone.flac",
    "tone.ogg",
]
EXPECTED_REJECTS = {
    "audio_train/zero.wav": "empty",
    "audio_train/truncated.wav": "decode_error",
    "audio_train/text.wav": "decode_error",
    "audio_train/nan.wav": "non_finite",
    "audio_train/one_sample.wav": "too_short",
    "audio_train/silent.wav": "silent",
    "audio_train/not_there.wav": "missing",
    "../../etc/passwd": "unsafe_path",
    "/etc/passwd": "unsafe_path",
    "sub/../../train.csv": "unsafe_path",
    "audio_train/link_far.wav": "unsafe_path",
    "audio_train/fifo.wav": "not_a_file",
    "audio_train/folder.wav": "not_a_file",
    "audio_train/dangling.wav": "broken_link",
    "audio_train/loop.wav": "link_loop",
    "train.csv:46": "bad_row",
}


def test_bad_files_become_reject_rows_and_unusual_ones_correct_clips(
    ray_session, zoo, synth_root, tmp_path
):
    dest = tmp_path / "zoo_prepared"
    summary = run_prepare(zoo, dest, PrepareConfig(batch_size=4))
    assert read_rejects(dest) == EXPECTED_REJECTS
    assert summary["rejects_by_reason"] == {
        "bad_row": 1,
        "broken_link": 1,
        "decode_error": 2,
        "empty": 1,
        "link_loop": 1,
        "missing": 1,
        "non_finite": 1,
        "not_a_file": 2,
        "silent": 1,
        "too_short": 1,
        "unsafe_path": 4,
    }
    # The good file reached again as zz_alias.wav is used once, under its own name.
    assert summary["skipped"] == {"duplicate_row": 1, "same_file_twice": 1}
    # Every row of train.csv is a used file, a reject or a count.
    rows = len(open(zoo / "train.csv").read().splitlines()) - 1
    assert summary["entries"] == rows
    assert summary["files_used"] + summary["rejects"] + 2 == rows

    clips = {row["source"]: row for row in read_clips(dest).to_pylist()}
    good = {f"audio_train/{r['fname']}" for r in csv.DictReader(open(synth_root / "train.csv"))}
    assert good <= set(clips)  # every good clip arrives, whatever else is in its batch
    for name in UNUSUAL:
        audio = stored_audio(clips[f"audio_train/{name}"])
        assert audio.shape == (64000,)
        assert dominant_hz(audio[:47000], 16000) == pytest.approx(440, abs=1.0), name
        assert np.max(np.abs(audio)) <= 1.0
    assert clips["audio_train/eight_channels_96k.wav"]["source_sample_rate"] == 96000
    # A link inside the root to a file inside the root is fine.
    assert "audio_train/link_out.wav" in clips
    assert len(clips) == len(good) + len(UNUSUAL) + 1
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["rejects"] == summary["rejects_by_reason"]


def test_a_plain_tree_with_labels_filters_and_unlabelled_files(ray_session, tmp_path, write_wav):
    source = tmp_path / "tree"
    write_wav(source / "dog" / "a.wav", tone(300, 1.0, 22050), 22050)
    write_wav(source / "dog" / "deeper" / "b.flac", tone(300, 1.0, 22050), 22050, format="FLAC")
    write_wav(source / "cat" / "c.wav", tone(600, 1.0, 22050), 22050)
    write_wav(source / "loose.wav", tone(900, 1.0, 22050), 22050)
    (source / "cat" / "notes.txt").write_text("not audio")

    summary = run_prepare(source, tmp_path / "all")
    rows = {r["source"]: r for r in read_clips(tmp_path / "all").to_pylist()}
    assert {s: (r["label"], r["label_id"]) for s, r in rows.items()} == {
        "dog/a.wav": ("dog", 1),
        "dog/deeper/b.flac": ("dog", 1),
        "cat/c.wav": ("cat", 0),
        "loose.wav": (None, -1),
    }
    assert summary["skipped"] == {"not_audio": 1}

    run_prepare(source, tmp_path / "dogs", PrepareConfig(labels=("dog",)))
    assert {r["label"] for r in read_clips(tmp_path / "dogs").to_pylist()} == {"dog"}
    with pytest.raises(data.PrepareError, match="needs an FSDKaggle2018 root"):
        run_prepare(source, tmp_path / "x", PrepareConfig(verified_only=True))


def test_large_files_read_by_range_give_the_same_clips(ray_session, synth_root, tmp_path):
    run_prepare(synth_root, tmp_path / "whole", PrepareConfig(labels=("Saxophone",)))
    ranged = PrepareConfig(labels=("Saxophone",), whole_file_max_bytes=0)
    run_prepare(synth_root, tmp_path / "ranged", ranged)
    whole = read_clips(tmp_path / "whole").sort_by("clip_id")
    assert whole.num_rows == 5
    assert whole.equals(read_clips(tmp_path / "ranged").sort_by("clip_id"))


def test_labels_and_verified_filters_on_fsd(ray_session, synth_root, tmp_path):
    rows = list(csv.DictReader(open(synth_root / "train.csv")))
    cfg = PrepareConfig(labels=("Saxophone", "Trumpet"), verified_only=True)
    summary = run_prepare(synth_root, tmp_path / "d", cfg)
    expected = [r for r in rows if r["label"] in cfg.labels and r["manually_verified"] == "1"]
    assert summary["clips"] == len(expected) > 0
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert set(manifest["labels"]) <= {"Saxophone", "Trumpet"}


def test_windows_and_random_crops_are_deterministic(ray_session, synth_root, tmp_path):
    cfg = PrepareConfig(crop="windows", clip_seconds=1.0)
    run_prepare(synth_root, tmp_path / "w", cfg)
    windows = read_clips(tmp_path / "w")
    ids = windows.column("clip_id").to_pylist()
    assert len(ids) == len(set(ids)) > 20  # long files give several 1 s clips
    assert max(windows.column("window").to_pylist()) >= 5

    random_cfg = PrepareConfig(crop="random", clip_seconds=1.0, seed=5)
    run_prepare(synth_root, tmp_path / "r1", random_cfg)
    # Another batching gives the same rows: each file's crop depends on (seed, path) alone.
    run_prepare(synth_root, tmp_path / "r2", PrepareConfig(**{**vars(random_cfg), "batch_size": 3}))
    first = read_clips(tmp_path / "r1").sort_by("clip_id")
    second = read_clips(tmp_path / "r2").sort_by("clip_id")
    assert first.column("audio").equals(second.column("audio"))


def test_an_existing_dest_is_refused_unless_overwrite(ray_session, synth_root, tmp_path):
    dest = tmp_path / "dest"
    run_prepare(synth_root, dest, PrepareConfig(labels=("Trumpet",)))
    before = sorted(p.name for p in (dest / "clips").iterdir())
    with pytest.raises(data.PrepareError, match="--overwrite"):
        run_prepare(synth_root, dest)
    assert sorted(p.name for p in (dest / "clips").iterdir()) == before
    (dest / "evaluator").mkdir()  # a classifier fitted on the Trumpet-only clips
    (dest / "evaluator" / "state.pt").write_bytes(b"old")
    (dest / "notes.txt").write_text("mine")
    summary = run_prepare(synth_root, dest, overwrite=True)
    assert summary["clips"] == 20 == read_clips(dest).num_rows
    assert not (dest / "evaluator").exists()  # it would judge the new clips by the old ones
    assert (dest / "notes.txt").read_text() == "mine"  # what prepare did not write stays


def test_a_missing_or_useless_source_fails_and_leaves_no_manifest(ray_session, tmp_path, write_wav):
    with pytest.raises(data.PrepareError, match="does not exist"):
        run_prepare(tmp_path / "nowhere", tmp_path / "d1")
    assert not (tmp_path / "d1" / "manifest.json").exists()

    bad = tmp_path / "bad"
    (bad / "x").mkdir(parents=True)
    (bad / "x" / "a.wav").write_bytes(b"")
    write_wav(bad / "x" / "b.wav", np.zeros(16000, np.float32), 16000)
    with pytest.raises(data.PrepareError, match="no usable clip"):
        run_prepare(bad, tmp_path / "d2")
    assert not (tmp_path / "d2" / "manifest.json").exists()
    assert read_rejects(tmp_path / "d2") == {"x/a.wav": "empty", "x/b.wav": "silent"}

    (tmp_path / "empty").mkdir()
    with pytest.raises(data.PrepareError, match="holds no audio files"):
        run_prepare(tmp_path / "empty", tmp_path / "d3")


def test_the_cli_prints_a_summary_and_json_and_fails_cleanly(ray_session, synth_root, tmp_path):
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    cli = [sys.executable, "-m", "audiogan.cli"]
    done = subprocess.run(
        cli + ["prepare", str(synth_root), str(tmp_path / "out"), "--clip-seconds", "1", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["clips"] == 20 and figures["rejects_by_reason"] == {}
    assert figures["clips_per_second"] > 0
    assert any("Saxophone" in line for line in lines[:-1])

    again = subprocess.run(
        cli + ["prepare", str(synth_root), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert again.returncode == 2
    assert "exists and is not empty; pass --overwrite" in again.stderr
    assert "Traceback" not in again.stderr

    bad_option = subprocess.run(
        cli + ["prepare", "a", "b", "--crop", "middle"], capture_output=True, text=True
    )
    assert bad_option.returncode == 2 and "invalid choice" in bad_option.stderr


def test_help_explains_each_command():
    for command in (
        ["--help"],
        ["prepare", "--help"],
        ["synth", "--help"],
        ["bench", "prepare", "--help"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "audiogan.cli", *command], capture_output=True, text=True
        )
        assert done.returncode == 0 and "usage: audiogan" in done.stdout


def test_storage_listing_uses_paths_relative_to_the_source(synth_root):
    fs, root = storage.resolve(str(synth_root))
    listing = data.list_source(fs, root, PrepareConfig(), str(synth_root))
    assert listing.layout == "fsd"
    assert all(f["source"].startswith("audio_train/") for f in listing.files)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("a.wav", "audio_train/a.wav"),
        ("x/../b.wav", "audio_train/b.wav"),
        ("../a.wav", None),
        ("/etc/passwd", None),
        ("..", None),
        ("C:\\\\x.wav", None),
        ("", None),
    ],
)
def test_safe_relative_path(name, expected):
    assert data.safe_relative_path("audio_train", name) == expected


def test_a_link_loop_in_a_tree_does_not_repeat_clips(ray_session, tmp_path, write_wav):
    source = tmp_path / "tree"
    write_wav(source / "dog" / "a.wav", tone(300, 1.0, 16000), 16000)
    os.symlink("..", source / "dog" / "loop")
    summary = run_prepare(source, tmp_path / "out")
    assert summary["clips"] == 1
    assert summary["skipped"] == {"link_to_a_folder_inside": 1}


HOSTILE_TREE_REJECTS = {
    "Violin/fifo.wav": "not_a_file",
    "Violin/dangling.wav": "broken_link",
    "Violin/loop.wav": "link_loop",
    "Violin/out.wav": "unsafe_path",
    "outside_folder": "unsafe_path",
}


def test_a_tree_of_links_and_odd_entries_keeps_every_good_file_once_under_its_label(
    ray_session, tmp_path, write_wav, report_fault
):
    """Ten good files beside hostile entries: each arrives once, at its frequency, with the
    label of the folder it really is in; every other entry is a reject row or a count."""
    source = tmp_path / "tree"
    good = {}
    for index in range(10):
        label = ("Violin", "Cello")[index % 2]
        name = f"{label}/{['-dash', 'ünï', 'plain'][index % 3]}_{index}.wav"
        write_wav(source / name, tone(200 + 60 * index, 1.0, 22050), 22050)
        good[name] = (label, 200 + 60 * index)
    (source / "A_links").mkdir()
    os.symlink("../Violin/plain_8.wav", source / "A_links/v.wav")
    os.symlink("../Cello/-dash_3.wav", source / "A_links/0first.wav")
    os.symlink("Violin", source / "Violin_again")  # a second name for a whole folder
    os.mkfifo(source / "Violin/fifo.wav")
    os.symlink("nowhere.wav", source / "Violin/dangling.wav")
    os.symlink("loop.wav", source / "Violin/loop.wav")
    elsewhere = tmp_path / "elsewhere"
    write_wav(elsewhere / "x.wav", tone(440, 1.0, 16000), 16000)
    os.symlink(elsewhere / "x.wav", source / "Violin/out.wav")
    os.symlink(elsewhere, source / "outside_folder")
    (source / "folder.wav").mkdir()  # a folder named like audio: walked, it holds nothing
    (source / ".hidden.wav").write_bytes(b"")
    (source / "Cello" / "notes.txt").write_text("not audio")

    summary = run_prepare(source, tmp_path / "out")
    rows = {row["source"]: row for row in read_clips(tmp_path / "out").to_pylist()}
    assert set(rows) == set(good)
    for name, (label, freq) in good.items():
        assert rows[name]["label"] == label
        audio = stored_audio(rows[name])
        assert dominant_hz(audio[:15000], 16000) == pytest.approx(freq, abs=1.0), name
    assert read_rejects(tmp_path / "out") == HOSTILE_TREE_REJECTS
    assert summary["skipped"] == {
        "hidden": 1,
        "link_to_a_folder_inside": 1,
        "not_audio": 1,
        "same_file_twice": 2,
    }
    assert summary["files_used"] + summary["rejects"] + 5 == summary["entries"]
    report_fault(
        "a tree of 10 good files with links between label folders, a FIFO, a dangling link, a "
        "link loop, links out, a folder named .wav",
        f"the 10 at their frequency, each once, labelled by their real folder; "
        f"{summary['rejects_by_reason']} rejects; every entry counted",
    )


def test_a_link_to_a_listed_file_costs_it_nothing_in_the_fsd_layout(
    ray_session, tmp_path, write_wav, report_fault
):
    root = tmp_path / "fsd"
    write_wav(root / "audio_train" / "good.wav", tone(440, 1.0, 16000), 16000)
    os.symlink("good.wav", root / "audio_train" / "0alias.wav")  # sorts first, not listed
    write_fsd(root, {"good.wav": ("Violin", True)})
    summary = run_prepare(root, tmp_path / "out")
    assert summary["clips"] == 1 and summary["rejects"] == 0
    assert read_clips(tmp_path / "out").column("source").to_pylist() == ["audio_train/good.wav"]
    report_fault(
        "FSDKaggle2018 layout: a link 0alias.wav -> good.wav beside the one listed file",
        "good.wav is a clip, under its own name",
    )


def test_unknown_labels_are_refused_with_the_labels_that_exist(synth_root, tmp_path):
    with pytest.raises(data.PrepareError) as caught:
        data.plan_prepare(str(synth_root), str(tmp_path / "x"), PrepareConfig(labels=("Nope",)))
    message = str(caught.value)
    assert message.startswith("--labels Nope: not a label of SOURCE")
    assert "Saxophone" in message and "Trumpet" in message


def test_dest_inside_source_through_a_link_is_refused_before_anything_is_written(
    synth_root, tmp_path
):
    link = tmp_path / "destlink"
    os.symlink(synth_root / "audio_train", link)
    before = sorted(p.name for p in (synth_root / "audio_train").iterdir())
    with pytest.raises(data.PrepareError, match=r"nor inside it.*\(links resolved\)"):
        data.plan_prepare(str(synth_root), str(link / "prepared"), PrepareConfig())
    assert sorted(p.name for p in (synth_root / "audio_train").iterdir()) == before


def test_rows_without_a_label_are_counted_as_unlabelled(ray_session, tmp_path, write_wav):
    root = tmp_path / "fsd"
    write_wav(root / "audio_train" / "a.wav", tone(440, 1.0, 16000), 16000)
    write_wav(root / "audio_train" / "b.wav", tone(660, 1.0, 16000), 16000)
    write_fsd(root, {"a.wav": ("Violin", True), "b.wav": (None, True)})
    summary = run_prepare(root, tmp_path / "out")
    assert summary["clips_per_label"] == {"Violin": 1} and summary["unlabelled_clips"] == 1
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["per_label"] == {"Violin": 1}
    assert manifest["counts"]["unlabelled"] == 1


def test_a_long_file_cut_by_max_windows_is_logged_and_counted(
    ray_session, tmp_path, write_wav, report_fault
):
    source = tmp_path / "tree"
    write_wav(source / "field" / "long.wav", tone(300, 30.0, 16000), 16000, subtype="PCM_16")
    write_wav(source / "field" / "short.wav", tone(300, 3.0, 16000), 16000, subtype="PCM_16")
    lines = []
    cfg = PrepareConfig(crop="windows", clip_seconds=1.0, max_windows=5)
    summary = data.prepare(str(source), str(tmp_path / "out"), cfg, log=lines.append)
    assert summary["clips"] == 5 + 3
    assert summary["files_cut"] == 1 and summary["seconds_left_out"] == pytest.approx(25.0)
    [message] = [line for line in lines if "--max-windows" in line]
    assert "field/long.wav (30 s, 25 s left)" in message
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["files_cut"] == 1 and manifest["max_windows"] == 5
    cuts = pads.dataset(str(tmp_path / "out" / "cuts"), format="parquet").to_table().to_pylist()
    assert cuts == [
        {"source": "field/long.wav", "source_seconds": 30.0, "windows": 5, "seconds_left_out": 25.0}
    ]
    # The rows keep the file's true length.
    table = read_clips(tmp_path / "out")
    long = [row for row in table.to_pylist() if row["source"] == "field/long.wav"]
    assert {row["source_seconds"] for row in long} == {30.0}
    report_fault(
        "a 30 s file with --crop windows --max-windows 5 (1 s clips)",
        "5 clips; one line names the file and the 25 s left out; a cuts/ row; manifest counts",
    )


def test_an_unreadable_local_file_is_a_reject_not_a_crash(tmp_path):
    fs, _ = storage.resolve(str(tmp_path))
    files = [{"path": str(tmp_path), "source": "folder.wav", "label": None, "size_bytes": 10}]
    clips, rejects, _ = data.process_files(files, fs, PrepareConfig(), {})
    assert clips == [] and rejects[0]["reason"] == "decode_error"
    assert rejects[0]["detail"].startswith("unreadable")


def test_a_storage_error_inside_a_ray_task_is_retried_then_named(ray_session, tmp_path):
    attempts = tmp_path / "attempts"
    attempts.mkdir()

    def fail(batch):
        (attempts / str(len(list(attempts.iterdir())))).touch()
        raise data._storage_error_in_task(ConnectionResetError("storage went away"))

    context = ray_session.data.DataContext.get_current()
    context.retried_map_errors, context.max_map_retries = [data.STORAGE_FAILURE], 2
    with pytest.raises(ray_session.exceptions.RayTaskError) as caught:
        ray_session.data.from_items([{"x": 1}]).map_batches(fail).materialize()
    assert data.storage_failure(caught.value) == "storage went away"
    assert len(list(attempts.iterdir())) == 3  # the first try and two retries
    assert data.storage_failure(ValueError("a bug, not storage")) is None


def test_jobs_that_cannot_work_are_refused_before_any_read(ray_session, synth_root, tmp_path):
    with pytest.raises(data.PrepareError, match="must not be SOURCE, nor inside it"):
        run_prepare(synth_root, synth_root / "prepared")
    with pytest.raises(data.PrepareError, match="must not be SOURCE, nor inside it"):
        run_prepare(synth_root / "audio_train", synth_root)
    with pytest.raises(data.PrepareError, match="cannot be reached exactly"):
        run_prepare(synth_root, tmp_path / "odd", PrepareConfig(sample_rate_hz=16001))
    with pytest.raises(storage.StorageError, match="not allowed"):
        run_prepare("s3://bucket/../other", tmp_path / "x")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--clip-seconds", "1e9"], "--clip-seconds must be at most 60 (one training clip)"),
        (["--clip-seconds", "0.05"], "--clip-seconds must be at least 0.1 (min_source_seconds"),
        (["--sample-rate", "500"], "--sample-rate must be at least 1000"),
        (["--max-windows", "-1"], "--max-windows must be >= 0 (0: no limit)"),
        (["--labels", ","], "--labels must not be empty"),
        (["--labels", "Saxophone,Tuba"], "--labels Tuba: not a label of SOURCE"),
        (["--sample-rate", "16001"], "--sample-rate 16001 cannot be reached exactly"),
    ],
)
def test_bad_options_are_refused_before_ray_in_the_words_typed(
    synth_root, tmp_path, capsys, forbid_ray, options, message
):
    started = time.perf_counter()
    assert main(["prepare", str(synth_root), str(tmp_path / "out"), *options]) == 2
    assert time.perf_counter() - started < 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("audiogan prepare: error: ") and message in line, line
    assert "_seconds must" not in line and "sample_rate_hz" not in line
    if "Tuba" in message:  # the labels there are, so that a typo is seen at once
        assert "(its labels: Acoustic_guitar, Saxophone, Trumpet, Violin_or_fiddle)" in line
    assert not (tmp_path / "out").exists()


def test_bad_source_and_dest_are_refused_before_ray(synth_root, tmp_path, capsys, forbid_ray):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "old.txt").write_text("keep me")
    os.symlink(synth_root / "audio_train", tmp_path / "destlink")
    cases = {
        (str(tmp_path / "nowhere"), str(tmp_path / "o1")): "does not exist",
        (str(synth_root / "train.csv"), str(tmp_path / "o2")): "is a file; give the dataset's",
        (str(synth_root), str(tmp_path / "taken")): "exists and is not empty; pass --overwrite",
        (str(synth_root), str(tmp_path / "destlink" / "d")): "(links resolved)",
        (str(synth_root), str(synth_root / "train.csv")): "nor inside it",
    }
    for (source, dest), message in cases.items():
        assert main(["prepare", source, dest]) == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        assert message in line, line
    assert (tmp_path / "taken" / "old.txt").read_text() == "keep me"
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_decoder_noise_stays_off_the_console_unless_verbose(ray_session, tmp_path, capfd):
    source = tmp_path / "tree"
    (source / "junk").mkdir(parents=True)
    junk = bytes([0xFF, 0xFB, 0x90, 0x64]) + np.random.default_rng(0).bytes(70_000)
    (source / "junk" / "noise.flac").write_bytes(junk)
    fs, _ = storage.resolve(str(source))
    files = [{"path": str(source / "junk/noise.flac"), "source": "junk/noise.flac",
              "label": "junk", "size_bytes": len(junk)}]  # fmt: skip
    _, rejects, _ = data.process_files(files, fs, PrepareConfig(), {})
    assert rejects == [
        {
            "source": "junk/noise.flac",
            "reason": "decode_error",
            "detail": "not a readable audio file (no valid audio frame found)",
        }
    ]
    assert capfd.readouterr().err == ""
    data.process_files(files, fs, PrepareConfig(), {}, quiet=False)
    assert "MPEG" in capfd.readouterr().err


def test_a_file_two_rows_name_keeps_its_own_rows_label_whatever_the_filter(tmp_path, write_wav):
    root = tmp_path / "fsd"
    write_wav(root / "audio_train" / "x.wav", tone(440, 1.0, 16000), 16000)
    os.symlink("x.wav", root / "audio_train" / "y.wav")
    write_fsd(root, {"y.wav": ("Meow", True), "x.wav": ("Bark", True)})
    for labels in (None, ("Bark",)):
        listing = data.plan_prepare(str(root), str(tmp_path / "out"), PrepareConfig(labels=labels))
        assert [f["label"] for f in listing.listing.files] == ["Bark"], labels
        assert listing.listing.entries == 2
    # The audio is x.wav's, a Bark: --labels Meow finds no file of its own.
    with pytest.raises(data.PrepareError, match="holds no rows matching the filters"):
        data.plan_prepare(str(root), str(tmp_path / "out"), PrepareConfig(labels=("Meow",)))


def test_rows_that_no_file_could_answer_are_rejects_not_a_crash(tmp_path, write_wav):
    root = tmp_path / "fsd"
    write_wav(root / "audio_train" / "good.wav", tone(440, 1.0, 16000), 16000)
    os.symlink("loopdir", root / "audio_train" / "loopdir")
    rows = ["loopdir/a.wav,Odd,1", f"{'n' * 300}.wav,Odd,1", "bad\0name.wav,Odd,1"]
    write_fsd(root, {"good.wav": ("Odd", True)}, extra_rows=rows)
    listing = data.plan_prepare(str(root), str(tmp_path / "out"), PrepareConfig()).listing
    assert [f["source"] for f in listing.files] == ["audio_train/good.wav"]
    assert sorted(r["reason"] for r in listing.rejects) == ["bad_row", "bad_row", "link_loop"]


def test_a_train_csv_or_source_that_is_no_regular_file_is_refused(tmp_path):
    root = tmp_path / "fsd"
    (root / "audio_train").mkdir(parents=True)
    os.mkfifo(root / "train.csv")  # reading it would wait for ever
    with pytest.raises(data.PrepareError, match="train.csv is no file to read: a named pipe"):
        data.plan_prepare(str(root), str(tmp_path / "out"), PrepareConfig())
    os.unlink(root / "train.csv")
    os.symlink("/dev/zero", root / "train.csv")  # would be read until memory ran out
    with pytest.raises(data.PrepareError, match="train.csv is no file to read: a link that"):
        data.plan_prepare(str(root), str(tmp_path / "out"), PrepareConfig())
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(data.PrepareError, match="is not a folder"):
        data.plan_prepare(str(tmp_path / "pipe"), str(tmp_path / "out"), PrepareConfig())
