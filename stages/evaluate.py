"""DVC stage `evaluate`: score the trained model on the held-out test split (and on val), on the
published Kaggle sets and on another lab's cells (PBC); register the model, `champion` if it passes."""

from pathlib import Path

import pandas as pd

from pipeline.core import paths
from pipeline.core.atomic import write_json
from pipeline.core.params import Params
from pipeline.data.arrays import class_list, load_npz
from pipeline.data.scenes import load_twins
from pipeline.evaluation.external import score_external
from pipeline.evaluation.gates import check_gates, may_be_champion
from pipeline.evaluation.published import score_published
from pipeline.evaluation.report import evaluate_splits, headline, write_confusion
from pipeline.inference.classify import load_model_file, model_head
from pipeline.stage import run_stage
from pipeline.tracking.models import register_run_model
from pipeline.tracking.runs import log_files


def trained_on(split_manifest: Path) -> set[str]:
    """The sha256 of every sources cell the model trained or validated on (an adaptation's)."""
    split = pd.read_csv(split_manifest)
    if "sha256" not in split:
        return set()
    return set(split.loc[split["split"].isin(["train", "val"]), "sha256"].dropna())


def main(params: Params) -> dict:
    model = load_model_file(paths.MODEL)
    twins = load_twins(paths.BCCD_TWINS)
    report, plots = evaluate_splits(model, params.evaluate, twins)
    classes = class_list(load_npz(paths.resized_split("test"), keys=("classes",)))
    out = model_head(model, classes)
    paths.external_plot("pbc", "", "").parent.mkdir(parents=True, exist_ok=True)  # an output, even empty
    if "published" in params.evaluate.external:
        report["published"], answers = score_published(
            model, params, out, paths.PUBLISHED, paths.KAGGLE_TEST_FIELDS, twins
        )
        answers.to_csv(paths.PUBLISHED_FIELDS, index=False)
        plots.append(paths.PUBLISHED_FIELDS)
    if "pbc" in params.evaluate.external:
        pbc, rows = score_external(
            model, params, out, paths.PBC, classes, "pbc", trained_on(paths.SPLIT_MANIFEST)
        )
        report["external"] = {"pbc": pbc}
        for mode, table in rows.items():
            csv, png = (paths.external_plot("pbc", mode, s) for s in (".csv", ".png"))
            plots += write_confusion(table, csv, png, f"PBC (another lab), {mode.replace('_', ' ')}")
    write_json(paths.SUMMARY, headline(report), sort_keys=False)
    log_files(plots)
    # The champion alias needs the gates' floors; the drop-against-baseline gate needs git (`wbc gate`).
    passed = all(c.passed for c in check_gates(report, None, params.gates))
    register_run_model(paths.MODEL_RUN, promote=passed and may_be_champion(params.split))
    return report


if __name__ == "__main__":
    run_stage("evaluate", main, sections=("evaluate",), resume_from=paths.MODEL_RUN)
