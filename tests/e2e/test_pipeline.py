"""The data stages end to end on the real BCCD mirror, through real `dvc repro`, in a fresh copy."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.data.arrays import load_npz
from pipeline.data.split import check_disjoint
from tests.helpers import MIRROR, MIRRORS, copy_repo, run, stages_run

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not MIRROR.is_dir(), reason="the BCCD mirror is not beside the repo"),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict]:
    """A fresh git copy of this repository (tracked and new files, no data) with an environment."""
    root = tmp_path_factory.mktemp("project")
    copy_repo(root)
    env = {**os.environ, "WBC_MIRRORS": str(MIRRORS)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("MLFLOW_TRACKING_URI", None)  # exercise the default store in the repo root
    return root, env


@pytest.fixture(scope="module")
def first_repro(project) -> str:
    root, env = project
    return run(["dvc", "repro", "resize"], root, env)


def test_the_data_stages_run_and_reproduce_the_committed_lock(project, first_repro):
    root, _ = project
    ran = stages_run(first_repro)
    assert sorted(ran) == sorted(["fetch", "fetch_external", "sources", "crop", "split", "augment", "resize"])
    assert ran.index("fetch_external") < ran.index("sources") < ran.index("split") < ran.index("augment")
    # Same params and seed: every output hash equals the committed dvc.lock, byte for byte.
    diff = subprocess.run(["git", "diff", "--stat", "dvc.lock"], cwd=root, capture_output=True, text=True)
    assert diff.stdout == "", f"outputs differ from the committed dvc.lock:\n{diff.stdout}"


def test_crop_counts_match_the_dataset_readme(project, first_repro):
    root, _ = project
    report = yaml.safe_load((root / "metrics" / "crop.json").read_text())
    assert report["images"] == 364
    assert sum(report["images_by_outcome"].values()) == 364
    assert report["single_box_single_label"] == {
        "neutrophil": 202, "eosinophil": 84, "lymphocyte": 33, "monocyte": 20, "basophil": 2, "total": 341,
    }  # fmt: skip
    assert report["label_rows_without_image"] == 47


def test_kaggle_split_holds_out_exactly_the_published_test_sources(project, first_repro):
    root, _ = project
    split = pd.read_csv(root / "data" / "split" / "manifest.csv")
    check_disjoint(split)
    published = pd.read_csv(root / "data" / "reference" / "kaggle_test_sources.csv")
    test = split[split["split"] == "test"]
    assert set(test["source_image"]) == set(published["bccd_image"])
    assert len(set(published["bccd_image"])) == 69
    # our label join agrees with the class the published test set files each source under
    published_class = dict(zip(published["bccd_image"], published["class"].str.lower(), strict=False))
    assert all(
        published_class[s] == label for s, label in zip(test["source_image"], test["label"], strict=True)
    )
    # the known twins of test cells are kept out of training
    twins = split[split["source_image"].isin(["BloodImage_00230.jpg", "BloodImage_00257.jpg"])]
    assert twins["group"].nunique() == 1
    trained = set(split.loc[split["split"].isin(["train", "val"]), "group"])
    assert not trained & set(test["group"])


def test_resized_arrays_are_balanced_for_training(project, first_repro):
    root, _ = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    train = load_npz(root / "data" / "resized" / "train.npz")
    h, w = params["resize"]["height"], params["resize"]["width"]
    assert train["x"].shape[1:] == (h, w, 3)
    counts = pd.Series(train["y"]).value_counts()
    assert set(counts) == {params["augment"]["target_per_class"]}
    test = load_npz(root / "data" / "resized" / "test.npz")
    assert not test["augmented"].any() and len(test["y"]) == 69


def test_stages_log_to_the_default_mlflow_store(project, first_repro):
    import mlflow

    root, _ = project
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("wbc-pipeline-data")  # the model runs' experiment has none
    runs = client.search_runs([experiment.experiment_id])
    by_stage = {r.data.tags["stage"]: r for r in runs}
    assert set(by_stage) == {"fetch", "fetch_external", "sources", "crop", "split", "augment", "resize"}
    crop = by_stage["crop"].data
    assert crop.metrics["single_box_single_label.total"] == 341
    assert crop.params["crop.padding"] == str(
        yaml.safe_load((root / "params.yaml").read_text())["crop"]["padding"]
    )
    assert by_stage["resize"].data.tags["git.commit"]


def test_second_repro_does_nothing_and_a_param_change_reruns_only_what_depends_on_it(project, first_repro):
    root, env = project
    assert stages_run(run(["dvc", "repro", "resize"], root, env)) == []
    params_file = root / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["augment"]["target_per_class"] = 60
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    assert stages_run(run(["dvc", "repro", "resize"], root, env)) == ["augment", "resize"]
    counts = pd.Series(load_npz(root / "data" / "resized" / "train.npz")["y"]).value_counts()
    assert set(counts) == {60}
