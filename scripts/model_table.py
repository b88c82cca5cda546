"""Every model x task on the `kaggle` split under one budget, as DVC experiments; then a table.

    python scripts/model_table.py queue [--epochs 5 --per-class 300 --size 64 --batch 16]  # one at a time
                                        [--tasks type nucleus multitask] [--models varra ...]
    python scripts/model_table.py report                               # markdown table

Each run is an ordinary `dvc exp run` named `tbl-<model>-<task>`, so it is in `dvc exp show` and
in MLflow with all its params; the table reads the experiments' metrics back from DVC.
"""

import argparse
import json
import subprocess
import sys

from pipeline.core.classes import TASKS
from pipeline.model.zoo import BACKBONES

PREFIX = "tbl-"


def queue(epochs: int, per_class: int, size: int, batch: int, tasks: list[str], models: list[str]) -> None:
    for task in tasks:
        for model in models:
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


def experiments() -> dict[str, dict]:
    """The finished `tbl-*` experiments of every commit, by name (the latest run of each name)."""
    out = subprocess.run(["dvc", "exp", "show", "--json", "-A"], check=True, capture_output=True, text=True)
    found: dict[str, dict] = {}
    for commit in json.loads(out.stdout):
        for exp in commit.get("experiments") or []:
            if (exp.get("executor") or {}).get("state", "success") != "success":
                continue  # queued or running: its data is the baseline's
            for rev in exp["revs"]:
                name, data = rev.get("name") or "", rev.get("data") or {}
                metrics = data.get("metrics", {})
                done = all("data" in metrics.get(f"metrics/{m}.json", {}) for m in ("train", "evaluate"))
                if (
                    name.startswith(PREFIX)
                    and done
                    and (name not in found or data["timestamp"] > found[name]["timestamp"])
                ):
                    found[name] = data
    return found


def report() -> None:
    print("| model | task | params | val macro-F1 | test acc | test macro-F1 "
          "| poly/mono acc | train s | img/s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for data in experiments().values():
        train = data["params"]["params.yaml"]["data"]["train"]
        ev = data["metrics"]["metrics/evaluate.json"]["data"]
        fit = data["metrics"]["metrics/train.json"]["data"]
        rows.append((list(TASKS).index(train["task"]), list(BACKBONES).index(train["model"]), train, ev, fit))
    for _, _, train, ev, fit in sorted(rows, key=lambda r: r[:2]):
        test = ev["test"]
        if "test_nucleus_head" in ev:  # multitask: the nucleus head's own answer
            poly = _cell(ev["test_nucleus_head"], "accuracy")
        elif test["head"] == "nucleus":
            poly = _cell(test, "accuracy")
        else:  # the cell-type head's answers grouped by nucleus
            poly = _cell(test, "nucleus_accuracy")
        print(
            f"| `{train['model']}` | {train['task']} | {fit['params']:,} | {ev['val']['macro_f1']:.3f} "
            f"| {_cell(test, 'accuracy')} | {_cell(test, 'macro_f1')} | {poly} "
            f"| {fit['train_seconds']:.0f} | {fit['images_per_second']:.0f} |"
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
    q.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    q.add_argument("--models", nargs="+", choices=list(BACKBONES), default=list(BACKBONES))
    sub.add_parser("report")
    args = parser.parse_args()
    if args.command == "queue":
        queue(args.epochs, args.per_class, args.size, args.batch, args.tasks, args.models)
    else:
        report()


if __name__ == "__main__":
    sys.exit(main())
