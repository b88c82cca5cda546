"""The MLflow run of a stage: opened, tagged and resumed; reports, epochs and files logged to it;
runs of killed stages marked KILLED."""

import contextlib
import os
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from pipeline.core.atomic import alive
from pipeline.tracking.provenance import run_tags
from pipeline.tracking.store import connect

MODEL_STAGES = ("train", "evaluate")  # their runs are the models; the other stages log beside them


def flatten(tree: Mapping, prefix: str = "") -> dict[str, object]:
    """Nested mapping -> {"a.b.c": value}, the shape MLflow params and metrics take."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


@contextlib.contextmanager
def stage_run(
    stage: str, params: Mapping, all_params: Mapping, resume: str | None = None
) -> Iterator[object]:
    """Open an MLflow run for one stage, tagged so runs of one pipeline can be found together.

    `resume` is the id of a run to continue (evaluate adds to the run train made); it is used only
    if it exists in this store and has not logged any of `params` already, else a new run is made.
    """
    import mlflow

    experiment = connect(data=stage not in MODEL_STAGES)
    end_orphans(experiment)
    flat = {k: str(v) for k, v in flatten(params).items()}
    before = _resumable(resume, flat) if resume else None
    if before is not None:
        tags = {"stages": f"{before.data.tags.get('stages', '')},{stage}".lstrip(",")}
    else:
        tags = run_tags(stage, all_params) | {"stages": stage}
        if resume:
            tags["model_run_id"] = resume
    run_id = before.info.run_id if before is not None else None
    name = None if run_id else run_name(stage, params)
    with mlflow.start_run(run_id=run_id, experiment_id=experiment, run_name=name) as run:
        mlflow.set_tags(tags | {"run.host": socket.gethostname(), "run.pid": str(os.getpid())})
        mlflow.log_params(flat)
        if Path("dvc.lock").is_file():  # with the commit and params: enough to rebuild the run
            mlflow.log_artifact("dvc.lock")
        yield run


def run_name(stage: str, params: Mapping) -> str:
    """What the MLflow UI lists a run as: a model run by its experiment (or `repro`), model and task,
    so runs can be told apart in the table (`x3`: an ensemble of 3); a data stage's run by its stage."""
    train = params.get("train")
    if stage != "train" or not isinstance(train, Mapping):
        return stage
    members = train.get("members") or 1
    ensemble = f" x{members}" if members > 1 else ""
    return f"{os.environ.get('DVC_EXP_NAME') or 'repro'}: {train.get('model')}/{train.get('task')}{ensemble}"


def end_orphans(experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs whose stage process on this machine is gone: a stage killed by
    SIGKILL or a power cut cannot end its own run, and the UI would show it running forever.
    Housekeeping only: a store that refuses (another user's run on a shared server) is warned of."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    here = f"attributes.status = 'RUNNING' and tags.`run.host` = '{socket.gethostname()}'"
    ended = []
    try:
        for run in client.search_runs([experiment_id], filter_string=here, max_results=1000):
            pid = run.data.tags.get("run.pid", "")
            if pid.isdigit() and not alive(int(pid)):
                client.set_terminated(run.info.run_id, "KILLED")
                ended.append(run.info.run_id)
    except MlflowException as err:
        print(f"warning: could not mark killed stages' runs as KILLED: {err}", file=sys.stderr)
    return ended


def _resumable(run_id: str, params: Mapping[str, str]):
    """The run to resume, or None if it is not in this store or already has some of `params`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except MlflowException:
        return None
    return None if set(params) & set(run.data.params) else run


def log_report(report: Mapping, artifact_name: str) -> None:
    """Log a stage report: every number as a metric, the whole report as a JSON artifact."""
    import mlflow

    numbers = {
        k.replace(" ", "_"): float(v)
        for k, v in flatten(report).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    mlflow.log_metrics(numbers)
    mlflow.log_dict(dict(report), artifact_name)


def log_files(files: Sequence[Path]) -> None:
    """Attach files (plots, predictions) to the active run."""
    import mlflow

    for path in files:
        mlflow.log_artifact(str(path))


def set_tags(tags: Mapping[str, object]) -> None:
    """Tags on the active run."""
    import mlflow

    mlflow.set_tags(dict(tags))


def active_run_id() -> str:
    import mlflow

    return mlflow.active_run().info.run_id
