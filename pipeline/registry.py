"""The trained model in MLflow: logged with the input format it expects and what it needs to run."""

import json

import keras
import numpy as np

from pipeline.tracking import package_versions


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
