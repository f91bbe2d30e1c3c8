"""MLflow, where asked for (`mlflow_uri`, or MLFLOW_TRACKING_URI): one MLflow run per audiogan
run, with its config as params, the rows of metrics.jsonl as metrics and report.html as an
artifact; a sweep is a run of its own with one nested run per trial.

Rank 0 logs through an MlflowClient of its own (no global MLflow state in a Ray worker). The
run's id is kept in the run folder (RUN_FILE), so a resumed run goes on logging into the same
MLflow run. mlflow is an optional dependency (`pip install 'audiogan[mlflow]'`), imported
only when a run asks for it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from audiogan.config import TrainConfig, has_credentials, to_dict
from audiogan.console import say
from audiogan.errors import AudioganError
from audiogan.runfolder import REPORT, RunFolder, row_numbers

RUN_FILE = "mlflow.json"  # in the run folder: {"run_id": ..., "experiment_id": ...}
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag for a nested run
ARTIFACTS_DIR = "mlartifacts"  # beside a SQLite store's database: its experiments' artifacts


class TrackingError(AudioganError):
    """MLflow was asked for and cannot be used."""


def tracking_uri(cfg: TrainConfig) -> str:
    """Where the runs go: mlflow_uri, else MLFLOW_TRACKING_URI, else "" (no MLflow). A SQLite
    store's relative path is made absolute here, in the driver: Ray Train runs each worker
    in a folder of its own, where a relative path would name a database Ray deletes."""
    uri = cfg.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


def _client(uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingError(
            "MLflow tracking was asked for (mlflow_uri or MLFLOW_TRACKING_URI), but mlflow is "
            "not installed: pip install 'audiogan[mlflow]'"
        ) from None
    return MlflowClient(tracking_uri=uri)


def check(uri: str) -> None:
    """Raises TrackingError where MLflow is asked for but not installed, or the URI holds
    credentials (MLFLOW_TRACKING_URI is checked here; mlflow_uri by the config)."""
    if has_credentials(uri):
        raise TrackingError(
            "MLFLOW_TRACKING_URI must not hold credentials (user:password@): MLflow reads them "
            "from MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
        )
    _client(uri)


def _experiment_id(client, name: str) -> str:
    """The experiment `name`, created where missing. In a SQLite store MLflow would keep its
    artifacts in ./mlruns of whichever process logs them (a Ray worker's is a session folder
    Ray deletes), so an experiment audiogan creates there keeps them beside the database."""
    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    uri = client.tracking_uri
    location = None
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///")).resolve()
        location = (database.parent / ARTIFACTS_DIR).as_uri()
    return client.create_experiment(name, artifact_location=location)


def _params(values: dict[str, Any]) -> list:
    from mlflow.entities import Param

    return [Param(key, str(value)[:6000]) for key, value in sorted(values.items())]


def start_sweep(uri: str, experiment: str, name: str, params: dict[str, Any]) -> str:
    """The MLflow run a sweep's trial runs nest under; returns its id."""
    client = _client(uri)
    run = client.create_run(_experiment_id(client, experiment), run_name=name)
    client.log_batch(run.info.run_id, params=_params(params))
    return run.info.run_id


def run_exists(uri: str, run_id: str) -> bool:
    """Whether the store at `uri` holds the run `run_id` (any other failure is raised: a
    store that is down must not make a resumed run start a new MLflow run)."""
    from mlflow.exceptions import MlflowException

    try:
        _client(uri).get_run(run_id)
        return True
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise


def _log_bytes(client, run_id: str, name: str, data: bytes) -> None:
    """`data` as the run's artifact `name` (MLflow logs files: through a temporary one)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, name)
        with open(path, "wb") as handle:
            handle.write(data)
        client.log_artifact(run_id, path)


def end_sweep(uri: str, run_id: str, files: dict[str, bytes], failed: bool = False) -> None:
    """Closes a sweep's MLflow run with its result files (name -> bytes) as artifacts."""
    client = _client(uri)
    for name, data in files.items():
        _log_bytes(client, run_id, name, data)
    client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
    # Trials ASHA stopped, and PBT members' earlier runs, never reached their last step.
    unfinished = client.search_runs(
        [client.get_run(run_id).info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{run_id}' and attributes.status = 'RUNNING'",
    )
    for trial in unfinished:
        client.set_terminated(trial.info.run_id, "KILLED")


class Tracker:
    """Rank 0's MLflow run for one audiogan run. Once the run is open, a failure to log (the
    tracking server away) is one line on the console, and training goes on: MLflow holds a
    copy of what the run folder keeps."""

    def __init__(
        self,
        uri: str,
        folder: RunFolder,
        cfg: TrainConfig,
        dataset: dict,
        run_name: str,
        parent_run_id: str = "",
    ):
        self.client, self.folder = _client(uri), folder
        kept = json.loads(folder.read(RUN_FILE)) if folder.exists(RUN_FILE) else {}
        found = kept.get("run_id") and run_exists(uri, kept["run_id"])
        self.run_id = kept["run_id"] if found else None
        if self.run_id is None:  # a new run (or its MLflow run is not in this store)
            tags = {PARENT_TAG: parent_run_id} if parent_run_id else {}
            experiment = _experiment_id(self.client, cfg.mlflow_experiment)
            run = self.client.create_run(experiment, run_name=run_name, tags=tags)
            self.run_id = run.info.run_id
            params = {**to_dict(cfg), "clip_samples": dataset["clip_samples"],
                      "sample_rate_hz": dataset["sample_rate_hz"],
                      "labels": len(dataset["labels"])}  # fmt: skip
            params.pop("mlflow_uri")  # where it logs is not a setting of the run
            self.client.log_batch(self.run_id, params=_params(params))
            folder.write(RUN_FILE, json.dumps({"run_id": self.run_id}).encode())
        else:
            self.client.update_run(self.run_id, status="RUNNING")

    def _logging(self, what: str, call) -> None:
        try:
            call()
        except Exception as error:  # noqa: BLE001 - any failure of MLflow's client or server
            text = " ".join(str(error).split())[:200]
            say(f"mlflow: {what} failed ({type(error).__name__}: {text}); training goes on")

    def metrics(self, step: int, row: dict) -> None:
        """Every number of a metrics.jsonl row but the step, at that step."""
        self._logging("logging metrics", lambda: self._metrics(step, row))

    def _metrics(self, step: int, row: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = [Metric(key, value, now, step) for key, value in row_numbers(row).items()]
        self.client.log_batch(self.run_id, metrics=values)

    def report(self) -> None:
        """report.html, as the run folder holds it now, as the run's artifact."""
        self._logging("logging report.html", self._report)

    def _report(self) -> None:
        _log_bytes(self.client, self.run_id, REPORT, self.folder.read(REPORT))

    def finish(self, failed: bool = False) -> None:
        status = "FAILED" if failed else "FINISHED"
        self._logging("ending the run", lambda: self.client.set_terminated(self.run_id, status))
