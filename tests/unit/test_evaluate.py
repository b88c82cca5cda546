import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from pipeline.evaluation.metrics import (
    bootstrap_intervals,
    classification_report,
    headline_metrics,
    to_nucleus,
)

CLASSES = ["neutrophil", "eosinophil", "lymphocyte", "monocyte"]
TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 3])
PRED = np.array([0, 0, 1, 1, 1, 2, 0, 3])


def test_metrics_match_hand_computed_values():
    r = classification_report(TRUE, PRED, CLASSES)
    assert r["accuracy"] == pytest.approx(6 / 8)
    # recalls 2/3, 1, 1/2, 1
    assert r["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 1 / 2 + 1) / 4)
    # F1s 2/3, 0.8, 2/3, 1
    assert r["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 2 / 3 + 1) / 4)
    assert r["per_class"]["eosinophil"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    )
    assert r["per_class"]["lymphocyte"]["precision"] == 1.0
    assert r["confusion"] == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]]


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn warns of absent classes
@pytest.mark.parametrize("seed", range(50))
def test_headline_metrics_equal_sklearns_to_the_last_bit(seed):
    """The bootstrap's numpy metrics against sklearn's, with absent classes and cells not found (4)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    truth = rng.choice(rng.permutation(4)[: rng.integers(1, 5)], n)
    pred = np.where(rng.random(n) < 0.6, truth, rng.integers(0, 5, n))
    ours = headline_metrics(4)
    assert ours["accuracy"](truth, pred) == accuracy_score(truth, pred)
    assert ours["macro_f1"](truth, pred) == f1_score(
        truth, pred, labels=range(4), average="macro", zero_division=0
    )
    assert ours["balanced_accuracy"](truth, pred) == balanced_accuracy_score(truth, pred)


def test_nucleus_groups_from_cell_types():
    assert to_nucleus(TRUE, CLASSES).tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert np.mean(to_nucleus(TRUE, CLASSES) == to_nucleus(PRED, CLASSES)) == 7 / 8


def test_absent_class_scores_zero_not_a_crash():
    r = classification_report(np.array([0, 0]), np.array([0, 1]), CLASSES)
    assert r["per_class"]["monocyte"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def ci(truth, pred, groups, resamples=500):
    metrics = {"accuracy": headline_metrics(4)["accuracy"]}
    return bootstrap_intervals(truth, pred, groups, metrics, resamples=resamples, confidence=0.95, seed=0)[
        "accuracy"
    ]


def test_perfect_predictions_have_a_degenerate_interval():
    y = np.arange(20) % 4
    assert ci(y, y, np.arange(20)) == [1.0, 1.0]


def test_intervals_resample_source_images_not_crops():
    # 10 sources x 10 crops; whole sources are right or wrong together
    groups = np.repeat(np.arange(10), 10)
    truth = np.zeros(100, int)
    pred = np.where(groups < 5, 0, 1)
    by_source = ci(truth, pred, groups)
    by_crop = ci(truth, pred, np.arange(100))
    assert by_source[0] <= 0.5 <= by_source[1]
    assert (by_source[1] - by_source[0]) > 2 * (by_crop[1] - by_crop[0])


def test_intervals_are_seeded_and_none_when_off():
    y, p, g = TRUE, PRED, np.arange(8)
    assert ci(y, p, g) == ci(y, p, g)
    assert bootstrap_intervals(y, p, g, {}, resamples=0, confidence=0.9, seed=0) == {}


def test_each_domain_is_scored_apart_and_the_summary_names_them_only_when_there_are_several():
    from pipeline.core.params import load_params
    from pipeline.evaluation.report import domain_reports, headline
    from tests.helpers import REPO

    p = load_params(REPO / "params.yaml").evaluate.model_copy(update={"bootstrap_resamples": 50})
    truth = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    guess = np.array([0, 1, 2, 3, 0, 1, 2, 3, 3, 3])  # right on every bccd cell, 2 of 4 lab cells
    arrays = {"y": truth, "nucleus": np.array([NUCLEUS_INDEX[c] for c in truth]),
              "source_image": np.array([f"s{i}" for i in range(10)]), "classes": np.array(CLASSES),
              "domain": np.array(["bccd"] * 6 + ["lab"] * 4)}  # fmt: skip
    probs = {"type": np.eye(4)[guess]}
    found = domain_reports(arrays, probs, p)
    assert found["bccd"]["accuracy"] == 1.0 and found["bccd"]["n_images"] == 6
    assert found["lab"]["accuracy"] == 0.5 and found["lab"]["n_images"] == 4
    assert len(found["lab"]["accuracy_ci"]) == 2 and "confusion" not in found["lab"]
    report = {s: {"accuracy": 0.8, "macro_f1": 0.7} for s in ("test", "val")}
    assert "lab_test_accuracy" in headline(report | {"domains": found})
    assert not any(k.startswith("bccd_") for k in headline(report | {"domains": {"bccd": found["bccd"]}}))


NUCLEUS_INDEX = {0: 0, 1: 0, 2: 1, 3: 1}  # neutrophil, eosinophil: poly; lymphocyte, monocyte: mono
