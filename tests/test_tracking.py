from pathlib import Path

from pipeline.tracking import flatten, repo_root, tracking_uri


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
