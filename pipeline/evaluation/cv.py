"""A cross-validation study, read back from DVC experiments: which setting is better, and by more
than the noise?

Each run of a study is one `dvc exp run` named `cv-<setting>-f<fold>-s<seed>`: validation is fold
`split.val_fold` of the `split.val_folds` group folds (by source image) of train + val, with seed
`s` for the folds, the augmentation and the training; the test split is never touched. A setting's
score is the mean ± sd of its runs' validation metrics (each fold's held-out cells), and two
settings are compared on the same (fold, seed) pairs, with a t-interval of the paired difference.
"""

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.core.errors import PipelineError
from pipeline.tracking.runs import flatten

NAME = re.compile(r"^cv-(?P<setting>[a-z0-9][a-z0-9_.]*?)-f(?P<fold>\d+)-s(?P<seed>\d+)$")
PBC = ("external.pbc.localiser.accuracy", "external.pbc.localiser.macro_f1")  # with `--external pbc`
METRICS = ("val.accuracy", "val.macro_f1", "val.balanced_accuracy", "test.accuracy", "test.macro_f1", *PBC)
SELECT_ON = ("val.accuracy", "val.macro_f1")  # settings are chosen on these; test is shown, never used
# An ensemble run's evaluate reports the ensemble of its first k members for every k: on val and
# test, and on PBC through the localiser where the run scored it.
CURVES = (
    re.compile(r"^members\.(?P<k>\d+)\.(?P<scored>val|test)_(?P<metric>accuracy|macro_f1)$"),
    re.compile(r"^(?P<scored>external\.pbc\.localiser)\.members\.(?P<k>\d+)\.(?P<metric>accuracy|macro_f1)$"),
)
SIZE = " first "  # `<setting> first <k>`: the ensemble of a setting's runs' first k members
VARIES = {
    "split.val_fold",
    "split.val_folds",
    "split.seed",
    "augment.seed",
    "train.seed",
    "evaluate.external",
    "evaluate.calibrate",
}


def curve_match(column: str) -> re.Match | None:
    """A first-k-members column's match (groups k, scored, metric), else None."""
    return next((m for curve in CURVES if (m := curve.match(column))), None)


def curve_columns(columns: Iterable[str]) -> list[str]:
    """The first-k-members columns among `columns`, by k, then by name: where a report puts them."""
    return sorted({c for c in columns if curve_match(c)}, key=lambda c: (int(curve_match(c)["k"]), c))


def size_setting(setting: str, k: int) -> str:
    """The pseudo-setting of an ensemble setting's first k members (`members_rows`)."""
    return f"{setting}{SIZE}{k}"


def split_size(name: str) -> tuple[str, int]:
    """(setting, k) of a `size_setting` name."""
    setting, k = name.rsplit(SIZE, 1)
    return setting, int(k)


def compared_on(rows: pd.DataFrame) -> list[str]:
    """The metrics two settings are paired on: validation, and PBC where the runs scored it."""
    return [*SELECT_ON, *(m for m in PBC if m in rows and rows[m].notna().any())]


def experiment_name(setting: str, fold: int, seed: int) -> str:
    name = f"cv-{setting}-f{fold}-s{seed}"
    if not NAME.match(name):
        raise PipelineError(f"cv: setting name {setting!r}: use lower-case letters, digits, '_' and '.'")
    return name


def external_override(sets: Sequence[str]) -> str:
    """`evaluate.external` as a `dvc exp run -S` value (Hydra's list syntax)."""
    return f"evaluate.external=[{','.join(sets)}]"


def queue_commands(
    setting: str, overrides: Sequence[str], folds: int, seeds: Sequence[int], external: Sequence[str] = ()
) -> list[list[str]]:
    """One `dvc exp run --queue` per fold and seed; `overrides` are `-S` values (`train.dropout=0.4`).
    Only the `external` sets named are scored (none by default: settings are chosen on val), PBC
    uncalibrated: the study compares zero-shot transfer."""
    if folds < 2:
        raise PipelineError(f"cv: --folds {folds}: at least 2")
    commands = []
    for seed in seeds:
        for fold in range(folds):
            sets = [f"split.val_folds={folds}", f"split.val_fold={fold}", f"split.seed={seed}",
                    f"augment.seed={seed}", f"train.seed={seed}",
                    external_override(external), "evaluate.calibrate=false", *overrides]  # fmt: skip
            commands.append(
                ["dvc", "exp", "run", "--queue", "-n", experiment_name(setting, fold, seed)]
                + [arg for s in sets for arg in ("-S", s)]
            )
    return commands


def file_data(data: Mapping, kind: str, path: str) -> dict:
    found = (data.get(kind) or {}).get(path) or {}
    return flatten(found.get("data") or {})


def study_rows(exp_show: Iterable[Mapping], baseline: str | None = None) -> pd.DataFrame:
    """One row per finished study run in `dvc exp show --json`: setting, fold, seed, the metrics,
    and `changes`: the params that differ, but for what a study varies, from those of the
    `baseline` setting's runs when it has any (a study can span commits whose defaults differ),
    else from the commit each run was queued on."""
    rows, params_of = [], {}
    for commit in exp_show:
        base = file_data(commit["data"], "params", "params.yaml")
        for exp in commit.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state", "success")
            for rev in exp.get("revs") or []:
                match = NAME.match(rev.get("name") or "")
                data = rev.get("data") or {}
                metrics = file_data(data, "metrics", "metrics/evaluate.json")
                if not match or not metrics or state != "success" or data.get("rev") == "workspace":
                    continue  # not a study run, or not finished (a running one shows the workspace's)
                params = file_data(data, "params", "params.yaml")
                changes = {k: v for k, v in params.items() if base.get(k) != v and k not in VARIES}
                params_of[rev["name"]] = (params, changes)
                rows.append({
                    "setting": match["setting"], "fold": int(match["fold"]), "seed": int(match["seed"]),
                    "experiment": rev["name"], "rev": data.get("rev", ""),
                    "changes": ", ".join(f"{k}={v}" for k, v in sorted(changes.items())) or "(baseline)",
                    **{m: metrics.get(m, math.nan) for m in METRICS},
                    **{k: v for k, v in metrics.items() if curve_match(k)},
                })  # fmt: skip
    reference = next((params_of[r["experiment"]][0] for r in sorted(rows, key=lambda r: r["experiment"])
                      if r["setting"] == baseline), None)  # fmt: skip
    if reference is not None:
        for row in rows:
            params, overridden = params_of[row["experiment"]]
            # a param the baseline's runs had differs if its value does; one added since, if the
            # run set it away from its own commit's value
            keys = {k for k in set(params) & set(reference) if params[k] != reference[k]} | (
                set(overridden) - set(reference)
            )
            changes = [f"{k}={params[k]}" for k in sorted(keys - VARIES)]
            row["changes"] = ", ".join(changes) or "(baseline)"
    columns = ["setting", "fold", "seed", "experiment", "rev", "changes", *METRICS]
    frame = pd.DataFrame(rows, columns=columns + curve_columns(k for row in rows for k in row))
    return frame.sort_values(["setting", "seed", "fold"], ignore_index=True)


def committed_rows(path: Path) -> pd.DataFrame:
    """A finished study's runs from its committed `cv_runs.csv` (as `study_rows` wrote them): a
    machine without that study's experiments can still pair a new setting with it by fold and seed."""
    try:
        rows = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise PipelineError(f"cv report: {path}: not a study's cv_runs.csv ({err})") from err
    missing = [c for c in ("setting", "fold", "seed", "experiment", "changes", *SELECT_ON) if c not in rows]
    if missing:
        raise PipelineError(f"cv report: {path}: no column {', '.join(missing)} (not a study's cv_runs.csv)")
    bad = [str(e) for e in rows["experiment"] if not NAME.match(str(e))]
    if bad:
        raise PipelineError(f"cv report: {path}: {bad[0]!r} is not a cv-<setting>-f<fold>-s<seed> run")
    return rows.astype({"fold": int, "seed": int})


def join_runs(found: pd.DataFrame, committed: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The experiments found here and committed studies' runs, one row per run: where both hold a
    run, the experiment found here wins (it is what the CSV was written from)."""
    frames = [found, *(c[~c["experiment"].isin(found["experiment"])] for c in committed)]
    rows = pd.concat([f for f in frames if not f.empty] or [found], ignore_index=True)
    rows = rows.drop_duplicates("experiment", keep="first")
    rest = [c for c in rows.columns if not curve_match(c)]
    rows = rows[rest + curve_columns(rows.columns)]
    return rows.sort_values(["setting", "seed", "fold"], ignore_index=True)


def only(rows: pd.DataFrame, settings: Sequence[str]) -> pd.DataFrame:
    """The runs of these settings (all when none is named): a study run on other folds (another
    split, another commit's grouping) must not be paired with these by fold and seed."""
    if not settings:
        return rows
    missing = sorted(set(settings) - set(rows["setting"]))
    if missing:
        raise PipelineError(f"cv report: no finished runs of setting(s) {', '.join(missing)}")
    return rows[rows["setting"].isin(settings)].reset_index(drop=True)


def members_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """An ensemble setting's runs as one pseudo-setting per ensemble size, `<setting> first <k>`
    (the ensemble of each run's first k members), with the study's metric columns: so `summarize`
    and `paired` tell what each added member buys, on the same folds and seeds."""
    found = []
    for column in rows.columns:
        match = curve_match(column)
        if match is None:
            continue
        part = rows[rows[column].notna()]
        for _, row in part.iterrows():
            found.append({"setting": size_setting(row["setting"], int(match["k"])), "fold": row["fold"],
                          "seed": row["seed"], "changes": row["changes"],
                          "metric": f"{match['scored']}.{match['metric']}",
                          "value": row[column]})  # fmt: skip
    if not found:
        return pd.DataFrame(columns=["setting", "fold", "seed", "changes", *METRICS])
    long = pd.DataFrame(found)
    wide = long.pivot_table(index=["setting", "fold", "seed", "changes"], columns="metric", values="value")
    return wide.reset_index().reindex(columns=["setting", "fold", "seed", "changes", *METRICS])


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Per setting: runs, folds, seeds, and mean and sd of every metric."""
    out = []
    for setting, part in rows.groupby("setting", sort=True):
        entry = {"setting": setting, "changes": part["changes"].iloc[0], "runs": len(part),
                 "folds": part["fold"].nunique(), "seeds": part["seed"].nunique()}  # fmt: skip
        for m in METRICS:
            values = part[m].dropna()
            entry[f"{m}.mean"] = float(values.mean()) if len(values) else math.nan
            entry[f"{m}.sd"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        out.append(entry)
    return pd.DataFrame(out)


def paired(rows: pd.DataFrame, a: str, b: str, metric: str, confidence: float = 0.95) -> dict:
    """B minus A on the runs both have (same fold and seed): the mean difference and its t-interval."""
    left = rows[rows["setting"] == a].set_index(["fold", "seed"])[metric].dropna()
    right = rows[rows["setting"] == b].set_index(["fold", "seed"])[metric].dropna()
    both = left.index.intersection(right.index)
    diff = (right[both] - left[both]).to_numpy(float)
    n = len(diff)
    if n < 2:
        return {"a": a, "b": b, "metric": metric, "pairs": n, "difference": math.nan,
                "interval": (math.nan, math.nan), "verdict": "too few paired runs"}  # fmt: skip
    mean, se = float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(n))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * se) if se > 0 else 0.0
    lo, hi = mean - half, mean + half
    span = f"{100 * mean:+.1f} points, {confidence:.0%} CI [{100 * lo:+.1f}, {100 * hi:+.1f}] over {n} pairs"
    verdict = (f"{b if mean > 0 else a} is better on {metric}: {span}" if lo > 0 or hi < 0
               else f"no detectable difference on {metric}: {span}")  # fmt: skip
    return {"a": a, "b": b, "metric": metric, "pairs": n, "difference": mean, "interval": (lo, hi),
            "verdict": verdict}  # fmt: skip


def ensemble_section(curve: pd.DataFrame) -> str:
    """The report's part on ensemble size (from `members_rows`): mean ± sd per size, and each size
    of each setting against its first member alone, paired on the same runs."""
    if curve.empty:
        return ""
    sizes = summarize(curve)
    found = sorted({split_size(name) for name in curve["setting"]})
    pairs = [(size_setting(setting, 1), size_setting(setting, k)) for setting, k in found if k != 1]
    comparisons = [paired(curve, a, b, m) for a, b in pairs for m in compared_on(curve)]
    return "\n## Ensemble size (each run's first k members)\n\n" + markdown(sizes, comparisons)


def pairs_section(rows: pd.DataFrame, curve: pd.DataFrame, pairs: Sequence[Sequence[str]]) -> str:
    """The report's part on comparisons the user named (`--pair A B`): settings or ensemble sizes
    (`<setting> first <k>`), so that, say, 3 members of 10 epochs meet 2 of 15 at the same cost."""
    if not pairs:
        return ""
    both = pd.concat([rows, curve], ignore_index=True) if not curve.empty else rows
    known = set(both["setting"])
    for name in (n for pair in pairs for n in pair):
        if name not in known:
            found = ", ".join(sorted(known))
            raise PipelineError(f"cv report: --pair {name!r}: no such setting or size (found: {found})")
    comparisons = [paired(both, a, b, m) for a, b in pairs for m in compared_on(both)]
    return (
        "\n## Named comparisons (paired on the same folds and seeds)\n\n"
        + "\n".join(f"- {c['b']} vs {c['a']}: {c['verdict']}" for c in comparisons)
        + "\n"
    )


def size_summaries(curve: pd.DataFrame) -> dict[str, dict[int, dict]]:
    """`summarize(curve)` by setting and ensemble size: what an ensemble setting's MLflow parent
    logs per size."""
    found: dict[str, dict[int, dict]] = {}
    for row in summarize(curve).to_dict("records") if not curve.empty else []:
        setting, k = split_size(row["setting"])
        found.setdefault(setting, {})[k] = row
    return found


def markdown(summary: pd.DataFrame, comparisons: Sequence[Mapping]) -> str:
    """The report: a table of mean ± sd per setting, then the paired comparisons."""

    def cell(row: Mapping, m: str) -> str:
        mean, sd = row[f"{m}.mean"], row[f"{m}.sd"]
        return "-" if math.isnan(mean) else f"{mean:.3f} ± {sd:.3f}" if not math.isnan(sd) else f"{mean:.3f}"

    shown = [m for m in METRICS if summary[f"{m}.mean"].notna().any()]  # no column of dashes alone
    head = ["setting", "changes", "runs (folds x seeds)", *shown]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for _, row in summary.iterrows():
        runs = f"{row['runs']} ({row['folds']} x {row['seeds']})"
        lines.append(f"| {row['setting']} | {row['changes']} | {runs} | "
                     + " | ".join(cell(row, m) for m in shown) + " |")  # fmt: skip
    text = "\n".join(lines) + "\n\nMean ± sd over runs; `val.*` is each run's held-out fold (chosen on),"
    text += " `test.*` the untouched test split (shown, never chosen on)"
    if set(PBC) & set(shown):
        text += "; `external.pbc.*` another lab's cells through the localiser, zero-shot (a development set)"
    text += ".\n"
    if comparisons:
        text += "\n" + "\n".join(f"- {c['b']} vs {c['a']}: {c['verdict']}" for c in comparisons) + "\n"
    return text


def plot(rows: pd.DataFrame, path: Path, curve: pd.DataFrame | None = None) -> None:
    """Each run's validation accuracy and macro-F1 by setting (and by ensemble size), and PBC's
    where the runs scored it (`compared_on`), with the mean ± sd; two panels a row."""
    if curve is not None and not curve.empty:
        rows = pd.concat([rows, curve], ignore_index=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted(rows["setting"].unique())
    shown = compared_on(rows)
    grid = (math.ceil(len(shown) / 2), 2)
    fig, axes = plt.subplots(*grid, figsize=(9, 3.6 * grid[0]), squeeze=False)
    for ax, metric in zip(axes.flat, shown, strict=True):
        for i, setting in enumerate(settings):
            values = rows.loc[rows["setting"] == setting, metric].dropna().to_numpy(float)
            jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(len(values))
            ax.scatter(i + jitter, values, s=18, alpha=0.7)
            if len(values):
                sd = values.std(ddof=1) if len(values) > 1 else 0.0
                ax.errorbar(i + 0.3, values.mean(), yerr=sd, fmt="o", color="black", capsize=4)
        ax.set_xticks(range(len(settings)), settings, rotation=30, ha="right")
        ax.set_title(f"{metric.replace('external.pbc.localiser.', 'PBC ')} (each run; mean ± sd)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
