"""The few-shot adaptation study's bookkeeping: queued commands, the learning curve read back from
`dvc exp show --json` with the baseline as k = 0, mean ± sd over seeds."""

import math

import pytest

from pipeline.core.errors import PipelineError
from pipeline.evaluation import adaptation


def test_queue_commands_enable_the_source_with_k_and_seed():
    commands = adaptation.queue_commands("pbc", [5, 25], [1, 2])
    names = [c[c.index("-n") + 1] for c in commands]
    assert names == ["adapt-pbc-k5-s1", "adapt-pbc-k25-s1", "adapt-pbc-k5-s2", "adapt-pbc-k25-s2"]
    sets = [commands[1][i + 1] for i, a in enumerate(commands[1]) if a == "-S"]
    assert sets == ["sources.pbc.enabled=true", "sources.pbc.take_per_class=25", "sources.pbc.seed=1",
                    "evaluate.external=[]"]  # fmt: skip
    with pytest.raises(PipelineError, match="at least 1"):
        adaptation.queue_commands("pbc", [0], [1])


def shown() -> list[dict]:
    def rev(name: str, metrics: dict, k: int | None = None) -> dict:
        params = {"sources": {"pbc": {"domain": "pbc", "take_per_class": k or 25}}}
        data = {"rev": name, "params": {"params.yaml": {"data": params}},
                "metrics": {"metrics/evaluate.json": {"data": metrics}}}  # fmt: skip
        return {"rev": name, "name": name, "data": data}

    def adapted(lab: float, bccd: float, n: int) -> dict:
        return {"domains": {"pbc": {"accuracy": lab, "macro_f1": lab - 0.02, "n_images": n},
                            "bccd": {"accuracy": bccd, "macro_f1": bccd - 0.01, "n_images": 69}}}  # fmt: skip

    whole = {"accuracy": 0.6, "macro_f1": 0.5, "n_images": 600}
    base = {"test": {"accuracy": 0.93, "macro_f1": 0.91}, "external": {"pbc": {"localiser": whole}}}
    experiments = [
        {"revs": [rev("adapt-pbc-k5-s1", adapted(0.80, 0.92, 580), 5)]},
        {"revs": [rev("adapt-pbc-k5-s2", adapted(0.84, 0.94, 580), 5)]},
        {"revs": [rev("adapt-pbc-k25-s1", adapted(0.95, 0.93, 500), 25)]},
        {"executor": {"state": "failed"}, "revs": [rev("adapt-pbc-k50-s1", adapted(0.1, 0.1, 400), 50)]},
        {"revs": [rev("adapt-other-k5-s1", adapted(0.1, 0.1, 10), 5)]},
    ]
    return [{"rev": "workspace", "data": {}}, {"rev": "abc1234567", "data": rev("abc", base)["data"],
                                              "experiments": experiments}]  # fmt: skip


def test_the_curve_has_the_baseline_at_k_0_and_the_mean_over_seeds():
    rows = adaptation.curve_rows(shown(), "pbc")
    assert list(rows["k"]) == [0, 5, 5, 25] and rows.loc[0, "experiment"] == "baseline abc1234"
    assert rows.loc[0, "lab.accuracy"] == 0.6 and rows.loc[0, "cells"] == "all 600 cells, zero-shot"
    assert rows.loc[3, "cells"] == "pbc test (500 cells)"
    table = adaptation.curve(rows).set_index("k")
    assert table.loc[5, "lab.accuracy.mean"] == pytest.approx(0.82)
    assert table.loc[5, "lab.accuracy.sd"] == pytest.approx(math.sqrt(0.0008))
    assert table.loc[25, "runs"] == 1 and math.isnan(table.loc[25, "bccd.accuracy.sd"])
    text = adaptation.markdown(adaptation.curve(rows), "pbc")
    assert "| 5 | 2 | 0.820 ± 0.028 | 0.800 ± 0.028 | 0.930 ± 0.014 |" in text
    assert list(adaptation.dvc_curve(adaptation.curve(rows)).columns) == ["k", *adaptation.METRICS]
    assert adaptation.curve_rows(shown(), "nothing").empty
    twice = [*shown(), shown()[1] | {"rev": "def4567890"}]  # runs queued from two commits of one model
    assert list(adaptation.curve_rows(twice, "pbc")["k"]) == [0, 5, 5, 5, 5, 25, 25]
    other = shown()
    for exp in other[1]["experiments"]:  # every run trains another model than its baseline
        exp["revs"][0]["data"]["params"]["params.yaml"]["data"]["train"] = {"members": 1}
    other[1]["data"]["params"] = {"params.yaml": {"data": {"train": {"members": 2}}}}
    assert list(adaptation.curve_rows(other, "pbc")["k"]) == [5, 5, 25]  # the runs, without a baseline
