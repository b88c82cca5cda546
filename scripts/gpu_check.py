"""The GPU check (issue 16), one part per call so that each part has its own time cap
(scripts/gpu_check.sh runs them all on the GPU machine); the same parts measure this CPU.

    python scripts/gpu_check.py env                # device, backend, package versions
    python scripts/gpu_check.py data               # data/resized from the BCCD mirror, if missing
    python scripts/gpu_check.py train --name small_float32 [--precision mixed] [--model M] [--size N]
                                      [--epochs N] [--limit N] [--batch N] [--require-gpu]
    python scripts/gpu_check.py report [--cpu DIR]  # every part's figures in one table and JSON

Everything is the project's own code: `data` runs the data stages' `main` functions (fetch, crop,
split, augment, resize) without the stage frame, which only adds MLflow (not on the GPU machine);
`train` runs `pipeline.model.runtime.configure` and `pipeline.model.train.train_model` with
params.yaml's `train` section, then scores the held-out test split (and val) with the evaluate
stage's `predict` (TTA as params.yaml says) and `score`. A larger input (`--size 224`) is made from
the augmented crops with the resize stage's `split_arrays`, as `resize.height/width: 224` would.
Nothing is written into the repository except, by `data`, the data stages' outputs under data/ when
data/resized is missing. Results go to `--out` (default $OUT, else /tmp/gpu_check) as <name>.json.
"""

import argparse
import contextlib
import hashlib
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.chdir(REPO)  # every path in pipeline.core.paths is relative to the repository root

DATA_STAGES = ("fetch", "crop", "split", "augment", "resize")
ARRAY_KEYS_PER_IMAGE = ("x", "y", "nucleus", "sample_id", "crop_id", "source_image", "augmented")
PACKAGES = ("keras", "jax", "jaxlib", "jax-cuda13-plugin", "tensorflow", "tensorflow-cpu", "torch", "numpy",
            "pandas", "pillow", "scikit-image", "scikit-learn", "scipy", "pydantic", "imagehash",
            "pywavelets", "optree", "typing-extensions")  # fmt: skip


def out_dir(arg: str | None) -> Path:
    path = Path(arg or os.environ.get("OUT") or "/tmp/gpu_check")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write(out: Path, name: str, record: dict) -> None:
    (out / f"{name}.json").write_text(json.dumps(record, indent=1, default=str) + "\n")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


# ---------------------------------------------------------------------------------------------- env


def cmd_env(args: argparse.Namespace) -> int:
    import keras

    from pipeline.model.runtime import device

    record: dict = {"backend": keras.backend.backend(), "device": device(), "versions": versions()}
    record["cpus"] = os.cpu_count()
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        record["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        record["nvidia_smi"] = f"not available: {err}"
    if record["backend"] == "jax":
        import jax

        record["jax_devices"] = [f"{d} platform={d.platform} kind={d.device_kind}" for d in jax.devices()]
    for key, value in record.items():
        print(f"env: {key}: {value}")
    write(out_dir(args.out), "env", record)
    if args.require_gpu and not record["device"].startswith("gpu"):
        print(f"error: pipeline.model.runtime.device() says {record['device']!r}")
        return 3
    return 0


# --------------------------------------------------------------------------------------------- data


def dvc_dir_md5(folder: Path) -> str:
    """DVC's hash of a directory output (as in dvc.lock): the md5 of the sorted JSON list of its
    files' md5s and relative paths, plus '.dir'."""
    entries = sorted(
        ({"md5": hashlib.md5(f.read_bytes()).hexdigest(), "relpath": f.relative_to(folder).as_posix()}
         for f in folder.rglob("*") if f.is_file()),
        key=lambda e: e["relpath"],
    )  # fmt: skip
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def locked_outputs() -> dict[str, str]:
    """Every directory output's md5 in dvc.lock, by path."""
    import yaml

    lock = yaml.safe_load(Path("dvc.lock").read_text())
    return {
        o["path"]: o["md5"]
        for stage in lock["stages"].values()
        for o in stage.get("outs", [])
        if str(o.get("md5", "")).endswith(".dir")
    }


def compare_with_lock(folders: list[str]) -> dict[str, dict]:
    locked = locked_outputs()
    found = {}
    for folder in folders:
        md5 = dvc_dir_md5(Path(folder)) if Path(folder).is_dir() else None
        want = locked.get(folder)
        found[folder] = {"md5": md5, "dvc_lock": want, "identical": md5 == want}
        print(f"data: {folder}: {md5} {'==' if md5 == want else '!='} dvc.lock {want}")
    return found


def cmd_data(args: argparse.Namespace) -> int:
    from pipeline.core import paths
    from pipeline.core.params import load_params

    record: dict = {"versions": versions()}
    if all(paths.resized_split(s).is_file() for s in paths.SPLITS):
        print("data: data/resized is there: reused, not rebuilt")
        record["rebuilt"] = False
    else:
        if not os.environ.get("WBC_MIRRORS"):
            print("data: data/resized is missing and WBC_MIRRORS (the BCCD mirror's parent folder) is unset")
            return 2
        # The stage scripts' `main(params)` are the stages; `run_stage` (pipeline/stage.py) only adds
        # the MLflow run and the metrics file, and MLflow is not installed on the GPU machine.
        frame = types.ModuleType("pipeline.stage")
        frame.run_stage = None  # type: ignore[attr-defined]  # the stage modules import it; never called
        sys.modules["pipeline.stage"] = frame
        params = load_params()
        record["rebuilt"], record["stages"] = True, {}
        for name in DATA_STAGES:
            start = time.perf_counter()
            report = importlib.import_module(f"stages.{name}").main(params)
            seconds = round(time.perf_counter() - start, 1)
            record["stages"][name] = {"seconds": seconds, "report": report}
            print(f"data: {name}: {seconds} s: {json.dumps(report, default=str)[:300]}")
    folders = ["data/resized"] if not record["rebuilt"] else [str(f) for f in (
        paths.RAW, paths.CROPS, paths.SPLIT, paths.AUGMENTED, paths.RESIZED)]  # fmt: skip
    record["dvc_lock"] = compare_with_lock(folders)
    write(out_dir(args.out), "data", record)
    return 0


# -------------------------------------------------------------------------------------------- train


def subset(arrays: dict, idx) -> dict:
    return {k: (v[idx] if k in ARRAY_KEYS_PER_IMAGE else v) for k, v in arrays.items()}


def load_arrays(params, size: int | None, limit: int | None, seed: int) -> tuple[dict, dict, dict]:
    """train, val, test: the resize stage's arrays; at another `size`, made from the augmented crops
    by the resize stage's own code. `limit`: a seeded subset of train (val and test stay whole)."""
    import numpy as np
    import pandas as pd

    from pipeline.core import paths
    from pipeline.core.classes import class_names
    from pipeline.data.arrays import load_npz
    from pipeline.data.images import load_rgb
    from pipeline.data.resize import split_arrays, treatment

    rng = np.random.default_rng(seed)
    if size is None or size == params.resize.height == params.resize.width:
        train, val, test = (load_npz(paths.resized_split(s)) for s in paths.SPLITS)
        if limit and limit < len(train["x"]):
            train = subset(train, np.sort(rng.choice(len(train["x"]), limit, replace=False)))
        return train, val, test
    samples = pd.read_csv(paths.AUGMENTED_MANIFEST)
    classes = class_names(params.crop.keep_basophil)
    start = time.perf_counter()
    out = []
    for split in paths.SPLITS:
        rows = samples[samples["split"] == split]
        if split == "train" and limit and limit < len(rows):
            rows = rows.iloc[np.sort(rng.choice(len(rows), limit, replace=False))]
        out.append(split_arrays(rows, classes, load_rgb, size, size, treatment(params.resize)))
    print(f"train: resized {sum(len(a['x']) for a in out)} crops to {size}x{size} in "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    return out[0], out[1], out[2]


def input_rate(x, y: dict, batch_size: int) -> float:
    """Images/s of the training input path alone (Batches: gather + float32 cast), one pass."""
    from pipeline.model.batches import Batches

    batches = Batches(x, y, batch_size, shuffle=True, seed=0)
    start = time.perf_counter()
    for i in range(len(batches)):
        batches[i]
    return len(x) / (time.perf_counter() - start)


def cmd_train(args: argparse.Namespace) -> int:
    import keras

    from pipeline.core.params import load_params
    from pipeline.evaluation.report import score
    from pipeline.inference.tta import predict
    from pipeline.model.runtime import configure
    from pipeline.model.train import summary, targets, train_model

    out = out_dir(args.out)
    wall = time.perf_counter()
    params = load_params()
    p = params.train
    # One model is timed: an ensemble (train.members) trains that many of them, one after another.
    update = {"mixed_precision": args.precision == "mixed", "members": 1}
    for key in ("model", "epochs"):
        if getattr(args, key) is not None:
            update[key] = getattr(args, key)
    if args.batch is not None:
        update["batch_size"] = args.batch
    p = p.model_copy(update=update)
    runtime = configure(p.seed, p.deterministic, p.mixed_precision, p.devices)
    print(f"train: {args.name}: {p.model} / {p.task} on {runtime['device']} ({runtime['backend']}, "
          f"{runtime['precision']}), batch {p.batch_size}, {p.epochs} epochs")  # fmt: skip
    if args.require_gpu and not runtime["device"].startswith("gpu"):
        extra = ""
        if runtime["backend"] == "jax":
            import jax

            extra = f"; jax.devices(): {[(str(d), d.platform) for d in jax.devices()]}"
        print(f"error: pipeline.model.runtime.device() says {runtime['device']!r}{extra}")
        return 3
    train, val, test = load_arrays(params, args.size, args.limit, p.seed)
    size = train["x"].shape[1:3]
    record: dict = {
        "name": args.name, **runtime, "model": p.model, "task": p.task, "input": list(size),
        "batch_size": p.batch_size, "epochs": p.epochs, "train_images": len(train["x"]),
        "input_images_per_s": round(input_rate(train["x"], targets(train, p.task), p.batch_size), 1),
        "versions": versions(),
    }  # fmt: skip
    print(f"train: {record['train_images']} train images {size[0]}x{size[1]}; the input path alone "
          f"gives {record['input_images_per_s']} images/s")  # fmt: skip

    class EpochTimes(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)
            print(f"train: {args.name}: epoch {epoch + 1}: {self.seconds[-1]:.2f} s, "
                  f"{len(train['x']) / self.seconds[-1]:.1f} images/s (validation included)")  # fmt: skip

    timer = EpochTimes()
    trained = train_model(p, train, val, [timer])
    steady = statistics.median(timer.seconds[1:]) if len(timer.seconds) > 1 else None
    record |= {
        "epoch_seconds": [round(s, 3) for s in timer.seconds],
        "first_epoch_seconds": round(timer.seconds[0], 2),  # compilation included
        "steady_epoch_seconds": round(steady, 3) if steady else None,  # median after the first
        "steady_images_per_s": round(len(train["x"]) / steady, 1) if steady else None,
        "train": summary(trained, p.early_stopping.monitor),  # images_per_second: the train stage's
    }
    write(out, args.name, record)
    rate, stage_rate = record["steady_images_per_s"], record["train"]["images_per_second"]
    said = (f"result: {args.name}: {runtime['device']} {runtime['precision']} {p.model} {size[0]}x{size[1]}: "
            f"steady {rate} images/s (stage figure {stage_rate}), "
            f"first epoch {record['first_epoch_seconds']} s")  # fmt: skip
    if args.no_eval:
        print(f"{said} (not scored)")
        return 0
    start, tta = time.perf_counter(), params.evaluate.tta and not args.no_tta
    record["tta"] = tta
    for split, arrays in (("val", val), ("test", test)):
        probs = predict(trained.model, arrays["x"], tta=tta)
        scores = score(arrays, probs, params.evaluate, intervals=split == "test")
        scores = scores.get("type", scores.get("nucleus"))
        keep = ("accuracy", "balanced_accuracy", "macro_f1", "nucleus_accuracy", "n_images",
                "accuracy_ci", "macro_f1_ci")  # fmt: skip
        record[split] = {k: scores[k] for k in keep if k in scores}
    record["evaluate_seconds"] = round(time.perf_counter() - start, 1)
    record["wall_seconds"] = round(time.perf_counter() - wall, 1)
    write(out, args.name, record)
    t = record["test"]
    print(f"{said}; test accuracy {t['accuracy']:.3f} {t.get('accuracy_ci')}, macro-F1 {t['macro_f1']:.3f}; "
          f"val accuracy {record['val']['accuracy']:.3f}")  # fmt: skip
    return 0


# ------------------------------------------------------------------------------------------- report


def cell(key: str, v) -> str:
    if v is None:
        return ""
    return f"{v:.3f}" if key.endswith(("accuracy", "f1")) else str(v)


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.out or os.environ.get("OUT") or "/tmp/gpu_check")
    parts = {f.stem: json.loads(f.read_text()) for f in sorted(out.glob("*.json")) if f.stem != "gpu_check"}
    cpu = {}
    if args.cpu:
        cpu = {f.stem: json.loads(f.read_text()) for f in sorted(Path(args.cpu).glob("*.json"))}
    rows = []
    print("| part | device | precision | model | input | images | epochs | first epoch s | steady images/s "
          "| x CPU | input path images/s | test acc | test macro-F1 | val acc |")  # fmt: skip
    print("| --- " * 14 + "|")
    for name, r in parts.items():
        if "steady_images_per_s" not in r:
            continue
        base = cpu.get(name) or cpu.get(name.replace("mixed", "float32"))  # the CPU runs float32 anyway
        ratio = None
        if base and base.get("steady_images_per_s") and r.get("steady_images_per_s"):
            ratio = round(r["steady_images_per_s"] / base["steady_images_per_s"], 1)
        test, val = r.get("test", {}), r.get("val", {})
        row = {"part": name, "device": r["device"], "precision": r["precision"], "model": r["model"],
               "input": "x".join(map(str, r["input"])), "images": r["train_images"],
               "epochs": r["train"]["epochs_run"], "first_epoch_s": r["first_epoch_seconds"],
               "steady_images_per_s": r["steady_images_per_s"], "x_cpu": ratio,
               "input_images_per_s": r["input_images_per_s"],
               "test_accuracy": test.get("accuracy"), "test_macro_f1": test.get("macro_f1"),
               "val_accuracy": val.get("accuracy")}  # fmt: skip
        rows.append(row)
        print("| " + " | ".join(cell(k, v) for k, v in row.items()) + " |")
    if "env" in parts:
        env = parts["env"]
        print(f"env: {env['device']} ({env['backend']}), nvidia-smi: {env.get('nvidia_smi')}")
    if "data" in parts:
        data = parts["data"]
        same = {k: v["identical"] for k, v in data["dvc_lock"].items()}
        print(f"data: rebuilt {data['rebuilt']}, byte-identical to dvc.lock: {same}")
    try:
        write(out, "gpu_check", {"rows": rows, "parts": parts, "cpu": cpu})
    except OSError as err:  # a read-only folder of fetched results
        print(f"report: not saved ({err.strerror}): {out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="part", required=True)
    for name in ("env", "data", "train", "report"):
        part = sub.add_parser(name)
        part.add_argument("--out", help="folder for the JSON results (default $OUT, else /tmp/gpu_check)")
    sub.choices["env"].add_argument("--require-gpu", action="store_true", help="exit 3 if no GPU is seen")
    train = sub.choices["train"]
    train.add_argument("--name", required=True, help="the result's name: <out>/<name>.json")
    mixed = "mixed: train.mixed_precision: true (mixed_float16 on a GPU, else float32)"
    train.add_argument("--precision", choices=("float32", "mixed"), default="float32", help=mixed)
    train.add_argument("--model", help="train.model (default: params.yaml's)")
    train.add_argument("--size", type=int, help="square input size; made from the augmented crops")
    train.add_argument("--epochs", type=int, help="train.epochs (default: params.yaml's)")
    train.add_argument("--batch", type=int, help="train.batch_size (default: params.yaml's)")
    train.add_argument("--limit", type=int, help="train on a seeded subset of this many images")
    train.add_argument("--no-eval", action="store_true", help="measure only: do not score val and test")
    train.add_argument("--no-tta", action="store_true", help="score without TTA (evaluate.tta: true)")
    train.add_argument("--require-gpu", action="store_true", help="exit 3 if the backend sees no GPU")
    sub.choices["report"].add_argument("--cpu", help="a folder of this script's CPU results, for the ratios")
    args = parser.parse_args()
    return {"env": cmd_env, "data": cmd_data, "train": cmd_train, "report": cmd_report}[args.part](args)


if __name__ == "__main__":
    sys.exit(main())
