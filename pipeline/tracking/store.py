"""Where MLflow runs go: the tracking store and the experiment.

The store defaults to a SQLite file at an absolute path in the repository root, so runs from
`dvc exp run --queue` (which execute in a temporary copy under `.dvc/tmp/exps`) land in the same
store as `dvc repro`. `MLFLOW_TRACKING_URI` overrides it (a team's `mlflow server`, say); a server
that does not answer fails the stage at once, unless `WBC_MLFLOW_FALLBACK=local` asks to log to the
local store instead.
"""

import contextlib
import os
import sys
from pathlib import Path

from pipeline.core.errors import PipelineError

EXPERIMENT = "wbc-pipeline"
PROBE_TIMEOUT_S = 5.0
KIND = {"mlflow.experimentKind": "custom_model_development"}  # MLflow 3's experiment-kind tag


def repo_root(start: Path | None = None) -> Path:
    """The user's repository root, even from inside a DVC queued-experiment temp copy."""
    here = Path(start or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return here


def local_store() -> str:
    return f"sqlite:///{repo_root() / 'mlflow.db'}"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else SQLite at an absolute path in the repository root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or local_store()


def check_reachable(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """The URI to log to: `uri` itself if it is not a server or the server answers its health check.

    MLflow's own client retries an unreachable server for minutes; this fails in seconds instead,
    naming the URI, or falls back to the local store when WBC_MLFLOW_FALLBACK=local.
    """
    if not uri.startswith(("http://", "https://")):
        return uri
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=timeout_s).raise_for_status()
        return uri
    except requests.RequestException as err:
        problem = f"MLflow tracking server {uri} is unreachable ({type(err).__name__})"
    if os.environ.get("WBC_MLFLOW_FALLBACK") == "local":
        print(f"warning: {problem}; logging to {local_store()} instead", file=sys.stderr)
        return local_store()
    raise PipelineError(
        f"{problem}. Start it, fix MLFLOW_TRACKING_URI, or set WBC_MLFLOW_FALLBACK=local "
        "to log to the local store."
    )


def ensure_experiment(name: str) -> str:
    """The experiment's id, created if missing; safe when queued runs race to create it.

    With a local store (SQLite) the artifacts go to `<repo root>/mlruns` by absolute path, never
    into the temporary copy a queued experiment runs in, whichever run creates the experiment. It is
    tagged as model training (`mlflow.experimentKind`); MLflow 3.17's UI still opens on its GenAI
    view unless the URL asks for `?workflowType=machine_learning` (the README's `mlflow ui` line).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        if "mlflow.experimentKind" not in found.tags:  # made before this tag: mark it, if allowed
            with contextlib.suppress(MlflowException):
                client.set_experiment_tag(found.experiment_id, *next(iter(KIND.items())))
        return found.experiment_id
    local = not mlflow.get_tracking_uri().startswith(("http://", "https://", "databricks"))
    location = (repo_root() / "mlruns").as_uri() if local else None  # a server keeps its own
    try:
        return client.create_experiment(name, artifact_location=location, tags=KIND)
    except MlflowException:
        found = client.get_experiment_by_name(name)  # another run created it first
        if found is None:
            raise
        return found.experiment_id


def connect() -> str:
    """Point MLflow at the store (checked) and return the experiment's id."""
    import mlflow

    mlflow.set_tracking_uri(check_reachable(tracking_uri()))
    return ensure_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT))
