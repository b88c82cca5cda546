import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import PipelineError
from pipeline.data.split import assign_splits, check_disjoint, duplicate_groups, split_report

CLASSES = ["neutrophil", "eosinophil", "lymphocyte", "monocyte"]


def crop_table(n_sources: int = 60, seed: int = 0) -> pd.DataFrame:
    """Crops of `n_sources` images (every 7th has two cells), classes cycling, unique groups."""
    rows = []
    for s in range(n_sources):
        for cell in range(2 if s % 7 == 0 else 1):
            rows.append(
                {"crop_id": f"img{s:03d}_{cell}", "source_image": f"img{s:03d}.jpg", "label": CLASSES[s % 4]}
            )
    table = pd.DataFrame(rows)
    rng = np.random.default_rng(seed)
    hashes = {c: rng.random(64) < 0.5 for c in table["crop_id"]}
    table["group"] = duplicate_groups(list(table["crop_id"]), list(table["source_image"]), hashes, 5)
    return table


def test_groups_join_same_source_and_near_duplicate_hashes():
    base = np.zeros(64, bool)
    near = base.copy()
    near[:3] = True
    far = ~base
    hashes = {"a_0": base, "a_1": far, "b_0": near, "c_0": far.copy()}
    groups = duplicate_groups(["a_0", "a_1", "b_0", "c_0"], ["a", "a", "b", "c"], hashes, max_distance=3)
    # a_0 ~ b_0 by hash, a_0 ~ a_1 by source, a_1 ~ c_0 by hash: one group
    assert len(set(groups)) == 1
    groups = duplicate_groups(["a_0", "b_0", "c_0"], ["a", "b", "c"], hashes, max_distance=2)
    assert groups[0] != groups[1] != groups[2]


def splits(table: pd.DataFrame, strategy: str, **kw) -> pd.DataFrame:
    options = dict(seed=1, val_fraction=0.2, test_fraction=0.25, k=4, fold=0)
    options.update(kw)
    return assign_splits(table, strategy=strategy, **options)


@pytest.mark.parametrize("strategy", ["kaggle", "stratified", "kfold"])
def test_no_source_or_group_in_two_splits(strategy):
    table = crop_table()
    # a near-duplicate across two source images: img001 and img002 are one cell
    table.loc[table["source_image"] == "img002.jpg", "group"] = table.loc[
        table["source_image"] == "img001.jpg", "group"
    ].iloc[0]
    result = splits(table, strategy, test_sources=["img001.jpg", "img010.jpg"])
    check_disjoint(result)
    sides = result[result["split"] != "dropped"].groupby("group")["split"].nunique()
    assert sides.max() == 1
    assert set(result["split"]) >= {"train", "val", "test"}


def test_kaggle_test_is_exactly_the_listed_sources_and_twins_are_dropped():
    table = crop_table()
    twin = table["source_image"] == "img002.jpg"
    table.loc[twin, "group"] = table.loc[table["source_image"] == "img001.jpg", "group"].iloc[0]
    result = splits(table, "kaggle", test_sources=["img001.jpg", "img007.jpg"])
    test = result[result["split"] == "test"]
    assert set(test["source_image"]) == {"img001.jpg", "img007.jpg"}
    assert len(test) == 3  # img007 holds two cells
    assert list(result.loc[twin, "split"]) == ["dropped"]
    report = split_report(result, ["img001.jpg", "img007.jpg", "img999.jpg"])
    assert report["dropped_near_duplicates_of_test"] == 1
    assert report["test_sources_without_crops"] == 1


def test_stratified_split_is_seeded_and_roughly_sized():
    table = crop_table(80)
    a, b = splits(table, "stratified"), splits(table, "stratified")
    assert a["split"].equals(b["split"])
    assert not a["split"].equals(splits(table, "stratified", seed=2)["split"])
    share = (a["split"] == "test").mean()
    assert 0.15 < share < 0.35
    assert set(a.loc[a["split"] == "test", "label"]) == set(CLASSES)  # stratified


def test_kfold_folds_partition_the_groups():
    table = crop_table(80)
    tested = pd.concat(splits(table, "kfold", fold=f).query("split == 'test'")[["crop_id"]] for f in range(4))
    assert sorted(tested["crop_id"]) == sorted(table["crop_id"])  # each crop tested exactly once


def test_check_disjoint_catches_a_leak():
    table = crop_table(20)
    table["split"] = "train"
    table.loc[0, "split"] = "test"  # img000 has two crops: now on both sides
    with pytest.raises(PipelineError, match="img000"):
        check_disjoint(table)


def test_too_few_groups_is_a_clear_error():
    with pytest.raises(PipelineError, match="too few"):
        splits(crop_table(3), "kfold", k=5)


def test_too_few_crops_of_a_class_is_a_clear_error():
    table = crop_table(12)  # 12 source groups, but at most 4 crops of any class
    with pytest.raises(PipelineError, match="cannot carve 5 folds by source image"):
        splits(table, "kfold", k=5)


def test_validation_folds_partition_train_and_val_and_leave_test_alone():
    """A CV study's folds (val_folds=k): each non-test crop is validation exactly once, by group,
    and the test split is the same in every fold."""
    table = crop_table(80)
    test_sources = ["img001.jpg", "img010.jpg", "img020.jpg"]
    runs = [splits(table, "kaggle", test_sources=test_sources, val_folds=3, val_fold=f) for f in range(3)]
    for run in runs:
        check_disjoint(run)
        assert run["split"].eq("test").equals(runs[0]["split"].eq("test"))
    validated = pd.concat(r.query("split == 'val'")[["crop_id"]] for r in runs)
    rest = runs[0].query("split in ('train', 'val')")["crop_id"]
    assert sorted(validated["crop_id"]) == sorted(rest)
    assert 0.25 < (runs[0]["split"] == "val").sum() / len(rest) < 0.42
    # 0 folds: today's carve of val_fraction, unchanged
    assert splits(table, "kaggle", test_sources=test_sources)["split"].equals(
        splits(table, "kaggle", test_sources=test_sources, val_folds=0, val_fold=0)["split"]
    )
