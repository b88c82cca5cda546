"""The whole pipeline, train and evaluate included, on a tiny generated dataset in a temp git repo:
`dvc repro`, then `dvc exp run -S`, and both runs found in MLflow with their tags and artifacts."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from pipeline.fetch import format_manifest, manifest_of
from scripts.benchmark import copy_repo
from tests.conftest import run, stages_run, write_dataset

pytestmark = pytest.mark.e2e

CLASSES = ["NEUTROPHIL", "EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE"]


def make_mirror(root: Path, archive_name: str) -> tuple[Path, dict[str, str], list[tuple[str, str]]]:
    """A mirror folder (zip + labels.csv) of 48 generated smears; its manifest; 8 test sources."""
    cases = {
        n: ([(10 + n % 7 * 12, 5 + n % 5 * 8, 70 + n % 7 * 12, 65 + n % 5 * 8)], CLASSES[n % 4])
        for n in range(48)
    }
    tree = write_dataset(root / "tree", cases)
    manifest = manifest_of(tree)
    mirror = root / "mirror"
    mirror.mkdir()
    top = archive_name.removesuffix(".zip")
    with zipfile.ZipFile(mirror / archive_name, "w") as zf:
        for path in sorted(tree.rglob("*")):
            if path.is_file() and path.name != "labels.csv":
                zf.write(path, f"{top}/{path.relative_to(tree).as_posix()}")
    (mirror / "labels.csv").write_bytes((tree / "labels.csv").read_bytes())
    tests = [(f"BloodImage_{n:05d}.jpg", CLASSES[n % 4]) for n in range(40, 48)]
    return mirror, manifest, tests


def run_json(cmd: list[str], cwd: Path, env: dict):
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("tiny")
    root = work / "repo"
    root.mkdir()
    copy_repo(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    mirror, manifest, tests = make_mirror(work, params["fetch"]["archive"]["file"])
    (root / "data/reference/bccd.sha256").write_text(format_manifest(manifest))
    lines = ["test_simple_file,bccd_image,class"] + [
        f"{c}/x{i}.jpeg,{img},{c}" for i, (img, c) in enumerate(tests)
    ]
    (root / "data/reference/kaggle_test_sources.csv").write_text("\n".join(lines) + "\n")
    params["crop"].update(padding=4, min_box_size=8)
    params["split"].update(val_fraction=0.25, dedup_max_distance=2)
    params["augment"].update(target_per_class=12)
    params["resize"].update(height=32, width=32)
    params["train"].update(model="lenet", epochs=2, batch_size=8)
    params["evaluate"].update(bootstrap_resamples=50, gallery_size=6)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "WBC_DATA_MIRROR": str(mirror),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "tiny dataset"], root, env)
    return root, env


@pytest.fixture(scope="module")
def runs(project) -> dict:
    root, env = project
    first = run(["dvc", "repro"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "baseline"], root, env)
    exp = run(["dvc", "exp", "run", "-n", "drop04", "-S", "train.dropout=0.4"], root, env)
    return {"repro": first, "exp": exp}


def test_repro_runs_every_stage_and_exp_run_only_train_and_evaluate(runs):
    assert stages_run(runs["repro"]) == ["fetch", "crop", "split", "augment", "resize", "train", "evaluate"]
    assert stages_run(runs["exp"]) == ["train", "evaluate"]


def test_exp_show_lists_the_experiment_next_to_the_baseline(project, runs):
    root, env = project
    text = json.dumps(run_json(["dvc", "exp", "show", "--json"], root, env))
    assert "drop04" in text and "test" in text and '"dropout": 0.4' in text


def test_both_runs_are_in_mlflow_with_params_tags_and_artifacts(project, runs):
    import mlflow

    _, env = project
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("wbc-pipeline")
    train_runs = client.search_runs([experiment.experiment_id], "tags.stage = 'train'")
    assert sorted(r.data.params["train.dropout"] for r in train_runs) == ["0.4", "0.5"]
    exp_run = next(r for r in train_runs if r.data.params["train.dropout"] == "0.4")
    assert exp_run.data.tags["dvc.exp_name"] == "drop04"
    assert exp_run.data.tags["train.device"] == "cpu"
    assert "epoch.loss" in exp_run.data.metrics
    assert "model.keras" in [a.path for a in client.list_artifacts(exp_run.info.run_id)]
    evaluate_runs = client.search_runs([experiment.experiment_id], "tags.stage = 'evaluate'")
    assert len(evaluate_runs) == 2
    for r in evaluate_runs:
        assert 0 <= r.data.metrics["test.accuracy"] <= 1
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"confusion.png", "misclassified.png", "evaluate.json"} <= artifacts


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


def test_gate_runs_against_the_committed_baseline(project, runs):
    root, env = project
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "gate"], cwd=root, env=env, capture_output=True, text=True
    )
    assert "test.accuracy" in done.stdout and "vs baseline" in done.stdout
    assert done.returncode in (0, 1)
    assert ("0 failed" in done.stdout) == (done.returncode == 0)
