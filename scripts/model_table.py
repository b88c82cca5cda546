"""Every model x task on the `kaggle` split under one budget, as DVC experiments; then a table.

    python scripts/model_table.py queue [--epochs 5 --per-class 300 --size 64 --batch 16]  # one at a time
    python scripts/model_table.py report                               # markdown table from MLflow

Each run is an ordinary `dvc exp run` named `tbl-<model>-<task>`, so it is in `dvc exp show` and
in MLflow with all its params; the table reads the model runs back from MLflow.
"""

import argparse
import subprocess
import sys

from pipeline.models import BACKBONES, TASK_HEADS
from pipeline.tracking import EXPERIMENT, tracking_uri

PREFIX = "tbl-"


def queue(epochs: int, per_class: int, size: int, batch: int) -> None:
    for task in TASK_HEADS:
        for model in BACKBONES:
            subprocess.run(
                ["dvc", "exp", "run", "--queue", "-n", f"{PREFIX}{model}-{task}",
                 "-S", f"train.model={model}", "-S", f"train.task={task}", "-S", f"train.epochs={epochs}",
                 "-S", f"train.batch_size={batch}", "-S", f"augment.target_per_class={per_class}",
                 "-S", f"resize.height={size}", "-S", f"resize.width={size}"],
                check=True,
            )  # fmt: skip
    subprocess.run(["dvc", "queue", "start", "-j", "1"], check=True)


def _cell(report: dict, key: str) -> str:
    ci = report.get(f"{key}_ci")
    value = f"{report[key]:.3f}"
    return f"{value} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else value


def report() -> None:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`dvc.exp_name` LIKE '{PREFIX}%' AND tags.stages = 'train,evaluate'"
    )
    latest: dict[str, object] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        latest[run.data.tags["dvc.exp_name"]] = run
    print("| model | task | weights | val macro-F1 | test acc [95% CI] | test macro-F1 [95% CI] "
          "| poly/mono acc | train s | img/s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in sorted(latest):
        run = latest[name]
        p, m = run.data.params, run.data.metrics
        ev = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/evaluate.json")
        test = ev["test"]
        if "test_nucleus_head" in ev:  # multitask: the nucleus head's own answer
            poly = _cell(ev["test_nucleus_head"], "accuracy")
        elif test["head"] == "nucleus":
            poly = _cell(test, "accuracy")
        else:  # the cell-type head's answers grouped by nucleus
            poly = _cell(test, "nucleus_accuracy")
        val_f1 = ev["val"]["macro_f1"]
        print(
            f"| `{p['train.model']}` | {p['train.task']} | {int(m['params']):,} | {val_f1:.3f} "
            f"| {_cell(test, 'accuracy')} | {_cell(test, 'macro_f1')} | {poly} "
            f"| {m['train_seconds']:.0f} | {m['images_per_second']:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("queue")
    q.add_argument("--epochs", type=int, default=5)
    q.add_argument("--per-class", type=int, default=300)
    q.add_argument("--size", type=int, default=64, help="height and width of the resized crops")
    q.add_argument("--batch", type=int, default=16)
    sub.add_parser("report")
    args = parser.parse_args()
    if args.command == "queue":
        queue(args.epochs, args.per_class, args.size, args.batch)
    else:
        report()


if __name__ == "__main__":
    sys.exit(main())
