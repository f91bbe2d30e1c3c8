"""Quality metrics without a model: Frechet distance, mel_fd, Inception Score, diagnostics."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from conftest import tone

from audiogan import metrics

RATE = 16000


def test_frechet_distance_matches_a_hand_computed_2d_case():
    # |(0,0) - (1,2)|^2 = 5; Tr(I + diag(4, 9) - 2 diag(2, 3)) = 2 + 13 - 10 = 5
    assert metrics.frechet_distance(
        np.zeros(2), np.eye(2), np.array([1.0, 2.0]), np.diag([4.0, 9.0])
    ) == pytest.approx(10.0)


def test_frechet_distance_agrees_with_scipy_sqrtm_on_correlated_covariances():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_of_singular_covariances_is_finite_and_zero_for_equal_ones():
    singular = np.array([[1.0, 1.0], [1.0, 1.0]])  # rank 1: rounding makes eigenvalues < 0
    assert metrics.frechet_distance(np.ones(2), singular, np.ones(2), singular) == pytest.approx(
        0.0, abs=1e-7
    )
    with pytest.raises(ValueError, match="not finite"):
        metrics.frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))


def _clips(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack(
        [tone(rng.uniform(200, 1200), 1.0, RATE, amplitude=rng.uniform(0.3, 0.9)) for _ in range(n)]
    ).astype(np.float32)


def test_mel_fd_is_zero_for_the_same_clips_and_grows_with_added_noise():
    clips = _clips(16, seed=1)
    assert metrics.mel_fd(clips, clips.copy(), RATE) == pytest.approx(0.0, abs=1e-6)
    rng = np.random.default_rng(2)
    distances = [
        metrics.mel_fd(clips, clips + level * rng.standard_normal(clips.shape), RATE)
        for level in (0.001, 0.01, 0.1)
    ]
    assert 0 < distances[0] < distances[1] < distances[2]
    # Another draw of the same kind of clips is far closer than the noisiest version.
    assert metrics.mel_fd(clips, _clips(16, seed=3), RATE) < distances[2]


def test_log_mel_accepts_the_generators_layout_and_stays_finite_on_silence():
    silent = np.zeros((2, 1, RATE), dtype=np.float32)  # (N, 1, T)
    mel = metrics.log_mel(silent, RATE)
    assert mel.shape == (2, metrics.N_MELS, RATE // metrics.HOP + 1)
    assert np.isfinite(mel.numpy()).all()


def test_inception_score_ranges_from_one_to_the_number_of_classes():
    confident = np.eye(4)[np.arange(400) % 4]  # every clip sure of its class, classes balanced
    assert metrics.inception_score(confident)[0] == pytest.approx(4.0, rel=1e-6)
    one_class = np.eye(4)[np.zeros(400, dtype=int)]
    assert metrics.inception_score(one_class)[0] == pytest.approx(1.0)
    unsure = np.full((400, 4), 0.25)
    assert metrics.inception_score(unsure)[0] == pytest.approx(1.0)
    mean, spread = metrics.inception_score(confident, splits=10)
    assert spread == pytest.approx(0.0, abs=1e-9)


def test_diagnostics_measure_silence_loudness_and_brightness():
    clips = np.stack([tone(1000, 1.0, RATE, amplitude=0.5), np.zeros(RATE)])
    found = metrics.diagnostics(clips, RATE)
    assert found["silent_share"] == 0.5
    assert found["rms_q3"] == pytest.approx(0.5 / np.sqrt(2) * 0.75, rel=0.05)  # one loud clip
    loud = metrics.diagnostics(clips[:1], RATE)
    assert loud["centroid_hz_mean"] == pytest.approx(1000, abs=20)
    assert loud["rms_mean"] == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
