"""Split crops by SOURCE IMAGE (and near-duplicate cell), never by crop or augmented copy.

A "group" is a set of crops that must stay on one side of every split: all crops of one
scene (a source image and its re-shot twins, pipeline/data/scenes.py), joined with any crop whose
perceptual hash marks it as the same cell seen in another, overlapping photograph.
"""

from collections.abc import Iterable, Mapping, Sequence

import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold

from pipeline.core.errors import PipelineError
from pipeline.core.params import SplitParams
from pipeline.core.paths import BCCD_DOMAIN
from pipeline.data.scenes import Twins, scenes


def perceptual_hashes(images: Mapping[str, Image.Image], hash_size: int) -> dict[str, np.ndarray]:
    """crop id -> flattened boolean pHash."""
    return {k: imagehash.phash(img, hash_size=hash_size).hash.ravel() for k, img in images.items()}


def duplicate_groups(
    crop_ids: list[str],
    sources: list[str],
    hashes: Mapping[str, np.ndarray],
    max_distance: int,
) -> list[int]:
    """Group id per crop: connected components of 'same source image' and 'hash within distance',
    numbered in order of each group's first crop."""
    n = len(crop_ids)
    first_of_source: dict[str, int] = {}
    pairs = [(i, first_of_source.setdefault(src, i)) for i, src in enumerate(sources)]
    bits = np.stack([hashes[c] for c in crop_ids]) if crop_ids else np.zeros((0, 1), bool)
    for i in range(n):
        distances = np.count_nonzero(bits[i + 1 :] != bits[i], axis=1)
        pairs += [(i, i + 1 + int(j)) for j in np.flatnonzero(distances <= max_distance)]
    rows, cols = zip(*pairs, strict=True) if pairs else ((), ())
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    # scipy labels components in order of their lowest node: each group's first crop
    return [int(label) for label in connected_components(graph, directed=False)[1]]


def _folds(folds: StratifiedGroupKFold, frame: pd.DataFrame, what: str) -> list:
    """The folds, or a clear error when a class has too few crops for them."""
    try:
        return list(folds.split(frame, frame["label"], frame["group"]))
    except ValueError as err:
        counts = frame["label"].value_counts().to_dict()
        raise PipelineError(f"split: cannot carve {what} by source image from {counts}: {err}") from None


def _carve(frame: pd.DataFrame, fraction: float, seed: int) -> pd.Series:
    """Boolean mask of about `fraction` of the rows, whole groups only, classes stratified."""
    n_splits = max(2, round(1 / fraction))
    if frame["group"].nunique() < n_splits:
        raise PipelineError(
            f"split: {frame['group'].nunique()} source groups are too few to carve a "
            f"{fraction:.0%} share by source image"
        )
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, held = _folds(folds, frame, f"a {fraction:.0%} share")[0]
    mask = pd.Series(False, index=frame.index)
    mask.iloc[held] = True
    return mask


def _kfold(frame: pd.DataFrame, k: int, fold: int, seed: int) -> pd.Series:
    if frame["group"].nunique() < k:
        raise PipelineError(f"split: {frame['group'].nunique()} source groups are too few for k={k}")
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    _, held = _folds(folds, frame, f"{k} folds")[fold]
    mask = pd.Series(False, index=frame.index)
    mask.iloc[held] = True
    return mask


def assign_splits(
    crops: pd.DataFrame,
    *,
    strategy: str,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    k: int,
    fold: int,
    val_folds: int = 0,
    val_fold: int = 0,
    test_sources: Iterable[str] = (),
) -> pd.DataFrame:
    """Add a `split` column (train / val / test / dropped) to a crop table with `group`.

    kaggle: test is exactly the crops of `test_sources`; any other crop in a group with a test
    crop (the same cell in an overlapping photo) is `dropped`, never trained on.
    stratified: a seeded stratified group split with `test_fraction`.
    kfold: fold `fold` of `k` stratified group folds is the test set.
    Validation is then carved from the rest, also by group: `val_fraction` of it, or with
    `val_folds` >= 2 fold `val_fold` of that many stratified group folds (cross-validation).
    """
    out = crops.copy()
    if strategy == "kaggle":
        is_test_source = out["source_image"].isin(set(test_sources))
        test_groups = set(out.loc[is_test_source, "group"])
        test = is_test_source
        dropped = out["group"].isin(test_groups) & ~is_test_source
    elif strategy == "stratified":
        test = _carve(out, test_fraction, seed)
        dropped = pd.Series(False, index=out.index)
    elif strategy == "kfold":
        test = _kfold(out, k, fold, seed)
        dropped = pd.Series(False, index=out.index)
    else:
        raise PipelineError(f"split: unknown strategy {strategy!r}")
    out["split"] = "train"
    out.loc[test, "split"] = "test"
    out.loc[dropped, "split"] = "dropped"
    rest = out[out["split"] == "train"]
    val = _kfold(rest, val_folds, val_fold, seed + 1) if val_folds else _carve(rest, val_fraction, seed + 1)
    out.loc[val[val].index, "split"] = "val"
    return out


def split_crops(
    crops: pd.DataFrame,
    images: Mapping[str, Image.Image],
    p: SplitParams,
    test_sources: Sequence[str],
    twins: Twins = (),
) -> pd.DataFrame:
    """The crop table with its duplicate `group`, perceptual hash (`phash`, as 0/1 text) and `split`,
    checked disjoint. `test_sources` are the kaggle strategy's held-out photos; `twins` the pairs of
    photos that show one scene (all their crops are one group, like one photo's).

    Crops of other domains (`domain` other than BCCD's, from the sources stage, with a `role`) are
    split within their domain: `train` / `test` roles as drawn for an adaptation, `split` ones like
    BCCD's under the stratified strategy (test, then val, by source image). Near-duplicates are
    looked for within a domain: two labs' photos cannot show the same cell.
    """
    crops = crops.copy() if "domain" in crops else crops.assign(domain=BCCD_DOMAIN)
    hashes = perceptual_hashes(images, p.dedup_hash_size)
    crops["group"] = -1
    for domain in sorted(set(crops["domain"]), key=lambda d: (d != BCCD_DOMAIN, d)):  # BCCD's numbers first
        part = crops[crops["domain"] == domain]
        groups = duplicate_groups(
            list(part["crop_id"]), list(scenes(part["source_image"].to_numpy(), twins)), hashes,
            p.dedup_max_distance,
        )  # fmt: skip
        start = int(crops["group"].max()) + 1
        crops.loc[part.index, "group"] = [start + g for g in groups]
    crops["phash"] = ["".join("1" if b else "0" for b in hashes[c]) for c in crops["crop_id"]]
    bccd = crops["domain"] == BCCD_DOMAIN
    parts = [
        assign_splits(
            crops[bccd],
            strategy=p.strategy,
            seed=p.seed,
            val_fraction=p.val_fraction,
            test_fraction=p.test_fraction,
            k=p.k,
            fold=p.fold,
            val_folds=p.val_folds,
            val_fold=p.val_fold,
            test_sources=test_sources,
        )
    ]
    for _, part in crops[~bccd].groupby("domain", sort=True):
        parts.append(domain_splits(part, p))
    split = pd.concat(parts).sort_index()
    check_disjoint(split)
    return split


def domain_splits(cells: pd.DataFrame, p: SplitParams) -> pd.DataFrame:
    """Another domain's cells: an adaptation's drawn `train` cells are trained on and the rest are
    test, less any near-duplicate of a trained-on cell (`dropped`); `split` cells are split like
    BCCD's under the stratified strategy."""
    out = cells.copy()
    if (out["role"] == "split").all():
        return assign_splits(out, strategy="stratified", seed=p.seed, val_fraction=p.val_fraction,
                             test_fraction=p.test_fraction, k=p.k, fold=p.fold)  # fmt: skip
    out["split"] = out["role"]
    trained_groups = set(out.loc[out["role"] == "train", "group"])
    out.loc[(out["role"] == "test") & out["group"].isin(trained_groups), "split"] = "dropped"
    return out


def check_disjoint(split: pd.DataFrame) -> None:
    """Fail if a source image or a near-duplicate group sits in two splits."""
    kept = split[split["split"] != "dropped"]
    for column in ("source_image", "group"):
        sides = kept.groupby(column)["split"].nunique()
        leaked = sides[sides > 1]
        if len(leaked):
            raise PipelineError(f"split: {column} {leaked.index[0]} appears in more than one split")


def split_report(split: pd.DataFrame, test_sources: Iterable[str] = ()) -> dict:
    """Counts per split and class, the near-duplicate groups, and what was dropped."""
    report: dict = {}
    for name, part in split.groupby("split"):
        counts = part["label"].value_counts().sort_index()
        report[str(name)] = {
            **{str(k): int(v) for k, v in counts.items()},
            "total": len(part),
            "source_images": int(part["source_image"].nunique()),
        }
    per_group = split.groupby("group")["source_image"].nunique()
    report["near_duplicate_groups"] = int((per_group > 1).sum())
    report["dropped_near_duplicates_of_test"] = int((split["split"] == "dropped").sum())
    if "domain" in split and split["domain"].nunique() > 1:
        report["domains"] = {
            str(d): {str(k): int(v) for k, v in part["split"].value_counts().sort_index().items()}
            for d, part in split.groupby("domain")
        }
    wanted = set(test_sources)
    if wanted:
        report["test_sources_without_crops"] = len(wanted - set(split["source_image"]))
    return report
