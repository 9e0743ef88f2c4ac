"""Threshold sweep: the rule on constructed probability maps, and tune-threshold end to end."""

import json

import numpy as np
import pytest
from _fitdata import make_coco_dir, one_torch_thread  # noqa: F401 (autouse fixture)
from satsam_training.cli import main
from satsam_training.evaluate import DetectorChoice, evaluate
from satsam_training.threshold import choose, default_grid, sweep

from satsam_ros.model import SatsamMeta, random_model, save_checkpoint, tiny_config


def _square(h=40, w=50, value=255):
    m = np.zeros((h, w), np.float32)
    m[10:20, 10:20] = value
    return m


def test_sweep_picks_the_threshold_that_separates_hit_and_false_alarm():
    true = _square().astype(np.uint8)
    prob_hit = _square(value=0.7)  # satellite at 0.7, background 0
    prob_empty = np.zeros((40, 50), np.float32)
    prob_empty[30:35, 30:35] = 0.4  # a faint blob on an empty frame
    rows = sweep([(prob_hit, true, 0.1), (prob_empty, None, 0.2)], [0.2, 0.5, 0.8])
    acc = {r["threshold"]: r["accuracy"] for r in rows}
    assert acc == {0.2: 0.5, 0.5: 1.0, 0.8: 0.5}
    assert {r["threshold"]: r["false_alarm_rate"] for r in rows} == {0.2: 1.0, 0.5: 0.0, 0.8: 0.0}
    assert {r["threshold"]: r["miss_rate"] for r in rows} == {0.2: 0.0, 0.5: 0.0, 0.8: 1.0}
    assert choose(rows)["threshold"] == 0.5


def test_ties_go_to_iou_then_the_middle_of_the_plateau():
    true = _square().astype(np.uint8)
    prob = _square(value=0.9)
    prob[10:20, 20:22] = 0.3  # a rim that only low thresholds include: lower IoU there
    rows = sweep([(prob, true, None)], [0.1, 0.2, 0.4, 0.5, 0.6, 0.7])
    assert all(r["accuracy"] == 1.0 for r in rows)
    assert rows[0]["mean_iou"] < rows[2]["mean_iou"] == 1.0
    assert choose(rows)["threshold"] == 0.5  # middle of 0.4 .. 0.7 (ties on IoU 1.0)


def _row(accuracy, cascade, margin=None, frames=100, mean_iou=0.3, far=0.5, threshold=0.5):
    return {"accuracy": accuracy, "mean_iou": mean_iou, "false_alarm_rate": far, "frames": frames,
            "threshold": threshold, "cascade": cascade, "cascade_margin": margin}


def test_full_tiling_must_lead_the_cascade_beyond_one_standard_error():
    # 33 against 31 of 100 frames: within one standard error (4.7 points): the cascade, which costs less
    rows = [_row(0.33, 0), _row(0.31, 512, 0, mean_iou=0.2), _row(0.30, 512, 32)]
    assert (choose(rows)["cascade"], choose(rows)["cascade_margin"]) == (512, 0)
    # a lead of 9 points is beyond it: full tiling
    assert choose([_row(0.40, 0), _row(0.31, 512, 0)])["cascade"] == 0
    # the same 2 points on 2,000 frames (standard error 1.05 points) is a real lead
    assert choose([_row(0.33, 0, frames=2000), _row(0.31, 512, 0, frames=2000)])["cascade"] == 0
    # without a cascade sweep, or with the cascade ahead, the plain rule
    assert choose([_row(0.33, 0), _row(0.31, 0, threshold=0.6)])["threshold"] == 0.5
    assert choose([_row(0.30, 0), _row(0.35, 512, 32)])["cascade_margin"] == 32


def test_min_area_clears_small_components_as_the_node_does():
    prob = np.zeros((30, 30), np.float32)
    prob[5:7, 5:7] = 0.9  # 4 pixels
    rows = sweep([(prob, None, None)], [0.5], min_area=5)
    assert rows[0]["false_alarms"] == 0
    rows = sweep([(prob, None, None)], [0.5], min_area=0)
    assert rows[0]["false_alarms"] == 1
    rows = sweep([(prob, None, None)], [0.5, 0.95], min_area=[0, 5])
    assert [(r["min_area"], r["threshold"], r["false_alarms"]) for r in rows] == [
        (0, 0.5, 1), (0, 0.95, 0), (5, 0.5, 0), (5, 0.95, 0)]
    with pytest.raises(ValueError, match="min_area -1 must be >= 0"):
        sweep([(prob, None, None)], [0.5], min_area=[-1])


def test_default_grid():
    grid = default_grid()
    assert grid[0] == 0.05 and grid[-1] == 0.95 and len(grid) == 19
    with pytest.raises(ValueError, match="step"):
        default_grid(0.7)


def test_tune_threshold_end_to_end(tmp_path, capsys):
    data = make_coco_dir(tmp_path / "coco", splits=("val",), count=4, empty=1, height=96, width=120)
    ckpt = tmp_path / "ckpt"
    save_checkpoint(random_model(tiny_config(image_size=64), seed=1), SatsamMeta(size=512, threshold=0.65), ckpt)
    grid = ["0.3", "0.45", "0.5", "0.55", "0.7"]
    rc = main(["tune-threshold", str(ckpt), "--data", str(data), "--thresholds", *grid, "--min-area", "0", "30",
               "--json", "--no-progress"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["rows"]
    assert [(r["min_area"], r["threshold"]) for r in rows] == [(a, float(g)) for a in (0, 30) for g in grid]
    best = result["threshold"]
    assert (best, result["min_area"]) == (choose(rows)["threshold"], choose(rows)["min_area"])

    meta = json.loads((ckpt / "satsam.json").read_text())
    assert meta["threshold"] == best and meta["min_area"] == result["min_area"]
    assert meta["postprocess"]["512"] == result["postprocess"]
    assert result["postprocess"] == {"threshold": best, "min_area": result["min_area"], "max_objects": 0,
                                     "min_score": 0.0, "group_gap": 0, "min_object_score": 0.0}
    tuning = meta["provenance"]["threshold_tuning"]["512"]
    assert tuning["previous"]["threshold"] == 0.65 and tuning["frames"] == 4 and tuning["split"] == "val"
    assert tuning["min_area_grid"] == [0, 30] and tuning["chosen"]["min_area"] == result["min_area"]
    assert (ckpt / "threshold_curve.png").is_file()
    csv_lines = (ckpt / "threshold_curve.csv").read_text().strip().splitlines()
    assert csv_lines[0].startswith("threshold,min_area,max_objects,min_score,group_gap,min_object_score,accuracy,")
    assert len(csv_lines) == 1 + 2 * len(grid)

    # Same code path as the node: evaluating with the Detector at each threshold gives the sweep's rows.
    for row in (rows[0], rows[2], rows[-1]):
        choice = DetectorChoice(str(ckpt), threshold=row["threshold"], min_area=row["min_area"], device="cpu")
        ev = evaluate(choice, data, split="val", progress=False)
        assert ev["accuracy"] == row["accuracy"] and ev["false_alarm_rate"] == row["false_alarm_rate"]
        assert ev["mean_iou"] == pytest.approx(row["mean_iou"])
    # the checkpoint now carries the tuned pair, and the Detector uses it by default
    ev = evaluate(DetectorChoice(str(ckpt), device="cpu"), data, split="val", progress=False)
    assert (ev["threshold"], ev["min_area"]) == (best, result["min_area"])
    assert ev["accuracy"] == choose(rows)["accuracy"]


def test_tune_threshold_needs_a_checkpoint_directory(tmp_path):
    data = make_coco_dir(tmp_path / "coco", splits=("val",), count=1, empty=0)
    with pytest.raises(SystemExit, match="not a checkpoint directory"):
        main(["tune-threshold", "tiny", "--data", str(data), "--no-progress"])
    with pytest.raises(SystemExit, match="no such split file"):
        main(["tune-threshold", "tiny", "--data", str(data), "--split", "test", "--dry-run", "--no-progress"])


def _blob(mask, prob, y, x, h, w, p):
    mask[y:y + h, x:x + w] = 255
    prob[y:y + h, x:x + w] = p


def test_priors_fix_what_the_threshold_cannot():
    """A satellite (high probability) with a detached panel, a weaker blob elsewhere, and
    an empty frame with a weak speck: max_objects, min_score and group_gap each help, and
    the rows score exactly what the Detector's post-processing publishes."""
    from satsam_ros.core import postprocess

    h, w = 80, 100
    true = np.zeros((h, w), np.uint8)
    prob = np.zeros((h, w), np.float32)
    _blob(true, prob, 20, 20, 10, 10, 0.95)  # body
    _blob(true, prob, 20, 33, 10, 4, 0.9)  # panel, 3 px away
    distractor = np.zeros((h, w), np.uint8)
    _blob(distractor, prob, 60, 70, 12, 12, 0.85)  # a cloud edge, weaker than the satellite
    empty_prob = np.zeros((h, w), np.float32)
    empty_prob[5:9, 5:9] = 0.62
    frames = [(prob, true, None), (empty_prob, None, None)]
    rows = sweep(frames, [0.5], max_objects=[0, 1], min_scores=[0.0, 0.8], group_gaps=[0, 4])
    get = {(r["max_objects"], r["min_score"], r["group_gap"]): r for r in rows}
    assert get[(0, 0.0, 0)]["accuracy"] == 0.0  # distractor halves the IoU, speck is a false alarm
    assert get[(1, 0.0, 0)]["mean_iou"] == pytest.approx(100 / 140)  # best object only: the panel is lost
    assert get[(1, 0.0, 4)]["mean_iou"] == 1.0  # body + panel are one object
    assert get[(1, 0.8, 4)]["accuracy"] == 1.0 and get[(1, 0.8, 4)]["false_alarms"] == 0
    best = choose(rows)
    assert (best["max_objects"], best["min_score"], best["group_gap"]) == (1, 0.8, 4)
    # what the Detector publishes with that setting is what the row scored
    post = postprocess.PostConfig(0.5, 0, 1, 0.8, 4)
    mask = postprocess.threshold(prob, 0.5)
    boxes = postprocess.apply_post(mask, prob, post)
    assert np.array_equal(mask > 0, true > 0) and len(boxes) == 1
    assert (boxes[0].x0, boxes[0].y0, boxes[0].x1, boxes[0].y1, boxes[0].area) == (20, 20, 37, 30, 140)
    empty_mask = postprocess.threshold(empty_prob, 0.5)
    assert postprocess.apply_post(empty_mask, empty_prob, post) == [] and not empty_mask.any()


def test_detector_uses_the_postprocessing_tuned_for_its_size(tmp_path):
    from satsam_ros.core.detector import Detector, DetectorConfig
    from satsam_ros.runtime import open_detector

    ckpt = tmp_path / "ckpt"
    meta = SatsamMeta(size=512, threshold=0.6, min_area=3,
                      postprocess={"1024": {"threshold": 0.7, "min_area": 9, "max_objects": 1, "min_score": 0.75,
                                            "group_gap": 5}})
    save_checkpoint(random_model(tiny_config(image_size=64), seed=1), meta, ckpt)
    at512 = open_detector(str(ckpt), backend="torch", device="cpu", size=512)
    at1024 = open_detector(str(ckpt), backend="torch", device="cpu", size=1024)
    assert at512.post.to_dict() == {"threshold": 0.6, "min_area": 3, "max_objects": 0, "min_score": 0.0,
                                    "group_gap": 0, "min_object_score": 0.0}
    assert at1024.post.to_dict() == {"threshold": 0.7, "min_area": 9, "max_objects": 1, "min_score": 0.75,
                                     "group_gap": 5, "min_object_score": 0.0}
    override = Detector(at1024.backend, DetectorConfig(size=1024, max_objects=3, min_score=0.0), at1024.meta)
    assert (override.post.max_objects, override.post.min_score, override.post.threshold) == (3, 0.0, 0.7)
    override.set_post(max_objects=None)
    assert override.post.max_objects == 1
    with pytest.raises(ValueError, match="min_score must be in"):
        override.set_post(min_score=2.0)
    assert override.post.min_score == 0.0  # unchanged after a refused change
    with pytest.raises(ValueError, match="postprocess"):
        SatsamMeta(postprocess={"512": {"threshold": 0.5, "colour": 1}}).validate()
