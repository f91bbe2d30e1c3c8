from __future__ import annotations

import csv

import numpy as np
import soundfile as sf

from audiogan import synth


def test_the_dataset_has_the_fsdkaggle2018_layout(synth_root):
    rows = list(csv.DictReader(open(synth_root / "train.csv")))
    assert list(rows[0]) == ["fname", "label", "manually_verified"]
    assert len(rows) == 20
    assert {r["label"] for r in rows} == set(synth.CLASSES)
    assert {r["manually_verified"] for r in rows} == {"0", "1"}
    for row in rows:
        info = sf.info(str(synth_root / "audio_train" / row["fname"]))
        assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_16")


def test_the_same_seed_gives_the_same_bytes_and_another_seed_does_not(tmp_path):
    a = synth.synthesize(str(tmp_path / "a"), clips_per_class=2, seed=1, workers=1)
    synth.synthesize(str(tmp_path / "b"), clips_per_class=2, seed=1, workers=2)
    synth.synthesize(str(tmp_path / "c"), clips_per_class=2, seed=2, workers=1)
    assert a["clips"] == 8
    files_a = sorted((tmp_path / "a" / "audio_train").iterdir())
    files_b = sorted((tmp_path / "b" / "audio_train").iterdir())
    assert [f.read_bytes() for f in files_a] == [f.read_bytes() for f in files_b]
    assert (tmp_path / "a" / "train.csv").read_text() == (tmp_path / "b" / "train.csv").read_text()
    assert (tmp_path / "a" / "train.csv").read_text() != (tmp_path / "c" / "train.csv").read_text()


def test_tree_layout_puts_each_label_in_its_folder(tmp_path):
    synth.synthesize(str(tmp_path), clips_per_class=1, seed=0, layout="tree")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(synth.CLASSES)


def test_clips_vary_in_length_loudness_and_silence():
    clips = [synth.render_clip(0, label, i) for label in synth.CLASSES for i in range(12)]
    seconds = np.array([c.size / synth.SAMPLE_RATE_HZ for c in clips])
    peaks = np.array([np.max(np.abs(c)) for c in clips])
    assert seconds.min() < 1.0 and seconds.max() > 7.0
    assert peaks.min() < 0.2 and peaks.max() > 0.5
    leading_silence = [np.argmax(np.abs(c) > 1e-3) / synth.SAMPLE_RATE_HZ for c in clips]
    assert sum(s > 0.05 for s in leading_silence) >= 5


def _timbre(audio: np.ndarray) -> np.ndarray:
    """Pitch-independent descriptors: noisiness, brightness over pitch, decay, decaying share."""
    frames = np.lib.stride_tricks.sliding_window_view(audio, 2048)[::512] * np.hanning(2048)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12
    energy = power.sum(axis=1)
    loud = energy > 1e-3 * energy.max()
    power = power[loud]
    freqs = np.fft.rfftfreq(2048, 1 / synth.SAMPLE_RATE_HZ)
    flatness = np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)
    centroid = (power * freqs).sum(axis=1) / power.sum(axis=1)
    strongest = freqs[np.argmax(power[:, 5:], axis=1) + 5]
    change = np.diff(np.log(energy[loud]))
    return np.array(
        [
            np.log(np.median(flatness)),
            np.median(np.log(centroid / strongest)),
            np.median(change),
            np.mean(change < -0.05),
        ]
    )


def test_the_four_timbres_are_told_apart_well_above_chance():
    """Leave-one-out nearest centroid on crude descriptors: 22/32 measured, chance is 8/32."""
    labels = list(synth.CLASSES)
    features = {
        lab: np.array([_timbre(synth.render_clip(3, lab, i)) for i in range(8)]) for lab in labels
    }
    every = np.concatenate(list(features.values()))
    std = every.std(axis=0)
    correct = 0
    for label in labels:
        for i, feature in enumerate(features[label]):
            centroids = {
                other: (np.delete(rows, i, 0) if other == label else rows).mean(axis=0)
                for other, rows in features.items()
            }
            guess = min(labels, key=lambda o: np.linalg.norm((centroids[o] - feature) / std))
            correct += guess == label
    assert correct >= 18
