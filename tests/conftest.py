"""Fixtures and the environment for quiet, offline test runs; shared helpers are in tests/helpers.py."""

import os
from pathlib import Path

import pytest

from tests.helpers import CASES, MIRROR, REPO, write_dataset

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


@pytest.fixture
def raw_dataset(tmp_path: Path) -> Path:
    root = write_dataset(tmp_path / "raw", CASES)
    with open(root / "labels.csv", "a") as f:
        f.write(",99,NEUTROPHIL\n")  # a row whose image is not in the dataset
    return root


@pytest.fixture(scope="session")
def bccd(tmp_path_factory) -> Path:
    """The real BCCD tree (`BCCD/JPEGImages`, `BCCD/Annotations`): the workspace's `data/raw` when
    fetched, else extracted from the mirror beside the repository; skipped when neither exists."""
    if (REPO / "data/raw/BCCD").is_dir():
        return REPO / "data/raw/BCCD"
    archives = sorted(MIRROR.glob("*.zip")) if MIRROR.is_dir() else []
    if not archives:
        pytest.skip("no BCCD images: neither data/raw nor the mirror in ../shared")
    from pipeline.data.fetch import safe_extract_zip

    dest = tmp_path_factory.mktemp("bccd")
    safe_extract_zip(archives[0], dest, max_member_bytes=1 << 30, max_total_bytes=1 << 31)
    return dest / "BCCD"
