"""The trained model in MLflow: logged with the input format it expects and what it needs to run,
registered (the `champion` alias only for a model whose gates passed), and loaded back."""

import json
from pathlib import Path

import keras
import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.tracking.provenance import package_versions
from pipeline.tracking.store import check_reachable, tracking_uri


def requirements() -> list[str]:
    """Pinned pip requirements of a logged model, listed rather than inferred (inference loads the
    model in a subprocess, which costs seconds per run)."""
    return [f"{name}=={version}" for name, version in sorted(package_versions().items())] + [
        f"numpy=={np.__version__}"
    ]


def log_keras_model(model: keras.Model, example: np.ndarray) -> str:
    """Log `model` to the active run with a signature taken from `example` (a few rows of its input:
    float32 RGB in 0..255, shape (n, height, width, 3)); returns the logged model's URI.

    A JSON request body for `mlflow models serve` is logged next to it as `serving_input_example.json`:
    MLflow's Keras flavour cannot save an input example itself (mlflow/mlflow#16183).
    """
    import mlflow
    from mlflow.models import infer_signature

    example = example.astype("float32")
    outputs = model.predict(example, verbose=0)
    info = mlflow.keras.log_model(
        model,
        name="model",
        signature=infer_signature(example, outputs),
        pip_requirements=requirements(),
    )
    mlflow.log_text(json.dumps({"inputs": example[:1].tolist()}), "serving_input_example.json")
    return info.model_uri


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


def register_run_model(run_file: Path, promote: bool) -> dict | None:
    """Register the model that the run in `run_file` (train's `models/run.json`) logged, and tag that
    run with the version; None when train logged no model there."""
    import mlflow

    try:
        model_uri = json.loads(Path(run_file).read_text())["model_uri"]
    except (OSError, ValueError, KeyError):
        return None
    entry = register(model_uri, promote=promote)
    mlflow.set_tags({"registry.version": entry["version"], "registry.champion": str(promote).lower()})
    print(f"registry: {entry['name']} version {entry['version']}" + (", the champion" if promote else ""))
    return entry


def load_logged_model(uri: str) -> keras.Model:
    """A model from MLflow: `models:/wbc-classifier@champion`, `runs:/<id>/model`, `models:/<id>`."""
    import mlflow

    mlflow.set_tracking_uri(check_reachable(tracking_uri()))
    try:
        return mlflow.keras.load_model(uri)
    except Exception as err:  # MLflow raises several types for a missing model or alias
        raise PipelineError(f"{uri}: cannot load the model from MLflow ({err})") from None
