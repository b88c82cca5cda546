"""The CI metric gate: floors for the headline metrics and every class's recall, and the largest
allowed fall against a baseline (the committed metrics, as `dvc metrics diff` reports them)."""

import json
import subprocess
import sys
from dataclasses import dataclass

from pipeline.core.errors import PipelineError
from pipeline.core.params import GatesParams, SplitParams

HEADLINE = ("accuracy", "macro_f1")


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    bound: float
    rule: str  # ">=" floor, or "drop <=" against the baseline
    passed: bool


def check_gates(current: dict, baseline: dict | None, gates: GatesParams) -> list[Check]:
    """Every gate on the test split's metrics; `baseline` holds old values of the headline metrics."""
    test = current["test"]
    floors = {"accuracy": gates.min_accuracy, "macro_f1": gates.min_macro_f1}
    checks = [Check(f"test.{m}", test[m], floors[m], ">=", test[m] >= floors[m]) for m in HEADLINE]
    checks += [
        Check(f"test.recall.{c}", v["recall"], gates.min_recall, ">=", v["recall"] >= gates.min_recall)
        for c, v in sorted(test["per_class"].items())
    ]
    for m in HEADLINE:
        old = (baseline or {}).get(m)
        if old is not None:
            drop = old - test[m]
            checks.append(Check(f"test.{m} vs baseline {old:.4f}", drop, gates.max_drop, "drop <=",
                                drop <= gates.max_drop))  # fmt: skip
    return checks


def may_be_champion(split: SplitParams) -> bool:
    """A CV study's fold model (`split.val_folds` >= 2) is trained on part of train + val to score a
    setting, not to be used: it is registered but never takes the `champion` alias."""
    return split.val_folds == 0


def baseline_from_dvc(rev: str, metrics_file: str) -> dict[str, float] | None:
    """Old headline values from `dvc metrics diff <rev>`; None when the baseline has none."""
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "metrics", "diff", "--json", "--all", rev, "--targets", metrics_file],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise PipelineError(f"dvc metrics diff {rev} failed: {done.stderr.strip() or done.stdout.strip()}")
    diff = json.loads(done.stdout or "{}").get(metrics_file, {})
    old = {m: diff.get(f"test.{m}", {}).get("old") for m in HEADLINE}
    return None if all(v is None for v in old.values()) else old


def format_table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'gate':<{width}}  {'value':>8}  {'rule':<8} {'bound':>6}  result"]
    for c in checks:
        result = "pass" if c.passed else "FAIL"
        lines.append(f"{c.name:<{width}}  {c.value:8.4f}  {c.rule:<8} {c.bound:6.3f}  {result}")
    return "\n".join(lines)
