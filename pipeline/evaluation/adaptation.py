"""A few-shot adaptation study, read back from DVC experiments: how much do k labelled cells per
class of a new lab buy on the rest of that lab's cells, and what does it cost on BCCD?

Each run is one `dvc exp run` named `adapt-<source>-k<k>-s<seed>`: the source in params `sources`
is enabled with `take_per_class: k` and `seed: s` (which cells are drawn); its other cells are that
domain's test. k = 0 is the baseline model (trained on BCCD alone), scored on all the lab's cells
where the baseline scored them (PBC: evaluate's localiser mode, the cell cut as the sources stage
cuts it with `cut: localiser`).
"""

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import PipelineError
from pipeline.evaluation.cv import external_override, file_data

NAME = re.compile(r"^adapt-(?P<source>[a-z0-9_]+)-k(?P<k>\d+)-s(?P<seed>\d+)$")
METRICS = ("lab.accuracy", "lab.macro_f1", "bccd.accuracy", "bccd.macro_f1")


def experiment_name(source: str, k: int, seed: int) -> str:
    name = f"adapt-{source}-k{k}-s{seed}"
    if not NAME.match(name):
        raise PipelineError(f"adapt: source name {source!r}: use lower-case letters, digits and '_'")
    return name


def queue_commands(
    source: str,
    ks: Sequence[int],
    seeds: Sequence[int],
    overrides: Sequence[str] = (),
    external: Sequence[str] = (),
) -> list[list[str]]:
    """One `dvc exp run --queue` per k and seed. Only the `external` sets named are scored (none by
    default: the curve is read on the domain's own test cells)."""
    if any(k < 1 for k in ks):
        raise PipelineError("adapt: every k must be at least 1 (k = 0 is the baseline itself)")
    commands = []
    for seed in seeds:
        for k in ks:
            sets = [f"sources.{source}.enabled=true", f"sources.{source}.take_per_class={k}",
                    f"sources.{source}.seed={seed}", external_override(external),
                    *overrides]  # fmt: skip
            commands.append(
                ["dvc", "exp", "run", "--queue", "-n", experiment_name(source, k, seed)]
                + [arg for s in sets for arg in ("-S", s)]
            )
    return commands


def _data(rev: Mapping, kind: str, path: str) -> dict:
    return file_data(rev.get("data") or {}, kind, path)


def _train(rev: Mapping) -> dict:
    return {k: v for k, v in _data(rev, "params", "params.yaml").items() if k.startswith("train.")}


def curve_rows(exp_show: Iterable[Mapping], source: str) -> pd.DataFrame:
    """One row per finished run of `source` (k, seed, the domain's and BCCD's test metrics), and
    the baseline (k = 0) of the commit they were run on when it trains the same model (the same
    `train` params: a run that overrides them, say `train.members`, has no baseline there)."""
    rows = []
    for baseline in exp_show:
        base_metrics = _data(baseline, "metrics", "metrics/evaluate.json")
        base_train = _train(baseline)
        runs, same_model = [], False
        for exp in baseline.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state", "success")
            for rev in exp.get("revs") or []:
                match = NAME.match(rev.get("name") or "")
                data = rev.get("data") or {}
                if (
                    not match
                    or match["source"] != source
                    or state != "success"
                    or data.get("rev") == "workspace"
                ):
                    continue
                metrics = _data(rev, "metrics", "metrics/evaluate.json")
                domain = _data(rev, "params", "params.yaml").get(f"sources.{source}.domain", source)
                if f"domains.{domain}.accuracy" not in metrics:
                    continue
                same_model |= _train(rev) == base_train
                runs.append({"k": int(match["k"]), "seed": int(match["seed"]), "experiment": rev["name"],
                             "cells": f"{domain} test ({int(metrics[f'domains.{domain}.n_images'])} cells)",
                             "lab.accuracy": metrics[f"domains.{domain}.accuracy"],
                             "lab.macro_f1": metrics[f"domains.{domain}.macro_f1"],
                             "bccd.accuracy": metrics.get("domains.bccd.accuracy", math.nan),
                             "bccd.macro_f1": metrics.get("domains.bccd.macro_f1", math.nan)})  # fmt: skip
        if runs and base_metrics and same_model:
            whole = f"external.{source}.localiser"
            rows.append({"k": 0, "seed": 0, "experiment": f"baseline {baseline.get('rev', '')[:7]}",
                         "cells": f"all {int(base_metrics.get(f'{whole}.n_images', 0))} cells, zero-shot",
                         "lab.accuracy": base_metrics.get(f"{whole}.accuracy", math.nan),
                         "lab.macro_f1": base_metrics.get(f"{whole}.macro_f1", math.nan),
                         "bccd.accuracy": base_metrics.get("test.accuracy", math.nan),
                         "bccd.macro_f1": base_metrics.get("test.macro_f1", math.nan)})  # fmt: skip
        rows += runs
    columns = ["k", "seed", "experiment", "cells", *METRICS]
    frame = pd.DataFrame(rows, columns=columns)
    # runs queued from several commits of one model: its baseline once
    frame = frame[(frame["k"] > 0) | ~frame.duplicated(["k", *METRICS])]
    return frame.sort_values(["k", "seed"], ignore_index=True)


def curve(rows: pd.DataFrame) -> pd.DataFrame:
    """Per k: runs, and the mean and sd over seeds of every metric."""
    out = []
    for k, part in rows.groupby("k", sort=True):
        entry = {"k": int(k), "runs": len(part)}
        for m in METRICS:
            values = part[m].dropna()
            entry[f"{m}.mean"] = float(values.mean()) if len(values) else math.nan
            entry[f"{m}.sd"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        out.append(entry)
    return pd.DataFrame(out)


def markdown(table: pd.DataFrame, source: str) -> str:
    def cell(row: Mapping, m: str) -> str:
        mean, sd = row[f"{m}.mean"], row[f"{m}.sd"]
        return "-" if math.isnan(mean) else f"{mean:.3f} ± {sd:.3f}" if not math.isnan(sd) else f"{mean:.3f}"

    head = ["k per class", "runs", f"{source}: accuracy", f"{source}: macro-F1", "BCCD test: accuracy",
            "BCCD test: macro-F1"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for _, row in table.iterrows():
        lines.append(
            f"| {int(row['k'])} | {int(row['runs'])} | " + " | ".join(cell(row, m) for m in METRICS) + " |"
        )
    return (
        "\n".join(lines)
        + f"\n\nk = 0: the baseline, trained on BCCD alone, on all of {source}'s cells; k > 0: "
        f"trained on k {source} cells per class as well, scored on the rest (mean ± sd over seeds).\n"
    )


def plot(rows: pd.DataFrame, table: pd.DataFrame, path: Path, source: str) -> None:
    """Accuracy and macro-F1 on the lab's held-out cells, and on BCCD's test, against k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for metric, label, style in (("lab.accuracy", f"{source}: accuracy", "o-"),
                                 ("lab.macro_f1", f"{source}: macro-F1", "s--"),
                                 ("bccd.accuracy", "BCCD test: accuracy", "^-")):  # fmt: skip
        ax.plot(table["k"], table[f"{metric}.mean"], style, label=label)
        ax.scatter(rows["k"], rows[metric], s=10, alpha=0.4)
    ax.set_xscale("symlog", linthresh=5)
    ax.set_xticks(sorted(set(table["k"])), [str(k) for k in sorted(set(table["k"]))])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"labelled {source} cells per class trained on")
    ax.set_ylabel("score")
    ax.set_title(f"Few-shot adaptation to {source}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def dvc_curve(table: pd.DataFrame) -> pd.DataFrame:
    """The curve as a DVC plot's CSV: k and the mean of every metric."""
    return table[["k", *[f"{m}.mean" for m in METRICS]]].rename(columns=lambda c: c.removesuffix(".mean"))


def finite(values: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if not (isinstance(v, float) and np.isnan(v))}
