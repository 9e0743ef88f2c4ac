"""The shipped model (``builtin``) still meets its floor on frames it has never seen.

A fresh synthetic test set (seed 31337: no recipe of this project uses it) of 60
frames, scored by ``satsam-train evaluate builtin`` at S = 512. The committed model
measures 33.3 % accuracy / 0.308 mean IoU here (41.5 % / 0.400 on the 200-frame test
set of its card, satsam_ros/models/builtin/MODEL.md). The floor sits below that with
room for BLAS and platform noise, and far above what a broken pipeline gives: a model
that predicts nothing scores the empty-frame share (10 %) and mean IoU 0, the random
``tiny`` about the same. A change to the Detector, the pre-processing, the threshold /
min_area handling or the checkpoint loading that hurts the shipped model fails here.
"""

import json

import pytest
from satsam_training.cli import main

from satsam_ros.model import BUILTIN_DIR

FLOOR_ACCURACY = 0.25
FLOOR_MEAN_IOU = 0.22


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    out = tmp_path_factory.mktemp("fresh31337")
    assert main(["synth", "--out", str(out), "--n-train", "0", "--n-val", "0", "--n-test", "60",
                 "--seed", "31337"]) == 0
    return out


def test_shipped_model_card_matches_its_checkpoint():
    meta = json.loads((BUILTIN_DIR / "satsam.json").read_text())
    card = (BUILTIN_DIR / "MODEL.md").read_text()
    prov = meta["provenance"]
    assert meta["size"] == 512 and meta["encoder_input_size"] == 256 and meta["patch_size"] == 256
    assert prov["base"] == "tiny" and prov["seed"] == 7 and "satsam-train fit" in prov["command"]
    assert prov["threshold_tuning"]["min_area"] == meta["min_area"]
    assert f"threshold {meta['threshold']:g}" in card and f"min_area {meta['min_area']}" in card
    assert "scripts/train_builtin.sh" in card
    assert (BUILTIN_DIR / "model.safetensors").stat().st_size < 10 * 2**20  # small enough to commit


def test_shipped_model_meets_its_floor_on_a_fresh_set(fresh, tmp_path, capsys):
    assert main(["evaluate", "builtin", "--data", str(fresh), "--size", "512", "--json", "--no-progress",
                 "--device", "cpu", "--out", str(tmp_path / "eval")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == 60 and result["model"] == "builtin"
    assert result["accuracy"] >= FLOOR_ACCURACY, result
    assert result["mean_iou"] >= FLOOR_MEAN_IOU, result
