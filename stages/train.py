"""DVC stage `train`: fit the chosen model on the resized arrays; save it and its history."""

import time
from pathlib import Path

import keras
import mlflow
import pandas as pd

from pipeline import checkpoint, paths
from pipeline.atomic import atomic_write_bytes, write_json
from pipeline.models import build_model
from pipeline.params import Params
from pipeline.registry import log_keras_model
from pipeline.resize import load_npz
from pipeline.runtime import configure
from pipeline.stage import run_stage
from pipeline.tracking import locked_md5
from pipeline.train import compile_model, fit, heads_for

# The params sections that shape a model: its MLflow run logs them all, prefixed by section.
SECTIONS = ("fetch", "crop", "split", "augment", "resize", "train")
# The code a checkpoint is only valid for, besides the params and the arrays.
CODE = ("pipeline/models.py", "pipeline/train.py")


class LogEpochs(keras.callbacks.Callback):
    """Every epoch's metrics to the active MLflow run, so the UI shows learning curves live."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        mlflow.log_metrics({f"epoch.{k}": float(v) for k, v in (logs or {}).items()}, step=epoch)


def main(params: Params) -> dict:
    p = params.train
    runtime = configure(p.seed, p.deterministic, p.mixed_precision)
    mlflow.set_tags(
        {f"train.{k}": v for k, v in runtime.items()} | {"data.md5": locked_md5(str(paths.RESIZED))}
    )
    print(
        f"train: {p.model} / {p.task} on {runtime['device']} ({runtime['backend']}, {runtime['precision']})"
    )
    train, val = load_npz(paths.resized_split("train")), load_npz(paths.resized_split("val"))
    model = build_model(
        p.model,
        train["x"].shape[1:],
        heads_for(p.task, train["classes"]),
        dropout=p.dropout,
        l1=p.l1,
        l2=p.l2,
        weights=p.weights,
        bn_momentum=p.bn_momentum,
    )
    compile_model(model, p)
    arrays = [paths.resized_split(s) for s in ("train", "val")]
    start = time.perf_counter()
    history = fit(
        model, train, val, p, [LogEpochs()],
        checkpoint=paths.CHECKPOINT,
        fingerprint=checkpoint.fingerprint(p.model_dump(), [*arrays, *map(Path, CODE)]),
    )  # fmt: skip
    seconds = time.perf_counter() - start
    paths.MODEL.parent.mkdir(parents=True, exist_ok=True)
    tmp = paths.MODEL.with_name(f".{paths.MODEL.name}.tmp.keras")
    model.save(tmp)
    tmp.replace(paths.MODEL)
    frame = pd.DataFrame(history).rename_axis("epoch").reset_index()
    atomic_write_bytes(paths.HISTORY, frame.to_csv(index=False).encode())
    run = mlflow.active_run().info
    model_uri = log_keras_model(model, train["x"][:2])
    write_json(paths.MODEL_RUN, {"run_id": run.run_id, "model_uri": model_uri})
    checkpoint.clear(paths.CHECKPOINT)
    monitor = p.early_stopping.monitor
    best = int(frame[monitor].idxmin() if "loss" in monitor else frame[monitor].idxmax())
    epochs = len(frame)
    return {
        **runtime,
        "params": model.count_params(),
        "epochs_run": epochs,
        "best_epoch": best,
        **{f"best.{k}": float(frame.loc[best, k]) for k in frame.columns if k.startswith("val_")},
        "train_seconds": round(seconds, 1),
        "images_per_second": round(epochs * len(train["x"]) / seconds, 1),
    }


if __name__ == "__main__":
    run_stage("train", main, sections=SECTIONS)
