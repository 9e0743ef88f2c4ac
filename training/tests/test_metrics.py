"""Edge cases of the one frame-level metric (satsam_ros.metrics)."""

import json

import numpy as np
import pytest

from satsam_ros.core.metrics import MetricAccumulator, frame_correct, frame_iou


def _mask(h=20, w=30, box=None):
    m = np.zeros((h, w), np.uint8)
    if box is not None:
        y0, y1, x0, x1 = box
        m[y0:y1, x0:x1] = 255
    return m


def test_empty_true_empty_pred_is_correct_with_iou_one():
    assert frame_correct(_mask(), _mask())
    assert frame_correct(_mask(), None)
    assert frame_iou(_mask(), None) == 1.0


def test_empty_true_any_prediction_is_a_false_alarm():
    pred = _mask(box=(3, 4, 5, 6))  # a single pixel
    assert not frame_correct(pred, _mask())
    assert not frame_correct(pred, None)
    assert frame_iou(pred, None) == 0.0


def test_nonempty_true_empty_prediction_is_a_miss():
    assert not frame_correct(_mask(), _mask(box=(2, 8, 2, 8)))
    assert frame_iou(_mask(), _mask(box=(2, 8, 2, 8))) == 0.0


def test_tiny_masks_single_pixel():
    one = _mask(box=(5, 6, 7, 8))
    assert frame_correct(one, one)
    neighbour = _mask(box=(5, 6, 8, 9))
    assert frame_iou(one, neighbour) == 0.0
    assert not frame_correct(neighbour, one)
    two = _mask(box=(5, 6, 7, 9))  # 2 pixels covering the true one: IoU 0.5, not over 0.5
    assert frame_iou(two, one) == 0.5
    assert not frame_correct(two, one)


def test_iou_exactly_at_threshold_is_not_correct_just_above_is():
    true = _mask(box=(0, 10, 0, 10))  # 100 px
    pred = _mask(box=(0, 10, 0, 5))  # 50 px inside: IoU = 50 / 100
    assert frame_iou(pred, true) == 0.5
    assert not frame_correct(pred, true)
    pred2 = _mask(box=(0, 10, 0, 6))  # 60 / 100
    assert frame_correct(pred2, true)
    assert not frame_correct(pred2, true, iou_threshold=0.6)


def test_bool_and_01_masks_accepted_shape_mismatch_rejected():
    t = _mask(box=(1, 5, 1, 5))
    assert frame_correct(t > 0, (t > 0).astype(np.uint8))
    with pytest.raises(ValueError, match="shapes differ"):
        frame_iou(_mask(10, 10), _mask(10, 11))
    with pytest.raises(ValueError, match="shapes differ"):
        frame_correct(_mask(10, 10), _mask(10, 11))
    with pytest.raises(ValueError, match="H x W"):
        frame_iou(np.zeros((2, 3, 4)), None)
    with pytest.raises(ValueError, match="iou_threshold"):
        frame_correct(t, t, iou_threshold=1.5)


def test_accumulator_summary_counts_and_rates():
    acc = MetricAccumulator()
    true = _mask(box=(0, 10, 0, 10))
    acc.add(true, true, seconds=0.1, frame_id="a")  # correct, IoU 1
    acc.add(_mask(box=(0, 10, 0, 5)), true, seconds=0.2)  # IoU 0.5: wrong
    acc.add(_mask(), true, seconds=0.3)  # miss, IoU 0
    acc.add(_mask(), None, seconds=0.4)  # empty, correct
    acc.add(_mask(box=(0, 1, 0, 1)), _mask(), seconds=1.0)  # false alarm
    s = acc.summary()
    assert s["frames"] == 5 and s["correct"] == 2
    assert s["accuracy"] == pytest.approx(0.4)
    assert s["mean_iou"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)  # non-empty frames only
    assert s["empty_frames"] == 2 and s["nonempty_frames"] == 3
    assert s["false_alarms"] == 1 and s["false_alarm_rate"] == pytest.approx(0.5)
    assert s["misses"] == 1 and s["miss_rate"] == pytest.approx(1 / 3)
    assert s["accuracy_empty"] == pytest.approx(0.5)
    assert s["accuracy_nonempty"] == pytest.approx(1 / 3)
    assert s["seconds_median"] == pytest.approx(0.3)
    assert s["seconds_p95"] == pytest.approx(np.percentile([0.1, 0.2, 0.3, 0.4, 1.0], 95))
    assert acc.records[0].frame_id == "a" and acc.records[1].frame_id == 1
    json.dumps(s)  # JSON-ready


def test_rates_without_denominator_are_none():
    acc = MetricAccumulator()
    acc.add(_mask(box=(0, 2, 0, 2)), _mask(box=(0, 2, 0, 2)))
    s = acc.summary()
    assert s["false_alarm_rate"] is None and s["accuracy_empty"] is None
    assert s["seconds_median"] is None
    assert MetricAccumulator().summary()["accuracy"] is None


def test_accumulator_scores_each_frame_with_the_frame_rule():
    """MetricAccumulator.add applies frame_iou / frame_correct (one rule, not a copy):
    every record equals what the two functions say about the same masks."""
    rng = np.random.default_rng(7)
    acc = MetricAccumulator(iou_threshold=0.3)
    cases = []
    for _ in range(40):
        true = (rng.random((12, 16)) < rng.choice([0.0, 0.2, 0.6])).astype(np.uint8) * 255
        pred = (rng.random((12, 16)) < rng.choice([0.0, 0.2, 0.6])).astype(np.uint8)
        cases.append((pred, true))
        acc.add(pred, true)
    for rec, (pred, true) in zip(acc.records, cases):
        assert rec.iou == frame_iou(pred, true)
        assert rec.correct == frame_correct(pred, true, iou_threshold=0.3)
    assert {r.correct for r in acc.records} == {True, False}  # the cases exercise both outcomes
