"""MLflow logging for every stage: one run per stage execution, params and counts as metrics.

The tracking store defaults to a SQLite file at an absolute path in the repository root, so runs
from `dvc exp run --queue` (which execute in a temporary copy under `.dvc/tmp/exps`) land in the
same store as `dvc repro`. `MLFLOW_TRACKING_URI` overrides it (a team's `mlflow server`, say); a
server that does not answer fails the stage at once, unless `WBC_MLFLOW_FALLBACK=local` asks to
log to the local store instead.
"""

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path

import yaml

from pipeline.atomic import alive
from pipeline.errors import PipelineError

EXPERIMENT = "wbc-pipeline"
PROBE_TIMEOUT_S = 5.0


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
    into the temporary copy a queued experiment runs in, whichever run creates the experiment.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    local = not mlflow.get_tracking_uri().startswith(("http://", "https://", "databricks"))
    location = (repo_root() / "mlruns").as_uri() if local else None  # a server keeps its own
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        found = client.get_experiment_by_name(name)  # another run created it first
        if found is None:
            raise
        return found.experiment_id


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


def params_hash(params: Mapping) -> str:
    """A short, stable hash of every param: equal hashes mean identically configured runs."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def locked_md5(out: str, lock: Path = Path("dvc.lock")) -> str | None:
    """The md5 DVC recorded in `dvc.lock` for an output path, if the lock has it."""
    try:
        stages = yaml.safe_load(lock.read_text()).get("stages", {})
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    for stage in stages.values():
        for entry in stage.get("outs", []):
            if entry.get("path") == out:
                return entry.get("md5")
    return None


def package_versions(names: tuple[str, ...] = ("keras", "tensorflow", "tensorflow-cpu", "torch")) -> dict:
    found = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def run_tags(stage: str, all_params: Mapping) -> dict[str, str]:
    """What a run needs to be traced back to its code, data, params and experiment."""
    tags = {
        "stage": stage,
        "dvc.exp_name": os.environ.get("DVC_EXP_NAME", ""),
        "dvc.exp_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
        "params.sha256": params_hash(all_params),
        **{f"version.{k}": v for k, v in package_versions().items()},
    }
    commit = _git_commit()
    if commit:
        tags["git.commit"] = commit
    return tags


@contextlib.contextmanager
def stage_run(
    stage: str, params: Mapping, all_params: Mapping, resume: str | None = None
) -> Iterator[object]:
    """Open an MLflow run for one stage, tagged so runs of one pipeline can be found together.

    `resume` is the id of a run to continue (evaluate adds to the run train made); it is used only
    if it exists in this store and has not logged any of `params` already, else a new run is made.
    """
    import mlflow

    mlflow.set_tracking_uri(check_reachable(tracking_uri()))
    experiment = ensure_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT))
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
    with mlflow.start_run(run_id=run_id, experiment_id=experiment, run_name=None if run_id else stage) as run:
        mlflow.set_tags(tags | {"run.host": socket.gethostname(), "run.pid": str(os.getpid())})
        mlflow.log_params(flat)
        if Path("dvc.lock").is_file():  # with the commit and params: enough to rebuild the run
            mlflow.log_artifact("dvc.lock")
        yield run


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


REGISTERED_MODEL = "wbc-classifier"
CHAMPION = "champion"


def register(model_uri: str, promote: bool, name: str = REGISTERED_MODEL) -> dict:
    """Add a logged model as a new version of `name`; move the `champion` alias to it only when
    `promote` (its gates passed), so `models:/wbc-classifier@champion` is always a model that passed."""
    import mlflow

    version = mlflow.register_model(model_uri, name).version
    if promote:
        mlflow.MlflowClient().set_registered_model_alias(name, CHAMPION, version)
    return {"name": name, "version": int(version), "champion": promote}
