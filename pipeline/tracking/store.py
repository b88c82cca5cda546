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
DATA_SUFFIX = "-data"
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


def answers(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether an MLflow server answers its health check."""
    import requests

    try:
        return requests.get(f"{uri.rstrip('/')}/health", timeout=timeout_s).ok
    except requests.RequestException:
        return False


def tracking_failure(err: BaseException) -> str | None:
    """One line saying what went wrong with the tracking store, or None if `err` did not come from it."""
    import mlflow
    import requests
    from mlflow.exceptions import MlflowException

    if not isinstance(err, MlflowException | requests.RequestException):
        return None
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")) and not answers(uri):
        return (
            f"MLflow tracking server {uri} stopped answering ({type(err).__name__}); its run is marked "
            "KILLED by the next stage that reaches the server"
        )
    return f"MLflow ({uri}): {str(err).splitlines()[0][:300]}"


def check_reachable(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """The URI to log to: `uri` itself if it is not a server or the server answers its health check.

    MLflow's own client retries an unreachable server for minutes; this fails in seconds instead,
    naming the URI, or falls back to the local store when WBC_MLFLOW_FALLBACK=local.
    """
    if not uri.startswith(("http://", "https://")):
        return uri
    # MLflow retries a request 7 times with doubling waits (minutes of silence when the server has
    # gone): a stage should fail in seconds instead. Either setting can still be given.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    if answers(uri, timeout_s):
        return uri
    problem = f"MLflow tracking server {uri} is unreachable"
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


def experiment_name(data: bool = False) -> str:
    """The experiment for model runs (`wbc-pipeline`, or MLFLOW_EXPERIMENT_NAME), or with `data` the
    one beside it for the data stages' runs (`wbc-pipeline-data`), so the model table holds only
    models."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    return f"{name}{DATA_SUFFIX}" if data else name


def connect(data: bool = False) -> str:
    """Point MLflow at the store (checked) and return the experiment's id (see `experiment_name`)."""
    import mlflow

    mlflow.set_tracking_uri(check_reachable(tracking_uri()))
    return ensure_experiment(experiment_name(data))
