import shutil
import stat
import zipfile
from pathlib import Path

import pytest

from pipeline.core import paths
from pipeline.core.errors import PipelineError
from pipeline.data.fetch import (
    Limits,
    Source,
    download,
    fetch_bccd,
    fetch_files,
    format_manifest,
    manifest_of,
    mirror_for,
    read_manifest,
    safe_extract_zip,
)
from tests.helpers import MIRROR, MIRRORS, REPO, serve

ARCHIVE = "BCCD_Dataset-d272fb14cdff6e473fafeeeba32aba5f560e9e43.zip"
MANIFEST = REPO / paths.BCCD_MANIFEST
needs_mirror = pytest.mark.skipif(not MIRROR.is_dir(), reason="the BCCD mirror is not beside the repo")


def make_zip(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def extract(archive: Path, dest: Path, cap: int = 1 << 20) -> int:
    return safe_extract_zip(archive, dest, max_member_bytes=cap, max_total_bytes=cap)


def test_extract_strips_the_top_folder(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"top/a.txt": b"a", "top/sub/b.txt": b"bb"})
    assert extract(archive, tmp_path / "out") == 2
    assert (tmp_path / "out" / "sub" / "b.txt").read_bytes() == b"bb"


@pytest.mark.parametrize(
    ("members", "links", "message"),
    [
        ({"top/../../evil.txt": b"x"}, None, "'..'"),
        ({"/top/abs.txt": b"x"}, None, "absolute path"),
        ({"top/a.txt": b"x"}, {"top/link": "/etc/passwd"}, "symbolic link"),
        ({"top/big.bin": b"0" * 2048}, None, "limit"),
        ({"one/a.txt": b"x", "two/b.txt": b"y"}, None, "one top folder"),
    ],
)
def test_unsafe_archives_are_refused(tmp_path, members, links, message):
    archive = make_zip(tmp_path / "bad.zip", members, links)
    with pytest.raises(PipelineError, match=message) as err:
        extract(archive, tmp_path / "out", cap=1024)
    assert str(archive) in str(err.value)
    assert not (tmp_path / "evil.txt").exists()


def test_corrupt_zip_is_refused(tmp_path):
    archive = tmp_path / "corrupt.zip"
    archive.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(PipelineError, match="not a valid zip"):
        extract(archive, tmp_path / "out")


def fetch(dest: Path, *, mirror: Path | None = None, base_url: str = "http://127.0.0.1:9"):
    return fetch_bccd(
        dest,
        archive=Source(f"{base_url}/{ARCHIVE}", ARCHIVE),
        labels=Source(f"{base_url}/labels.csv", "labels.csv"),
        manifest_path=MANIFEST,
        mirror=mirror,
        limits=Limits(timeout_s=5.0, retries=2, max_download_bytes=50 << 20, max_extracted_bytes=50 << 20,
                      backoff_s=0.05),
    )  # fmt: skip


@needs_mirror
def test_fetch_from_mirror_matches_the_committed_manifest(tmp_path):
    report = fetch(tmp_path / "raw", mirror=MIRROR)
    assert report == {"files": 737, "source": "mirror"}
    assert manifest_of(tmp_path / "raw") == read_manifest(MANIFEST)
    assert len(list((tmp_path / "raw" / "BCCD" / "JPEGImages").glob("*.jpg"))) == 364
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # no scratch left behind


@needs_mirror
def test_checksum_mismatch_leaves_nothing(tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(MIRROR, mirror)
    (mirror / "labels.csv").chmod(0o644)
    with open(mirror / "labels.csv", "a") as f:
        f.write(",999,NEUTROPHIL\n")
    with pytest.raises(PipelineError, match=r"checksum mismatch: labels\.csv"):
        fetch(tmp_path / "raw", mirror=mirror)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror"]


@needs_mirror
def test_failed_fetch_keeps_previous_output(tmp_path):
    dest = tmp_path / "raw"
    dest.mkdir()
    (dest / "previous.txt").write_text("kept")
    with pytest.raises(PipelineError, match="not in the mirror"):
        fetch(dest, mirror=tmp_path / "empty")
    assert (dest / "previous.txt").read_text() == "kept"


def test_manifest_round_trip(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("x")
    (tmp_path / "m").write_text(format_manifest(manifest_of(tmp_path / "d")))
    assert read_manifest(tmp_path / "m") == manifest_of(tmp_path / "d")


@needs_mirror
def test_download_over_http(tmp_path):
    with serve(MIRROR) as (url, server):
        report = fetch(tmp_path / "raw", base_url=url)
    assert report["source"] == "download"
    assert manifest_of(tmp_path / "raw") == read_manifest(MANIFEST)
    assert all(rng is None for _, rng in server.requests)


@needs_mirror
def test_download_cut_mid_file_resumes(tmp_path):
    with serve(MIRROR, cut_first=True) as (url, server):
        fetch(tmp_path / "raw", base_url=url)
    assert manifest_of(tmp_path / "raw") == read_manifest(MANIFEST)
    resumed = [rng for path, rng in server.requests if path.endswith(".zip") and rng]
    assert len(resumed) == 1 and int(resumed[0].split("=")[1].rstrip("-")) > 0


@pytest.mark.parametrize(
    ("faults", "message"), [({"fail_status": 503}, "503"), ({"delay_s": 1.0}, "Timeout")]
)
def test_download_gives_up_after_retries_leaving_no_partial_file(tmp_path, faults, message):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "f.bin").write_bytes(b"x" * 1000)
    options = dict(timeout_s=0.3, retries=2, max_bytes=10_000, backoff_s=0.01)
    with (
        serve(tmp_path / "site", **faults) as (url, server),
        pytest.raises(PipelineError, match=message) as err,
    ):
        download(f"{url}/f.bin", tmp_path / "f.bin", **options)
    assert "after 3 attempts" in str(err.value)
    assert len(server.requests) == 3
    assert not list(tmp_path.glob("f.bin*"))


def test_download_404_fails_at_once(tmp_path):
    (tmp_path / "site").mkdir()
    with serve(tmp_path / "site") as (url, server), pytest.raises(PipelineError, match="404"):
        download(f"{url}/missing", tmp_path / "x", timeout_s=2, retries=3, max_bytes=100, backoff_s=0.01)
    assert len(server.requests) == 1


def test_download_over_size_cap_is_refused(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "big.bin").write_bytes(b"x" * 5000)
    with serve(tmp_path / "site") as (url, _), pytest.raises(PipelineError, match="limit"):
        download(f"{url}/big.bin", tmp_path / "big.bin", timeout_s=2, retries=0, max_bytes=1000)
    assert not list(tmp_path.glob("big.bin*"))


def test_member_larger_than_its_declared_size_is_refused(tmp_path):
    archive = make_zip(tmp_path / "liar.zip", {"top/ok.txt": b"x", "top/bomb.bin": b"0" * 50_000})
    data = bytearray(archive.read_bytes())
    central = data.rfind(b"PK\x01\x02")  # the last central-directory entry: top/bomb.bin
    data[central + 24 : central + 28] = (100).to_bytes(4, "little")  # declared size: 100 bytes
    archive.write_bytes(bytes(data))
    with pytest.raises(PipelineError, match=r"(Bad CRC-32|inflates past).*bomb\.bin") as err:
        extract(archive, tmp_path / "out")  # zipfile stops at the declared size; its CRC then fails
    assert str(archive) in str(err.value)
    out = tmp_path / "out" / "bomb.bin"
    assert not out.exists() or out.stat().st_size <= 100


# Evaluation sets: only the manifest's files of one archive folder, or of a mirror folder.

PBC_MIRROR = MIRRORS / "pbc-dev"


def fetch_set(dest: Path, manifest: Path, *, mirror: Path | None = None, url: str = "http://127.0.0.1:9/a.zip",
              folder: str = "wbc", retries: int = 1) -> dict:  # fmt: skip
    return fetch_files(
        dest, archive=Source(url, "a.zip"), folder=folder, manifest_path=manifest, mirror=mirror,
        limits=Limits(timeout_s=2.0, retries=retries, max_download_bytes=50 << 20,
                      max_extracted_bytes=50 << 20, backoff_s=0.01),
    )  # fmt: skip


@pytest.mark.skipif(not PBC_MIRROR.is_dir(), reason="the PBC mirror is not beside the repo")
def test_an_evaluation_set_comes_from_a_mirror_holding_only_its_files(tmp_path):
    manifest = REPO / paths.PBC_MANIFEST
    assert fetch_set(tmp_path / "pbc", manifest, mirror=PBC_MIRROR) == {"files": 600, "source": "mirror"}
    assert manifest_of(tmp_path / "pbc") == read_manifest(manifest)  # the mirror's README is not copied


def small_set(tmp_path: Path) -> tuple[Path, Path]:
    """A mirror of two listed files (and one unlisted), and its manifest."""
    mirror = tmp_path / "mirror"
    for rel, data in (("neutrophil/a.jpg", b"a"), ("monocyte/b.jpg", b"b")):
        (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
        (mirror / rel).write_bytes(data)
    manifest = tmp_path / "set.sha256"
    manifest.write_text(format_manifest(manifest_of(mirror)))
    (mirror / "README.md").write_text("not listed")
    return mirror, manifest


def test_a_mirror_missing_or_altering_a_listed_file_is_refused_naming_it(tmp_path):
    mirror, manifest = small_set(tmp_path)
    dest = tmp_path / "out"
    (mirror / "monocyte/b.jpg").write_bytes(b"changed")
    with pytest.raises(PipelineError, match=r"checksum mismatch: monocyte/b\.jpg"):
        fetch_set(dest, manifest, mirror=mirror)
    (mirror / "monocyte/b.jpg").unlink()
    with pytest.raises(PipelineError, match=r"b\.jpg: listed in .*set\.sha256 but not in the mirror"):
        fetch_set(dest, manifest, mirror=mirror)
    assert not dest.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["mirror", "set.sha256"]


def test_an_evaluation_set_is_cut_from_its_folder_of_the_upstream_archive(tmp_path):
    _, manifest = small_set(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    make_zip(site / "a.zip", {
        "repo-abc/wbc/neutrophil/a.jpg": b"a", "repo-abc/wbc/monocyte/b.jpg": b"b",
        "repo-abc/wbc/monocyte/unlisted.jpg": b"u", "repo-abc/other/neutrophil/a.jpg": b"a",
    })  # fmt: skip
    with serve(site) as (url, _):
        report = fetch_set(tmp_path / "out", manifest, url=f"{url}/a.zip")
    assert report == {"files": 2, "source": "download"}
    assert manifest_of(tmp_path / "out") == read_manifest(manifest)


def test_offline_the_error_says_how_to_use_the_mirrors(tmp_path, monkeypatch):
    _, manifest = small_set(tmp_path)
    with pytest.raises(PipelineError, match=r"download failed .* Offline\? Set WBC_MIRRORS to a folder"):
        fetch_set(tmp_path / "out", manifest, retries=0)
    monkeypatch.setenv("WBC_MIRRORS", str(tmp_path))
    assert mirror_for("mirror") == tmp_path / "mirror"
    with pytest.raises(PipelineError, match=r"WBC_MIRRORS=.*: no pbc-dev/ there"):
        mirror_for("pbc-dev")
    monkeypatch.delenv("WBC_MIRRORS")
    assert mirror_for("pbc-dev") is None
