"""DVC stage `train`: fit the chosen model on the resized arrays; save it and its history."""

import numpy as np

from pipeline.core import paths
from pipeline.core.atomic import atomic_path, atomic_write_bytes, write_json
from pipeline.core.params import Params
from pipeline.data.arrays import load_npz
from pipeline.model import checkpoint
from pipeline.model.runtime import configure
from pipeline.model.train import summary, train_model
from pipeline.stage import run_stage
from pipeline.tracking.epochs import LogEpochs
from pipeline.tracking.models import log_keras_model
from pipeline.tracking.provenance import locked_md5
from pipeline.tracking.runs import active_run_id, set_tags

# The params sections that shape a model: its MLflow run logs them all, prefixed by section.
SECTIONS = ("fetch", "sources", "crop", "split", "augment", "resize", "train")


def trained_on(*splits: dict) -> dict[str, str]:
    """MLflow tags naming the cells of other labs' domains the model trained or validated on: an
    adaptation says so; a run without them is zero-shot on every other lab."""
    domains = np.concatenate(
        [s["domain"][~s["augmented"]] for s in splits if "domain" in s] or [np.array([], str)]
    )
    names, counts = np.unique(domains[domains != paths.BCCD_DOMAIN], return_counts=True)
    found = {f"trained_on.{n}": f"{c} cells" for n, c in zip(names.tolist(), counts.tolist(), strict=True)}
    return found | {"trained_on": ", ".join([paths.BCCD_DOMAIN, *found]).replace("trained_on.", "")}


def main(params: Params) -> dict:
    p = params.train
    runtime = configure(p.seed, p.deterministic, p.mixed_precision, p.devices)
    set_tags({f"train.{k}": v for k, v in runtime.items()} | {"data.md5": locked_md5(str(paths.RESIZED))})
    print(
        f"train: {p.model} / {p.task} on {runtime['device']} "
        f"({runtime['devices']}, {runtime['backend']}, {runtime['precision']})"
    )
    arrays = [paths.resized_split(s) for s in ("train", "val")]
    train, val = map(load_npz, arrays)
    set_tags(trained_on(train, val))
    trained = train_model(p, train, val, [LogEpochs()], checkpoint=paths.CHECKPOINT, data_files=arrays)
    with atomic_path(paths.MODEL) as tmp:
        trained.model.save(tmp)
    atomic_write_bytes(paths.HISTORY, trained.history.to_csv(index=False).encode())
    # At least one example per replica: the model predicts it to infer the signature.
    model_uri = log_keras_model(trained.model, train["x"][: max(2, p.devices)])
    write_json(paths.MODEL_RUN, {"run_id": active_run_id(), "model_uri": model_uri})
    checkpoint.clear(paths.CHECKPOINT)
    return {**runtime, **summary(trained, p.early_stopping.monitor)}


if __name__ == "__main__":
    run_stage("train", main, sections=SECTIONS)
