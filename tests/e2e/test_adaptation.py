"""Few-shot adaptation to another lab, end to end on the tiny project: the default trains on BCCD
alone; `dvc exp run -S sources.pbc.enabled=true -S sources.pbc.take_per_class=1` re-runs only what
depends on the sources, trains on one PBC cell per class, scores the rest as the pbc domain, leaves
the trained-on cells out of the PBC scoring, and says so in MLflow."""

import json

import mlflow
import pandas as pd
import pytest

from tests.helpers import run, stages_run, tiny_project

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    root, env = tiny_project(tmp_path_factory.mktemp("adapt"))
    run(["dvc", "repro"], root, env)
    baseline = json.loads((root / "metrics/evaluate.json").read_text())
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "baseline"], root, env)
    out = run(["dvc", "exp", "run", "-n", "adapt-pbc-k1", "-S", "sources.pbc.enabled=true",
               "-S", "sources.pbc.take_per_class=1"], root, env)  # fmt: skip
    return root, env, baseline, out


def test_the_default_is_bccd_only_and_the_adaptation_reruns_only_what_depends_on_sources(adapted):
    root, _, baseline, out = adapted
    assert set(baseline["domains"]) == {"bccd"} and baseline["external"]["pbc"]["localiser"]["n_images"] == 12
    assert stages_run(out) == ["sources", "split", "augment", "resize", "train", "evaluate"]
    assert json.loads((root / "metrics/sources.json").read_text())["sources"]["pbc"]["train"] == 4


def test_trained_on_cells_are_never_tested_on(adapted):
    root, _, baseline, _ = adapted
    split = pd.read_csv(root / "data/split/manifest.csv")
    pbc = split[split["domain"] == "pbc"]
    trained = set(pbc.loc[pbc["split"] == "train", "sha256"])
    assert len(trained) == 4 and pbc.loc[pbc["split"] == "train", "label"].value_counts().eq(1).all()
    assert not trained & set(pbc.loc[pbc["split"] == "test", "sha256"])
    report = json.loads((root / "metrics/evaluate.json").read_text())
    assert report["domains"]["pbc"]["n_images"] == (pbc["split"] == "test").sum()
    assert report["domains"]["bccd"]["n_images"] == baseline["domains"]["bccd"]["n_images"]
    for mode in ("localiser", "whole_image"):
        scored = report["external"]["pbc"][mode]
        assert scored["excluded_trained_on"] == 4 and scored["n_images"] == 8
    summary = json.loads((root / "metrics/summary.json").read_text())
    assert {"pbc_test_accuracy", "bccd_test_accuracy", "pbc_accuracy"} <= set(summary)


def test_mlflow_says_which_external_cells_a_model_trained_on(adapted):
    _, env, _, _ = adapted
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("wbc-pipeline")
    runs = {r.info.run_name.split(":")[0]: r for r in
            client.search_runs([experiment.experiment_id], "tags.stage = 'train'")}  # fmt: skip
    assert runs["adapt-pbc-k1"].data.tags["trained_on"] == "bccd, pbc"
    assert runs["adapt-pbc-k1"].data.tags["trained_on.pbc"] == "4 cells"
    assert runs["adapt-pbc-k1"].data.params["sources.pbc.take_per_class"] == "1"
    assert runs["repro"].data.tags["trained_on"] == "bccd" and "trained_on.pbc" not in runs["repro"].data.tags
