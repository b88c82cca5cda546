"""Benchmark the pipeline: wall time of each stage under `dvc repro`, and of a no-op `dvc repro`.

Runs in a fresh temporary git copy of this repository, so the workspace and its DVC cache are
not touched. Prints figures; asserts nothing (speed targets live here, not in tests).

    WBC_DATA_MIRROR=../shared/datasets/bccd python scripts/benchmark.py [--stages fetch crop ...]
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
STAGES = ["fetch", "crop", "split", "augment", "resize"]


def copy_repo(dest: Path) -> None:
    """A fresh git repository at `dest` holding this repo's tracked and new files, but no data."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=wbc", "-c", "user.email=wbc@example.invalid", "commit", "-qm", "copy"],
    ):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", default=STAGES, help="stages to time, in order")
    args = parser.parse_args()
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
    with tempfile.TemporaryDirectory(prefix="wbc-bench-") as tmp:
        root = Path(tmp)
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


if __name__ == "__main__":
    main()
