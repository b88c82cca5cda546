"""Bad input through a real stage process: exit code 1, one clear line naming the file and the
problem, and nothing written to the stage's outputs."""

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.helpers import CASES, REPO, write_dataset

ENTITIES = '<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">'
BILLION_LAUGHS = f'<?xml version="1.0"?><!DOCTYPE a [{ENTITIES}]><annotation>&b;</annotation>'


def spoil_xml(raw):
    (raw / "BCCD/Annotations/BloodImage_00002.xml").write_text(BILLION_LAUGHS)
    return "BloodImage_00002.xml", "unsafe XML"


def truncate_jpeg(raw):
    jpg = raw / "BCCD/JPEGImages/BloodImage_00001.jpg"
    jpg.write_bytes(jpg.read_bytes()[:300])
    return "BloodImage_00001.jpg", "truncated"


def unknown_label(raw):
    with open(raw / "labels.csv", "a") as f:
        f.write(",3,PLATELET\n")
    return "labels.csv", "unknown class"


def typo_in_params(raw):
    params = yaml.safe_load((raw.parents[1] / "params.yaml").read_text())
    params["train"]["droput"] = 0.4
    (raw.parents[1] / "params.yaml").write_text(yaml.safe_dump(params))
    return "params.yaml", "train.droput"


@pytest.mark.parametrize("spoil", [spoil_xml, truncate_jpeg, unknown_label, typo_in_params])
def test_crop_stage_refuses_bad_input_and_writes_nothing(tmp_path, spoil):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    raw = write_dataset(tmp_path / "data" / "raw", dict(list(CASES.items())[:4]))
    name, problem = spoil(raw)
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}
    done = subprocess.run(
        [sys.executable, "-m", "stages.crop"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    message = done.stderr[done.stderr.index("error: ") :]
    assert name in message.splitlines()[0] and problem.lower() in message.lower()
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["raw"]
    assert not (tmp_path / "metrics").exists()
