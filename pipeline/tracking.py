"""MLflow logging for every stage: one run per stage execution, params and counts as metrics.

The tracking store defaults to a SQLite file at an absolute path in the repository root, so runs
from `dvc exp run --queue` (which execute in a temporary copy under `.dvc/tmp/exps`) land in the
same store as `dvc repro`. `MLFLOW_TRACKING_URI` overrides it.
"""

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

EXPERIMENT = "wbc-pipeline"


def repo_root(start: Path | None = None) -> Path:
    """The user's repository root, even from inside a DVC queued-experiment temp copy."""
    here = Path(start or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return here


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else SQLite at an absolute path in the repository root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


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


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@contextlib.contextmanager
def stage_run(stage: str, params: Mapping) -> Iterator[object]:
    """Open an MLflow run for one stage, tagged so runs of one pipeline can be found together."""
    import mlflow  # heavy import: only when a stage actually logs

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT))
    tags = {"stage": stage, "dvc.exp_name": os.environ.get("DVC_EXP_NAME", "")}
    commit = _git_commit()
    if commit:
        tags["git.commit"] = commit
    with mlflow.start_run(run_name=stage, tags=tags) as run:
        mlflow.log_params({k: str(v) for k, v in flatten(params).items()})
        yield run


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
