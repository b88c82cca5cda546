"""A cross-validation study end to end on the tiny project: `wbc cv queue` two settings, the queue
run by DVC, `wbc cv report` (CSV, markdown, plot) and its MLflow parent runs with the fold runs
nested under them. The second setting is an ensemble of two: its runs also report each first-k
ensemble, which the report compares as sizes."""

import json
import subprocess

import mlflow
import pandas as pd
import pytest

from tests.helpers import run, tiny_project

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root, env = tiny_project(tmp_path_factory.mktemp("cv"))
    run(["dvc", "repro"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "baseline"], root, env)
    queued = run(["wbc", "cv", "queue", "base", "--folds", "2", "--seeds", "7"], root, env)
    queued += run(["wbc", "cv", "queue", "ens", "--folds", "2", "--seeds", "7", "-S", "train.members=2"],
                  root, env)  # fmt: skip
    run(["dvc", "exp", "run", "--run-all", "-j", "2"], root, env)
    report = run(["wbc", "cv", "report", "--out", "reports/cv"], root, env)
    return root, env, queued, report


def test_each_fold_validates_on_different_cells_and_the_test_split_stays(study):
    root, env, queued, _ = study
    assert queued.count("dvc exp run --queue") == 4
    rows = pd.read_csv(root / "reports/cv/cv_runs.csv")
    assert sorted(rows["experiment"]) == ["cv-base-f0-s7", "cv-base-f1-s7", "cv-ens-f0-s7", "cv-ens-f1-s7"]
    split = json.loads((root / "metrics/split.json").read_text())
    done = subprocess.run(["dvc", "exp", "show", "--json"], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    exps = {r["name"]: r["data"] for b in shown for e in b.get("experiments") or [] for r in e["revs"]}
    for setting in ("base", "ens"):
        folds = [exps[f"cv-{setting}-f{f}-s7"]["metrics"]["metrics/evaluate.json"]["data"] for f in (0, 1)]
        # the two folds' validation sets together are all of train + val, each cell once
        assert sum(f["val"]["n_images"] for f in folds) == split["train"]["total"] + split["val"]["total"]
        assert folds[0]["test"]["n_images"] == folds[1]["test"]["n_images"] == split["test"]["total"]


def test_report_tables_mean_and_sd_and_compares_on_the_same_folds(study):
    root, _, _, report = study
    text = (root / "reports/cv/cv.md").read_text()
    assert "| base | (baseline) | 2 (2 x 1) |" in text and "| ens | train.members=2 | 2 (2 x 1) |" in text
    assert "over 2 pairs" in text and ("ens is better" in text or "base is better" in text
                                       or "no detectable difference" in text)  # fmt: skip
    # the ensemble's first member alone is a base run (member 0 trains with the run's seed)
    sizes = text.split("## Ensemble size")[1]
    assert "| ens first 1 |" in sizes and "| ens first 2 |" in sizes and "on val.accuracy" in sizes
    rows = pd.read_csv(root / "reports/cv/cv_runs.csv")
    ens = rows[rows["setting"] == "ens"].set_index("fold")
    base = rows[rows["setting"] == "base"].set_index("fold")
    assert (ens["members.1.val_accuracy"] == base["val.accuracy"]).all()
    assert (root / "reports/cv/cv.png").stat().st_size > 5000
    rows = pd.read_csv(root / "reports/cv/cv_runs.csv")
    base = rows[rows["setting"] == "base"]["val.accuracy"]
    assert f"{base.mean():.3f} ± {base.std():.3f}" in text
    assert "2 model runs nested" in report


def test_mlflow_holds_a_parent_per_setting_with_its_fold_runs_nested(study):
    root, env, _, _ = study
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("wbc-pipeline")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`cv.parent` = 'true'")
    assert sorted(p.info.run_name for p in parents) == ["cv: base", "cv: ens"]
    for parent in parents:
        children = client.search_runs(
            [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
        )
        assert len(children) == 2 and all(c.data.tags["stages"] == "train,evaluate" for c in children)
        ensemble = parent.info.run_name == "cv: ens"
        assert all(c.info.run_name.endswith(" x2") == ensemble for c in children)
        values = [c.data.metrics["val.accuracy"] for c in children]
        assert parent.data.metrics["val.accuracy.mean"] == pytest.approx(sum(values) / 2)
        assert parent.info.status == "FINISHED"
        # an ensemble's parent also holds each size's mean, at step k (a curve in the MLflow UI)
        sizes = client.get_metric_history(parent.info.run_id, "members.val.accuracy.mean")
        assert sorted(m.step for m in sizes) == ([1, 2] if ensemble else [])
        if ensemble:
            first = [c.data.metrics["members.1.val_accuracy"] for c in children]
            assert next(m.value for m in sizes if m.step == 1) == pytest.approx(sum(first) / 2)
    # a second report updates the same parents instead of making new ones
    run(["wbc", "cv", "report", "--out", "reports/cv"], root, env)
    again = client.search_runs([exp.experiment_id], filter_string="tags.`cv.parent` = 'true'")
    assert sorted(p.info.run_id for p in again) == sorted(p.info.run_id for p in parents)


def test_edges_scores_each_runs_val_cells_whole_as_evaluate_did_and_cut_by_a_frame(study):
    root, env, _, _ = study
    out = run(["wbc", "edges", "--experiments", "cv-*", "--pair", "base", "ens", "--out", "edges.csv",
               "--cells", "edges_cells.csv"], root, env)  # fmt: skip
    edges = pd.read_csv(root / "edges.csv").set_index("run")
    rows = pd.read_csv(root / "reports/cv/cv_runs.csv").set_index("experiment")
    assert sorted(edges.index) == sorted(rows.index)
    # the whole cells are each run's validation cells, cut and treated as the pipeline did: the
    # folds' together are train + val, and each run's accuracy on them is the one evaluate logged
    split = json.loads((root / "metrics/split.json").read_text())
    for setting in ("base", "ens"):
        folds = edges[edges["setting"] == setting]
        assert folds["cells"].sum() == split["train"]["total"] + split["val"]["total"]
    assert (edges["whole_accuracy"].round(6) == rows.loc[edges.index, "val.accuracy"].round(6)).all()
    cells = pd.read_csv(root / "edges_cells.csv")
    assert len(cells) == 5 * edges["cells"].sum()
    assert set(cells["version"]) == {"whole", "left", "right", "top", "bottom"}
    assert "ens vs base: " in out and "over 2 pairs" in out
    # the whole test cells of the committed run get the probabilities evaluate gave them (this tiny
    # model's are near-even, so they are compared, not its argmax)
    run(["wbc", "edges", "HEAD", "--split", "test", "--cells", "test_cells.csv"], root, env)
    whole = pd.read_csv(root / "test_cells.csv").query("version == 'whole'").set_index("crop_id")
    evaluated = pd.read_csv(root / "plots/predictions.csv").set_index("sample_id")
    assert sorted(whole.index) == sorted(evaluated.index)
    columns = [c for c in evaluated.columns if c.startswith("p_")]
    assert (whole.loc[evaluated.index, columns] - evaluated[columns]).abs().to_numpy().max() < 1e-4
