"""DVC stage `evaluate`: score the trained model on the held-out test split (and on val)."""

import json

import keras
import mlflow
import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline import paths, published
from pipeline.atomic import atomic_write_bytes
from pipeline.classes import NUCLEUS, NUCLEUS_GROUPS
from pipeline.evaluate import bootstrap_intervals, classification_report, headline_metrics, nucleus_accuracy
from pipeline.gates import check_gates
from pipeline.images import load_rgb
from pipeline.params import Params
from pipeline.plots import confusion_png, gallery_png
from pipeline.predict import CHUNK, head_and_names, predict_images
from pipeline.resize import load_npz
from pipeline.stage import run_stage
from pipeline.tracking import register
from pipeline.train import predict


def score(arrays: dict, probs: dict, params: Params, intervals: bool) -> dict:
    """Metrics of every head the model has; the cell-type head (if any) is the headline."""
    p = params.evaluate
    classes = [str(c) for c in arrays["classes"]]
    out: dict = {}
    for head, truth, names in (
        ("type", arrays["y"], classes),
        ("nucleus", arrays["nucleus"], list(NUCLEUS_GROUPS)),
    ):
        if head not in probs:
            continue
        pred = probs[head].argmax(axis=1)
        report = classification_report(truth, pred, names)
        report["n_sources"] = len(np.unique(arrays["source_image"]))
        metrics = headline_metrics(len(names))
        if head == "type":
            metrics["nucleus_accuracy"] = nucleus_accuracy(classes)
            report["nucleus_accuracy"] = metrics["nucleus_accuracy"](truth, pred)
        if intervals:
            ci = bootstrap_intervals(
                truth, pred, arrays["source_image"], metrics,
                resamples=p.bootstrap_resamples, confidence=p.confidence, seed=p.seed,
            )  # fmt: skip
            report.update({f"{m}_ci": bounds for m, bounds in ci.items()})
        out[head] = report
    return out


def main(params: Params) -> dict:
    model = keras.saving.load_model(paths.MODEL)
    report: dict = {}
    for split in ("val", "test"):
        arrays = load_npz(paths.resized_split(split))
        probs = predict(model, arrays["x"], tta=params.evaluate.tta)
        by_head = score(arrays, probs, params, intervals=split == "test")
        head = "type" if "type" in by_head else "nucleus"
        report[split] = by_head.pop(head) | {"head": head}
        for other, metrics in by_head.items():
            report[f"{split}_{other}_head"] = metrics
        if split == "test":
            write_plots(arrays, probs[head], head, report[split]["confusion"], params.evaluate.gallery_size)
    root = published.dataset2_dir()
    if root is not None:
        head, names = head_and_names(model, [str(c) for c in arrays["classes"]])
        report["published"] = score_published(model, params, head, names, root)
    register_if_logged(report, params)
    return report


def register_if_logged(report: dict, params: Params) -> None:
    """A new registry version of the model train logged; the `champion` alias only if the gates'
    floors pass (the drop-against-baseline gate needs git and runs in `wbc gate`)."""
    try:
        model_uri = json.loads(paths.MODEL_RUN.read_text())["model_uri"]
    except (OSError, ValueError, KeyError):
        return
    passed = all(c.passed for c in check_gates(report, None, params.gates))
    entry = register(model_uri, promote=passed)
    mlflow.set_tags({"registry.version": entry["version"], "registry.champion": str(passed).lower()})
    print(f"evaluate: {entry['name']} version {entry['version']}" + (" is the champion" if passed else ""))


def score_published(model, params: Params, head: str, names: list[str], root) -> dict:
    """TEST_SIMPLE and TEST through the localiser (its best cell per field) and the classifier,
    exactly as `wbc predict` classifies a photo."""
    table = published.fields(root)
    seen = {
        source
        for split in ("train", "val")
        for source in load_npz(paths.resized_split(split), keys=("source_image",))["source_image"]
    }
    published.check_unseen(seen, table["source_image"])
    labels: list[str | None] = []
    with tqdm(total=len(table), desc="published sets", unit="field", mininterval=10) as bar:
        for start in range(0, len(table), CHUNK):
            chunk = [(str(p), load_rgb(p), None) for p in table["path"].iloc[start : start + CHUNK]]
            results = predict_images(chunk, model, params, head, names)
            labels += [r.cells[0].label if r.cells else None for r in results]  # the best cell
            bar.update(len(chunk))
    pred = published.predictions(labels, names)
    to_index = {c: names.index(c if head == "type" else NUCLEUS[c]) for c in table["class"].unique()}
    truth = table["class"].map(to_index).to_numpy()
    p = params.evaluate
    out = {}
    for set_name, rows in table.groupby("set").groups.items():
        idx = np.asarray(rows)
        out[set_name] = published.report(
            truth[idx], pred[idx], table["source_image"].to_numpy()[idx], names,
            resamples=p.bootstrap_resamples, confidence=p.confidence, seed=p.seed,
        )  # fmt: skip
    return out


def write_plots(arrays: dict, probs: np.ndarray, head: str, confusion: list, gallery_size: int) -> None:
    names = [str(c) for c in arrays["classes"]] if head == "type" else list(NUCLEUS_GROUPS)
    truth = arrays["y"] if head == "type" else arrays["nucleus"]
    pred = probs.argmax(axis=1)
    rows = pd.DataFrame(
        {
            "sample_id": arrays["sample_id"],
            "source_image": arrays["source_image"],
            "actual": [names[i] for i in truth],
            "predicted": [names[i] for i in pred],
            **{f"p_{n}": probs[:, i].round(6) for i, n in enumerate(names)},
        }
    )
    atomic_write_bytes(paths.PREDICTIONS, rows.to_csv(index=False).encode())
    atomic_write_bytes(paths.CONFUSION, rows[["actual", "predicted"]].to_csv(index=False).encode())
    atomic_write_bytes(paths.CONFUSION_PNG, confusion_png(confusion, names, f"test, {head}"))
    wrong = np.flatnonzero(truth != pred)
    gallery = gallery_png(
        arrays["x"][wrong], rows["actual"].iloc[wrong].tolist(), rows["predicted"].iloc[wrong].tolist(),
        arrays["sample_id"][wrong].tolist(), gallery_size,
    )  # fmt: skip
    atomic_write_bytes(paths.MISCLASSIFIED_PNG, gallery)
    for path in (paths.CONFUSION_PNG, paths.MISCLASSIFIED_PNG, paths.PREDICTIONS):
        mlflow.log_artifact(str(path))


if __name__ == "__main__":
    run_stage("evaluate", main, sections=("evaluate",), resume_from=paths.MODEL_RUN)
