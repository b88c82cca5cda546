"""`wbc compare`: the paired difference of two models on the same cells, on constructed cases with a
known answer."""

import subprocess

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.core.errors import PipelineError
from pipeline.evaluation.compare import cell_agreement, compare, read_predictions


def predictions(n: int, wrong: set[int], cells_per_source: int = 1) -> pd.DataFrame:
    """n cells, all neutrophils, called eosinophil where listed in `wrong`."""
    return pd.DataFrame({
        "sample_id": [f"s{i}" for i in range(n)],
        "source_image": [f"photo{i // cells_per_source}.jpg" for i in range(n)],
        "actual": ["neutrophil"] * n,
        "predicted": ["eosinophil" if i in wrong else "neutrophil" for i in range(n)],
    })  # fmt: skip


def test_the_same_predictions_are_no_difference():
    a = predictions(69, {1, 2, 3})
    result = compare(a, a.copy())
    assert result.difference == 0 and result.p_value == 1.0 and result.interval == (0.0, 0.0)
    assert result.verdict.startswith("no detectable difference")


def test_fixing_twenty_of_a_hundred_cells_is_real_and_two_of_sixty_nine_is_noise():
    a = predictions(100, set(range(30)))
    b = predictions(100, set(range(20, 30)))  # B gets 20 of A's errors right, breaks none
    result = compare(a, b)
    assert result.only_b_right == 20 and result.only_a_right == 0
    assert result.difference == pytest.approx(0.20) and result.p_value == pytest.approx(2 * 0.5**20)
    assert 0 < result.interval[0] < 0.20 < result.interval[1]
    assert result.verdict.startswith("B is better: +20.0 points")
    noise = compare(predictions(69, {1, 2, 3}), predictions(69, {3}))  # two cells: 2.9 points
    assert noise.p_value == pytest.approx(0.5) and noise.interval[0] <= 0
    assert noise.verdict.startswith("no detectable difference: +2.9 points")
    assert compare(b, a).verdict.startswith("A is better")


def test_the_interval_resamples_source_photos_not_cells():
    """Ten cells per photo, and B right where A is wrong on one whole photo: cell-level resampling
    would be far too sure; by photo, one photo's worth of cells is as wide as the interval gets."""
    a = predictions(100, set(range(10)), cells_per_source=10)
    b = predictions(100, set(), cells_per_source=10)
    result = compare(a, b, resamples=4000)
    assert result.sources == 10 and result.difference == pytest.approx(0.10)
    assert result.interval[0] == 0.0  # a resample without that photo shows no difference


def test_predictions_of_other_cells_are_refused(tmp_path):
    with pytest.raises(PipelineError, match="not on the same cells"):
        compare(predictions(10, set()), predictions(11, set()))
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(PipelineError, match=r"x\.csv: no column sample_id"):
        read_predictions(str(tmp_path / "x.csv"))
    with pytest.raises(PipelineError, match="no file, git revision or DVC experiment"):
        read_predictions("no-such-experiment", repo=tmp_path)


def test_the_command_reads_git_revisions_and_files(tmp_path, capsys, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "plots").mkdir(parents=True)
    git = lambda *args: subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    predictions(100, set(range(30))).to_csv(repo / "plots/predictions.csv", index=False)
    git("add", "-A")
    git("commit", "-qm", "a")
    better = tmp_path / "b.csv"
    predictions(100, set(range(20, 30))).to_csv(better, index=False)
    monkeypatch.chdir(repo)
    assert main(["compare", "HEAD", str(better), "--resamples", "500"]) == 0
    out = capsys.readouterr().out
    assert "only A right on 0, only B right on 20" in out and "B is better" in out
    assert main(["compare", "HEAD", "nope"]) == 2
    assert "nope: no file, git revision" in capsys.readouterr().err
    assert np.isfinite(compare(read_predictions("HEAD"), read_predictions(str(better))).p_value)


def with_probabilities(table: pd.DataFrame, p_true: float) -> pd.DataFrame:
    """`table` with the probability columns evaluate writes: p_true on the true class."""
    return table.assign(p_neutrophil=p_true, p_eosinophil=1 - p_true)


def test_cell_agreement_counts_the_models_right_on_each_cell():
    runs = [
        with_probabilities(predictions(10, {0, 1}), 0.2),
        with_probabilities(predictions(10, {0}), 0.4),
        with_probabilities(predictions(10, {0, 2}), 0.6).iloc[::-1],  # any row order
    ]
    table = cell_agreement(runs)
    assert list(table["sample_id"][:3]) == ["s0", "s1", "s2"]  # hardest first
    assert list(table["right"][:4]) == [0, 2, 2, 3] and (table["models"] == 3).all()
    assert table.loc[0, "most_predicted"] == "eosinophil" and table.loc[3, "most_predicted"] == "neutrophil"
    assert table.loc[0, "median_p_actual"] == pytest.approx(0.4)
    assert np.isnan(cell_agreement([predictions(3, set())])["median_p_actual"]).all()  # no p_ columns
    with pytest.raises(PipelineError, match="not on the same cells"):
        cell_agreement([predictions(10, set()), predictions(9, set())])
    other = predictions(10, set()).assign(actual="eosinophil")
    with pytest.raises(PipelineError, match="disagree on the true classes"):
        cell_agreement([predictions(10, set()), other])


def test_the_cells_command_reads_experiments_by_name(tmp_path, capsys, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "plots").mkdir(parents=True)
    git = lambda *args: subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    for name, wrong in (("cv-a-f0-s1", {0, 1}), ("cv-a-f1-s1", {0, 2}), ("other", {5})):
        predictions(20, wrong).to_csv(repo / "plots/predictions.csv", index=False)
        git("add", "-A")
        git("commit", "-qm", name)
        git("update-ref", f"refs/exps/ab/cdef/{name}", "HEAD")
    predictions(30, set()).to_csv(repo / "plots/predictions.csv", index=False)  # another split's cells
    git("commit", "-qam", "kfold")
    git("update-ref", "refs/exps/ab/cdef/cv-a-kfold", "HEAD")
    (repo / "plots/predictions.csv").unlink()  # a run that wrote no predictions
    git("commit", "-qam", "failed")
    git("update-ref", "refs/exps/ab/cdef/cv-a-failed", "HEAD")
    git("update-ref", "refs/exps/celery/stash", "HEAD")  # the queue's stash is no experiment
    monkeypatch.chdir(repo)
    assert main(["cells", "--experiments", "cv-a-*", "--out", str(tmp_path / "cells.csv")]) == 0
    out, err = capsys.readouterr()
    assert "2 models' predictions on the same 20 cells" in out
    assert "in none: 1 (s0)" in out and "at most 0.950 (19 of 20)" in out
    assert len(pd.read_csv(tmp_path / "cells.csv")) == 20
    assert "cv-a-kfold: predictions on other cells" in err and "cv-a-failed" in err
    assert main(["cells", "HEAD~1", "HEAD"]) == 2  # named, each must be readable
    assert "HEAD: no file, git revision" in capsys.readouterr().err
    assert main(["cells", "--experiments", "no-such-*"]) == 2
    assert "no predictions" in capsys.readouterr().err
