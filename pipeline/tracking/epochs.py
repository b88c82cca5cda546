"""Learning curves in MLflow while a model trains (a Keras callback: only the train stage loads it)."""

import keras


class LogEpochs(keras.callbacks.Callback):
    """Every epoch's metrics to the active MLflow run, so the UI shows learning curves live."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        import mlflow

        mlflow.log_metrics({f"epoch.{k}": float(v) for k, v in (logs or {}).items()}, step=epoch)
