"""Quality metrics built from the data itself (no downloads, no Ray).

- `mel_fd`: the Frechet distance between Gaussians fitted to the log-mel frames of real and of
  generated clips. No model, so it is cheap enough for every evaluation step during training.
- `inception_score` and `frechet_distance` on an evaluation classifier's outputs and features
  (the classifier is in `audiogan/evaluator.py`).
- `diagnostics`: silence, loudness and brightness of a batch of clips, which explain a bad score.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torchaudio

# Log-mel features: 64 bands, 1024-sample windows (64 ms at 16 kHz) every 256 samples; a floor
# of 1e-5 keeps silence finite.
N_FFT, HOP, N_MELS, LOG_FLOOR = 1024, 256, 64, 1e-5
# A clip whose RMS is below this (-60 dBFS) counts as silent.
SILENCE_RMS = 1e-3


@functools.lru_cache(maxsize=8)
def _mel_transform(sample_rate_hz: int) -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate_hz,
        n_fft=N_FFT,
        hop_length=HOP,
        n_mels=N_MELS,
        f_min=20.0,
        f_max=sample_rate_hz / 2,
        power=2.0,
    )


def log_mel(audio: torch.Tensor | np.ndarray, sample_rate_hz: int) -> torch.Tensor:
    """(N, T) clips -> (N, N_MELS, frames) natural-log mel power, float32 on the clips' device."""
    audio = torch.as_tensor(audio, dtype=torch.float32)
    if audio.dim() == 3:  # (N, 1, T) as the generators emit it
        audio = audio[:, 0]
    transform = _mel_transform(sample_rate_hz).to(audio.device)
    return torch.log(transform(audio) + LOG_FLOOR)


def gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64) of (samples, dims) features."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need (samples >= 2, dims) features, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    Tr((S1 S2)^(1/2)) is computed as the sum of the square roots of the eigenvalues of the
    symmetric matrix S1^(1/2) S2 S1^(1/2), which has the same eigenvalues as S1 S2: no complex
    square root can appear, and eigenvalues that rounding made slightly negative are set to 0.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if not (np.all(np.isfinite(sigma1)) and np.all(np.isfinite(sigma2))):
        raise ValueError("a covariance is not finite")
    values, vectors = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = root1 @ sigma2 @ root1
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    distance = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root
    return float(max(distance, 0.0))


def mel_frames(audio: torch.Tensor | np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """Every log-mel frame of every clip as one (frames, N_MELS) float64 array."""
    with torch.no_grad():
        mel = log_mel(audio, sample_rate_hz)
    return mel.transpose(1, 2).reshape(-1, mel.shape[1]).double().cpu().numpy()


class MelReference:
    """The Gaussian of a fixed set of real clips' log-mel frames, fitted once."""

    def __init__(self, real: torch.Tensor | np.ndarray, sample_rate_hz: int):
        self.sample_rate_hz = sample_rate_hz
        self.mu, self.sigma = gaussian(mel_frames(real, sample_rate_hz))

    def distance(self, clips: torch.Tensor | np.ndarray) -> float:
        mu, sigma = gaussian(mel_frames(clips, self.sample_rate_hz))
        return frechet_distance(self.mu, self.sigma, mu, sigma)


def mel_fd(
    real: torch.Tensor | np.ndarray, generated: torch.Tensor | np.ndarray, sample_rate_hz: int
) -> float:
    """The Frechet distance between the log-mel frame Gaussians of two sets of clips."""
    return MelReference(real, sample_rate_hz).distance(generated)


def inception_score(probabilities: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) over `splits` equal parts: (mean, std).

    It ranges from 1 (every clip looks the same, or none is confidently one class) to the number
    of classes (every clip is confidently one class and the classes are used equally).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    splits = max(1, min(splits, len(probabilities)))
    scores = []
    for part in np.array_split(probabilities, splits):
        marginal = part.mean(axis=0, keepdims=True)
        kl = np.sum(part * (np.log(part + 1e-12) - np.log(marginal + 1e-12)), axis=1)
        scores.append(float(np.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


def diagnostics(audio: torch.Tensor | np.ndarray, sample_rate_hz: int) -> dict[str, float]:
    """What a bad score may come from: silent clips, loudness and brightness (spectral centroid).

    Returns the silent share and the mean, std and quartiles of clip RMS and of clip centroid.
    """
    audio = torch.as_tensor(audio, dtype=torch.float64)
    if audio.dim() == 3:
        audio = audio[:, 0]
    rms = audio.pow(2).mean(dim=1).sqrt().numpy()
    spectrum = torch.fft.rfft(audio * torch.hann_window(audio.shape[1], dtype=audio.dtype)).abs()
    frequencies = torch.fft.rfftfreq(audio.shape[1], d=1 / sample_rate_hz, dtype=audio.dtype)
    centroid = ((spectrum * frequencies).sum(dim=1) / spectrum.sum(dim=1).clamp_min(1e-12)).numpy()
    result = {"silent_share": float(np.mean(rms < SILENCE_RMS))}
    for name, values in (("rms", rms), ("centroid_hz", centroid)):
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        result |= {
            f"{name}_mean": float(values.mean()),
            f"{name}_std": float(values.std()),
            f"{name}_q1": float(q1),
            f"{name}_median": float(median),
            f"{name}_q3": float(q3),
        }
    return result
