"""Studies in MLflow: a parent run per CV setting (mean ± sd of its runs) or per adaptation source
(the learning curve), with the study's model runs (made by `train`) nested under it."""

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from pipeline.tracking.store import connect

PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests runs by


def log_setting(summary: Mapping, experiments: Sequence[str], report_files: Sequence[str] = (),
                sizes: Mapping[int, Mapping] = MappingProxyType({})) -> str:  # fmt: skip
    """Create (or update, on a re-run of the report) the setting's parent run; nest its model runs.
    An ensemble setting's `sizes` (k -> the summary of its runs' first k members) go in as
    `members.<metric>.mean` / `.sd` at step k, which MLflow draws as a curve over the size.

    Returns the parent run's id. Model runs are found by their `dvc.exp_name` tag; a run already
    nested elsewhere is moved under this parent.
    """
    import mlflow

    experiment = connect()
    client = mlflow.MlflowClient()
    setting = str(summary["setting"])
    run_id, created = _parent(client, experiment, "cv", "setting", setting)
    if created:  # params are written once
        client.log_param(run_id, "cv.changes", str(summary["changes"])[:6000])
    for key in ("runs", "folds", "seeds"):
        client.set_tag(run_id, f"cv.{key}", str(summary[key]))
    points = [(key, value, 0) for key, value in _stats(summary)]
    points += [(f"members.{key}", value, k) for k, row in sizes.items() for key, value in _stats(row)]
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, v, 0, step) for k, v, step in points])
    return _finish(client, experiment, run_id, experiments, report_files, {"cv.setting": setting})


def _stats(summary: Mapping) -> list[tuple[str, float]]:
    """A summary row's means and sds that were measured (not NaN)."""
    return [(k, float(v)) for k, v in summary.items() if k.endswith((".mean", ".sd")) and not math.isnan(v)]


def log_curve(
    source: str, table: Sequence[Mapping], experiments: Sequence[str], files: Sequence[str] = ()
) -> str:
    """The adaptation study's parent run `adapt: <source>`: each metric's mean at step k (MLflow
    draws the learning curve), its runs nested under it. Updated in place on a re-run."""
    import mlflow

    experiment = connect()
    client = mlflow.MlflowClient()
    run_id, _ = _parent(client, experiment, "adapt", "source", source)
    points = [
        mlflow.entities.Metric(f"adapt.{key.removesuffix('.mean')}", float(value), 0, int(row["k"]))
        for row in table
        for key, value in row.items()
        if key.endswith(".mean") and not math.isnan(value)
    ]
    client.log_batch(run_id, metrics=points)
    return _finish(client, experiment, run_id, experiments, files)


def _parent(client, experiment: str, study: str, key: str, value: str) -> tuple[str, bool]:
    """The study's parent run `<study>: <value>` (tags `<study>.<key>` and `<study>.parent`), found
    or created; its id, and whether it was created now."""
    found = client.search_runs(
        [experiment], filter_string=f"tags.`{study}.{key}` = '{value}' and tags.`{study}.parent` = 'true'"
    )
    if found:
        return found[0].info.run_id, False
    tags = {f"{study}.{key}": value, f"{study}.parent": "true"}
    return client.create_run(experiment, run_name=f"{study}: {value}", tags=tags).info.run_id, True


def _finish(client, experiment: str, run_id: str, experiments: Sequence[str], files: Sequence[str],
            child_tags: Mapping[str, str] = MappingProxyType({})) -> str:  # fmt: skip
    """Nest the finished model runs of `experiments` (by their `dvc.exp_name` tag) under the
    parent, log the report files to it and end it. An attempt killed or failed is no result of the
    study: it is not nested, and taken out if an earlier report nested it."""
    tags = {PARENT_TAG: run_id, **child_tags}
    for name in experiments:
        for child in client.search_runs([experiment], filter_string=f"tags.`dvc.exp_name` = '{name}'"):
            if not child.data.tags.get("stages", "").startswith("train"):
                continue
            if child.info.status == "FINISHED":
                for tag, value in tags.items():
                    client.set_tag(child.info.run_id, tag, value)
            elif child.data.tags.get(PARENT_TAG) == run_id:
                for tag in tags.keys() & child.data.tags.keys():
                    client.delete_tag(child.info.run_id, tag)
    for path in files:
        client.log_artifact(run_id, path)
    client.set_terminated(run_id, "FINISHED")
    return run_id
