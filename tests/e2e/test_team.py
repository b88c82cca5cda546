"""A team's setup, for real: a DVC remote and a bare git repository shared by several clones, and
one MLflow tracking server on PostgreSQL (started and stopped by PID) that they all log to at once."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from scripts.team_server import Server, start, start_mlflow, stop, stop_pid
from tests.helpers import copy_repo, run, tiny_project

pytestmark = pytest.mark.e2e

EXPERIMENTS = {"queued-a": "0.3", "queued-b": "0.2", "clone-b": "0.1"}  # name -> train.dropout


@pytest.fixture(scope="module")
def server():
    """MLflow on PostgreSQL in a folder the postgres user can enter (pytest's own are root-only)."""
    folder = Path(tempfile.mkdtemp(prefix="wbc-team-"))
    folder.chmod(0o755)
    up = start(folder / "server", workers=2)
    try:
        yield up
    finally:
        stop(up.folder)
        shutil.rmtree(folder, ignore_errors=True)


def client(server: Server):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=server.uri)


def clone(origin: Path, dest: Path, env: dict) -> Path:
    run(["git", "clone", "-q", str(origin), str(dest)], dest.parent, env)
    return dest


@pytest.fixture(scope="module")
def team(tmp_path_factory, server):
    """Clone A runs the pipeline and shares it (git push to a bare repository, `dvc push` to a local
    DVC remote); then A runs two queued experiments while clone B runs one of its own, all three
    logging to the one server at the same time; both push their experiments."""
    work = tmp_path_factory.mktemp("team")
    a, env = tiny_project(work)
    env = {**env, "MLFLOW_TRACKING_URI": server.uri, "MLFLOW_EXPERIMENT_NAME": "team"}
    origin, remote = work / "origin.git", work / "dvc-remote"
    run(["git", "init", "-q", "--bare", "--initial-branch=main", str(origin)], work, env)
    run(["dvc", "remote", "add", "-d", "team", str(remote)], a, env)
    first = run(["dvc", "repro"], a, env)
    run(["git", "add", "-A"], a, env)
    run(["git", "commit", "-qm", "baseline with its remote"], a, env)
    run(["git", "remote", "add", "origin", str(origin)], a, env)
    run(["git", "push", "-q", "origin", "HEAD:main"], a, env)
    run(["dvc", "push"], a, env)

    b = clone(origin, work / "clone-b", env)
    started = time.monotonic()
    pulled = run(["dvc", "pull"], b, env)
    status = run(["dvc", "status"], b, env)
    photo = work / "photo.jpg"
    shutil.copy(next((work / "tree/BCCD/JPEGImages").glob("*.jpg")), photo)
    predicted = subprocess.run(["wbc", "predict", str(photo)], cwd=b, env=env, capture_output=True, text=True)
    pull_to_predict_s = time.monotonic() - started

    for name in ("queued-a", "queued-b"):
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"train.dropout={EXPERIMENTS[name]}"], a, env)
    in_b = subprocess.Popen(
        ["dvc", "exp", "run", "-n", "clone-b", "-S", f"train.dropout={EXPERIMENTS['clone-b']}"],
        cwd=b, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    queue = run(["dvc", "exp", "run", "--run-all", "-j", "2"], a, env)
    b_out = in_b.communicate(timeout=900)[0]
    assert in_b.returncode == 0, b_out[-3000:]
    run(["dvc", "exp", "push", "origin", "queued-a", "queued-b"], a, env)
    run(["dvc", "exp", "push", "origin", "clone-b"], b, env)
    return {
        "work": work, "a": a, "b": b, "env": env, "origin": origin, "first": first, "pulled": pulled,
        "status": status, "predicted": predicted, "pull_to_predict_s": pull_to_predict_s,
        "queue": queue, "b_out": b_out,
    }  # fmt: skip


def test_a_fresh_clone_pulls_data_and_model_and_predicts_without_training(team):
    assert "Running stage" in team["first"]
    assert "Data and pipelines are up to date" in team["status"], team["status"]
    for out in ("models/model.keras", "data/resized/test.npz", "data/raw"):
        assert (team["b"] / out).exists(), out
    done = team["predicted"]
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["differential"]["cells"] >= 1
    print(f"fresh clone: dvc pull + dvc status + wbc predict in {team['pull_to_predict_s']:.1f} s")


def test_concurrent_writers_lose_nothing_on_the_postgres_server(team, server):
    """Two queued experiments and a second clone's, at once: every run FINISHED with its params,
    metrics and artifacts, and a model version for each model."""
    c = client(server)
    exp, data = c.get_experiment_by_name("team"), c.get_experiment_by_name("team-data")
    runs = c.search_runs([exp.experiment_id, data.experiment_id], max_results=1000)
    assert runs and all(r.info.status == "FINISHED" for r in runs), [
        (r.info.run_name, r.info.status) for r in runs if r.info.status != "FINISHED"
    ]
    models = [r for r in runs if r.data.tags.get("stages") == "train,evaluate"]
    dropouts = sorted(r.data.params["train.dropout"] for r in models)
    assert dropouts == sorted(["0.5", *EXPERIMENTS.values()])  # the baseline and three experiments
    for r in models:
        assert {"test.accuracy", "train_seconds", "epochs_run"} <= set(r.data.metrics), sorted(r.data.metrics)
        history = c.get_metric_history(r.info.run_id, "epoch.loss")
        assert len(history) == int(r.data.metrics["epochs_run"]), r.info.run_name
        files = {f.path for f in c.list_artifacts(r.info.run_id)}
        assert {"train.json", "evaluate.json", "dvc.lock"} <= files, files
    versions = c.search_model_versions("name = 'wbc-classifier'")
    assert sorted(v.run_id for v in versions) == sorted(r.info.run_id for r in models)
    # they really were concurrent: the experiments' model runs overlapped in time
    spans = [(r.info.start_time, r.info.end_time) for r in models if r.data.params["train.dropout"] != "0.5"]
    overlap = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert overlap >= 2, spans
    print(f"{len(runs)} runs on the server, all FINISHED; at most {overlap} model runs open at once")
    names = {r.info.run_name for r in models}
    assert {f"{n}: depthwise/type" for n in EXPERIMENTS} <= names, names


def test_a_third_clone_pulls_both_machines_experiments_and_restores_one(team, tmp_path):
    env = team["env"]
    c = clone(team["origin"], tmp_path / "clone-c", env)
    run(["dvc", "exp", "pull", "origin", *EXPERIMENTS], c, env)
    done = subprocess.run(["dvc", "exp", "show", "--json"], cwd=c, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    found = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for revision in exp["revs"]:
                data = revision["data"]
                metrics = data["metrics"]["metrics/evaluate.json"]["data"]
                found[revision["name"]] = (data["params"]["params.yaml"]["data"]["train"]["dropout"], metrics)
    assert set(EXPERIMENTS) <= set(found), sorted(found)
    for name, dropout in EXPERIMENTS.items():
        assert str(found[name][0]) == dropout and 0 <= found[name][1]["test"]["accuracy"] <= 1
    run(["dvc", "exp", "apply", "clone-b"], c, env)
    run(["dvc", "pull"], c, env)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], c, env)
    made_in_b = (team["b"] / "models/model.keras").read_bytes()
    assert (c / "models/model.keras").read_bytes() == made_in_b  # B's model, through the remote
    assert yaml.safe_load((c / "params.yaml").read_text())["train"]["dropout"] == 0.1


def test_four_writers_at_once_lose_nothing(server):
    from scripts.tracking_load import load

    figures = load(server.uri, writers=4, runs=3, steps=5)
    assert figures["runs"] == 12 and figures["metric_points_read"] == figures["metric_points_written"] == 240
    assert set(figures["lost"].values()) == {0}, figures


STAGE = """
import sys, time
from pathlib import Path
from pipeline.stage import run_stage

def body(params):
    Path(sys.argv[1]).touch()  # the run exists on the server now
    while not Path(sys.argv[2]).exists():
        time.sleep(0.1)
    return {"answer": 42}

run_stage(sys.argv[3], body)
"""


def test_a_server_stopped_mid_stage_fails_it_clearly_and_leaves_no_run_running(server, tmp_path):
    """The stage's logging fails: one `error:` line naming the server, in seconds; when the server is
    back, the next stage marks the dead stage's run KILLED."""
    root = tmp_path / "repo"
    root.mkdir()
    copy_repo(root)
    (root / "halt.py").write_text(STAGE)
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri, "MLFLOW_EXPERIMENT_NAME": "halted"}
    started, go = tmp_path / "started", tmp_path / "go"
    stage = subprocess.Popen(
        [sys.executable, "halt.py", str(started), str(go), "localize"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not started.exists():
        assert stage.poll() is None and time.monotonic() < deadline, stage.communicate()
        time.sleep(0.2)
    pids = dict(line.split(" ", 1) for line in (server.folder / "pids").read_text().splitlines())
    stop_pid(int(pids["mlflow"]))
    go.touch()
    t0 = time.monotonic()
    _, err = stage.communicate(timeout=300)
    failed_in = time.monotonic() - t0
    new_pid = start_mlflow(server.folder, server.database, "127.0.0.1", int(server.uri.rsplit(":", 1)[1]), 2)
    pids["mlflow"] = str(new_pid)
    (server.folder / "pids").write_text("".join(f"{k} {v}\n" for k, v in pids.items()))
    assert stage.returncode == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert server.uri in line and "localize" in line, line
    assert failed_in < 60, f"took {failed_in:.0f} s to give up"
    print(f"server stopped: the stage gave up after {failed_in:.1f} s with: {line}")

    go.unlink()
    again = subprocess.Popen(
        [sys.executable, "halt.py", str(started), str(go), "localize"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    go.touch()
    assert again.wait(timeout=300) == 0, again.communicate()[1][-3000:]
    c = client(server)
    runs = c.search_runs([c.get_experiment_by_name("halted-data").experiment_id])  # a data stage's run
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
