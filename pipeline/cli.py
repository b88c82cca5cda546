"""The `wbc` command: tools around the DVC pipeline (the stages themselves run under `dvc repro`)."""

import argparse
import csv
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from pipeline.core import paths
from pipeline.core.atomic import atomic_write_bytes
from pipeline.core.errors import PipelineError
from pipeline.core.memory import keep_freed_memory
from pipeline.core.params import BEYOND_FIELD, EXTERNAL_SETS, load_params
from pipeline.evaluation.gates import baseline_from_dvc, check_gates, format_table


def gate(args: argparse.Namespace) -> int:
    """Check the current evaluation against the gates; 0 when every gate passes."""
    gates = load_params(Path(args.params)).gates
    try:
        current = json.loads(Path(args.metrics).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PipelineError(f"{args.metrics}: cannot read the evaluation metrics ({err})") from None
    baseline = None if args.no_baseline else baseline_from_dvc(args.baseline, args.metrics)
    checks = check_gates(current, baseline, gates)
    print(format_table(checks))
    if baseline is None and not args.no_baseline:
        print(f"(no baseline metrics at {args.baseline}: drop gates skipped)")
    failed = [c for c in checks if not c.passed]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def voc_boxes(source: Path, images: list[Path]) -> dict[Path, list[tuple]]:
    """WBC boxes per image from a VOC file (one image) or a folder of them named like the images."""
    from pipeline.data.voc import parse_voc

    if source.is_file():
        if len(images) != 1:
            raise PipelineError(f"--boxes {source}: one VOC file goes with one image, not {len(images)}")
        files = {images[0]: source}
    else:
        files = {img: source / f"{img.stem}.xml" for img in images}
    out = {}
    for img, xml in files.items():
        if not xml.is_file():
            raise PipelineError(f"{img}: no VOC file {xml} for it")
        out[img] = [(b.xmin, b.ymin, b.xmax, b.ymax) for b in parse_voc(xml).boxes("WBC")]
    return out


def calibrated(model, files: list[Path], params, boxes: dict, whole_image: bool = False):
    """`model` calibrated to the lab of `files` on their cells, without labels (AdaBN)."""
    from pipeline.inference.classify import lab_cells
    from pipeline.model.calibrate import calibrate

    x = lab_cells(files, params, model.input_shape[1:3], whole_image=whole_image, boxes=boxes)
    print(f"calibrating on {len(x)} cells from {len(files)} images", file=sys.stderr)
    return calibrate(model, x)


def calibrate_model(args: argparse.Namespace) -> int:
    """Write a copy of the model calibrated to a lab's unlabelled photos (or single-cell images)."""
    from pipeline.core.atomic import atomic_path
    from pipeline.inference.classify import image_files, load_classifier

    params = load_params(Path(args.params))
    files = image_files(args.paths)
    if not files:
        raise PipelineError(f"no images in {', '.join(map(str, args.paths))}")
    if args.out.suffix != ".keras":
        raise PipelineError(f"{args.out}: the calibrated model is a .keras file")
    boxes = voc_boxes(Path(args.boxes), files) if args.boxes else {}
    model = calibrated(load_classifier(args.model, paths.MODEL), files, params, boxes, args.whole_image)
    with atomic_path(args.out) as tmp:
        model.save(tmp)
    print(f"calibrated model: {args.out} (wbc predict --model {args.out} ...)", file=sys.stderr)
    return 0


def predict(args: argparse.Namespace) -> int:
    """Classify the white cells in smear photos and print each cell and the differential."""
    from pipeline.core.classes import class_names
    from pipeline.inference.classify import (
        classify_files,
        differential,
        image_files,
        load_classifier,
        model_head,
    )

    params = load_params(Path(args.params))
    files = image_files(args.paths)
    if not files:
        raise PipelineError(f"no images in {', '.join(map(str, args.paths))}")
    boxes = voc_boxes(Path(args.boxes), files) if args.boxes else {}
    if args.export_crops:
        from pipeline.inference.review import export_target

        export_target(args.export_crops)  # before the work, not after it
    model = load_classifier(args.model, paths.MODEL)
    if args.calibrate:
        model = calibrated(model, files, params, boxes)
    out = model_head(model, class_names(params.crop.keep_basophil))
    names = out.classes
    results = classify_files(files, model, params, out, boxes)
    unreadable = sum(r.note.startswith("unreadable") for r in results)
    batch = differential([c.label for r in results for c in r.cells], names)
    if args.format == "json":
        images = [
            asdict(r) | {"differential": differential([c.label for c in r.cells], names)} for r in results
        ]
        json.dump({"model": args.model or str(paths.MODEL), "images": images, "differential": batch},
                  sys.stdout, indent=2)  # fmt: skip
        print()
    else:
        writer = csv.writer(sys.stdout)
        writer.writerow(["image", "cell", "xmin", "ymin", "xmax", "ymax", "score", "label",
                         *(f"p_{n}" for n in names), "note"])  # fmt: skip
        for r in results:
            for i, c in enumerate(r.cells):
                score = "" if c.score is None else f"{c.score:.3f}"
                writer.writerow([r.image, i, *c.box, score, c.label, *c.probabilities.values(), ""])
            if not r.cells:
                writer.writerow([r.image, "", "", "", "", "", "", "", *("" for _ in names), r.note])
    if args.report:
        from pipeline.inference.review import write_report

        write_report(args.report, results, names, args.review_below, args.model or str(paths.MODEL))
        print(f"review page: {args.report}", file=sys.stderr)
    if args.export_crops:
        from pipeline.inference.review import export_crops

        n = export_crops(args.export_crops, results, names, params)
        print(f"{n} cells written to {args.export_crops}/<predicted class>/", file=sys.stderr)
    empty = sum(not r.cells for r in results)
    shares = ", ".join(f"{n} {batch['percent'][n]}% ({batch['count'][n]})" for n in names)
    print(f"{len(results)} images, {batch['cells']} cells, {empty} without a cell; differential: {shares}",
          file=sys.stderr)  # fmt: skip
    return 1 if unreadable else 0


def compare(args: argparse.Namespace) -> int:
    """The paired difference of two models on the same test cells, and whether it is real."""
    from pipeline.evaluation.compare import compare as paired
    from pipeline.evaluation.compare import read_predictions

    result = paired(read_predictions(args.a), read_predictions(args.b), resamples=args.resamples,
                    confidence=args.confidence, seed=args.seed)  # fmt: skip
    print(f"A {args.a}: accuracy {result.accuracy_a:.3f}   B {args.b}: accuracy {result.accuracy_b:.3f}")
    print(f"{result.cells} cells from {result.sources} source photos; only A right on {result.only_a_right}, "
          f"only B right on {result.only_b_right}")  # fmt: skip
    print(result.verdict)
    return 0


def cells(args: argparse.Namespace) -> int:
    """Which test cells do models miss, over many runs: the cells none gets right bound them all."""
    from pipeline.evaluation.compare import cell_agreement, experiment_refs, read_predictions, same_cells

    tables = [read_predictions(s) for s in args.sources]  # named: each must be readable
    for ref in (r for g in args.experiments for r in experiment_refs(g)):
        # matched by a glob: an experiment without test predictions, or scored on other cells (another
        # split), is left out and said, not an error
        try:
            table = read_predictions(ref)
        except PipelineError as err:
            print(f"left out: {err}", file=sys.stderr)
            continue
        if tables and not same_cells(tables[0], table):
            print(f"left out: {ref}: predictions on other cells", file=sys.stderr)
            continue
        tables.append(table)
    if not tables:
        raise PipelineError("no predictions: name files, revisions or experiments, or --experiments GLOB")
    table = cell_agreement(tables)
    never = table[table["right"] == 0]
    n = len(table)
    print(f"{len(tables)} models' predictions on the same {n} cells")
    print(f"right in every model: {int((table['right'] == len(tables)).sum())}; in none: {len(never)}"
          + (f" ({', '.join(never['sample_id'])})" if len(never) else ""))  # fmt: skip
    best = n - len(never)
    print(f"a model that misses those too scores at most {best / n:.3f} ({best} of {n})")
    missed = table[table["right"] < len(tables)].head(args.show)
    if len(missed):
        print(missed.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.out:
        atomic_write_bytes(args.out, table.to_csv(index=False).encode())
    return 0


def edges(args: argparse.Namespace) -> int:
    """Each run's cells cut by a photo's frame: accuracy whole and cut, and paired differences
    between two settings of a CV study (runs named cv-<setting>-f<fold>-s<seed>)."""
    import pandas as pd

    from pipeline.evaluation.compare import experiment_refs
    from pipeline.evaluation.cv import NAME, paired
    from pipeline.evaluation.edges import frame_summary, score_revision

    refs = list(args.sources) + [r for g in args.experiments for r in experiment_refs(g)]
    if not refs:
        raise PipelineError("no runs: name git revisions or experiments, or --experiments GLOB")
    rows, tables = [], []
    for ref in refs:
        name = ref.rsplit("/", 1)[-1]
        table = score_revision(
            ref, args.split, args.outside, beyond=args.beyond, beyond_field=args.beyond_field
        )
        found = NAME.match(name)
        # a CV run's cells are named by fold and seed, so two settings' tables pair in `wbc compare`
        prefix = f"f{found['fold']}-s{found['seed']}:" if found else f"{name}:" if len(refs) > 1 else ""
        table = table.assign(run=name, sample_id=prefix + table["sample_id"])
        tables.append(table)
        where = {k: (int(v) if k != "setting" else v) for k, v in found.groupdict().items()} if found else {}
        rows.append({"run": name, **where, **frame_summary(table)})
        print(f"{name}: whole {rows[-1]['whole_accuracy']:.3f}, cut {rows[-1]['cut_accuracy']:.3f} "
              f"({rows[-1]['cells']} {args.split} cells)", file=sys.stderr, flush=True)  # fmt: skip
    runs = pd.DataFrame(rows)
    print(runs.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for a, b in args.pair:
        for metric in ("cut_accuracy", "whole_accuracy"):
            print(f"{b} vs {a}: " + paired(runs, a, b, metric)["verdict"])
    if args.out:
        atomic_write_bytes(args.out, runs.to_csv(index=False).encode())
    if args.cells:
        atomic_write_bytes(args.cells, pd.concat(tables).to_csv(index=False).encode())
    return 0


def queue(commands: list[list[str]], dry_run: bool) -> int:
    """Print and run `dvc exp run --queue` commands (a study's runs); `dvc queue start` runs them."""
    for cmd in commands:
        print(" ".join(cmd))
        if not dry_run:
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise PipelineError(f"{' '.join(cmd[:6])}: {done.stderr.strip()[-500:]}")
    if not dry_run:
        print(f"queued {len(commands)} runs: run them with `dvc queue start` or `dvc exp run --run-all`")
    return 0


def cv_queue(args: argparse.Namespace) -> int:
    """Queue one DVC experiment per fold and seed of a setting; `dvc queue start` runs them."""
    from pipeline.evaluation.cv import queue_commands

    commands = queue_commands(args.setting, args.set, args.folds, args.seeds, external_sets(args.external))
    return queue(commands, args.dry_run)


def cv_report(args: argparse.Namespace) -> int:
    """Mean ± sd per setting from the finished study runs; paired comparisons; CSV, markdown, plot,
    and an MLflow parent run per setting with its model runs nested."""
    from pipeline.evaluation import cv
    from pipeline.tracking.studies import log_setting

    done = subprocess.run(["dvc", "exp", "show", "--json", "--all-commits"], capture_output=True, text=True)
    if done.returncode != 0:
        raise PipelineError(f"dvc exp show: {done.stderr.strip()[-500:]}")
    found = cv.study_rows(json.loads(done.stdout or "[]"), args.baseline)
    rows = cv.only(cv.join_runs(found, [cv.committed_rows(Path(f)) for f in args.runs]), args.only)
    if rows.empty:
        raise PipelineError("no finished cv-<setting>-f<fold>-s<seed> experiments (wbc cv queue first)")
    summary = cv.summarize(rows)
    settings = list(summary["setting"])
    pairs = [(args.baseline, s) for s in settings if s != args.baseline] if args.baseline in settings else []
    comparisons = [cv.paired(rows, a, b, m) for a, b in pairs for m in cv.compared_on(rows)]
    text = cv.markdown(summary, comparisons)
    curve = cv.members_rows(rows)
    text += cv.ensemble_section(curve) + cv.pairs_section(rows, curve, args.pair)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "cv_runs.csv", out / "cv.md", out / "cv.png"]
    atomic_write_bytes(files[0], rows.to_csv(index=False).encode())
    atomic_write_bytes(files[1], text.encode())
    cv.plot(rows, files[2], curve)
    print(files[1].read_text())
    if not args.no_mlflow:
        sizes = cv.size_summaries(curve)
        here = set(found["setting"])  # a committed study's parents live in the store it ran beside
        for _, row in summary[summary["setting"].isin(here)].iterrows():
            names = list(rows.loc[rows["setting"] == row["setting"], "experiment"])
            run_id = log_setting(row.to_dict(), names, [str(f) for f in files], sizes.get(row["setting"], {}))
            print(f"MLflow: cv: {row['setting']} -> run {run_id} ({len(names)} model runs nested)")
    return 0


def adapt_queue(args: argparse.Namespace) -> int:
    """Queue one DVC experiment per k and seed of a few-shot adaptation to a source."""
    from pipeline.evaluation.adaptation import queue_commands

    params = load_params(Path(args.params))
    if args.source not in params.sources:
        raise PipelineError(
            f"adapt: no source {args.source!r} in {args.params} (sources: {', '.join(params.sources)})"
        )
    commands = queue_commands(args.source, args.k, args.seeds, args.set, external_sets(args.external))
    return queue(commands, args.dry_run)


def adapt_report(args: argparse.Namespace) -> int:
    """The learning curve of an adaptation study: CSV, markdown, PNG, a DVC plot's CSV, and an
    MLflow parent run with the curve as steps and the runs nested."""
    from pipeline.evaluation import adaptation
    from pipeline.tracking.studies import log_curve

    done = subprocess.run(["dvc", "exp", "show", "--json", "--all-commits"], capture_output=True, text=True)
    if done.returncode != 0:
        raise PipelineError(f"dvc exp show: {done.stderr.strip()[-500:]}")
    rows = adaptation.curve_rows(json.loads(done.stdout or "[]"), args.source)
    if rows.empty:
        raise PipelineError(
            f"no finished adapt-{args.source}-k<k>-s<seed> experiments (wbc adapt queue first)"
        )
    table = adaptation.curve(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{args.source}_runs.csv", out / f"{args.source}.md", out / f"{args.source}.png",
             out / f"{args.source}_curve.csv"]  # fmt: skip
    atomic_write_bytes(files[0], rows.to_csv(index=False).encode())
    atomic_write_bytes(files[1], adaptation.markdown(table, args.source).encode())
    adaptation.plot(rows, table, files[2], args.source)
    atomic_write_bytes(files[3], adaptation.dvc_curve(table).to_csv(index=False).encode())
    print(files[1].read_text())
    if not args.no_mlflow:
        names = [n for n in rows["experiment"] if n.startswith("adapt-")]
        run_id = log_curve(args.source, table.to_dict("records"), names, [str(f) for f in files])
        print(f"MLflow: adapt: {args.source} -> run {run_id} ({len(names)} runs nested)")
    return 0


def add_external_option(parser: argparse.ArgumentParser) -> None:
    """`--external [SET ...]` of the study queues; `external_sets` reads it."""
    parser.add_argument(
        "--external",
        nargs="*",
        choices=EXTERNAL_SETS,
        default=None,
        metavar="SET",
        help=f"also score these sets from elsewhere ({', '.join(EXTERNAL_SETS)}; all when none is named): "
        "pbc adds about a minute a run, published about three",
    )


def external_sets(named: list[str] | None) -> list[str]:
    """`--external` alone means every set; the sets named otherwise, in the params' order."""
    return list(EXTERNAL_SETS) if named == [] else [s for s in EXTERNAL_SETS if s in (named or [])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wbc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gate", help="check metrics/evaluate.json against params.yaml's gates")
    g.add_argument("--baseline", default="HEAD", help="git revision of the baseline metrics (default HEAD)")
    g.add_argument("--no-baseline", action="store_true", help="check the floors only")
    g.add_argument("--metrics", default=str(paths.stage_metrics("evaluate")))
    g.add_argument("--params", default=str(paths.PARAMS))
    g.set_defaults(run=gate)
    p = sub.add_parser("predict", help="find and classify the white cells in smear photos; the differential")
    p.add_argument("paths", nargs="+", type=Path, help="images, or folders searched recursively")
    p.add_argument("--boxes", help="VOC file (one image) or folder of VOC files named like the images")
    p.add_argument(
        "--model", help="a .keras file or an MLflow URI (default: the pipeline's models/model.keras)"
    )
    p.add_argument("--format", choices=("json", "csv"), default="json")
    p.add_argument("--params", default=str(paths.PARAMS), help="crop, localize and evaluate.tta settings")
    p.add_argument(
        "--report", type=Path, help="write an HTML page to review: photos, boxes, the differential"
    )
    p.add_argument(
        "--export-crops", type=Path, metavar="DIR", help="write every cell to DIR/<predicted class>/"
    )
    p.add_argument("--review-below", type=float, default=0.7, help="flag cells below this confidence (0.7)")
    p.add_argument(
        "--calibrate", action="store_true",
        help="first calibrate the model to these photos' lab on their own cells (no labels; >= 32 cells)",
    )  # fmt: skip
    p.set_defaults(run=predict)
    k = sub.add_parser(
        "calibrate", help="calibrate the model to a lab's microscope and stain on its unlabelled photos"
    )
    k.add_argument("paths", nargs="+", type=Path, help="the lab's images, or folders searched recursively")
    k.add_argument("--out", type=Path, required=True, help="the calibrated .keras file to write")
    k.add_argument("--model", help="a .keras file or an MLflow URI (default: models/model.keras)")
    k.add_argument("--boxes", help="VOC file (one image) or folder of VOC files named like the images")
    k.add_argument("--whole-image", action="store_true", help="each image is one cell (single-cell images)")
    k.add_argument("--params", default=str(paths.PARAMS), help="crop and localize settings")
    k.set_defaults(run=calibrate_model)
    c = sub.add_parser(
        "compare", help="paired comparison of two models' test predictions: interval, p, verdict"
    )
    for name in ("a", "b"):
        c.add_argument(
            name, help="predictions CSV, git revision, DVC experiment name, or runs:/<MLflow run id>"
        )
    c.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the source photos")
    c.add_argument("--confidence", type=float, default=0.95)
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(run=compare)
    h = sub.add_parser("cells", help="per test cell, how many of several models get it right")
    h.add_argument(
        "sources", nargs="*", help="predictions CSVs, git revisions, DVC experiment names or runs:/<id>"
    )
    h.add_argument("--experiments", action="append", default=[], metavar="GLOB",
                   help="every DVC experiment whose name matches (e.g. 'cv-*'); repeatable")  # fmt: skip
    h.add_argument("--show", type=int, default=20, help="the hardest cells listed")
    h.add_argument("--out", type=Path, help="a CSV of every cell")
    h.set_defaults(run=cells)
    e = sub.add_parser("edges", help="runs' cells cut by a photo's frame: accuracy whole and cut")
    e.add_argument("sources", nargs="*", help="git revisions, DVC experiment names or 'workspace'")
    e.add_argument("--experiments", action="append", default=[], metavar="GLOB",
                   help="every DVC experiment whose name matches ('cv-shift-*'); repeatable")  # fmt: skip
    e.add_argument("--split", default="val", choices=("val", "test", "train"),
                   help="whose cells (val: choose on it; test: report only)")  # fmt: skip
    e.add_argument("--outside", type=float, default=1 / 3, help="share of the cell beyond the frame")
    e.add_argument("--beyond", default="cut", choices=("cut", "black"),
                   help="the photo cut at the frame, or black beyond it (rotated fields)")  # fmt: skip
    e.add_argument("--beyond-field", choices=BEYOND_FIELD,
                   help="what lies beyond the field: filled or kept, whatever each run's params")  # fmt: skip
    e.add_argument("--pair", nargs=2, action="append", default=[], metavar=("A", "B"),
                   help="B minus A over the CV runs both have (same fold and seed); repeatable")  # fmt: skip
    e.add_argument("--out", type=Path, help="a CSV of every run")
    e.add_argument("--cells", type=Path, help="a CSV of every cell and version")
    e.set_defaults(run=edges)
    v = sub.add_parser("cv", help="cross-validation study: queue DVC experiments, report mean ± sd")
    cv_sub = v.add_subparsers(dest="cv_command", required=True)
    q = cv_sub.add_parser("queue", help="queue a setting's runs: one per fold and seed")
    q.add_argument("setting", help="a short name for the setting (lower-case, digits, '_' '.')")
    q.add_argument("-S", "--set", action="append", default=[], help="a params override, as dvc exp run -S")
    q.add_argument("--folds", type=int, default=3, help="group folds (by source image) of train + val")
    q.add_argument("--seeds", type=int, nargs="+", default=[1], help="a repetition per seed")
    add_external_option(q)
    q.add_argument("--dry-run", action="store_true", help="print the commands only")
    q.set_defaults(run=cv_queue)
    r = cv_sub.add_parser("report", help="mean ± sd per setting, paired comparisons, MLflow parent runs")
    r.add_argument("--out", default="reports/cv", help="folder for cv_runs.csv, cv.md, cv.png")
    r.add_argument("--baseline", default="base", help="the setting the others are compared with")
    r.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="SETTING",
        help="report these settings alone (a study on other folds must not be paired with them)",
    )
    r.add_argument(
        "--runs",
        nargs="+",
        default=[],
        metavar="CSV",
        help="committed studies' cv_runs.csv, joined to the experiments found (paired by fold and seed)",
    )
    r.add_argument(
        "--pair",
        nargs=2,
        action="append",
        default=[],
        metavar=("A", "B"),
        help="also compare B with A: settings or ensemble sizes ('<setting> first <k>')",
    )
    r.add_argument("--no-mlflow", action="store_true")
    r.set_defaults(run=cv_report)
    a = sub.add_parser(
        "adapt", help="few-shot adaptation to another lab: queue k per class, the learning curve"
    )
    a_sub = a.add_subparsers(dest="adapt_command", required=True)
    q = a_sub.add_parser("queue", help="queue one run per k and seed")
    q.add_argument("source", help="a source in params.yaml's `sources` (e.g. pbc)")
    q.add_argument("--k", type=int, nargs="+", default=[5, 10, 25, 50], help="cells per class trained on")
    q.add_argument("--seeds", type=int, nargs="+", default=[1], help="draws of the cells")
    q.add_argument("-S", "--set", action="append", default=[], help="a params override, as dvc exp run -S")
    add_external_option(q)
    q.add_argument("--params", default=str(paths.PARAMS))
    q.add_argument("--dry-run", action="store_true", help="print the commands only")
    q.set_defaults(run=adapt_queue)
    r = a_sub.add_parser("report", help="the learning curve: CSV, markdown, plot, MLflow parent run")
    r.add_argument("source")
    r.add_argument("--out", default="reports/adapt", help="folder for the report files")
    r.add_argument("--no-mlflow", action="store_true")
    r.set_defaults(run=adapt_report)
    args = parser.parse_args(argv)
    keep_freed_memory()  # for every command: cheap, and those that run a model train or predict faster
    try:
        return args.run(args)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
