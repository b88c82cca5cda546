"""The whole pipeline, train and evaluate included, on a tiny generated dataset in a temp git repo:
`dvc repro`, then `dvc exp run -S`, and both runs found in MLflow with their tags and artifacts."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.helpers import dvc_kernels, free_port, local_server, run, stages_run, tiny_project

pytestmark = pytest.mark.e2e


def run_json(cmd: list[str], cwd: Path, env: dict):
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict]:
    return tiny_project(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def runs(project) -> dict:
    root, env = project
    first = run(["dvc", "repro"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "baseline"], root, env)
    exp = run(["dvc", "exp", "run", "-n", "drop04", "-S", "train.dropout=0.4"], root, env)
    return {"repro": first, "exp": exp}


def test_repro_runs_every_stage_and_exp_run_only_train_and_evaluate(runs):
    ran = stages_run(runs["repro"])
    assert sorted(ran) == sorted(
        [
            "fetch",
            "fetch_external",
            "sources",
            "crop",
            "split",
            "augment",
            "resize",
            "localize",
            "train",
            "evaluate",
        ]
    )
    assert ran.index("fetch") < ran.index("localize") and ran.index("resize") < ran.index("train")
    assert stages_run(runs["exp"]) == ["train", "evaluate"]


def test_exp_show_lists_the_experiment_next_to_the_baseline(project, runs):
    root, env = project
    text = json.dumps(run_json(["dvc", "exp", "show", "--json"], root, env))
    assert "drop04" in text and "test" in text and '"dropout": 0.4' in text


def test_each_model_is_one_mlflow_run_with_params_tags_metrics_and_artifacts(project, runs):
    import mlflow

    root, env = project
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("wbc-pipeline")
    model_runs = client.search_runs([experiment.experiment_id], "tags.stage = 'train'")
    assert sorted(r.data.params["train.dropout"] for r in model_runs) == ["0.4", "0.5"]
    assert sorted(r.info.run_name for r in model_runs) == ["drop04: depthwise/type", "repro: depthwise/type"]
    assert not client.search_runs([experiment.experiment_id], "tags.stage = 'evaluate'")
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    resized_md5 = next(o["md5"] for o in lock["stages"]["resize"]["outs"] if o["path"] == "data/resized")
    kernels = dvc_kernels(root)
    for r in model_runs:
        tags, params, metrics = r.data.tags, r.data.params, r.data.metrics
        assert tags["stages"] == "train,evaluate"
        assert tags["data.md5"] == resized_md5
        assert tags["train.device"] == "cpu" and tags["version.keras"] and len(tags["git.commit"]) == 40
        assert tags["train.kernels"] == kernels  # dvc.yaml's, set for the stage
        assert params["augment.target_per_class"] == "12" and params["evaluate.bootstrap_resamples"] == "50"
        assert 0 <= metrics["test.accuracy"] <= 1 and "epoch.loss" in metrics and "train_seconds" in metrics
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {
            "confusion.png",
            "misclassified.png",
            "predictions.csv",
            "evaluate.json",
            "train.json",
            "published_fields.csv",
        } <= artifacts
        assert "serving_input_example.json" in artifacts
    exp_run = next(r for r in model_runs if r.data.params["train.dropout"] == "0.4")
    assert exp_run.data.tags["dvc.exp_name"] == "drop04" and exp_run.data.tags["dvc.exp_baseline_rev"]
    assert len({r.data.tags["params.sha256"] for r in model_runs}) == 2
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    (logged,) = mlflow.search_logged_models(
        experiment_ids=[experiment.experiment_id],
        filter_string=f"source_run_id = '{exp_run.info.run_id}'",
        output_format="list",
    )
    model = mlflow.pyfunc.load_model(logged.model_uri)
    example = mlflow.artifacts.load_dict(f"runs:/{exp_run.info.run_id}/serving_input_example.json")
    out = model.predict(np.asarray(example["inputs"], dtype="float32"))
    probs = (out.item() if isinstance(out, np.ndarray) and out.dtype == object else out)["type"]
    assert probs.shape == (1, 4) and np.isclose(probs.sum(), 1, atol=1e-4)


def test_metrics_and_plots_are_visible_to_dvc(project, runs):
    root, env = project
    metrics = run_json(["dvc", "metrics", "show", "--json"], root, env)
    assert "metrics/evaluate.json" in json.dumps(metrics)
    plots = run_json(["dvc", "plots", "show", "--json"], root, env)
    assert not plots.get("errors")
    names = set(plots["data"])
    assert {"plots/history.csv", "Confusion matrix (test)", "Confusion matrix, normalised (test)"} <= names
    assert {"plots/confusion.png", "plots/misclassified.png"} <= names
    assert (root / "plots/confusion.png").stat().st_size > 1000
    assert {"PBC, another lab (through the localiser)", "PBC, another lab (whole image as the cell)"} <= names
    assert {"plots/external/pbc_localiser.png", "plots/external/pbc_whole_image.png"} <= names


def test_every_evaluation_set_is_scored_from_tracked_inputs(project, runs):
    """The published sets and another lab's cells come from fetch_external (DVC-tracked), so every
    metric is there without any environment variable."""
    root, _ = project
    report = json.loads((root / "metrics/evaluate.json").read_text())
    assert (
        report["published"]["TEST_SIMPLE"]["n_images"] == 8 and report["published"]["TEST"]["n_images"] == 8
    )
    answers = pd.read_csv(root / "plots/external/published_fields.csv")
    assert (
        len(answers) == 16
        and answers["scored"].all()
        and answers["source_image"].str.startswith("Blood").all()
    )
    for mode in ("localiser", "whole_image", "calibrated"):  # calibrated: two-fold, the model has batch norm
        pbc = report["external"]["pbc"][mode]
        assert pbc["n_images"] == 12 and set(pbc["per_class"]) == {
            "neutrophil",
            "eosinophil",
            "lymphocyte",
            "monocyte",
        }
        assert len(pbc["accuracy_ci"]) == 2 and 0 <= pbc["cells_found"] <= 1


def test_gate_runs_against_the_committed_baseline(project, runs):
    root, env = project
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "gate"], cwd=root, env=env, capture_output=True, text=True
    )
    assert "test.accuracy" in done.stdout and "vs baseline" in done.stdout
    assert done.returncode in (0, 1)
    assert ("0 failed" in done.stdout) == (done.returncode == 0)


def test_every_model_gets_a_registry_version_and_champion_follows_the_gates(project, runs):
    import mlflow

    root, env = project
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    versions = client.search_model_versions("name = 'wbc-classifier'")
    assert len(versions) == 2
    for v in versions:
        champion = client.get_run(v.run_id).data.tags["registry.champion"] == "true"
        assert champion == ("champion" in v.aliases)
    out = run(["dvc", "exp", "run", "-n", "open-gates", "-S", "gates.min_accuracy=0",
               "-S", "gates.min_macro_f1=0", "-S", "gates.min_recall=0"], root, env)  # fmt: skip
    assert stages_run(out) == ["evaluate"]
    champion = client.get_model_version_by_alias("wbc-classifier", "champion")
    assert int(champion.version) == 3
    model = mlflow.pyfunc.load_model("models:/wbc-classifier@champion")
    x = np.zeros((1, 32, 32, 3), np.float32)
    out = model.predict(x)
    probs = (out.item() if isinstance(out, np.ndarray) and out.dtype == object else out)["type"]
    assert probs.shape == (1, 4)


def test_the_champion_served_over_http_answers_like_the_model(project, runs):
    """`mlflow models serve` on 127.0.0.1: real crops in, the same probabilities as predicting with
    the model file (the alias was moved by the previous test)."""
    import keras
    import requests

    from pipeline.data.arrays import load_npz

    root, env = project
    url = f"http://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/wbc-classifier@champion",
           "--env-manager", "local", "-h", "127.0.0.1", "-p", url.rsplit(":", 1)[1], "-w", "1"]  # fmt: skip
    with local_server(cmd, f"{url}/ping", cwd=root, env=env):
        crops = load_npz(root / "data/resized/test.npz")["x"][:3].astype("float32")
        answer = requests.post(f"{url}/invocations", json={"inputs": crops.tolist()}, timeout=60)
        assert answer.status_code == 200, answer.text[:500]
        served = np.asarray(answer.json()["predictions"]["type"])
        expected = keras.saving.load_model(root / "models/model.keras").predict(crops, verbose=0)["type"]
        np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("module", "stages"),
    [
        ("pipeline/inference/tta.py", {"evaluate"}),  # inference apart from training
        ("pipeline/model/zoo.py", {"train"}),
        ("pipeline/data/fetch.py", {"fetch", "fetch_external", "sources", "evaluate"}),
        ("pipeline/core/classes.py", {"sources", "crop", "resize", "train", "evaluate"}),
        ("pipeline/tracking/runs.py", set()),  # plumbing: what a run records, not what it computes
    ],
)
def test_a_one_line_code_edit_changes_exactly_the_stages_that_run_it(project, runs, module, stages):
    root, env = project
    before = set(run_json(["dvc", "status", "--json"], root, env))
    path = root / module
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"# an edit\n")
        after = set(run_json(["dvc", "status", "--json"], root, env))
    finally:
        path.write_bytes(original)
    assert after - before == stages
