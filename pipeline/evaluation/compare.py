"""Are two models really different? Their test predictions compared on the same cells: the paired
difference in accuracy with a bootstrap interval over SOURCE photos, and McNemar's exact test on
the cells one gets right and the other wrong. With 69 test cells one cell is 1.4 points, so a
single run's gain is mostly noise; this says when it is not."""

import fnmatch
import io
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from pipeline.core import paths
from pipeline.core.errors import PipelineError

COLUMNS = ("sample_id", "source_image", "actual", "predicted")


@dataclass(frozen=True)
class Comparison:
    cells: int
    sources: int
    accuracy_a: float
    accuracy_b: float
    difference: float  # accuracy of B minus A
    interval: tuple[float, float]  # bootstrap interval of the difference, by source photo
    only_a_right: int
    only_b_right: int
    p_value: float  # McNemar's exact (binomial) test, two-sided
    confidence: float

    @property
    def verdict(self) -> str:
        lo, hi = self.interval
        interval = f"{self.confidence:.0%} CI [{100 * lo:+.1f}, {100 * hi:+.1f}]"
        span = f"{100 * self.difference:+.1f} points, {interval}"
        test = f"McNemar p = {self.p_value:.3g}"
        if (lo > 0 or hi < 0) and self.p_value < 1 - self.confidence:
            better = "B" if self.difference > 0 else "A"
            return f"{better} is better: {span}, {test}"
        return f"no detectable difference: {span}, {test}"


def read_predictions(source: str, repo: Path = Path(".")) -> pd.DataFrame:
    """A predictions table (evaluate's `plots/predictions.csv`) from a file, a git revision or a
    DVC experiment's name, or an MLflow run (`runs:/<run id>`)."""
    if Path(source).is_file():
        text, where = Path(source).read_text(), source
    elif source.startswith("runs:/"):
        text, where = _from_mlflow(source), source
    else:
        text, where = _from_git(source, repo), f"{source}:{paths.PREDICTIONS}"
    try:
        table = pd.read_csv(io.StringIO(text))
    except (ValueError, pd.errors.ParserError) as err:
        raise PipelineError(f"{where}: not a predictions CSV ({err})") from None
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise PipelineError(f"{where}: no column {', '.join(missing)} (not evaluate's predictions.csv)")
    return table


def experiment_refs(pattern: str, repo: Path = Path(".")) -> list[str]:
    """The git refs of every DVC experiment whose name matches `pattern` (a shell glob: `cv-*`)."""
    return [r for r in _experiments(repo) if fnmatch.fnmatchcase(r.rsplit("/", 1)[-1], pattern)]


def _experiments(repo: Path) -> list[str]:
    """Every DVC experiment's ref (refs/exps/<baseline>/<name>; not the queue's stash)."""
    refs = subprocess.run(["git", "for-each-ref", "refs/exps", "--format=%(refname)"], cwd=repo,
                          capture_output=True, text=True).stdout.split()  # fmt: skip
    return [r for r in refs if r.count("/") > 3]


def _from_git(rev: str, repo: Path) -> str:
    """The predictions file at a git revision, or at the tip of the DVC experiment of that name."""
    named = [r for r in _experiments(repo) if r.rsplit("/", 1)[-1] == rev]
    target = named[0] if len(named) == 1 else rev
    done = subprocess.run(["git", "show", f"{target}:{paths.PREDICTIONS.as_posix()}"], cwd=repo,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise PipelineError(f"{rev}: no file, git revision or DVC experiment with {paths.PREDICTIONS}")
    return done.stdout


def _from_mlflow(uri: str) -> str:
    import mlflow

    from pipeline.tracking.store import check_reachable, tracking_uri

    mlflow.set_tracking_uri(check_reachable(tracking_uri()))
    try:
        return mlflow.artifacts.load_text(f"{uri.rstrip('/')}/{paths.PREDICTIONS.name}")
    except Exception as err:  # MLflow raises several types for a missing run or artifact
        raise PipelineError(f"{uri}: no {paths.PREDICTIONS.name} in that run ({err})") from None


def same_cells(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Whether two predictions tables hold the same cells (sample ids), each once."""
    return set(a["sample_id"]) == set(b["sample_id"]) and len(a) == len(b)


def check_same_cells(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Two predictions are comparable cell by cell: the same cells, with the same true classes."""
    if not same_cells(a, b):
        raise PipelineError("the predictions are not on the same cells (sample ids differ)")
    truth_b = b.set_index("sample_id").loc[a["sample_id"], "actual"].to_numpy()
    if not (a["actual"].to_numpy() == truth_b).all():
        raise PipelineError("the predictions disagree on the true classes of the same cells")


def compare(a: pd.DataFrame, b: pd.DataFrame, *, resamples: int = 2000, confidence: float = 0.95,
            seed: int = 0) -> Comparison:  # fmt: skip
    """Paired comparison of two models' predictions on the same cells (matched by sample id)."""
    check_same_cells(a, b)
    a, b = a.set_index("sample_id"), b.set_index("sample_id").loc[a["sample_id"]]
    right_a = (a["predicted"] == a["actual"]).to_numpy()
    right_b = (b["predicted"] == b["actual"]).to_numpy()
    names, group = np.unique(a["source_image"].to_numpy(), return_inverse=True)
    rng = np.random.default_rng(seed)
    gain = right_b.astype(float) - right_a
    per_source = np.bincount(group, weights=gain, minlength=len(names))
    cells = np.bincount(group, minlength=len(names))
    draws = rng.integers(0, len(names), (resamples, len(names)))
    boot = per_source[draws].sum(axis=1) / cells[draws].sum(axis=1)
    tail = (1 - confidence) / 2 * 100
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return Comparison(
        cells=len(a), sources=len(names), accuracy_a=float(right_a.mean()), accuracy_b=float(right_b.mean()),
        difference=float(gain.mean()),
        interval=(float(np.percentile(boot, tail)), float(np.percentile(boot, 100 - tail))),
        only_a_right=only_a, only_b_right=only_b, p_value=float(p), confidence=confidence,
    )  # fmt: skip


def cell_agreement(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Per cell, over several models' predictions on the same cells: how many models get it right,
    the answer they give most, and the median probability they give its true class (where the
    tables have `p_<class>` columns). Hardest cells first. A cell no model gets right bounds what
    any of them, and likely what their recipe, can score: more seeds are unlikely to fix it."""
    if not tables:
        raise PipelineError("no predictions to compare")
    for table in tables[1:]:
        check_same_cells(tables[0], table)
    first = tables[0].set_index("sample_id")
    aligned = [t.set_index("sample_id").loc[first.index] for t in tables]
    predicted = pd.concat([t["predicted"] for t in aligned], axis=1)
    right = predicted.eq(first["actual"], axis=0)
    probability = pd.concat(
        [t.apply(lambda row: row.get(f"p_{row['actual']}", np.nan), axis=1) for t in aligned], axis=1
    )
    table = pd.DataFrame({
        "source_image": first["source_image"],
        "actual": first["actual"],
        "models": len(tables),
        "right": right.sum(axis=1),
        "most_predicted": predicted.mode(axis=1)[0],
        "median_p_actual": probability.median(axis=1),
    })  # fmt: skip
    table = table.rename_axis("sample_id").reset_index()
    return table.sort_values(["right", "median_p_actual", "sample_id"], kind="stable").reset_index(drop=True)
