"""Learning curves in MLflow while a model trains (a Keras callback: only the train stage loads it)."""

import keras


class LogEpochs(keras.callbacks.Callback):
    """Every epoch's metrics to the active MLflow run, so the UI shows learning curves live; an
    ensemble's member i > 0 logs its own curves, suffixed `.m<i>` as in plots/history.csv."""

    suffix = ""

    def start_member(self, member: int) -> None:
        self.suffix = f".m{member}" if member else ""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        import mlflow

        mlflow.log_metrics({f"epoch.{k}{self.suffix}": float(v) for k, v in (logs or {}).items()}, step=epoch)
