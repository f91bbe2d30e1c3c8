"""`audiogan compare`: the 2019 baseline against WaveGAN on the same data, budget and yardstick.

Each model trains from scratch for the same number of minutes on the same Ray Train workers
(its preset, with `max_minutes` as the budget), then `evaluate` scores its EMA generator (or G)
with the same evaluation classifier against the same real held-out clips.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from audiogan import evaluate, evaluator, storage, train
from audiogan.config import CPU_PRESETS, TrainConfig, load_config
from audiogan.errors import AudioganError

RESULT = "compare.json"


def compare(
    data_url: str,
    storage_url: str,
    minutes: float,
    workers: int = 2,
    model_names: tuple[str, ...] = ("dcgan", "wavegan"),
    n: int = 256,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    # Everything that could fail after the training is checked before it.
    if minutes <= 0:
        raise AudioganError("--minutes must be positive")
    if workers < 0:
        raise AudioganError("--workers must be 0 (in-process) or more")
    if n < 2:
        raise AudioganError("--n must be at least 2")
    unknown = [m for m in model_names if m not in CPU_PRESETS]
    if unknown:
        known = ", ".join(CPU_PRESETS)
        raise AudioganError(f"unknown model(s) {', '.join(unknown)}; known: {known}")
    fs, root = storage.resolve(storage_url)
    names = {model: f"compare-{model}" for model in model_names}
    for name in names.values():
        run = storage.join(root, name)
        if storage.is_nonempty_dir(fs, run):
            if not overwrite:
                raise AudioganError(
                    f"{storage.display(storage_url)}/{name} exists; a resumed run would not get "
                    "the same budget (use --overwrite to start again)"
                )
            storage.delete(fs, run)

    clips = evaluator.read_labelled_clips(data_url)  # once, for the check and both evaluations
    classifier_url = storage.join(data_url, evaluator.DEFAULT_DIR)
    if storage.exists(*storage.resolve(storage.join(classifier_url, evaluator.STATE_FILE))):
        _, about = evaluator.load(classifier_url)
        evaluate.check_classifier(about, clips, classifier_url)
        log(f"compare: using the evaluation classifier at {storage.display(classifier_url)}")
    else:
        log("compare: fitting the evaluation classifier ...")
        about = evaluator.fit(data_url, log=log)

    result: dict = {
        "data": storage.display(data_url),
        "budget_minutes": minutes,
        "workers": workers,
        "classifier_held_out_accuracy": about["held_out_accuracy"],
        "models": {},
    }
    for model, name in names.items():
        preset = CPU_PRESETS[model]
        cfg = load_config(
            TrainConfig, str(preset), {"max_minutes": float(minutes), "max_steps": 10**7}
        )
        log(f"compare: training {model} ({preset.name}) for {minutes} min on {workers} worker(s)")
        spec = train.RunSpec(data_url, storage_url, name, workers, gpu=False)
        summary = train.train(cfg, spec)
        if summary["error"]:
            raise AudioganError(f"training {model} failed: {summary['error']}")
        scores = evaluate.evaluate(
            data_url, checkpoint_url=summary["checkpoint"], n=n, log=log, clips=clips
        )
        result["models"][model] = {
            "preset": preset.name,
            "steps": summary["steps"],
            "samples_per_s": summary["samples_per_s"],
            "checkpoint": summary["checkpoint"],
            "metrics": scores["metrics"],
            "diagnostics": scores["diagnostics"],
            "clips": scores["generated_clips"],
        }
        _write(fs, root, result)  # a later model's failure loses nothing already measured
    if {"dcgan", "wavegan"} <= set(result["models"]):
        base, wave = result["models"]["dcgan"]["metrics"], result["models"]["wavegan"]["metrics"]
        result["wavegan_vs_dcgan"] = {
            "classifier_fd_ratio": _ratio(
                wave["classifier_fd"]["generated"], base["classifier_fd"]["generated"]
            ),
            "inception_score_ratio_gain": _ratio(
                wave["inception_score"]["ratio"], base["inception_score"]["ratio"]
            ),
        }
        fd_ratio = result["wavegan_vs_dcgan"]["classifier_fd_ratio"]
        is_ratios = (wave["inception_score"]["ratio"], base["inception_score"]["ratio"])
        result["targets_met"] = {
            "classifier_fd_at_most_half": fd_ratio is not None and fd_ratio <= 0.5,
            "higher_inception_score_ratio": None not in is_ratios and is_ratios[0] > is_ratios[1],
        }
    _write(fs, root, result)
    return result


def _write(fs, root: str, result: dict) -> None:
    storage.write_bytes(
        fs, storage.join(root, RESULT), json.dumps(result, indent=2, sort_keys=True).encode()
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 4)


def format_table(result: dict) -> list[str]:
    lines = [
        f"compare: {result['budget_minutes']} min of training each on {result['workers']} CPU "
        f"worker(s), data {result['data']}; classifier held-out accuracy "
        f"{result['classifier_held_out_accuracy']}",
        "",
        "| model | steps | mel_fd (real) | classifier FD (real) | Inception Score (real) "
        "| IS ratio | silent share |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, row in result["models"].items():
        m, silent = row["metrics"], row["diagnostics"]["generated"]["silent_share"]
        lines.append(
            f"| {model} | {row['steps']} | {m['mel_fd']['generated']} ({m['mel_fd']['real']}) "
            f"| {m['classifier_fd']['generated']} ({m['classifier_fd']['real']}) "
            f"| {m['inception_score']['generated']} ({m['inception_score']['real']}) "
            f"| {m['inception_score']['ratio']} | {silent} |"
        )
    if "wavegan_vs_dcgan" in result:
        versus, met = result["wavegan_vs_dcgan"], result["targets_met"]
        lines += [
            "",
            f"WaveGAN's classifier FD / the baseline's: {versus['classifier_fd_ratio']} "
            f"(target <= 0.5: {'met' if met['classifier_fd_at_most_half'] else 'missed'})",
            f"WaveGAN's IS ratio / the baseline's: {versus['inception_score_ratio_gain']} "
            f"(target > 1: {'met' if met['higher_inception_score_ratio'] else 'missed'})",
        ]
    return lines
