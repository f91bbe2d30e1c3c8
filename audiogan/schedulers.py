"""The sweep's Tune schedulers and what a population-based trial needs from Ray
(audiogan/tune.py picks them; importing this module imports Ray).

Ray Tune 2.60 does not keep a scheduler's state across a resume: `Tuner.restore` unpickles the
scheduler as `tuner.pkl` holds it, written before the first trial started, so an ASHA that
resumes has empty rungs and judges later trials only against what it sees after the resume
(ray-project/ray#30838). `ResumableASHA` fills its rungs again from the results every trial
stored (its result.json) when Tune adds the restored trial, finished ones included.
"""

from __future__ import annotations

import functools
import json

import ray.train
from ray import tune
from ray.tune.result import EXPR_RESULT_FILE
from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining


class ResumableASHA(ASHAScheduler):
    """ASHA whose rungs survive a resume: a restored trial's stored results are replayed into
    it, in the order they came, as if reported again. Tune pickles this class by reference in
    the sweep's state, so it must stay importable under this name."""

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        if not trial.has_reported_at_least_once:  # a new trial: nothing to replay
            return
        for result in stored_results(trial):
            # Records the trial at each rung it reached; a finished trial's verdicts are moot.
            self.on_trial_result(tune_controller, trial, result)


def stored_results(trial) -> list[dict]:
    """Every result Tune stored for a trial (its result.json, one JSON object a line)."""
    fs = trial.storage.storage_filesystem
    path = f"{trial.storage.trial_fs_path}/{EXPR_RESULT_FILE}"
    try:
        with fs.open_input_stream(path) as stream:
            text = stream.readall().decode()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class PopulationBasedToTheEnd(PopulationBasedTraining):
    """PBT that leaves a trial's last result alone: a trial at max_steps is done, and taking
    another's checkpoint then would only copy it and train nothing."""

    def __init__(self, max_steps: int, **kwargs):
        super().__init__(**kwargs)
        self.max_steps = max_steps

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(self._time_attr, 0) >= self.max_steps:
            return self.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


def population_based(
    interval_steps: int, ranges: dict[str, tuple[str, float, float]], max_steps: int
) -> PopulationBasedTraining:
    """Ray Tune's PBT (asynchronous, as in Ray's own GAN example) over the G step: at every
    `interval_steps` a trial in the worst quarter of the population takes the checkpoint of one
    in the best quarter, with its settings, and perturbs `ranges` (key -> (uniform or
    loguniform, low, high)): each multiplied by 0.8 or 1.2, or drawn anew one time in four, and
    kept inside its range."""
    samplers = {"uniform": tune.uniform, "loguniform": tune.loguniform}
    return PopulationBasedToTheEnd(
        max_steps,
        time_attr="step",
        perturbation_interval=interval_steps,
        hyperparam_mutations={
            key: samplers[kind](low, high) for key, (kind, low, high) in ranges.items()
        },
        custom_explore_fn=functools.partial(_within, ranges=ranges),
    )


def _within(config: dict, ranges: dict[str, tuple[str, float, float]]) -> dict:
    """A perturbed config with every perturbed key clipped to its searched range."""
    for key, (_, low, high) in ranges.items():
        config[key] = min(max(config[key], low), high)
    return config


class Forward(ray.train.UserCallback):
    """Hands rank 0's metrics of every Ray Train report to the trial's function (through a
    Ray queue), which reports them to Tune with a checkpoint PBT can hand to another trial.
    Tune's own TuneReportCallback reports metrics only, and PBT exploits nothing without a
    checkpoint."""

    def __init__(self, queue):
        self.queue = queue

    def after_report(self, run_context, metrics, checkpoint) -> None:
        self.queue.put(dict(metrics[0]))
