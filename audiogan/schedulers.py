"""The sweep's Tune schedulers (audiogan/tune.py picks one; importing this module imports Ray).

Ray Tune 2.60 does not keep a scheduler's state across a resume: `Tuner.restore` unpickles the
scheduler as `tuner.pkl` holds it, written before the first trial started, so an ASHA that
resumes has empty rungs and judges later trials only against what it sees after the resume
(ray-project/ray#30838). `ResumableASHA` fills its rungs again from the results every trial
stored (its result.json) when Tune adds the restored trial, finished ones included.
"""

from __future__ import annotations

import json

from ray.tune.result import EXPR_RESULT_FILE
from ray.tune.schedulers import ASHAScheduler


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
