"""The error budget (satsam_ros.core.metrics): every scored frame in one category, by
satellite size, with the grid ceiling of the model's mask grid; constructed frames
whose category and ceiling are known exactly."""

import numpy as np
import pytest

from satsam_ros.core.metrics import (
    CATEGORIES,
    MaskGrid,
    MetricAccumulator,
    budget_markdown,
    categorize,
    grid_ceiling,
    object_extent,
    size_bucket,
    touching_area,
)

H, W = 96, 128


def box(y0, y1, x0, x1, h=H, w=W):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


def category(pred, true):
    acc = MetricAccumulator()
    return acc.add(pred, true).category


def test_empty_frames_correct_or_false_alarm():
    assert category(np.zeros((H, W), np.uint8), None) == "correct_empty"
    assert category(box(5, 7, 5, 7), None) == "false_alarm"
    assert category(box(5, 7, 5, 7), np.zeros((H, W), np.uint8)) == "false_alarm"


def test_missed_satellite_nothing_touches_it():
    truth = box(10, 30, 10, 30)
    assert category(np.zeros((H, W), np.uint8), truth) == "missed"
    assert category(box(60, 80, 90, 120), truth) == "missed"  # a blob elsewhere: still missed
    assert category(box(30, 40, 10, 30), truth) == "missed"  # adjacent but not overlapping


def test_correct_satellite_beside_a_small_far_blob():
    truth = box(10, 30, 10, 30)  # 400 px
    pred = np.maximum(truth, box(70, 75, 100, 105))  # + 25 px far away: IoU 400 / 425
    rec = MetricAccumulator().add(pred, truth)
    assert rec.correct and rec.category == "correct" and rec.iou == pytest.approx(400 / 425)


def test_extra_objects_pull_a_good_mask_under():
    truth = box(10, 30, 10, 30)  # 400 px, predicted exactly
    pred = np.maximum(truth, box(50, 80, 80, 110))  # + 900 px elsewhere: IoU 400 / 1300
    rec = MetricAccumulator().add(pred, truth)
    assert not rec.correct and rec.category == "extra_objects"
    assert touching_area(pred, truth) == 400


def test_poor_mask_fragmented_or_too_large():
    truth = box(10, 20, 10, 60)  # a 50 x 10 bar, 500 px
    fragments = np.maximum(box(10, 20, 10, 18), box(10, 20, 40, 48))  # two pieces, 160 px: IoU 0.32
    assert category(fragments, truth) == "poor_mask"
    assert touching_area(fragments, truth) == 160
    too_large = box(0, 40, 0, 80)  # one component over the truth and around it: IoU 500 / 3200
    assert category(too_large, truth) == "poor_mask"
    # a fragment inside plus a big blob elsewhere: even the touching part alone fails
    assert category(np.maximum(fragments, box(60, 90, 90, 125)), truth) == "poor_mask"


def test_categorize_rule_from_counts():
    assert categorize(0, 0, 0, 0) == "correct_empty"
    assert categorize(0, 0, 5, 0) == "false_alarm"
    assert categorize(0, 100, 50, 0) == "missed"
    assert categorize(100, 100, 100, 100) == "correct"
    assert categorize(100, 100, 300, 100) == "extra_objects"  # the touching objects alone: IoU 1
    assert categorize(40, 100, 300, 60) == "poor_mask"  # alone: 40 / 120
    with pytest.raises(ValueError, match="touch_area"):
        categorize(40, 100, 300, 30)  # fewer touching pixels than intersecting ones: impossible


def test_size_buckets_and_extent():
    assert object_extent(box(10, 14, 20, 45)) == 25  # the larger side of the box
    assert object_extent(None) == 0
    assert [size_bucket(e) for e in (1, 15, 16, 31, 32, 63, 64, 127, 128, 500)] == [
        "<16", "<16", "16-32", "16-32", "32-64", "32-64", "64-128", "64-128", ">=128", ">=128"]


def test_a_6_px_satellite_cannot_pass_on_the_4_px_grid_at_512_and_can_at_2048():
    """512 x 512 frame at S = 512: the grid is 4 px (64 cells per 256 patch). A 6 x 2
    satellite inside one row of cells covers at most half of any cell, so no
    interpolated value exceeds 0.5 and a perfect model publishes nothing: ceiling 0.
    At S = 2048 a cell is one frame pixel: the mask comes back exactly."""
    truth = box(1, 3, 9, 15, 512, 512)
    assert object_extent(truth) == 6
    assert grid_ceiling(truth, MaskGrid(512)) == 0.0
    assert grid_ceiling(truth, MaskGrid(2048)) == 1.0
    acc = MetricAccumulator(grid=MaskGrid(512))
    rec = acc.add(truth, truth)  # predicted perfectly at full resolution: correct, ceiling fails anyway
    assert rec.correct and rec.ceiling_iou == 0.0 and rec.size_bucket == "<16"
    budget = acc.budget()
    assert budget["buckets"]["<16"]["ceiling_fails"] == 1 and budget["buckets"]["<16"]["ceiling_fail_share"] == 1.0
    assert budget["accuracy_ceiling_passes"] is None  # no frame passes the ceiling


def _bilinear(down, h, w):
    """Independent bilinear resize (half-pixel centres, edges clamped) of g x g -> h x w."""
    g = down.shape[0]

    def axis(n):
        pos = np.clip((np.arange(n) + 0.5) * g / n - 0.5, 0, g - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, g - 1)
        return lo, hi, pos - lo

    (y0, y1, fy), (x0, x1, fx) = axis(h), axis(w)
    top = down[y0][:, x0] * (1 - fx) + down[y0][:, x1] * fx
    bottom = down[y1][:, x0] * (1 - fx) + down[y1][:, x1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


@pytest.mark.parametrize("size", [512, 1024])
def test_grid_ceiling_agrees_with_an_independent_computation(size):
    """Block means (the grid's cells) and an explicit bilinear interpolation back, on a
    square 512 frame where a cell is a whole number of pixels."""
    rng = np.random.default_rng(size)
    for _ in range(5):
        y, x = rng.integers(20, 400, 2)
        hgt, wid = rng.integers(3, 40, 2)
        truth = box(y, y + hgt, x, x + wid, 512, 512) > 0
        cell = 512 // MaskGrid(size).side
        down = truth.reshape(512 // cell, cell, 512 // cell, cell).mean(axis=(1, 3))
        up = _bilinear(down, 512, 512) > 0.5
        want = np.count_nonzero(up & truth) / np.count_nonzero(up | truth)
        assert grid_ceiling(truth, MaskGrid(size)) == pytest.approx(want, abs=1e-9)


def test_budget_counts_add_up_per_bucket_and_overall():
    acc = MetricAccumulator(grid=MaskGrid(512))
    small, large = box(10, 20, 10, 20), box(10, 80, 10, 80)  # extents 10 and 70
    acc.add(small, small)  # correct, <16
    acc.add(np.zeros((H, W), np.uint8), small)  # missed, <16
    acc.add(np.maximum(large, box(85, 96, 0, 128)), large)  # IoU 4900 / 6308: correct, 64-128
    acc.add(box(10, 30, 10, 30), large)  # poor mask, 64-128
    acc.add(np.zeros((H, W), np.uint8), None)  # correct empty
    acc.add(box(1, 3, 1, 3), None)  # false alarm
    summary = acc.summary()
    budget = summary["error_budget"]
    assert budget["counts"] == {"correct": 2, "missed": 1, "extra_objects": 0, "poor_mask": 1,
                                "correct_empty": 1, "false_alarm": 1}
    assert sum(budget["counts"].values()) == budget["frames"] == summary["frames"] == 6
    assert budget["counts"]["correct"] + budget["counts"]["correct_empty"] == summary["correct"]
    assert budget["counts"]["false_alarm"] == summary["false_alarms"]
    assert budget["buckets"]["<16"]["counts"]["correct"] == 1 and budget["buckets"]["<16"]["counts"]["missed"] == 1
    assert budget["buckets"]["64-128"]["frames"] == 2 and budget["buckets"]["32-64"]["frames"] == 0
    assert sum(b["frames"] for b in budget["buckets"].values()) == summary["nonempty_frames"]
    assert budget["empty"]["shares"]["false_alarm"] == 0.5
    assert budget["grid"]["cells_per_frame_side"] == 128
    text = budget_markdown(budget)
    assert "| <16 px | 2 | 1 (50 %) | 1 (50 %) | 0 (0 %) | 0 (0 %) | - |" in text
    assert "| empty frames | 2 | 1 (50 %) | - | - | - | 1 (50 %) | - |" in text
    assert list(budget["categories"]) == list(CATEGORIES)


def test_missed_satellites_split_into_unseen_and_dropped_by_the_probability_on_them():
    truth = box(10, 30, 10, 30)
    nothing = np.zeros((H, W), np.uint8)
    faint = np.full((H, W), 0.1, np.float32)  # the model never fires on the satellite
    fired = faint.copy()
    fired[12:15, 12:15] = 0.9  # it fires on 9 satellite pixels, post-processing removed them (min_area)
    at = faint.copy()
    at[10:30, 10:30] = 0.5  # exactly at the threshold: not above it, so not seen (mask = prob > thr)
    acc = MetricAccumulator()
    unseen = acc.add(nothing, truth, probability=faint, threshold=0.5)
    dropped = acc.add(nothing, truth, probability=fired, threshold=0.5)
    edge = acc.add(nothing, truth, probability=at, threshold=0.5)
    found = acc.add(truth, truth, probability=np.where(truth > 0, 0.9, 0.0).astype(np.float32), threshold=0.5)
    acc.add(nothing, truth)  # no map given: a miss not told apart
    acc.add(nothing, None, probability=faint, threshold=0.5)  # empty frame: nothing to record
    assert (unseen.seen, dropped.seen, edge.seen, found.seen) == (False, True, False, True)
    assert unseen.truth_peak == pytest.approx(0.1) and dropped.truth_peak == pytest.approx(0.9)
    assert acc.records[4].seen is None and acc.records[5].truth_peak is None
    budget = acc.budget()
    assert budget["satellite"]["counts"]["missed"] == 4
    assert budget["satellite"]["missed_split"] == {"unseen": 2, "dropped": 1, "unknown": 1}
    assert budget["buckets"]["16-32"]["missed_split"] == {"unseen": 2, "dropped": 1, "unknown": 1}
    assert budget["buckets"]["<16"]["missed_split"] is None  # no satellite of that size
    text = budget_markdown(budget)
    assert "Missed satellites: 2 unseen" in text and "1 dropped" in text and "1 not known" in text
    plain = MetricAccumulator()
    plain.add(nothing, truth)
    assert plain.budget()["satellite"]["missed_split"] is None and "Missed satellites" not in budget_markdown(
        plain.budget())
    with pytest.raises(ValueError, match="probability shape"):
        acc.add(nothing, truth, probability=np.zeros((4, 4), np.float32), threshold=0.5)


def test_counts_only_records_are_uncategorised_only_when_undecidable():
    acc = MetricAccumulator()
    acc.add_counts(40, 100, 300)  # overlapping but not correct: extra or poor needs the touching area
    acc.add_counts(0, 100, 50)  # missed whatever the touching area
    acc.add_counts(80, 100, 300, touch_area=85)  # alone: 80 / 105
    assert [r.category for r in acc.records] == [None, "missed", "extra_objects"]
    assert acc.budget()["uncategorised"] == 1


def test_threshold_sweep_categories_match_the_mask_categories():
    """The tuner scores thousands of settings from pixel counts of objects; its
    categories must be the mask-based ones for the same published masks."""
    from satsam_training.threshold import sweep_accumulators

    rng = np.random.default_rng(3)
    frames = []
    for i in range(12):
        prob = np.zeros((H, W), np.float32)
        truth = None if i % 4 == 0 else box(*sorted(rng.integers(5, 90, 2)), *sorted(rng.integers(5, 120, 2))) > 0
        for _ in range(rng.integers(0, 4)):  # blobs of random probability
            y, x = rng.integers(0, H - 10), rng.integers(0, W - 10)
            prob[y:y + rng.integers(2, 30), x:x + rng.integers(2, 40)] = rng.uniform(0.2, 1.0)
        if truth is not None and i % 3:
            prob[truth] = np.maximum(prob[truth], rng.uniform(0.3, 1.0))
        frames.append((prob, truth, None))
    settings, accs = sweep_accumulators(frames, [0.25, 0.5, 0.75], min_area=[0, 30], grid=MaskGrid(512))
    from satsam_ros.core import postprocess

    for post, acc in zip(settings, accs):
        ref = MetricAccumulator(grid=MaskGrid(512))
        for prob, truth, _ in frames:
            mask = postprocess.threshold(prob, post.threshold)
            postprocess.apply_post(mask, prob, post)  # clears what the setting drops, in place
            ref.add(mask, truth)
        assert [r.category for r in acc.records] == [r.category for r in ref.records], post
        assert [r.ceiling_iou for r in acc.records] == [r.ceiling_iou for r in ref.records]


def test_budget_keeps_its_bucket_order_through_json(tmp_path):
    """metrics.json is written with sorted keys: the table and the figure follow the
    budget's own order of size buckets, not the dict's."""
    import json

    from satsam_ros.figures import plot_error_budget

    acc = MetricAccumulator(grid=MaskGrid(512))
    for extent in (5, 20, 40, 90, 200):
        truth = box(0, 2, 0, extent, 256, 256)
        acc.add(truth, truth)
    budget = json.loads(json.dumps(acc.budget(), sort_keys=True))
    assert list(budget["buckets"]) != budget["size_buckets"]  # sorting did reorder the dict
    text = budget_markdown(budget)
    rows = [line.split(" |")[0] for line in text.splitlines() if line.startswith("| ") and " px |" in line]
    assert rows == ["| <16 px", "| 16-32 px", "| 32-64 px", "| 64-128 px", "| >=128 px"]
    assert plot_error_budget(budget, tmp_path / "b.png").stat().st_size > 1000
