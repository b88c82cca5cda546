"""Shared fixtures: environment for quiet, offline runs, and small generated VOC datasets."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.fetch import format_manifest, manifest_of
from scripts.benchmark import copy_repo

os.environ.update(
    DVC_NO_ANALYTICS="1",
    MLFLOW_DISABLE_TELEMETRY="true",
    TF_CPP_MIN_LOG_LEVEL="2",
    MPLBACKEND="Agg",
    GIT_AUTHOR_NAME="wbc tests",
    GIT_AUTHOR_EMAIL="tests@example.invalid",
    GIT_COMMITTER_NAME="wbc tests",
    GIT_COMMITTER_EMAIL="tests@example.invalid",
)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MIRROR = SHARED / "datasets" / "bccd"


def voc_xml(filename: str, size: tuple[int, int], objects: list[tuple[str, tuple]]) -> str:
    """A Pascal VOC annotation in the BCCD layout."""
    objs = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b in objects
    )
    return (
        f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>"
    )


def smear(seed: int, size: tuple[int, int], boxes: list[tuple]) -> Image.Image:
    """A pink field with a violet 'nucleus' in each box; the seed varies the texture."""
    rng = np.random.default_rng(seed)
    w, h = size
    arr = np.empty((h, w, 3), np.uint8)
    arr[...] = (230, 200, 205)
    arr = np.clip(arr + rng.integers(-20, 20, arr.shape), 0, 255).astype(np.uint8)
    for x0, y0, x1, y1 in boxes:
        yy, xx = np.mgrid[0:h, 0:w]
        cx, cy = (x0 + x1) / 2 + rng.uniform(-3, 3), (y0 + y1) / 2 + rng.uniform(-3, 3)
        r = min(x1 - x0, y1 - y0) / 2.5
        inside = (xx - cx) ** 2 + ((yy - cy) * rng.uniform(0.7, 1.3)) ** 2 < r**2
        arr[inside] = rng.integers(60, 120, size=3).astype(np.uint8) + np.array([40, 0, 80], np.uint8)
    return Image.fromarray(arr)


def write_dataset(root: Path, images: dict[int, tuple[list[tuple], str | None]], size=(160, 120)) -> Path:
    """Write raw/BCCD/{JPEGImages,Annotations} and raw/labels.csv under `root`.

    `images` maps image number -> (WBC boxes, labels.csv category or None for no row).
    """
    jpg_dir = root / "BCCD" / "JPEGImages"
    xml_dir = root / "BCCD" / "Annotations"
    jpg_dir.mkdir(parents=True)
    xml_dir.mkdir(parents=True)
    rows = [",Image,Category"]
    for number, (boxes, category) in images.items():
        name = f"BloodImage_{number:05d}"
        smear(number, size, boxes).save(jpg_dir / f"{name}.jpg", quality=95)
        objects = [("WBC", b) for b in boxes] + [("RBC", (1, 1, 20, 20))]
        (xml_dir / f"{name}.xml").write_text(voc_xml(f"{name}.jpg", size, objects))
        if category is not None:
            rows.append(f',{number},"{category}"')
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    """Run a command that must succeed; its stdout and stderr together."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def stages_run(output: str) -> list[str]:
    """The stages a `dvc repro` / `dvc exp run` output says it ran, in order."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


# A small dataset holding every case the crop stage must handle.
CASES: dict[int, tuple[list[tuple], str | None]] = {
    0: ([(40, 30, 100, 90)], "NEUTROPHIL"),
    1: ([(50, 20, 110, 80)], "EOSINOPHIL"),
    2: ([(30, 30, 90, 90)], "LYMPHOCYTE"),
    3: ([(60, 40, 120, 100)], "MONOCYTE"),
    4: ([(10, 10, 60, 60), (90, 50, 150, 110)], "NEUTROPHIL, NEUTROPHIL"),  # two cells, one class
    5: ([(10, 10, 60, 60), (90, 50, 150, 110)], "NEUTROPHIL,EOSINOPHIL"),  # two classes: skipped
    6: ([], "EOSINOPHIL"),  # no WBC box
    7: ([(40, 30, 100, 90)], ""),  # empty label
    8: ([(40, 30, 100, 90)], "BASOPHIL"),
    9: ([(40, 30, 100, 90)], None),  # no labels.csv row
    10: ([(120, 70, 200, 140)], "MONOCYTE"),  # crosses the border: clamped
    11: ([(40, 30, 44, 34)], "LYMPHOCYTE"),  # tiny: skipped
    12: ([(100, 90, 40, 30)], "NEUTROPHIL"),  # inverted: skipped
}


@pytest.fixture
def raw_dataset(tmp_path: Path) -> Path:
    root = write_dataset(tmp_path / "raw", CASES)
    with open(root / "labels.csv", "a") as f:
        f.write(",99,NEUTROPHIL\n")  # a row whose image is not in the dataset
    return root


CLASSES = ["NEUTROPHIL", "EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE"]


def make_mirror(root: Path, archive_name: str) -> tuple[Path, dict[str, str], list[tuple[str, str]]]:
    """A mirror folder (zip + labels.csv) of 48 generated smears; its manifest; 8 test sources."""
    cases = {
        n: ([(10 + n % 7 * 12, 5 + n % 5 * 8, 70 + n % 7 * 12, 65 + n % 5 * 8)], CLASSES[n % 4])
        for n in range(48)
    }
    tree = write_dataset(root / "tree", cases)
    manifest = manifest_of(tree)
    mirror = root / "mirror"
    mirror.mkdir()
    top = archive_name.removesuffix(".zip")
    with zipfile.ZipFile(mirror / archive_name, "w") as zf:
        for path in sorted(tree.rglob("*")):
            if path.is_file() and path.name != "labels.csv":
                zf.write(path, f"{top}/{path.relative_to(tree).as_posix()}")
    (mirror / "labels.csv").write_bytes((tree / "labels.csv").read_bytes())
    tests = [(f"BloodImage_{n:05d}.jpg", CLASSES[n % 4]) for n in range(40, 48)]
    return mirror, manifest, tests


def tiny_project(work: Path) -> tuple[Path, dict]:
    """A git copy of this repository set up for a fast run on 48 generated smears: its root, and
    the environment to run `dvc` in (mirror, MLflow store, this venv on PATH)."""
    root = work / "repo"
    root.mkdir()
    copy_repo(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    mirror, manifest, tests = make_mirror(work, params["fetch"]["archive"]["file"])
    (root / "data/reference/bccd.sha256").write_text(format_manifest(manifest))
    lines = ["test_simple_file,bccd_image,class"] + [
        f"{c}/x{i}.jpeg,{img},{c}" for i, (img, c) in enumerate(tests)
    ]
    (root / "data/reference/kaggle_test_sources.csv").write_text("\n".join(lines) + "\n")
    params["crop"].update(padding=4, min_box_size=8)
    params["split"].update(val_fraction=0.25, dedup_max_distance=2)
    params["augment"].update(target_per_class=12)
    params["resize"].update(height=32, width=32)
    params["train"].update(model="lenet", epochs=2, batch_size=8)
    params["evaluate"].update(bootstrap_resamples=50, gallery_size=6)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "WBC_DATA_MIRROR": str(mirror),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "tiny dataset"], root, env)
    return root, env


@pytest.fixture(scope="session")
def bccd(tmp_path_factory) -> Path:
    """The real BCCD tree (`BCCD/JPEGImages`, `BCCD/Annotations`): the workspace's `data/raw` when
    fetched, else extracted from the mirror beside the repository; skipped when neither exists."""
    if (REPO / "data/raw/BCCD").is_dir():
        return REPO / "data/raw/BCCD"
    archives = sorted(MIRROR.glob("*.zip")) if MIRROR.is_dir() else []
    if not archives:
        pytest.skip("no BCCD images: neither data/raw nor the mirror in ../shared")
    from pipeline.fetch import safe_extract_zip

    dest = tmp_path_factory.mktemp("bccd")
    safe_extract_zip(archives[0], dest, max_member_bytes=1 << 30, max_total_bytes=1 << 31)
    return dest / "BCCD"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_server(cmd: list[str], ready_url: str, timeout_s: float = 120, **popen) -> Iterator[None]:
    """Run a server process (on 127.0.0.1), wait until `ready_url` answers 200, and stop it by PID."""
    import requests

    server = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, **popen
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if requests.get(ready_url, timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert server.poll() is None and time.monotonic() < deadline, f"{cmd[:4]} did not start"
            time.sleep(0.5)
        yield
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
