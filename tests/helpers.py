"""What the tests share: generated smears and VOC datasets, a tiny copy of this project to run DVC
in, small arrays for model tests, and local servers (an HTTP file server with faults, any server
started on 127.0.0.1 and stopped by its PID)."""

import contextlib
import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from pipeline.data.fetch import format_manifest, manifest_of
from scripts.team_server import free_port  # noqa: F401  (the tests' one free-port helper)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MIRRORS = SHARED / "datasets"  # what WBC_MIRRORS names offline: a folder per source
MIRROR = MIRRORS / "bccd"
TYPES = ["neutrophil", "eosinophil", "lymphocyte", "monocyte"]  # the classes, as model tests name them


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


LABELS = ["NEUTROPHIL", "EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE"]


def make_mirror(root: Path, archive_name: str) -> tuple[Path, dict[str, str], list[tuple[str, str]]]:
    """A BCCD mirror (`<root>/mirrors/bccd`: zip + labels.csv) of 48 generated smears; its manifest;
    8 test sources."""
    cases = {
        n: ([(10 + n % 7 * 12, 5 + n % 5 * 8, 70 + n % 7 * 12, 65 + n % 5 * 8)], LABELS[n % 4])
        for n in range(48)
    }
    tree = write_dataset(root / "tree", cases)
    manifest = manifest_of(tree)
    mirror = root / "mirrors" / "bccd"
    mirror.mkdir(parents=True)
    top = archive_name.removesuffix(".zip")
    with zipfile.ZipFile(mirror / archive_name, "w") as zf:
        for path in sorted(tree.rglob("*")):
            if path.is_file() and path.name != "labels.csv":
                zf.write(path, f"{top}/{path.relative_to(tree).as_posix()}")
    (mirror / "labels.csv").write_bytes((tree / "labels.csv").read_bytes())
    tests = [(f"BloodImage_{n:05d}.jpg", LABELS[n % 4]) for n in range(40, 48)]
    return mirror, manifest, tests


def make_external_mirrors(mirrors: Path, tree: Path, tests: list[tuple[str, str]]) -> dict[str, str]:
    """Mirrors of the evaluation sets beside a generated BCCD tree: the published sets (each test
    source at half size in TEST_SIMPLE, and flipped in TEST) and 3 single-cell images per class as
    another lab's; returns their manifests, the published sets' sources CSV and their fields' photos."""
    published, pbc = mirrors / "dataset2-master", mirrors / "pbc-dev"
    lines, field_lines = ["test_simple_file,bccd_image,class"], ["file,bccd_image,inliers,same_as"]
    for i, (name, label) in enumerate(tests):
        with Image.open(tree / "BCCD" / "JPEGImages" / name) as img:
            half = img.resize((img.width // 2, img.height // 2))
        flipped = half.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        for set_name, picture, number in (("TEST_SIMPLE", half, 1000 + i), ("TEST", flipped, 2000 + i)):
            path = published / "images" / set_name / label / f"_{i}_{number}.jpeg"
            path.parent.mkdir(parents=True, exist_ok=True)
            picture.save(path, quality=95)
            field_lines.append(f"images/{set_name}/{label}/_{i}_{number}.jpeg,{name},100,")
        lines.append(f"{label}/_{i}_{1000 + i}.jpeg,{name},{label}")
    for n in range(12):
        path = pbc / LABELS[n % 4].lower() / f"cell_{n}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        smear(100 + n, (90, 90), [(20, 20, 70, 70)]).save(path, quality=95)
    return {"published": format_manifest(manifest_of(published)), "pbc": format_manifest(manifest_of(pbc)),
            "sources": "\n".join(lines) + "\n", "fields": "\n".join(field_lines) + "\n"}  # fmt: skip


def tiny_project(work: Path) -> tuple[Path, dict]:
    """A git copy of this repository set up for a fast run on 48 generated smears: its root, and
    the environment to run `dvc` in (mirror, MLflow store, this venv on PATH)."""
    root = work / "repo"
    root.mkdir()
    copy_repo(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    mirror, manifest, tests = make_mirror(work, params["fetch"]["archive"]["file"])
    (root / "data/reference/bccd.sha256").write_text(format_manifest(manifest))
    external = make_external_mirrors(mirror.parent, work / "tree", tests)
    (root / "data/reference/kaggle_test_sources.csv").write_text(external["sources"])
    (root / "data/reference/kaggle_test_fields.csv").write_text(external["fields"])
    (root / "data/reference/published.sha256").write_text(external["published"])
    (root / "data/reference/pbc.sha256").write_text(external["pbc"])
    params["crop"].update(padding=4, min_box_size=8)
    params["split"].update(val_fraction=0.25, dedup_max_distance=2)
    params["augment"].update(target_per_class=12)
    params["resize"].update(height=32, width=32)
    params["train"].update(
        model="depthwise", epochs=2, batch_size=8, members=1
    )  # ensembles: tests/e2e/test_cv.py
    params["evaluate"].update(bootstrap_resamples=50, gallery_size=6)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "WBC_MIRRORS": str(mirror.parent),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "tiny dataset"], root, env)
    return root, env


def committed_values(params: dict, committed: dict | None = None) -> dict:
    """`params` (the workspace's params.yaml) with every value the last commit also has set back to
    the committed one: a `dvc exp run -S train.dropout=0.4` in the workspace rewrites params.yaml,
    and the end-to-end tests must not run on that, while a key added but not yet committed still
    reaches them."""
    if committed is None:
        shown = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=REPO, capture_output=True, text=True)
        committed = yaml.safe_load(shown.stdout) if shown.returncode == 0 else {}
    out = {}
    for key, value in params.items():
        old = committed.get(key) if isinstance(committed, dict) else None
        if isinstance(value, dict):
            out[key] = committed_values(value, old if isinstance(old, dict) else {})
        else:
            out[key] = old if isinstance(committed, dict) and key in committed else value
    return out


def copy_repo(dest: Path) -> None:
    """A fresh git repository at `dest` holding this repo's tracked and new files, but no data; its
    params and dvc.lock are the committed ones (see `committed_values`)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    workspace = yaml.safe_load((REPO / "params.yaml").read_text())
    if (params := committed_values(workspace)) != workspace:  # after a `dvc exp run` in the workspace
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        lock = subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=REPO, capture_output=True, check=True)
        (dest / "dvc.lock").write_bytes(lock.stdout)
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=wbc", "-c", "user.email=wbc@example.invalid", "commit", "-qm", "copy"],
    ):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)


def dvc_kernels(root: Path = REPO) -> str:
    """`vars: kernels` of a project's dvc.yaml: the CPU kernel settings its model stages run under."""
    found = yaml.safe_load((root / "dvc.yaml").read_text())["vars"]
    return next(v["kernels"] for v in found if "kernels" in v)


def tiny(n: int, shape=(32, 32, 3), seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    return {
        "x": rng.integers(0, 256, (n, *shape), dtype=np.uint8),
        "y": y,
        "nucleus": (y >= 2).astype(np.int64),
        "classes": np.array(TYPES),
    }


def always(label: int, size: int = 32, strength: float = 5.0):
    """A cell-type model that answers `label` for every crop, whatever it shows, with the logit
    margin `strength` (an ensemble's members outvote each other by it)."""
    import keras

    inputs = keras.Input((size, size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    bias = keras.initializers.Constant(np.eye(4)[label] * strength)
    head = keras.layers.Dense(4, "softmax", kernel_initializer="zeros", bias_initializer=bias, name="type")
    return keras.Model(inputs, {"type": head(pooled)})


# Generated smear fields for the localiser and `wbc predict`.
W, H = 320, 240  # the Kaggle test-set size; sizes below are in its pixels
BACKGROUND, RED_CELL = (235, 215, 220), (225, 160, 165)
CYTOPLASM, NUCLEUS, PLATELET = (225, 205, 220), (110, 70, 180), (120, 80, 175)
PLATELETS = [(20, 20), (300, 30), (160, 225), (300, 220)]


def disk(img: np.ndarray, cx: float, cy: float, rx: float, ry: float, colour: tuple) -> None:
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    img[((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1] = colour


def field(cells: list[tuple], platelets: bool = True, seed: int = 0) -> np.ndarray:
    """A pink smear with red cells, platelet dots and white cells (cx, cy, rx, ry, nucleus lobes as
    (dx, dy, r) from the cell centre), with mild noise so no colour is perfectly flat."""
    rng = np.random.default_rng(seed)
    img = np.empty((H, W, 3), np.uint8)
    img[...] = BACKGROUND
    for cx, cy in [(40, 200), (110, 30), (230, 40), (270, 130), (200, 200), (60, 110)]:
        disk(img, cx, cy, 22, 22, RED_CELL)
    for cx, cy in PLATELETS if platelets else []:
        disk(img, cx, cy, 3, 3, PLATELET)
    for cx, cy, rx, ry, lobes in cells:
        disk(img, cx, cy, rx, ry, CYTOPLASM)
        for dx, dy, r in lobes:
            disk(img, cx + dx, cy + dy, r, r, NUCLEUS)
    return np.clip(img + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)


def truth_box(cx: float, cy: float, rx: float, ry: float, _lobes: list) -> tuple:
    return (cx - rx, cy - ry, cx + rx, cy + ry)


TWO_LOBES = (110, 120, 50, 32, [(-22, 0, 18), (22, 0, 18)])  # lobes 8 px apart
THREE_LOBES = (90, 110, 45, 45, [(-14, -12, 17), (14, -12, 17), (0, 14, 17)])
ROUND = (230, 110, 38, 38, [(0, 0, 30)])  # a lymphocyte: one big round nucleus


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


# A small HTTP file server on 127.0.0.1 for download tests, with switchable faults.
class FileServer(http.server.ThreadingHTTPServer):
    root: Path
    cut_first: bool = False  # the first GET of each file stops half-way
    fail_status: int | None = None  # every GET answers this status
    delay_s: float = 0.0  # wait before answering
    requests: list[tuple[str, str | None]]  # (path, Range header)


class Handler(http.server.BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        time.sleep(srv.delay_s)
        if srv.fail_status:
            self.send_error(srv.fail_status)
            return
        path = srv.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        first = sum(p == self.path for p, _ in srv.requests) == 1
        if srv.cut_first and first:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@contextlib.contextmanager
def serve(root: Path, **faults) -> Iterator[tuple[str, FileServer]]:
    """Serve `root` on a free port; yields the base URL and the server (to read its log)."""
    server = FileServer(("127.0.0.1", 0), Handler)
    server.root = Path(root)
    server.requests = []
    for key, value in faults.items():
        setattr(server, key, value)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
