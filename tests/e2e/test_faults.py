"""Faults in real runs on a tiny generated project: a stage killed mid-write, and two queued
experiments running at once."""

import os
import signal
import subprocess
import time

import pytest
import yaml

from tests.helpers import run, stages_run, tiny_project

pytestmark = pytest.mark.e2e


def tree(folder) -> dict[str, bytes]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


def set_params(root, section: str, **values) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_a_stage_killed_mid_write_leaves_no_mix_and_the_next_repro_recovers(tmp_path):
    root, env = tiny_project(tmp_path)
    run(["dvc", "repro", "augment"], root, env)
    before = tree(root / "data/augmented")
    set_params(root, "augment", target_per_class=400)
    proc = subprocess.Popen(
        ["dvc", "repro", "augment"], cwd=root, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not any(len(list(t.glob("images/*"))) >= 20 for t in (root / "data").glob(".augmented.tmp-*")):
        assert proc.poll() is None, "augment ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    after = root / "data/augmented"
    assert not after.exists() or tree(after) == before, "a killed stage left a mix of old and new files"
    out = run(["dvc", "repro"], root, env)
    assert "augment" in stages_run(out)
    assert not list((root / "data").glob(".augmented.*")), "the killed run's temp folder was not cleared"
    manifest = (root / "data/augmented/manifest.csv").read_text().splitlines()
    assert sum(",train," in line for line in manifest) == 4 * 400
    assert "up to date" in run(["dvc", "status"], root, env)


def test_two_queued_experiments_running_at_once_both_log_complete_runs(tmp_path):
    import mlflow

    root, env = tiny_project(tmp_path)
    run(["dvc", "repro"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "baseline"], root, env)
    run(["dvc", "exp", "run", "--queue", "-S", "train.dropout=0.3,0.2"], root, env)
    run(["dvc", "queue", "start", "-j", "2"], root, env)
    deadline = time.monotonic() + 900
    while True:
        status = run(["dvc", "queue", "status"], root, env)
        if "Queued" not in status and "Running" not in status:
            break
        assert time.monotonic() < deadline, status
        time.sleep(2)
    assert status.count("Success") == 2, status
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("wbc-pipeline")
    runs = client.search_runs([experiment.experiment_id], "tags.stage = 'train'")
    queued = {r.data.params["train.dropout"]: r for r in runs if r.data.params["train.dropout"] != "0.5"}
    assert sorted(queued) == ["0.2", "0.3"]
    for r in queued.values():
        assert r.info.status == "FINISHED" and r.data.tags["stages"] == "train,evaluate"
        assert r.data.tags["dvc.exp_name"] and "test.accuracy" in r.data.metrics
        assert ".dvc/tmp" not in r.info.artifact_uri  # not inside the deleted temp copy
        assert {"confusion.png", "evaluate.json"} <= {a.path for a in client.list_artifacts(r.info.run_id)}
