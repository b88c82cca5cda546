"""Benchmark the pipeline; prints figures and asserts nothing (speed targets live here, not in tests).

1. Wall time of each stage under `dvc repro`, then of a no-op `dvc repro`, in a fresh temporary git
   copy of this repository (the workspace and its DVC cache are not touched).
2. Training throughput (images/s) of the train stage's streamed `fit` against a bare `model.fit`
   on the same in-memory arrays, in this process, with the params' model and batch size.
3. The bootstrap's cost on a Kaggle-TEST-sized set (2,487 fields from 69 source photos, the
   params' resamples, the four headline metrics).
4. With --clone-to-predict: a teammate's first `wbc predict` from a fresh clone. This workspace's
   outputs are pushed to a temporary local DVC remote; a `git clone` of the last commit then runs
   `dvc pull` (every output, or the model alone) and `wbc predict` on one photo.

    WBC_MIRRORS=../shared/datasets python scripts/benchmark.py [--stages ...] [--fit-epochs 2]
5. With --predict-models: `wbc predict`'s images/s (localiser, crops, classifier with the params'
   TTA) for each model file on the same photos, in this process, and the ratio to the first: what
   an ensemble costs a lab against a single model.

6. With --allocator: the params' model trained for a few epochs on random arrays of the resized
   shape, in fresh processes alternating glibc's default malloc with the pipeline's (freed memory
   kept: `pipeline/core/memory.py`): ms per step, minor page faults per step, the kernel's share of
   the CPU time, a digest of the weights (equal: the same numbers), and the speed-up.

7. With --tta: cells/s of the prediction path (`pipeline.inference.tta.predict`, the params' TTA)
   at each batch size given, against Keras' `model.predict` per view (the path before it: a
   dataset built, and traced again for each new shape, on each call), in fresh processes,
   alternating, on chunks of the test split's crops of varying size.

8. With --kernels: the fit of item 6 (freed memory kept, as the train stage does) in fresh
   processes under TensorFlow's own CPU kernels, under dvc.yaml's portable ones (`vars: kernels`)
   and under the portable ones held to one core: ms per step, the ratio to TensorFlow's own, and the
   weights' digest. A machine that computes what the measured ones do prints the digest of
   docs/reproducibility.md for the portable rows; the one-core row shows the core count does not
   matter.

    python scripts/benchmark.py --clone-to-predict PHOTO
    python scripts/benchmark.py --predict-models models/model.keras other.keras --photos 40
    python scripts/benchmark.py --predict-models rgb.keras reinhard.keras --colours rgb reinhard
    python scripts/benchmark.py --allocator --rounds 2
    python scripts/benchmark.py --tta 64 16 --rounds 2
    python scripts/benchmark.py --kernels --rounds 2
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.helpers.copy_repo when run as a script
STAGES = ["fetch", "fetch_external", "sources", "crop", "split", "augment", "resize", "train", "evaluate"]


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def fit_throughput(data: Path, epochs: int) -> None:
    """Images/s of pipeline.model.train.fit vs a bare model.fit on the same arrays (first epoch excluded)."""
    import keras
    import numpy as np

    from pipeline.core.classes import task_heads
    from pipeline.core.params import load_params
    from pipeline.data.arrays import class_list, load_npz
    from pipeline.model.train import compile_model, fit, targets
    from pipeline.model.zoo import build_model

    params = load_params(REPO / "params.yaml").train
    off = {"enabled": False}
    p = params.model_copy(
        update={
            "epochs": epochs + 1,
            "reduce_lr": params.reduce_lr.model_copy(update=off),
            "early_stopping": params.early_stopping.model_copy(update=off),
        }
    )
    train = load_npz(data / "train.npz")

    def new_model() -> keras.Model:
        m = build_model(
            p.model, train["x"].shape[1:], task_heads(p.task, class_list(train)), dropout=p.dropout
        )
        compile_model(m, p)
        return m

    class EpochTimes(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_epoch_begin(self, epoch, logs=None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None) -> None:
            self.times.append(time.perf_counter() - self.start)

    streamed, bare = EpochTimes(), EpochTimes()
    fit(new_model(), train, {k: v[:64] for k, v in train.items()}, p, [streamed])
    x = train["x"].astype("float32")  # a bare fit wants the whole set as float: a full copy
    new_model().fit(
        x, targets(train, p.task), batch_size=p.batch_size, epochs=p.epochs, callbacks=[bare], verbose=0
    )
    shape = "x".join(map(str, train["x"].shape[1:3]))
    for name, clock in (("pipeline fit", streamed), ("bare model.fit", bare)):
        rate = len(x) / float(np.mean(clock.times[1:]))
        print(f"{name:<15} {rate:8.1f} images/s  ({p.model}, {shape}, batch {p.batch_size}, {len(x)} images)")


def bootstrap_seconds() -> None:
    """Seconds for the intervals of one published set, which evaluate computes for three sets."""
    import numpy as np

    from pipeline.core.classes import CLASSES
    from pipeline.core.params import load_params
    from pipeline.evaluation.metrics import bootstrap_intervals, headline_metrics, nucleus_accuracy

    p = load_params(REPO / "params.yaml").evaluate
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 69, 2487)
    truth = groups % 4
    pred = np.where(rng.random(len(truth)) < 0.9, truth, rng.integers(0, 5, len(truth)))
    metrics = headline_metrics(len(CLASSES)) | {"nucleus_accuracy": nucleus_accuracy(CLASSES)}
    start = time.perf_counter()
    bootstrap_intervals(
        truth, pred, groups, metrics, resamples=p.bootstrap_resamples, confidence=p.confidence, seed=p.seed
    )
    seconds = time.perf_counter() - start
    what = f"{p.bootstrap_resamples} resamples of 2,487 fields, 69 sources, 4 metrics"
    print(f"bootstrap  {seconds:8.2f} s  ({what})")


def clone_to_predict(photo: Path, env: dict) -> None:
    """Seconds from `git clone` to a first `wbc predict`, through a local DVC remote."""
    with tempfile.TemporaryDirectory(prefix="wbc-team-") as tmp:
        remote, clone = Path(tmp) / "remote", Path(tmp) / "clone"
        subprocess.run(["dvc", "remote", "add", "--local", "-f", "bench", str(remote)], cwd=REPO, check=True)
        try:
            push = timed(["dvc", "push", "-r", "bench"], REPO, env)
        finally:
            subprocess.run(["dvc", "remote", "remove", "--local", "bench"], cwd=REPO, check=True)
        size = sum(f.stat().st_size for f in remote.rglob("*") if f.is_file()) / 2**20
        print(f"dvc push   {push:8.1f} s  (every output of this workspace: {size:.0f} MiB to a local remote)")
        for what, targets in (("everything", []), ("the model", ["models/model.keras"])):
            shutil.rmtree(clone, ignore_errors=True)
            clone_s = timed(["git", "clone", "-q", str(REPO), str(clone)], Path(tmp), env)
            subprocess.run(
                ["dvc", "remote", "add", "--local", "-d", "team", str(remote)], cwd=clone, check=True
            )
            pull = timed(["dvc", "pull", *targets], clone, env)
            predict = timed(
                [sys.executable, "-m", "pipeline.cli", "predict", str(photo)],
                clone,
                env | {"PYTHONPATH": str(clone)},
            )
            print(
                f"clone->predict {clone_s + pull + predict:6.1f} s  (pull {what}: git clone {clone_s:.1f} + "
                f"dvc pull {pull:.1f} + wbc predict {predict:.1f})"
            )


def predict_speed(models: list[Path], photos: int, colours: list[str] | None = None) -> None:
    """Images/s of the predict path per model on the first `photos` BCCD photos (one warm-up pass),
    each model with its own `resize.colour` when `colours` are given (a model trained on
    Reinhard-normalised crops against one trained on plain RGB)."""
    from pipeline.core.params import load_params
    from pipeline.data.arrays import class_list, load_npz
    from pipeline.data.images import load_rgb
    from pipeline.inference.classify import load_model_file, model_head, predict_images
    from pipeline.model.ensemble import members_of

    params = load_params(REPO / "params.yaml")
    files = sorted((REPO / "data/raw/BCCD/JPEGImages").glob("*.jpg"))[:photos]
    images = [(f.name, load_rgb(f), None) for f in files]
    classes = class_list(load_npz(REPO / "data/resized/test.npz", keys=("classes",)))
    first = None
    for path, colour in zip(models, colours or [params.resize.colour] * len(models), strict=True):
        model = load_model_file(path)
        out = model_head(model, classes)
        these = params.model_copy(update={"resize": params.resize.model_copy(update={"colour": colour})})
        predict_images(images[:4], model, these, out)  # warm-up: graph tracing
        start = time.perf_counter()
        predict_images(images, model, these, out)
        rate = len(images) / (time.perf_counter() - start)
        first = first or rate
        what = f"{len(members_of(model))} member(s), TTA {params.evaluate.tta}, {colour}, {len(images)} img"
        print(f"predict  {rate:7.2f} images/s  ({first / rate:.2f}x the first's time)  {path} ({what})")


def allocator_child(mode: str, epochs: int) -> None:
    """One process's training steps (item 6), printed as one JSON line."""
    import hashlib
    import json
    import resource

    if mode == "keep":
        from pipeline.core.memory import keep_freed_memory

        keep_freed_memory()
    import keras
    import numpy as np

    from pipeline.core.classes import CLASSES, head
    from pipeline.core.params import load_params
    from pipeline.model.batches import Batches
    from pipeline.model.runtime import configure
    from pipeline.model.train import compile_model
    from pipeline.model.zoo import build_model

    params = load_params(REPO / "params.yaml")
    p, size = params.train, (params.resize.height, params.resize.width, 3)
    configure(p.seed, p.deterministic, False)
    model = build_model(p.model, size, [head("type", CLASSES)], dropout=p.dropout, l2=p.l2,
                        bn_momentum=p.bn_momentum)  # fmt: skip
    compile_model(model, p)
    rng = np.random.default_rng(0)
    n = 25 * p.batch_size
    data = Batches(rng.integers(0, 256, (n, *size), dtype=np.uint8),
                   {"type": rng.integers(0, len(CLASSES), n)}, p.batch_size, shuffle=True)  # fmt: skip
    model.fit(data, epochs=1, verbose=0)  # tracing and first touch, not timed
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    model.fit(data, epochs=epochs, verbose=0)
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    steps = epochs * len(data)
    kernel, user = after.ru_stime - before.ru_stime, after.ru_utime - before.ru_utime
    weights = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights())).hexdigest()
    print(json.dumps({"mode": mode, "ms_per_step": 1000 * seconds / steps,
                      "faults_per_step": (after.ru_minflt - before.ru_minflt) / steps,
                      "kernel_share": kernel / (kernel + user), "weights": weights[:16]}))  # fmt: skip
    keras.backend.clear_session()


def allocator_compare(rounds: int, epochs: int) -> None:
    """Item 6: default malloc against freed memory kept, alternating in fresh processes."""
    import json

    found: dict[str, list[dict]] = {"default": [], "keep": []}
    print(f"{'malloc':<8} {'ms/step':>8} {'faults/step':>12} {'kernel CPU':>11}  weights")
    for _ in range(rounds):
        for mode in found:
            done = subprocess.run([sys.executable, __file__, "--allocator-child", mode, "--fit-epochs",
                                   str(epochs)], capture_output=True, text=True, check=True)  # fmt: skip
            row = json.loads(done.stdout.strip().splitlines()[-1])
            found[mode].append(row)
            print(f"{mode:<8} {row['ms_per_step']:8.0f} {row['faults_per_step']:12.0f} "
                  f"{row['kernel_share']:11.0%}  {row['weights']}")  # fmt: skip
    mean = {m: sum(r["ms_per_step"] for r in rows) / len(rows) for m, rows in found.items()}
    same = len({r["weights"] for rows in found.values() for r in rows}) == 1
    print(f"speed-up {mean['default'] / mean['keep']:.2f}x; weights {'identical' if same else 'DIFFER'}")


def kernels_compare(rounds: int, epochs: int) -> None:
    """Item 8: TensorFlow's own CPU kernels against the portable ones, alternating, fresh processes."""
    import json

    from tests.helpers import dvc_kernels

    portable = dict(v.split("=", 1) for v in dvc_kernels().split())  # what the model stages run under
    settings = {"TensorFlow's own": ({}, None), "portable (dvc.yaml)": (portable, None),
                "portable, one core": (portable, {0})}  # fmt: skip
    steps: dict[str, list[float]] = {name: [] for name in settings}
    print(f"{'kernels':<20} {'ms/step':>8}  weights")
    for _ in range(rounds):
        for name, (variables, cores) in settings.items():
            env = {k: v for k, v in os.environ.items() if k not in portable} | variables
            done = subprocess.run(
                [sys.executable, __file__, "--allocator-child", "keep", "--fit-epochs", str(epochs)],
                capture_output=True, text=True, check=True, env=env,
                preexec_fn=(lambda c=cores: os.sched_setaffinity(0, c)) if cores else None,
            )  # fmt: skip
            row = json.loads(done.stdout.strip().splitlines()[-1])
            steps[name].append(row["ms_per_step"])
            print(f"{name:<20} {row['ms_per_step']:8.0f}  {row['weights']}")
    mean = {name: sum(v) / len(v) for name, v in steps.items()}
    own = mean["TensorFlow's own"]
    ratios = "  ".join(f"{name}: {m / own:.2f}x" for name, m in mean.items())
    print(f"{ratios}  (ms/step against TensorFlow's own)")


def tta_child(model_file: Path, batch: int) -> None:
    """One process's prediction passes (item 7), printed as one JSON line: `batch` 0 is Keras'
    `model.predict` per view (the path before `tta.predict`), else `tta.predict` at that size."""
    import hashlib
    import json

    import numpy as np

    from pipeline.core.memory import keep_freed_memory
    from pipeline.core.params import load_params
    from pipeline.data.arrays import load_npz
    from pipeline.inference.classify import load_model_file
    from pipeline.inference.tta import predict, views
    from pipeline.model.batches import Batches

    keep_freed_memory()  # as in evaluate and `wbc predict`
    tta = load_params(REPO / "params.yaml").evaluate.tta
    model = load_model_file(model_file)
    x = load_npz(REPO / "data/resized/test.npz", keys=("x",))["x"]
    x = np.concatenate([x] * (160 // len(x) + 1))
    chunks = [x[:n] for n in (150, 131, 97, 140, 122, 151, 89, 133)]  # evaluate's chunks vary so

    def per_view(cells: np.ndarray) -> np.ndarray:
        shown = views(cells) if tta else [lambda a: a]
        out = [model.predict(Batches(np.ascontiguousarray(v(cells)), {}, 64, shuffle=False), verbose=0)
               for v in shown]  # fmt: skip
        return sum(next(iter(o.values())) if isinstance(o, dict) else o for o in out) / len(shown)

    def run(cells: np.ndarray) -> np.ndarray:
        return per_view(cells) if not batch else next(iter(predict(model, cells, batch, tta).values()))

    first = run(x[:40])  # warm-up
    start = time.perf_counter()
    for chunk in chunks:
        run(chunk)
    seconds = time.perf_counter() - start
    digest = hashlib.sha256(np.round(first, 5).tobytes()).hexdigest()[:12]
    print(json.dumps({"cells_per_s": sum(map(len, chunks)) / seconds, "probs": digest}))


def tta_speed(model_file: Path, batch_sizes: list[int], rounds: int) -> None:
    """Item 7: cells/s of Keras' `model.predict` per view against `tta.predict` at each batch size,
    each in a fresh process, alternating `rounds` times, on chunks of the test split's crops of
    varying size (evaluate's and `wbc predict`'s chunks of photos hold varying numbers of cells);
    a digest of the probabilities rounded to 5 decimals (equal: the same answers)."""
    import json

    names = {0: "model.predict per view (64)", **{b: f"tta.predict, batch {b}" for b in batch_sizes}}
    found: dict[int, list[float]] = {b: [] for b in names}
    digests: dict[int, str] = {}
    for _ in range(rounds):
        for batch in names:
            done = subprocess.run([sys.executable, __file__, "--tta-child", str(batch), "--predict-models",
                                   str(model_file)], capture_output=True, text=True, check=True)  # fmt: skip
            row = json.loads(done.stdout.strip().splitlines()[-1])
            found[batch].append(row["cells_per_s"])
            digests[batch] = row["probs"]
    base = sum(found[0]) / rounds
    print(f"{model_file}, {rounds} round(s)")
    for batch, name in names.items():
        rates = found[batch]
        print(f"{name:<28} {', '.join(f'{r:.1f}' for r in rates)} cells/s  "
              f"{sum(rates) / rounds / base:5.2f}x  probabilities {digests[batch]}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", default=STAGES, help="stages to time, in order")
    parser.add_argument("--fit-epochs", type=int, default=2, help="timed epochs per fit (0: skip)")
    parser.add_argument("--bootstrap-only", action="store_true", help="time only the bootstrap (item 3)")
    parser.add_argument("--clone-to-predict", type=Path, metavar="PHOTO", help="time only item 4, on PHOTO")
    parser.add_argument("--predict-models", type=Path, nargs="+", help="time only item 5: these model files")
    parser.add_argument("--photos", type=int, default=40, help="BCCD photos for --predict-models")
    parser.add_argument("--colours", nargs="+", help="resize.colour for each of --predict-models, in order")
    parser.add_argument("--allocator", action="store_true", help="time only item 6: malloc settings")
    parser.add_argument("--rounds", type=int, default=2, help="alternations for --allocator / --kernels")
    parser.add_argument("--kernels", action="store_true", help="time only item 8: CPU kernels")
    parser.add_argument("--tta", type=int, nargs="+", metavar="BATCH",
                        help="time only item 7: these batch sizes (model: --predict-models)")  # fmt: skip
    parser.add_argument("--allocator-child", choices=("default", "keep"), help=argparse.SUPPRESS)
    parser.add_argument("--tta-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.allocator_child:
        allocator_child(args.allocator_child, args.fit_epochs)
        return
    if args.allocator:
        allocator_compare(args.rounds, args.fit_epochs)
        return
    if args.kernels:
        kernels_compare(args.rounds, args.fit_epochs)
        return
    if args.tta_child is not None:
        tta_child(args.predict_models[0], args.tta_child)
        return
    if args.tta:
        tta_speed((args.predict_models or [REPO / "models/model.keras"])[0], args.tta, args.rounds)
        return
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GIT_AUTHOR_NAME": "benchmark",
        "GIT_AUTHOR_EMAIL": "benchmark@example.invalid",
        "GIT_COMMITTER_NAME": "benchmark",
        "GIT_COMMITTER_EMAIL": "benchmark@example.invalid",
    }
    if args.predict_models:
        predict_speed(args.predict_models, args.photos, args.colours)
        return
    if args.clone_to_predict:
        clone_to_predict(args.clone_to_predict.resolve(), env)
        return
    bootstrap_seconds()
    if args.bootstrap_only:
        return
    with tempfile.TemporaryDirectory(prefix="wbc-bench-") as tmp:
        root = Path(tmp)
        from tests.helpers import copy_repo

        copy_repo(root)
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        print(f"{'stage':<10} {'seconds':>8}")
        total = 0.0
        for stage in args.stages:
            seconds = timed(["dvc", "repro", "--single-item", stage], root, env)
            total += seconds
            print(f"{stage:<10} {seconds:8.1f}")
        print(f"{'total':<10} {total:8.1f}")
        noop = timed(["dvc", "repro", args.stages[-1]], root, env)
        print(f"{'no-op':<10} {noop:8.1f}  (dvc repro, all cached)")
        if args.fit_epochs and (root / "data" / "resized" / "train.npz").exists():
            fit_throughput(root / "data" / "resized", args.fit_epochs)


if __name__ == "__main__":
    main()
