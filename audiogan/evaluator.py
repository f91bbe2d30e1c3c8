"""The evaluation classifier: a log-mel CNN trained on a prepared dataset's labels (no Ray).

No pretrained audio model can be downloaded here, so the yardstick for Inception Score and the
classifier Frechet distance is trained on the dataset itself, in the style of the WaveGAN paper's
SC09 classifier: log-mel input, four convolution blocks, global pooling, one linear layer. Clips
of one source file in five (by a hash of its path) are held out: the classifier never sees them,
its accuracy is measured on them, and `evaluate` uses them as the real-data reference.
"""

from __future__ import annotations

import hashlib
import io
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow.fs as pafs
import torch
from torch import nn
from torch.nn import functional as F

from audiogan import metrics, storage
from audiogan.dataset import EVALUATOR_DIR, clip_audio, read_clips, read_manifest
from audiogan.errors import AudioganError

FORMAT = "audiogan.evaluator/1"
DEFAULT_DIR = EVALUATOR_DIR  # beside clips/ and manifest.json in DEST
STATE_FILE = "state.pt"
HELD_OUT_ONE_IN = 5
FEATURES = 128  # the penultimate layer: what the classifier Frechet distance compares
# The real clips every classifier FD is measured against: training-split clips (never the
# held-out ones, which `evaluate` compares with), at most this many, picked with seed 0.
MAX_REFERENCE_CLIPS = 1000


class EvaluatorError(AudioganError):
    """A dataset the classifier cannot learn from, or a missing or foreign classifier file."""


@dataclass
class LabelledClips:
    """A prepared dataset's labelled clips, split by source file into training and held-out."""

    audio: np.ndarray  # (N, T) float32
    label_ids: np.ndarray  # (N,) int64
    held_out: np.ndarray  # (N,) bool
    labels: list[str]
    sample_rate_hz: int
    clip_samples: int

    @property
    def train_audio(self) -> np.ndarray:
        return self.audio[~self.held_out]

    @property
    def held_out_audio(self) -> np.ndarray:
        return self.audio[self.held_out]


def reference_audio(clips: LabelledClips, seed: int = 0) -> np.ndarray:
    """The training split's clips, at most MAX_REFERENCE_CLIPS of them (a seeded pick, in
    dataset order): the real side of every Frechet distance."""
    reference = clips.train_audio
    if len(reference) > MAX_REFERENCE_CLIPS:
        pick = np.random.default_rng(seed).permutation(len(reference))[:MAX_REFERENCE_CLIPS]
        reference = reference[np.sort(pick)]
    return reference


def is_held_out(source: str) -> bool:
    """One source file in HELD_OUT_ONE_IN, the same on every machine and in every run."""
    return zlib.crc32(source.encode()) % HELD_OUT_ONE_IN == 0


def read_labelled_clips(data_url: str, labelled_only: bool = True) -> LabelledClips:
    """Every labelled clip (or every clip) of a finished dataset, read with pyarrow (no Ray)."""
    manifest = read_manifest(data_url)
    table = read_clips(data_url, ["source", "label_id", "audio"])
    label_ids = table.column("label_id").to_numpy().astype(np.int64)
    keep = label_ids >= 0 if labelled_only else np.ones(len(label_ids), dtype=bool)
    clip_samples = manifest["clip_samples"]
    audio = clip_audio(table, clip_samples)[keep]
    sources = [s for s, k in zip(table.column("source").to_pylist(), keep, strict=True) if k]
    return LabelledClips(
        audio=np.ascontiguousarray(audio, dtype=np.float32),
        label_ids=label_ids[keep],
        held_out=np.array([is_held_out(s) for s in sources], dtype=bool),
        labels=list(manifest["labels"]),
        sample_rate_hz=manifest["sample_rate_hz"],
        clip_samples=clip_samples,
    )


class Classifier(nn.Module):
    """log-mel (normalised per band) -> 4 x [conv 3x3, BatchNorm, ReLU, max-pool] -> mean over
    time and frequency (FEATURES values) -> dropout -> linear to the classes."""

    def __init__(self, num_classes: int, sample_rate_hz: int, widths=(32, 64, 128, FEATURES)):
        super().__init__()
        self.sample_rate_hz = sample_rate_hz
        self.register_buffer("band_mean", torch.zeros(metrics.N_MELS, 1))
        self.register_buffer("band_std", torch.ones(metrics.N_MELS, 1))
        blocks, channels = [], 1
        for width in widths:
            blocks += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(channels, num_classes)

    def mel(self, audio: torch.Tensor) -> torch.Tensor:
        return metrics.log_mel(audio, self.sample_rate_hz)

    def features_from_mel(self, mel: torch.Tensor) -> torch.Tensor:
        x = ((mel - self.band_mean) / self.band_std).unsqueeze(1)
        return self.blocks(x).mean(dim=(2, 3))

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        return self.features_from_mel(self.mel(audio))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(audio)))


def fit(
    data_url: str,
    out_url: str | None = None,
    epochs: int = 30,
    batch_size: int = 32,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Trains the classifier on the training split, measures it on the held-out split, saves it
    (default DEST/evaluator/state.pt) and returns a summary."""
    if epochs < 1 or batch_size < 1:
        raise EvaluatorError("epochs and batch size must be at least 1")
    clips = read_labelled_clips(data_url)
    present = _classes_present(clips, data_url)
    torch.manual_seed(seed)
    started = time.perf_counter()
    model = Classifier(len(clips.labels), clips.sample_rate_hz)
    with torch.no_grad():
        mels = torch.cat([model.mel(torch.from_numpy(b)) for b in _chunks(clips.audio, 256)])
    targets = torch.from_numpy(clips.label_ids)
    train_index = torch.from_numpy(np.flatnonzero(~clips.held_out))
    held_index = torch.from_numpy(np.flatnonzero(clips.held_out))
    held_mels, held_targets = mels[held_index], targets[held_index]
    _set_band_statistics(model, mels[train_index])

    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=3e-3, total_steps=epochs * max(1, -(-len(train_index) // batch_size))
    )
    order_rng = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        order = train_index[torch.randperm(len(train_index), generator=order_rng)]
        loss = _train_epoch(model, mels, targets, order, batch_size, optimiser, schedule, order_rng)
        if epoch == 1 or epoch % 5 == 0 or epoch == epochs:
            accuracy = _accuracy(model, held_mels, held_targets)
            log(
                f"evaluator: epoch {epoch}/{epochs}  loss {loss:.4f}  "
                f"held-out accuracy {accuracy:.3f}"
            )
    accuracy = _accuracy(model, held_mels, held_targets)
    per_class = {
        clips.labels[c]: _accuracy(model, held_mels[of_class], held_targets[of_class])
        for c in present
        if bool((of_class := held_targets == c).any())
    }
    summary = {
        "format": FORMAT,
        "labels": clips.labels,
        "sample_rate_hz": clips.sample_rate_hz,
        "clip_samples": clips.clip_samples,
        "train_clips": int(len(train_index)),
        "held_out_clips": int(len(held_index)),
        "held_out_accuracy": round(accuracy, 4),
        "held_out_accuracy_per_class": {k: round(v, 4) for k, v in per_class.items()},
        "epochs": epochs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    # The reference Gaussian of the classifier FD that training measures at every evaluation
    # (Judge): fitted once here, so a run needs only this file, not the dataset's clips.
    _, features = outputs(model, reference_audio(clips))
    mean, cov = metrics.gaussian(features)
    summary["reference_clips"] = len(features)
    target = out_url or storage.join(data_url, DEFAULT_DIR)
    reference = {"mean": torch.from_numpy(mean), "cov": torch.from_numpy(cov)}
    _save(model, {**summary, "reference": reference}, target)
    return {**summary, "path": storage.display(target)}


def _classes_present(clips: LabelledClips, data_url: str) -> list[int]:
    """The label ids that have clips, sorted; refuses a dataset with fewer than two classes, or
    one whose source files are too few to hold some out (nothing to measure the classifier on,
    or nothing to train it on)."""
    present = sorted(set(clips.label_ids.tolist()))
    if len(clips.labels) < 2 or len(present) < 2:
        raise EvaluatorError(
            f"{storage.display(data_url)} has {len(present)} labelled class(es); the evaluation "
            "classifier needs at least 2"
        )
    if clips.held_out.all() or not clips.held_out.any():
        raise EvaluatorError(
            f"{storage.display(data_url)} has too few source files ({len(clips.audio)} clips) to "
            f"hold one in {HELD_OUT_ONE_IN} out"
        )
    return present


def _set_band_statistics(model: Classifier, train_mels: torch.Tensor) -> None:
    """Each mel band's mean and spread over the training split, which the model normalises its
    input by; from the training split only, so the held-out clips stay unseen."""
    model.band_mean.copy_(train_mels.mean(dim=(0, 2)).unsqueeze(1))
    model.band_std.copy_(train_mels.std(dim=(0, 2)).clamp_min(1e-3).unsqueeze(1))


def _train_epoch(
    model: Classifier,
    mels: torch.Tensor,
    targets: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    rng: torch.Generator,
) -> float:
    """One pass over the training clips in `order`, augmented; returns the mean loss per clip."""
    model.train()
    total, seen = 0.0, 0
    for start in range(0, len(order), batch_size):
        pick = order[start : start + batch_size]
        if len(pick) < 2:  # BatchNorm needs two
            continue
        batch = _augment(mels[pick], rng, model.band_mean)
        logits = model.head(model.dropout(model.features_from_mel(batch)))
        loss = F.cross_entropy(logits, targets[pick])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        total, seen = total + loss.item() * len(pick), seen + len(pick)
    return total / max(seen, 1)


def _save(model: Classifier, summary: dict, target: str) -> None:
    """The summary and the weights, as TARGET/state.pt (what `load` reads)."""
    fs, folder = storage.resolve(target)
    buffer = io.BytesIO()
    torch.save({**summary, "state": model.state_dict()}, buffer)
    storage.write_bytes(fs, storage.join(folder, STATE_FILE), buffer.getvalue())


def _augment(mels: torch.Tensor, rng: torch.Generator, fill: torch.Tensor) -> torch.Tensor:
    """What must not change a clip's class: gain (+-6 dB, a shift of log power), where in the
    clip the sound is (a circular shift in time), and a band or stretch of time masked with the
    bands' means (SpecAugment)."""
    n, bands, frames = mels.shape
    gain = (torch.rand(n, 1, 1, generator=rng) - 0.5) * 2 * np.log(10**1.2)
    out = mels + gain
    shifts = torch.randint(0, frames, (n,), generator=rng)
    time_index = (torch.arange(frames).unsqueeze(0) + shifts.unsqueeze(1)) % frames
    out = torch.gather(out, 2, time_index.unsqueeze(1).expand(n, bands, frames))
    band_start = torch.randint(0, bands, (n, 1), generator=rng)
    band_width = torch.randint(0, bands // 8 + 1, (n, 1), generator=rng)
    band = torch.arange(bands).unsqueeze(0)
    band_mask = (band >= band_start) & (band < band_start + band_width)
    frame_start = torch.randint(0, frames, (n, 1), generator=rng)
    frame_width = torch.randint(0, frames // 5 + 1, (n, 1), generator=rng)
    frame = torch.arange(frames).unsqueeze(0)
    frame_mask = (frame >= frame_start) & (frame < frame_start + frame_width)
    masked = band_mask.unsqueeze(2) | frame_mask.unsqueeze(1)
    return torch.where(masked, fill.expand(n, bands, frames), out)


def _chunks(array: np.ndarray, size: int):
    for start in range(0, len(array), size):
        yield array[start : start + size]


@torch.no_grad()
def _accuracy(model: Classifier, mels: torch.Tensor, targets: torch.Tensor) -> float:
    if len(targets) == 0:
        return float("nan")
    model.eval()
    logits = model.head(model.features_from_mel(mels))
    return float((logits.argmax(dim=1) == targets).float().mean())


def load(url: str) -> tuple[Classifier, dict]:
    """A saved classifier (a folder holding state.pt, or the file), loaded weights_only, and
    its summary."""
    model, about, _ = _load_state(url)
    return model, about


def _load_state(url: str) -> tuple[Classifier, dict, dict | None]:
    """(the classifier, its summary, the reference Gaussian fit kept with it or None)."""
    fs, path = storage.resolve(url)
    try:
        kind = fs.get_file_info(path).type
    except OSError as error:
        raise storage.unreachable(url, error) from None
    if not path.endswith(".pt"):
        if kind == pafs.FileType.File:
            raise EvaluatorError(
                f"{storage.display(url)} is a file, not a classifier (a folder with {STATE_FILE}"
                ", or the .pt file itself)"
            )
        path = storage.join(path, STATE_FILE)
    if not storage.exists(fs, path):
        raise EvaluatorError(
            f"no evaluation classifier at {storage.display(url)}; "
            "make one with: audiogan evaluator fit --data DEST"
        )
    try:
        data = io.BytesIO(storage.read_bytes(fs, path))
        state = torch.load(data, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same answer
        raise EvaluatorError(
            f"{storage.display(url)} is not a readable classifier: {error}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise EvaluatorError(f"{storage.display(url)} is not an audiogan evaluation classifier")
    model = Classifier(len(state["labels"]), state["sample_rate_hz"])
    try:
        model.load_state_dict(state["state"])
    except (RuntimeError, KeyError) as error:
        raise EvaluatorError(
            f"{storage.display(url)} does not fit the classifier's layers: {str(error)[:200]}"
        ) from None
    model.eval()
    about = {k: v for k, v in state.items() if k not in ("state", "reference")}
    reference = state.get("reference")
    return model, about, reference if isinstance(reference, dict) else None


def check_fits(about: dict, rate: int, clip_samples: int, labels: list[str], url: str) -> None:
    """Refuses a classifier fitted on a dataset of another rate, length or label set."""
    if (about["sample_rate_hz"], about["clip_samples"], about["labels"]) != (
        rate,
        clip_samples,
        labels,
    ):
        raise EvaluatorError(
            f"the classifier at {storage.display(url)} was fitted on another dataset (rate, "
            "length or labels differ); fit one for this dataset: audiogan evaluator fit --data DEST"
        )


@dataclass
class Judge:
    """The classifier FD of a training run's evaluations: the features of a fixed noise batch's
    clips against the reference Gaussian fitted with the classifier (`fit`). With as few clips
    as an evaluation's (eval_clips) the distance is biased upward against `evaluate`'s, by the
    same amount for every run of that size, so runs and trials rank alike on it."""

    classifier: Classifier
    mean: np.ndarray
    cov: np.ndarray
    about: dict

    def distance(self, audio: np.ndarray | torch.Tensor) -> float:
        _, features = outputs(self.classifier, audio)
        return metrics.frechet_distance(self.mean, self.cov, *metrics.gaussian(features))


def load_judge(url: str) -> Judge:
    """The classifier at `url` as a Judge; refuses one fitted before it kept its reference."""
    model, about, reference = _load_state(url)
    if reference is None:
        raise EvaluatorError(
            f"the classifier at {storage.display(url)} has no reference statistics (it was "
            "fitted by an older audiogan); fit it again: audiogan evaluator fit --data DEST"
        )
    return Judge(model, reference["mean"].numpy(), reference["cov"].numpy(), about)


def judge_url(data_url: str) -> str | None:
    """Where a dataset's evaluation classifier is (DEST/evaluator, absolute: training workers
    load it from folders of their own), or None if it has none."""
    url = storage.join(storage.absolute(data_url), DEFAULT_DIR)
    fs, path = storage.resolve(storage.join(url, STATE_FILE))
    return url if storage.exists(fs, path) else None


def fingerprint(model: Classifier) -> str:
    """A short hash of the classifier's weights: two classifiers score alike if and only if it
    is the same. Held-out accuracy is no such check: a classifier fitted again on data that
    differs in the last float bit has the same accuracy and other features."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def outputs(model: Classifier, audio: np.ndarray | torch.Tensor, batch: int = 128):
    """(class probabilities (N, C), penultimate features (N, FEATURES)) as float64 arrays."""
    model.eval()
    probabilities, features = [], []
    audio = torch.as_tensor(audio, dtype=torch.float32)
    for start in range(0, len(audio), batch):
        hidden = model.features(audio[start : start + batch])
        probabilities.append(F.softmax(model.head(hidden), dim=1).double())
        features.append(hidden.double())
    return torch.cat(probabilities).numpy(), torch.cat(features).numpy()


def usable_judge(data_url: str, manifest: dict) -> str | None:
    """The dataset's evaluation classifier (DEST/evaluator), or None if it has none. Raises
    EvaluatorError for one that cannot score this dataset's clips: fitted on another rate,
    length or label set, or by an older audiogan (no reference kept)."""
    url = judge_url(data_url)
    if url is None:
        return None
    about = load_judge(url).about
    check_fits(about, manifest["sample_rate_hz"], manifest["clip_samples"], manifest["labels"], url)
    return url
