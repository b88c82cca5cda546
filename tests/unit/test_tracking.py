import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.core.errors import PipelineError
from pipeline.tracking.provenance import locked_md5, params_hash
from pipeline.tracking.runs import end_orphans, flatten, log_report, stage_run
from pipeline.tracking.store import check_reachable, ensure_experiment, repo_root, tracking_uri
from tests.helpers import REPO, free_port, local_server


def test_repo_root_escapes_a_queued_experiment_copy(tmp_path):
    inside = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpab12cd" / "data"
    inside.mkdir(parents=True)
    assert repo_root(inside) == tmp_path / "repo"
    assert repo_root(tmp_path) == tmp_path


def test_default_store_is_sqlite_at_an_absolute_path(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    uri = tracking_uri()
    assert uri.startswith("sqlite:////") and Path(uri.removeprefix("sqlite:///")).is_absolute()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"


def test_flatten_nested_params():
    assert flatten({"train": {"lr": 0.1, "es": {"on": True}}, "x": 1}) == {
        "train.lr": 0.1, "train.es.on": True, "x": 1,
    }  # fmt: skip


@pytest.fixture
def silent_server():
    """A socket that accepts connections and never answers: a hung tracking server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def test_unreachable_server_fails_fast_naming_the_uri(monkeypatch):
    monkeypatch.delenv("WBC_MLFLOW_FALLBACK", raising=False)
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(PipelineError, match=rf"MLflow tracking server {uri} is unreachable"):
        check_reachable(uri)
    assert time.monotonic() - start < 5


def test_hung_server_times_out_then_falls_back_when_asked(monkeypatch, tmp_path, silent_server):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match="WBC_MLFLOW_FALLBACK=local"):
        check_reachable(silent_server, timeout_s=0.5)
    monkeypatch.setenv("WBC_MLFLOW_FALLBACK", "local")
    assert check_reachable(silent_server, timeout_s=0.5) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


def test_a_stage_against_a_dead_server_exits_with_the_uri_and_writes_nothing(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "MLFLOW_TRACKING_URI": uri,
        "WBC_MIRRORS": str(tmp_path),
    }
    cmd = [sys.executable, "-m", "stages.fetch"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"error: MLflow tracking server {uri} is unreachable" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_stages_log_to_a_real_tracking_server(tmp_path, monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}"
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", uri.rsplit(":", 1)[1],
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--default-artifact-root", (tmp_path / "artifacts").as_uri(), "--workers", "1",
    ]  # fmt: skip
    with local_server(cmd, f"{uri}/health", timeout_s=90):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.chdir(tmp_path)
        with stage_run("crop", {"crop": {"padding": 4}}, {"crop": {"padding": 4}}) as run:
            log_report({"crops": 3}, "crop.json")
        import mlflow

        logged = mlflow.MlflowClient(uri).get_run(run.info.run_id)
        assert logged.data.params == {"crop.padding": "4"} and logged.data.metrics == {"crops": 3.0}
        assert logged.data.tags["stage"] == "crop" and logged.data.tags["params.sha256"]


def test_experiment_creation_tolerates_a_concurrent_creator(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    real_get = client.get_experiment_by_name
    calls = []

    def racing_get(self, name):  # the first lookup misses; someone else creates it meanwhile
        calls.append(name)
        if len(calls) == 1:
            real_get(name) or client.create_experiment(name)
            return None
        return real_get(name)

    monkeypatch.setattr(mlflow.MlflowClient, "get_experiment_by_name", racing_get)
    assert ensure_experiment("raced") == real_get("raced").experiment_id


def test_runs_of_dead_stage_processes_on_this_machine_are_marked_killed(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    experiment = ensure_experiment("orphans")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = socket.gethostname()
    runs = {
        name: client.create_run(experiment, tags={"run.host": host, "run.pid": str(pid)}).info.run_id
        for name, host, pid in (("dead", here, dead.pid), ("alive", here, os.getpid()),
                                ("elsewhere", f"not-{here}", dead.pid))
    }  # fmt: skip
    assert end_orphans(experiment) == [runs["dead"]]
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert status == {"dead": "KILLED", "alive": "RUNNING", "elsewhere": "RUNNING"}


def test_locked_md5_and_params_hash(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text("stages:\n  resize:\n    outs:\n    - path: data/resized\n      md5: abc.dir\n")
    assert locked_md5("data/resized", lock) == "abc.dir"
    assert locked_md5("data/other", lock) is None
    assert locked_md5("data/resized", tmp_path / "missing.lock") is None
    assert params_hash({"a": 1, "b": {"c": 2}}) == params_hash({"b": {"c": 2}, "a": 1})
    assert params_hash({"a": 1}) != params_hash({"a": 2})


def test_the_experiment_opens_on_model_training_runs_in_the_ui(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    experiment = client.get_experiment(ensure_experiment("kinds"))
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    older = client.create_experiment("made-before")  # a store from before the tag: marked on next use
    assert ensure_experiment("made-before") == older
    assert client.get_experiment(older).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_study_nests_its_finished_model_runs_only(tmp_path, monkeypatch):
    import mlflow

    from pipeline.tracking.studies import PARENT_TAG, log_setting

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    experiment = ensure_experiment("wbc-pipeline")
    summary = {"setting": "s", "changes": "-S train.epochs=10", "runs": 1, "folds": 1, "seeds": 1,
               "val.accuracy.mean": 0.9, "val.accuracy.sd": 0.0}  # fmt: skip
    runs = {}
    for name, stages, status in (("finished", "train,evaluate", "FINISHED"), ("killed", "train", "KILLED"),
                                 ("data", "crop", "FINISHED")):  # fmt: skip
        runs[name] = client.create_run(experiment, tags={"dvc.exp_name": "e1", "stages": stages}).info.run_id
        client.set_terminated(runs[name], status)
    first = log_setting(summary, ["e1"])
    client.set_tag(runs["killed"], PARENT_TAG, first)  # as a report before the fix nested it
    client.set_tag(runs["killed"], "cv.setting", "s")
    assert log_setting(summary, ["e1"]) == first  # a re-run of the report updates the same parent
    nested = {n for n, r in runs.items() if client.get_run(r).data.tags.get(PARENT_TAG) == first}
    assert nested == {"finished"}
    assert "cv.setting" not in client.get_run(runs["killed"]).data.tags
    assert client.get_run(runs["finished"]).data.tags["cv.setting"] == "s"
