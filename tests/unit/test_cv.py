"""The cross-validation study's bookkeeping: queued commands, rows read back from `dvc exp show
--json`, mean ± sd per setting, paired comparisons with known answers."""

import math

import pandas as pd
import pytest

from pipeline.core.errors import PipelineError
from pipeline.evaluation import cv


def test_queue_commands_vary_fold_and_seed_and_keep_the_overrides():
    commands = cv.queue_commands("drop04", ["train.dropout=0.4"], folds=3, seeds=[1, 2])
    assert len(commands) == 6
    names = [c[c.index("-n") + 1] for c in commands]
    assert names[0] == "cv-drop04-f0-s1" and names[-1] == "cv-drop04-f2-s2"
    first = commands[0]
    sets = [first[i + 1] for i, a in enumerate(first) if a == "-S"]
    assert sets == ["split.val_folds=3", "split.val_fold=0", "split.seed=1", "augment.seed=1",
                    "train.seed=1", "evaluate.external=[]", "evaluate.calibrate=false",
                    "train.dropout=0.4"]  # fmt: skip
    scored = cv.queue_commands("drop04", [], folds=2, seeds=[1], external=["pbc"])[0]
    assert "evaluate.external=[pbc]" in scored and "evaluate.calibrate=false" in scored
    with pytest.raises(PipelineError, match="setting name"):
        cv.queue_commands("Bad Name", [], 3, [1])
    with pytest.raises(PipelineError, match="at least 2"):
        cv.queue_commands("ok", [], 1, [1])


def exp_show(runs: dict[str, tuple[float, float]]) -> list[dict]:
    """`dvc exp show --json` in its shape: a baseline and one experiment per run name."""

    def data(name: str, dropout: float, acc: float, f1: float | None) -> dict:
        metrics = {"val": {"accuracy": acc, "macro_f1": f1, "balanced_accuracy": acc},
                   "test": {"accuracy": 0.9, "macro_f1": 0.8}} if f1 is not None else {}  # fmt: skip
        return {
            "rev": name[:7],
            "params": {
                "params.yaml": {"data": {"train": {"dropout": dropout, "seed": 1}, "split": {"val_fold": 0}}}
            },
            "metrics": {"metrics/evaluate.json": {"data": metrics}} if metrics else {},
        }

    experiments = []
    for name, (acc, f1) in runs.items():
        dropout = 0.4 if "drop" in name else 0.5
        experiments.append({"revs": [{"name": name, "data": data(name, dropout, acc, f1)}]})
    # a running run shows the workspace's metrics, and a failed one its baseline's: neither counts
    running = data("cv-base-f9-s1", 0.5, 0.1, 0.1) | {"rev": "workspace"}
    experiments.append(
        {"executor": {"state": "running"}, "revs": [{"name": "cv-base-f9-s1", "data": running}]}
    )
    failed = data("cv-base-f8-s1", 0.5, 0.1, 0.1)
    experiments.append({"executor": {"state": "failed"}, "revs": [{"name": "cv-base-f8-s1", "data": failed}]})
    experiments.append({"revs": [{"name": "not-a-study-run", "data": data("x", 0.5, 1.0, 1.0)}]})
    return [
        {"rev": "workspace", "data": data("base", 0.5, 0, 0), "experiments": None},
        {"rev": "abc1234", "data": data("base", 0.5, 0, 0), "experiments": experiments},
    ]


def test_rows_summary_and_paired_verdicts():
    runs = {f"cv-base-f{f}-s{s}": (0.80 + 0.01 * f, 0.70) for f in range(3) for s in (1, 2)}
    runs |= {f"cv-drop-f{f}-s{s}": (0.85 + 0.01 * f + 0.001 * s, 0.70) for f in range(3) for s in (1, 2)}
    runs["cv-drop-f0-s3"] = (0.5, None)  # still queued: no metrics yet, left out
    rows = cv.study_rows(exp_show(runs))
    assert len(rows) == 12 and set(rows["setting"]) == {"base", "drop"}
    assert set(rows.loc[rows["setting"] == "drop", "changes"]) == {"train.dropout=0.4"}
    assert set(rows.loc[rows["setting"] == "base", "changes"]) == {"(baseline)"}
    summary = cv.summarize(rows).set_index("setting")
    assert summary.loc["base", "val.accuracy.mean"] == pytest.approx(0.81)
    assert summary.loc["base", "val.accuracy.sd"] == pytest.approx(
        pd.Series([0.8, 0.8, 0.81, 0.81, 0.82, 0.82]).std()
    )
    assert summary.loc["drop", "runs"] == 6 and summary.loc["drop", "folds"] == 3
    better = cv.paired(rows, "base", "drop", "val.accuracy")
    assert better["pairs"] == 6 and better["difference"] == pytest.approx(0.0515)
    assert better["interval"][0] > 0 and better["verdict"].startswith("drop is better")
    same = cv.paired(rows, "base", "drop", "val.macro_f1")  # identical scores: no difference
    assert same["difference"] == 0 and same["verdict"].startswith("no detectable difference")
    text = cv.markdown(cv.summarize(rows), [better, same])
    assert "| drop | train.dropout=0.4 | 6 (3 x 2) | 0.861 ± 0.009 |" in text and "drop is better" in text


def test_a_report_can_hold_only_the_settings_of_one_study():
    runs = {f"cv-{name}-f{f}-s1": (0.8, 0.7) for name in ("base", "new_base", "new_drop") for f in range(3)}
    rows = cv.study_rows(exp_show(runs))
    assert set(cv.only(rows, ["new_base", "new_drop"])["setting"]) == {"new_base", "new_drop"}
    assert len(cv.only(rows, [])) == 9
    with pytest.raises(PipelineError, match="no finished runs of setting"):
        cv.only(rows, ["new_base", "nothing"])


def test_noise_is_not_called_a_difference():
    # B is better on some folds and worse on others: the interval spans 0
    runs = {f"cv-a-f{f}-s1": (0.80, 0.7) for f in range(4)}
    runs |= {f"cv-b-f{f}-s1": (0.80 + d, 0.7) for f, d in enumerate([0.03, -0.02, 0.02, -0.03])}
    result = cv.paired(cv.study_rows(exp_show(runs)), "a", "b", "val.accuracy")
    assert result["interval"][0] < 0 < result["interval"][1]
    assert result["verdict"].startswith("no detectable difference")
    lone = cv.paired(cv.study_rows(exp_show({"cv-a-f0-s1": (0.8, 0.7), "cv-b-f0-s1": (0.9, 0.7)})),
                     "a", "b", "val.accuracy")  # fmt: skip
    assert lone["pairs"] == 1 and math.isnan(lone["difference"]) and lone["verdict"] == "too few paired runs"


def test_an_ensemble_settings_first_k_members_become_sizes_compared_on_the_same_runs():
    shown = exp_show({f"cv-ens-f{f}-s1": (0.8, 0.8) for f in range(3)})
    for i, exp in enumerate(shown[1]["experiments"][:3]):
        data = exp["revs"][0]["data"]["metrics"]["metrics/evaluate.json"]["data"]
        # each added member helps by 4 and 6 points on val; test is shown, never chosen on
        data["members"] = {
            str(k): {"val_accuracy": 0.80 + 0.04 * (k - 1) + 0.01 * i,
                     "val_macro_f1": 0.70 + 0.06 * (k - 1) + 0.01 * i,
                     "test_accuracy": 0.9, "test_macro_f1": 0.85}
            for k in (1, 2, 3)
        }  # fmt: skip
        # PBC through the localiser: the run's own score is all 3; averaging lifts it by 5 points
        data["external"] = {"pbc": {"localiser": {
            "accuracy": 0.85, "macro_f1": 0.8,
            "members": {str(k): {"accuracy": 0.75 + 0.05 * (k - 1) + 0.02 * i, "macro_f1": 0.8}
                        for k in (1, 2, 3)},
        }}}  # fmt: skip
    rows = cv.study_rows(shown)
    assert "members.3.val_accuracy" in rows.columns
    assert "external.pbc.localiser.members.2.accuracy" in rows.columns
    curve = cv.members_rows(rows)
    assert sorted(curve["setting"].unique()) == ["ens first 1", "ens first 2", "ens first 3"]
    assert len(curve) == 9 and set(curve["fold"]) == {0, 1, 2}
    sizes = cv.summarize(curve).set_index("setting")
    assert sizes.loc["ens first 3", "val.accuracy.mean"] == pytest.approx(0.89)
    assert sizes.loc["ens first 1", "val.macro_f1.mean"] == pytest.approx(0.71)
    assert sizes.loc["ens first 2", "external.pbc.localiser.accuracy.mean"] == pytest.approx(0.82)
    text = cv.ensemble_section(curve)
    assert "ens first 3 is better on external.pbc.localiser.accuracy: +10.0 points" in text
    assert "no detectable difference on external.pbc.localiser.macro_f1: +0.0 points" in text
    assert "| ens first 2 |" in text
    assert "ens first 3 is better on val.accuracy: +8.0 points" in text
    assert "ens first 3 is better on val.macro_f1: +12.0 points" in text
    assert cv.ensemble_section(cv.members_rows(cv.study_rows(exp_show({"cv-base-f0-s1": (0.8, 0.8)})))) == ""


def test_changes_are_named_against_the_baseline_settings_runs_across_commits():
    """A setting queued on a later commit whose default moved (dropout 0.4 there) is described by
    what differs from the baseline setting's runs, not from its own commit's defaults."""
    earlier = exp_show({f"cv-base-f{f}-s1": (0.8, 0.7) for f in range(2)})
    later = exp_show({f"cv-new-f{f}-s1": (0.8, 0.7) for f in range(2)})
    for exp in later[1]["experiments"]:
        for rev in exp["revs"]:
            rev["data"]["params"]["params.yaml"]["data"]["train"] |= {"dropout": 0.4, "members": 1, "new": 5}
    # the commit's defaults: dropout moved; `members` (2) and `new` (5) added since the baseline ran,
    # and the runs set members back to 1 (said) but left `new` alone (not said)
    later[1]["data"]["params"]["params.yaml"]["data"]["train"] |= {"dropout": 0.4, "members": 2, "new": 5}
    later[1]["rev"] = "def5678"
    shown = [*earlier, later[1]]
    by_commit = cv.study_rows(shown).set_index("experiment")["changes"]
    assert by_commit["cv-new-f0-s1"] == "train.members=1"  # against its commit: the move is unsaid
    by_setting = cv.study_rows(shown, "base").set_index("experiment")["changes"]
    assert by_setting["cv-new-f0-s1"] == "train.dropout=0.4, train.members=1"
    assert by_setting["cv-base-f1-s1"] == "(baseline)"
    assert cv.study_rows(shown, "absent").equals(cv.study_rows(shown))


def test_external_flag_names_sets_or_all():
    from pipeline.cli import external_sets

    assert external_sets(None) == []  # not given: none (a study chooses on val)
    assert external_sets([]) == ["published", "pbc"]  # `--external` alone: every set
    assert external_sets(["pbc"]) == ["pbc"]
    assert external_sets(["pbc", "published"]) == ["published", "pbc"]


def test_external_sets_in_params_are_checked():
    from pydantic import ValidationError

    from pipeline.core.params import EvaluateParams

    good = {"bootstrap_resamples": 10, "confidence": 0.95, "seed": 1, "gallery_size": 0, "tta": False,
            "calibrate": False}  # fmt: skip
    assert EvaluateParams(**good, external=["pbc"]).external == ["pbc"]
    for bad in (["pbc", "pbc"], ["kaggle"], True):
        with pytest.raises(ValidationError):
            EvaluateParams(**good, external=bad)


def test_pbc_is_compared_only_where_runs_scored_it():
    runs = {f"cv-{s}-f{f}-s1": (0.8, 0.7) for s in ("base", "drop") for f in range(3)}
    rows = cv.study_rows(exp_show(runs))
    assert cv.compared_on(rows) == list(cv.SELECT_ON)  # no run scored PBC
    assert "external.pbc" not in cv.markdown(cv.summarize(rows), [])
    pbc = cv.PBC[0]
    rows[pbc] = [0.70, 0.72, 0.74, 0.80, 0.83, 0.84]  # base f0..f2, then drop f0..f2 (sorted by setting)
    rows.loc[(rows["setting"] == "drop") & (rows["fold"] == 2), pbc] = float("nan")  # one run without it
    assert cv.compared_on(rows) == [*cv.SELECT_ON, pbc]
    diff = cv.paired(rows, "base", "drop", pbc)
    assert diff["pairs"] == 2 and diff["difference"] == pytest.approx(0.105)
    assert "`external.pbc.*` another lab's cells" in cv.markdown(cv.summarize(rows), [diff])


def test_the_plot_shows_pbc_beside_validation_where_runs_scored_it(tmp_path):
    from PIL import Image

    shown = exp_show({f"cv-{s}-f{f}-s1": (0.8 + 0.01 * f, 0.7) for s in ("a", "b") for f in range(2)})
    rows = cv.study_rows(shown)
    cv.plot(rows, tmp_path / "val.png")
    rows["external.pbc.localiser.accuracy"] = [0.80, 0.82, 0.84, 0.86]
    rows["external.pbc.localiser.macro_f1"] = 0.8
    cv.plot(rows, tmp_path / "pbc.png")
    val, pbc = (Image.open(tmp_path / f"{n}.png").size for n in ("val", "pbc"))
    assert pbc[0] == val[0] and pbc[1] == 2 * val[1]  # a second row of two panels


def ensemble_show(setting: str, gain: float) -> list[dict]:
    """Three folds of an ensemble setting whose first k members score 0.80 + gain (k - 1) on val."""
    shown = exp_show({f"cv-{setting}-f{f}-s1": (0.8, 0.8) for f in range(3)})
    for i, exp in enumerate(shown[1]["experiments"][:3]):
        data = exp["revs"][0]["data"]["metrics"]["metrics/evaluate.json"]["data"]
        data["members"] = {str(k): {"val_accuracy": 0.80 + gain * (k - 1) + 0.01 * i, "val_macro_f1": 0.7}
                           for k in (1, 2, 3)}  # fmt: skip
    return shown


def test_a_committed_studys_runs_join_the_experiments_found_and_pair_by_fold_and_seed(tmp_path):
    """A machine without an earlier study's experiments reads its cv_runs.csv: the rows, and the
    ensemble sizes, come back as they were written; an experiment found here wins over its CSV row."""
    old = cv.study_rows(ensemble_show("old", 0.02))
    old.to_csv(tmp_path / "cv_runs.csv", index=False)
    back = cv.committed_rows(tmp_path / "cv_runs.csv")
    pd.testing.assert_frame_equal(back, old, check_dtype=False)
    pd.testing.assert_frame_equal(cv.members_rows(back), cv.members_rows(old), check_dtype=False)
    new = cv.study_rows(ensemble_show("new", 0.05))
    rows = cv.join_runs(new, [back])
    assert sorted(rows["setting"].unique()) == ["new", "old"] and len(rows) == 6
    assert [c for c in rows.columns if cv.curve_match(c)] == [f"members.{k}.val_{m}" for k in (1, 2, 3)
                                                              for m in ("accuracy", "macro_f1")]  # fmt: skip
    stale = back.assign(**{"val.accuracy": 0.1})  # the same runs, an older CSV: the experiments win
    again = cv.join_runs(old, [stale])
    assert len(again) == 3 and again["val.accuracy"].min() > 0.5
    # new's 3 members vs old's 2: +0.10 - 0.02 on every fold, so detectable
    text = cv.pairs_section(rows, cv.members_rows(rows), [("old first 2", "new first 3")])
    assert "- new first 3 vs old first 2: new first 3 is better on val.accuracy: +8.0 points" in text
    assert "no detectable difference on val.macro_f1: +0.0 points" in text
    assert cv.pairs_section(rows, cv.members_rows(rows), []) == ""
    with pytest.raises(PipelineError, match=r"--pair 'old first 4': no such setting or size \(found: new,"):
        cv.pairs_section(rows, cv.members_rows(rows), [("old", "old first 4")])


def test_a_file_that_is_not_a_studys_runs_is_refused_by_name(tmp_path):
    missing = tmp_path / "gone.csv"
    with pytest.raises(PipelineError, match=r"gone\.csv: not a study's cv_runs.csv"):
        cv.committed_rows(missing)
    other = tmp_path / "other.csv"
    other.write_text("setting,fold,seed\nbase,0,1\n")
    with pytest.raises(PipelineError, match=r"other.csv: no column experiment, changes, val.accuracy"):
        cv.committed_rows(other)
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(
        "setting,fold,seed,experiment,changes,val.accuracy,val.macro_f1\nbase,0,1,my-run,x,0.8,0.7\n"
    )
    with pytest.raises(PipelineError, match=r"renamed\.csv: 'my-run' is not a cv-<setting>"):
        cv.committed_rows(renamed)
