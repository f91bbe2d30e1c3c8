"""dataset.py: clips stored as 16-bit PCM (format /2) within the stated error, half the bytes of
float32, and datasets of the earlier float32 format still read."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import tone

from audiogan import dataset, evaluator, loop

CLIP = 16000


def _clip_rows(audio: np.ndarray, labels: list[int]) -> list[dict]:
    return [
        {
            "clip_id": f"c{i}.wav#0",
            "label": f"class{label}",
            "label_id": label,
            "source": f"c{i}.wav",
            "source_sample_rate": 16000,
            "source_seconds": 1.0,
            "window": 0,
            "audio": samples,
        }
        for i, (samples, label) in enumerate(zip(audio, labels, strict=True))
    ]


def test_16_bit_storage_keeps_every_sample_within_half_a_step():
    rng = np.random.default_rng(0)
    audio = np.concatenate([rng.uniform(-1, 1, 10_000), [-1.0, 1.0, 0.0, 0.99, -0.99]])
    audio = audio.astype(np.float32)
    back = dataset.from_pcm16(dataset.to_pcm16(audio))
    assert back.dtype == np.float32
    assert np.max(np.abs(back - audio)) <= 0.5 / dataset.PCM_SCALE + 1e-7  # 1.5e-5
    assert back[-5:-2].tolist() == [-1.0, 1.0, 0.0]  # the ends and silence exactly


def test_a_full_scale_tone_keeps_its_snr_above_96_db():
    signal = tone(440.0, 1.0, 16000, amplitude=0.99)
    error = dataset.from_pcm16(dataset.to_pcm16(signal)) - signal
    snr_db = 10 * np.log10(np.mean(signal.astype(np.float64) ** 2) / np.mean(error**2))
    assert snr_db > 96.0, snr_db  # theory for 16 bits: 98 dB


def test_a_clip_takes_half_the_bytes_of_float32(tmp_path):
    rng = np.random.default_rng(1)
    audio = rng.uniform(-0.9, 0.9, (32, CLIP)).astype(np.float32)
    table = dataset.clips_table(_clip_rows(audio, [0] * 32), CLIP)
    assert table.schema.field("audio").type == pa.binary(2 * CLIP)
    assert dataset.audio_as_int16(table).schema.field("audio").type == pa.list_(pa.int16(), CLIP)
    old = table.set_column(
        table.schema.get_field_index("audio"),
        pa.field("audio", pa.list_(pa.float32(), CLIP)),
        pa.FixedSizeListArray.from_arrays(pa.array(audio.ravel()), CLIP),
    )
    for name, written in (("new", table), ("old", old)):
        pq.write_table(written, tmp_path / f"{name}.parquet", **dataset.CLIP_PARQUET_OPTIONS)
    ratio = (tmp_path / "new.parquet").stat().st_size / (tmp_path / "old.parquet").stat().st_size
    assert 0.49 < ratio < 0.51, ratio


def _dataset(folder, audio: np.ndarray, labels: list[int], format_: str, float32: bool) -> str:
    table = dataset.clips_table(_clip_rows(audio, labels), CLIP)
    if float32:  # as audiogan wrote it before format /2
        table = table.set_column(
            table.schema.get_field_index("audio"),
            pa.field("audio", pa.list_(pa.float32(), CLIP)),
            pa.FixedSizeListArray.from_arrays(pa.array(audio.ravel()), CLIP),
        )
    (folder / dataset.CLIPS).mkdir(parents=True)
    pq.write_table(table, folder / dataset.CLIPS / "part-0.parquet")
    manifest = {
        "format": format_,
        "sample_rate_hz": 16000,
        "clip_samples": CLIP,
        "labels": ["class0", "class1"],
    }
    (folder / dataset.MANIFEST).write_text(json.dumps(manifest))
    return str(folder)


@pytest.mark.parametrize(
    ("format_", "float32", "tolerance"),
    [("audiogan.prepared/1", True, 0.0), (dataset.FORMAT, False, 0.5 / dataset.PCM_SCALE)],
)
def test_datasets_of_both_formats_read_as_the_same_floats(tmp_path, format_, float32, tolerance):
    audio = np.stack([tone(220.0 * (i + 1), 1.0, 16000, 0.8) for i in range(4)])
    url = _dataset(tmp_path / "data", audio, [0, 1, 0, 1], format_, float32)
    clips = evaluator.read_labelled_clips(url)
    assert clips.audio.dtype == np.float32 and clips.audio.shape == (4, CLIP)
    np.testing.assert_allclose(clips.audio, audio, rtol=0, atol=tolerance + 1e-7)


def test_a_dataset_of_an_unknown_format_is_refused_with_how_to_rewrite_it(tmp_path):
    audio = np.zeros((1, CLIP), np.float32)
    url = _dataset(tmp_path / "data", audio, [0], "audiogan.prepared/9", False)
    with pytest.raises(dataset.PrepareError) as refused:
        dataset.read_manifest(url)
    message = str(refused.value)
    assert "'audiogan.prepared/9'" in message and "audiogan.prepared/2" in message
    assert f"audiogan prepare SOURCE {url} --overwrite" in message
    assert "\n" not in message


def test_training_batches_of_16_bit_audio_arrive_as_floats_on_the_device():
    audio = np.stack([tone(440.0, 0.1, 16000, 0.99)] * 8)
    stored = torch.from_numpy(dataset.to_pcm16(audio)).unsqueeze(1)  # (8, 1, T) int16

    def stream():
        yield stored[:4], torch.zeros(4, dtype=torch.long)
        yield stored[4:], torch.zeros(4, dtype=torch.long)

    batches = loop.cached_batches(stream, 4, 1, 0, torch.device("cpu"))
    for _ in range(4):  # two streamed, two from the cache (kept as int16)
        batch, _ = next(batches)
        assert batch.dtype == torch.float32
        assert batch.abs().max().item() == pytest.approx(0.99, abs=1e-4)
    assert loop.as_float(torch.ones(2, dtype=torch.float32)).tolist() == [1.0, 1.0]


def test_a_sliced_table_of_several_chunks_reads_the_right_clips():
    audio = np.stack([tone(110.0 * (i + 1), 1.0, 16000, 0.5) for i in range(6)])
    table = dataset.clips_table(_clip_rows(audio, [0] * 6), CLIP)
    both = pa.concat_tables([table, table]).slice(3, 5)  # rows 3-5 of one chunk, 0-1 of the next
    assert both.column("audio").num_chunks == 2
    expected = np.concatenate([audio[3:], audio[:2]])
    np.testing.assert_allclose(
        dataset.clip_audio(both, CLIP), expected, rtol=0, atol=0.5 / dataset.PCM_SCALE + 1e-7
    )
