"""A cross-validation study in MLflow: a parent run per setting holding the mean ± sd of its runs,
with the setting's model runs (one per fold and seed, made by `train`) nested under it."""

import math
from collections.abc import Mapping, Sequence

from pipeline.tracking.store import connect

PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests runs by


def log_setting(summary: Mapping, experiments: Sequence[str], report_files: Sequence[str] = ()) -> str:
    """Create (or update, on a re-run of the report) the setting's parent run; nest its model runs.

    Returns the parent run's id. Model runs are found by their `dvc.exp_name` tag; a run already
    nested elsewhere is moved under this parent.
    """
    import mlflow

    experiment = connect()
    client = mlflow.MlflowClient()
    setting = str(summary["setting"])
    found = client.search_runs(
        [experiment], filter_string=f"tags.`cv.setting` = '{setting}' and tags.`cv.parent` = 'true'"
    )
    parent = found[0] if found else client.create_run(
        experiment, run_name=f"cv: {setting}", tags={"cv.setting": setting, "cv.parent": "true"}
    )  # fmt: skip
    run_id = parent.info.run_id
    if not found:  # params are written once
        client.log_param(run_id, "cv.changes", str(summary["changes"])[:6000])
    for key in ("runs", "folds", "seeds"):
        client.set_tag(run_id, f"cv.{key}", str(summary[key]))
    metrics = {k: float(v) for k, v in summary.items() if k.endswith((".mean", ".sd")) and not math.isnan(v)}
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, v, 0, 0) for k, v in metrics.items()])
    for name in experiments:
        for child in client.search_runs([experiment], filter_string=f"tags.`dvc.exp_name` = '{name}'"):
            if child.data.tags.get("stages", "").startswith("train"):
                client.set_tag(child.info.run_id, PARENT_TAG, run_id)
                client.set_tag(child.info.run_id, "cv.setting", setting)
    for path in report_files:
        client.log_artifact(run_id, path)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def log_curve(
    source: str, table: Sequence[Mapping], experiments: Sequence[str], files: Sequence[str] = ()
) -> str:
    """The adaptation study's parent run `adapt: <source>`: each metric's mean at step k (MLflow
    draws the learning curve), its runs nested under it. Updated in place on a re-run."""
    import mlflow

    experiment = connect()
    client = mlflow.MlflowClient()
    found = client.search_runs(
        [experiment], filter_string=f"tags.`adapt.source` = '{source}' and tags.`adapt.parent` = 'true'"
    )
    parent = found[0] if found else client.create_run(
        experiment, run_name=f"adapt: {source}", tags={"adapt.source": source, "adapt.parent": "true"}
    )  # fmt: skip
    run_id = parent.info.run_id
    points = [
        mlflow.entities.Metric(f"adapt.{key.removesuffix('.mean')}", float(value), 0, int(row["k"]))
        for row in table
        for key, value in row.items()
        if key.endswith(".mean") and not math.isnan(value)
    ]
    client.log_batch(run_id, metrics=points)
    for name in experiments:
        for child in client.search_runs([experiment], filter_string=f"tags.`dvc.exp_name` = '{name}'"):
            if child.data.tags.get("stages", "").startswith("train"):
                client.set_tag(child.info.run_id, PARENT_TAG, run_id)
    for path in files:
        client.log_artifact(run_id, path)
    client.set_terminated(run_id, "FINISHED")
    return run_id
