"""`audiogan evaluate`: generated clips beside real held-out clips, in numbers (no Ray).

Every metric is computed twice, on the same number of clips: for the generated clips and for
real clips the evaluation classifier never saw (its held-out split). The real figure is the
reference, as in the WaveGAN paper (real SC09 data: Inception Score 9.18; WaveGAN about 4-5):

- mel_fd and classifier_fd: Frechet distances to the Gaussian of the training split's clips
  (log-mel frames; the classifier's penultimate features). Real held-out clips give the floor
  that sampling alone causes; ratio = generated / real (1 is as good as real data).
- inception_score: from the classifier's class probabilities, 10 splits; ratio = generated / real
  (1 is as good as real data; the maximum score is the number of classes).
- label_accuracy (conditional models): how often a clip is classified as the label it was asked
  for, beside the classifier's accuracy on real held-out clips.
- diagnostics: silent share, RMS and spectral-centroid distributions of both sets.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import soundfile as sf

from audiogan import evaluator, metrics, storage
from audiogan.dataset import read_manifest
from audiogan.errors import AudioganError


def read_samples(url: str, sample_rate_hz: int, clip_samples: int, n: int) -> np.ndarray:
    """Up to N WAV (or FLAC/OGG) files of a folder, sorted by name, as (N, clip_samples) mono.

    Files must be at the dataset's rate; shorter ones are zero-padded and longer ones cut, as
    prepare does. Anything unreadable is an error naming the file.
    """
    fs, root = storage.resolve(url)
    why = storage.why_not_a_folder(fs, root, url)
    if why:
        raise AudioganError(f"--samples {storage.display(url)} {why}; give a folder of WAVs")
    names = [
        info.path
        for info in storage.list_folder(fs, root)
        if info.base_name.lower().endswith((".wav", ".flac", ".ogg"))
    ][:n]
    if not names:
        raise AudioganError(f"no .wav, .flac or .ogg files in {storage.display(url)}")
    clips = np.zeros((len(names), clip_samples), dtype=np.float32)
    for i, path in enumerate(names):
        try:
            audio, rate = sf.read(io.BytesIO(storage.read_bytes(fs, path)), dtype="float32")
        except (sf.LibsndfileError, RuntimeError) as error:
            raise AudioganError(f"cannot decode {path}: {error}") from None
        if rate != sample_rate_hz:
            raise AudioganError(
                f"{path} is at {rate} Hz; the dataset is at {sample_rate_hz} Hz "
                "(prepare or resample the samples first)"
            )
        audio = audio.mean(axis=1) if audio.ndim == 2 else audio
        clips[i, : min(audio.size, clip_samples)] = audio[:clip_samples]
    return clips


def check_classifier(about: dict, clips: evaluator.LabelledClips, classifier_url: str) -> None:
    """Refuses a classifier fitted on a dataset of another rate, length or label set."""
    evaluator.check_fits(
        about, clips.sample_rate_hz, clips.clip_samples, clips.labels, classifier_url
    )


def evaluate(
    data_url: str,
    checkpoint_url: str | None = None,
    samples_url: str | None = None,
    n: int = 256,
    seed: int = 0,
    evaluator_url: str | None = None,
    log: Callable[[str], None] = print,
    clips: evaluator.LabelledClips | None = None,
) -> dict:
    """Metrics of N generated (or read) clips beside the same metrics for real held-out clips.

    `clips`: the dataset's clips, when the caller has read them already.
    """
    if (checkpoint_url is None) == (samples_url is None):
        raise AudioganError("give exactly one of --checkpoint and --samples")
    if n < 2:
        raise AudioganError("--n must be at least 2")
    read_manifest(data_url)  # a --data that is no dataset is named as such, first
    classifier_url = evaluator_url or storage.join(data_url, evaluator.DEFAULT_DIR)
    classifier, about = evaluator.load(classifier_url)
    if clips is None:
        clips = evaluator.read_labelled_clips(data_url)
    check_classifier(about, clips, classifier_url)
    rate = clips.sample_rate_hz

    result: dict = {"data": storage.display(data_url), "seed": seed}
    asked_for = None
    if checkpoint_url is not None:
        generated, asked_for, source = _generate(checkpoint_url, clips, n, seed, log)
        result |= source
    else:
        generated = read_samples(samples_url, rate, clips.clip_samples, n)
        result["samples"] = storage.display(samples_url)

    generated, asked_for, real, reference = _matched_sets(generated, asked_for, clips, seed)
    count = len(generated)
    log(
        f"evaluate: {count} generated vs {count} real held-out clips; "
        f"reference: {len(reference)} training clips"
    )
    figures, per_set = _figures(classifier, about, generated, real, reference, asked_for, rate)
    result |= {
        "predicted_labels": _predicted_labels(per_set, clips.labels),
        "generated_clips": count,
        "real_clips": count,
        "reference_clips": len(reference),
        "evaluator": {
            "path": storage.display(classifier_url),
            "held_out_accuracy": about["held_out_accuracy"],
        },
        "metrics": figures,
        "diagnostics": {
            "generated": _rounded(metrics.diagnostics(generated, rate)),
            "real": _rounded(metrics.diagnostics(real, rate)),
        },
    }
    return result


def _generate(
    checkpoint_url: str,
    clips: evaluator.LabelledClips,
    n: int,
    seed: int,
    log: Callable[[str], None],
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """N clips from a checkpoint's generator: (clips, the label each was asked for or None, the
    result's fields naming the checkpoint). Refuses a checkpoint made for another rate, length
    or label set, since its clips could not be scored against this dataset's."""
    from audiogan.generate import generate_clips, load_generator

    generator, cfg, state = load_generator(checkpoint_url)
    dataset = state["dataset"]
    rate = clips.sample_rate_hz
    if (dataset["sample_rate_hz"], dataset["clip_samples"]) != (rate, clips.clip_samples):
        raise AudioganError(
            f"the checkpoint makes {dataset['clip_samples']} samples at "
            f"{dataset['sample_rate_hz']} Hz; the dataset has {clips.clip_samples} at {rate} Hz"
        )
    log(f"evaluate: generating {n} clips from step {state['step']} ...")
    generated, asked_for = generate_clips(generator, cfg, dataset["labels"], n, None, seed)
    if asked_for is not None and dataset["labels"] != clips.labels:
        raise AudioganError("the checkpoint's labels differ from the dataset's")
    source = {"checkpoint": storage.display(checkpoint_url), "step": state["step"]}
    source["model"] = cfg.model
    return generated, asked_for, source


def _matched_sets(
    generated: np.ndarray,
    asked_for: np.ndarray | None,
    clips: evaluator.LabelledClips,
    seed: int,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """(generated, asked_for, real, reference): as many generated as real held-out clips (a
    seeded random pick of them), since every metric compares the two sets at one size; and the
    training split's clips (evaluator.reference_audio), for the Frechet references."""
    real = clips.held_out_audio
    count = min(len(generated), len(real))
    if len(real) < 2:
        raise AudioganError(f"need at least 2 held-out real clips; the dataset has {len(real)}")
    if count < 2:
        raise AudioganError(f"need at least 2 generated clips to score; got {len(generated)}")
    generated = generated[:count]
    asked_for = None if asked_for is None else asked_for[:count]
    real = real[np.random.default_rng(seed).permutation(len(real))[:count]]
    return generated, asked_for, real, evaluator.reference_audio(clips, seed)


def _figures(
    classifier: evaluator.Classifier,
    about: dict,
    generated: np.ndarray,
    real: np.ndarray,
    reference: np.ndarray,
    asked_for: np.ndarray | None,
    rate: int,
) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """(each metric for both sets with their ratio, rounded; each set's class probabilities)."""
    mel_reference = metrics.MelReference(reference, rate)
    _, reference_features = evaluator.outputs(classifier, reference)
    feature_reference = metrics.gaussian(reference_features)
    figures: dict[str, dict] = {}
    per_set: dict[str, np.ndarray] = {}
    for name, audio in (("generated", generated), ("real", real)):
        probabilities, features = evaluator.outputs(classifier, audio)
        per_set[name] = probabilities
        score, spread = metrics.inception_score(probabilities, splits=10)
        figures.setdefault("mel_fd", {})[name] = mel_reference.distance(audio)
        figures.setdefault("classifier_fd", {})[name] = metrics.frechet_distance(
            *feature_reference, *metrics.gaussian(features)
        )
        figures.setdefault("inception_score", {})[name] = score
        figures["inception_score"][f"{name}_std"] = spread
    if asked_for is not None:
        figures["label_accuracy"] = {
            "generated": float(np.mean(per_set["generated"].argmax(axis=1) == asked_for)),
            "real": about["held_out_accuracy"],
        }
    for values in figures.values():
        values["ratio"] = values["generated"] / values["real"] if values["real"] else None
        for key, value in list(values.items()):
            values[key] = None if value is None else round(float(value), 4)
    return figures, per_set


def _predicted_labels(per_set: dict[str, np.ndarray], labels: list[str]) -> dict:
    """How the classifier sees each set: a generator that collapsed puts every clip in one
    class."""
    return {
        name: {
            "counts": dict(
                zip(
                    labels,
                    np.bincount(probs.argmax(axis=1), minlength=len(labels)).tolist(),
                    strict=True,
                )
            ),
            "mean_confidence": round(float(probs.max(axis=1).mean()), 4),
        }
        for name, probs in per_set.items()
    }


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {key: round(value, 5) for key, value in values.items()}


def format_table(result: dict) -> list[str]:
    """The metrics side by side, then the diagnostics."""
    source = result.get("checkpoint") or result.get("samples")
    lines = [
        f"evaluate: {source} against {result['data']} "
        f"({result['generated_clips']} generated, {result['real_clips']} real held-out clips; "
        f"classifier held-out accuracy {result['evaluator']['held_out_accuracy']})",
        "",
        "| metric | generated | real (held out) | generated / real |",
        "|---|---:|---:|---:|",
    ]
    for name, values in result["metrics"].items():
        generated, real = values["generated"], values["real"]
        if name == "inception_score":
            generated = f"{generated} ± {values['generated_std']}"
            real = f"{real} ± {values['real_std']}"
        lines.append(f"| {name} | {generated} | {real} | {values['ratio']} |")
    lines += ["", "| diagnostic | generated | real (held out) |", "|---|---:|---:|"]
    generated, real = result["diagnostics"]["generated"], result["diagnostics"]["real"]
    for key in generated:
        lines.append(f"| {key} | {generated[key]} | {real[key]} |")
    predicted = result["predicted_labels"]
    for label in predicted["generated"]["counts"]:
        lines.append(
            f"| clips classified {label} | {predicted['generated']['counts'][label]} "
            f"| {predicted['real']['counts'][label]} |"
        )
    lines.append(
        f"| mean classifier confidence | {predicted['generated']['mean_confidence']} "
        f"| {predicted['real']['mean_confidence']} |"
    )
    return lines
