"""tune-threshold sweeps the coarse-to-fine cascade (issue 22) and evaluate runs it.

A transparent stand-in model (logits from brightness: the synthetic satellite is the
only bright thing) behind the real Detector, so what each setting does is known: a
small bright speck on the empty frames is dropped by the coarse size's tuned
``min_area``, so the cascade never looks there, while full tiling publishes it unless
its own ``min_area`` is high enough.
"""

import json

import cv2
import numpy as np
import pytest
from _fitdata import make_coco_dir
from satsam_training.cli import main
from satsam_training.evaluate import DetectorChoice, evaluate

from satsam_ros.core.backend import Backend
from satsam_ros.core.detector import Detector, DetectorConfig
from satsam_ros.model import SatsamMeta, random_model, save_checkpoint, tiny_config


class Seeing(Backend):
    name, device, input_size, low_res_size = "seeing", "cpu", 256, 64

    def infer(self, batch):
        self.check_batch(batch)
        red = batch[:, 0]
        small = np.stack([cv2.resize(p, (64, 64), interpolation=cv2.INTER_AREA) for p in red])
        return ((small - 1.0) * 20.0).astype(np.float32)


@pytest.fixture
def standin(monkeypatch):
    """DetectorChoice.open builds the real Detector around the stand-in and the checkpoint's satsam.json."""
    def open_(self):
        meta = SatsamMeta.read(self.spec)
        cfg = DetectorConfig(size=self.frame_size(), threshold=self.threshold, min_area=self.min_area,
                             max_objects=self.max_objects, min_score=self.min_score, group_gap=self.group_gap,
                             min_object_score=self.min_object_score, cascade=self.cascade,
                             cascade_margin=self.cascade_margin, cascade_max_patches=self.cascade_max_patches)
        return Detector(Seeing(), cfg, meta)

    monkeypatch.setattr(DetectorChoice, "open", open_)


@pytest.fixture
def data(tmp_path):
    root = make_coco_dir(tmp_path / "coco", splits=("val",), count=6, empty=2, height=128, width=160)
    for name in ("000004.png", "000005.png"):  # the empty frames: a 3 x 3 bright speck each
        path = root / "images" / "val" / name
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        img[20:23, 130:133] = 255
        cv2.imwrite(str(path), img)
    return root


def test_the_cascade_margins_are_swept_stored_and_read_back(standin, data, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    meta = SatsamMeta(size=None, threshold=0.5, postprocess={"512": {"threshold": 0.5, "min_area": 20}})
    save_checkpoint(random_model(tiny_config(image_size=64), seed=1), meta, ckpt)
    assert main(["tune-threshold", str(ckpt), "--data", str(data), "--size", "1024", "--thresholds", "0.5",
                 "--min-area", "0", "30", "--cascade", "off", "on", "--cascade-margin", "0", "16", "--json",
                 "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["rows"]
    assert [(r["cascade"], r["cascade_margin"], r["min_area"]) for r in rows] == [
        (0, None, 0), (0, None, 30), (512, 0, 0), (512, 0, 30), (512, 16, 0), (512, 16, 30)]
    by = {(r["cascade"], r["cascade_margin"], r["min_area"]): r for r in rows}
    assert by[(0, None, 0)]["false_alarms"] == 2  # full tiling publishes the specks ...
    assert by[(512, 16, 0)]["false_alarms"] == 0  # ... the cascade never runs a patch there
    assert by[(0, None, 30)]["false_alarms"] == 0  # (full tiling needs its own min_area to drop them)
    for key in [(0, None, 0), (512, 0, 0), (512, 16, 30)]:  # a sweep row is what the Detector delivers
        row = by[key]
        got = evaluate(DetectorChoice(str(ckpt), size=1024, threshold=0.5, min_area=row["min_area"],
                                      cascade=key[0], cascade_margin=key[1]), data, split="val", progress=False,
                       warmup=0, examples=0)
        assert (got["accuracy"], got["false_alarms"], got["misses"]) == (row["accuracy"], row["false_alarms"],
                                                                          row["misses"]), key
        assert got["mean_iou"] == pytest.approx(row["mean_iou"])
    best = result["best"]
    assert best["accuracy"] == max(r["accuracy"] for r in rows) and best["cascade"] == 512  # ties: the cheaper
    stored = json.loads((ckpt / "satsam.json").read_text())["postprocess"]
    assert stored["1024"] == result["postprocess"] and stored["1024"]["cascade"] == 512
    assert stored["1024"]["cascade_margin"] == best["cascade_margin"] and stored["512"]["min_area"] == 20
    tuning = json.loads((ckpt / "satsam.json").read_text())["provenance"]["threshold_tuning"]["1024"]
    assert tuning["cascade_grid"] == [0, 512] and tuning["cascade_margin_grid"] == [0, 16]
    # read back: the Detector at 1024 now cascades by default, and delivers the chosen row
    det = DetectorChoice(str(ckpt), size=1024).open()
    assert (det.cascade_size, det.cascade_margin) == (512, best["cascade_margin"])
    got = evaluate(DetectorChoice(str(ckpt), size=1024), data, split="val", progress=False, warmup=0, examples=0)
    assert got["accuracy"] == best["accuracy"] and got["cascade"] == 512
    assert got["cost"]["cascade_stopped_share"] == pytest.approx(2 / 6)  # the two empty frames
    assert got["cost"]["patches_median"] >= 4 and 0 <= got["cost"]["pre_post_share"] <= 1
    # a later tuning that does not sweep the cascade tunes the size as it runs (cascaded) and keeps it
    capsys.readouterr()
    assert main(["tune-threshold", str(ckpt), "--data", str(data), "--size", "1024", "--thresholds", "0.5",
                 "--json", "--no-progress"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert [r["false_alarms"] for r in again["rows"]] == [0] and "cascade" not in again["rows"][0]
    kept = json.loads((ckpt / "satsam.json").read_text())["postprocess"]["1024"]
    assert kept["cascade"] == 512 and kept["cascade_margin"] == best["cascade_margin"]


def test_a_patch_cap_is_tuned_under_and_stored_with_the_cascade(standin, data, tmp_path, capsys):
    """With --cascade-max-patches every cascaded row is scored under the cap (what the
    Detector with that cap delivers) and the cap is stored with the chosen cascade."""
    ckpt = tmp_path / "ckpt"
    meta = SatsamMeta(size=None, threshold=0.5, postprocess={"512": {"threshold": 0.5, "min_area": 20}})
    save_checkpoint(random_model(tiny_config(image_size=64), seed=1), meta, ckpt)
    assert main(["tune-threshold", str(ckpt), "--data", str(data), "--size", "2048", "--thresholds", "0.5",
                 "--cascade", "on", "--cascade-margin", "64", "--cascade-max-patches", "1", "--json",
                 "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["cascade_max_patches"] == 1
    row = result["rows"][0]
    capped = evaluate(DetectorChoice(str(ckpt), size=2048, threshold=0.5, min_area=0, cascade=512,
                                     cascade_margin=64, cascade_max_patches=1), data, split="val", progress=False,
                      warmup=0, examples=0)
    assert (capped["accuracy"], capped["misses"]) == (row["accuracy"], row["misses"])
    assert capped["mean_iou"] == pytest.approx(row["mean_iou"])
    assert capped["cost"]["patches_median"] == 4 + 1 and capped["cost"]["cascade_capped_share"] > 0
    free = evaluate(DetectorChoice(str(ckpt), size=2048, threshold=0.5, min_area=0, cascade=512, cascade_margin=64,
                                   cascade_max_patches=0), data, split="val", progress=False, warmup=0, examples=0)
    assert free["cost"]["patches_median"] > 5 and free["mean_iou"] > capped["mean_iou"]  # the cap cut masks
    stored = json.loads((ckpt / "satsam.json").read_text())["postprocess"]["2048"]
    assert (stored["cascade"], stored["cascade_margin"], stored["cascade_max_patches"]) == (512, 64, 1)
    assert json.loads((ckpt / "satsam.json").read_text())["provenance"]["threshold_tuning"]["2048"][
        "cascade_max_patches"] == 1
    det = DetectorChoice(str(ckpt), size=2048).open()
    assert det.cascade_max_patches == 1 and det.describe_cascade() == "512 first, margin 64 px, at most 1 patch"
