"""Sigmoid, threshold, connected components -> boxes, IoU."""

import numpy as np
import pytest

from satsam_ros.core.postprocess import boxes_from_mask, mask_iou, sigmoid, threshold


def test_sigmoid_stable_and_correct():
    x = np.array([-1e4, -20, -1, 0, 1, 20, 1e4], np.float32)
    s = sigmoid(x)
    assert s.dtype == np.float32 and np.isfinite(s).all()
    np.testing.assert_allclose(s, 1 / (1 + np.exp(-x.astype(np.float64))), atol=1e-6)
    assert s[0] == 0.0 and s[-1] == 1.0


def test_threshold_is_strict_and_checked():
    p = np.array([[0.2, 0.65, 0.66]], np.float32)
    np.testing.assert_array_equal(threshold(p, 0.65), [[0, 0, 255]])
    assert threshold(p, 0.65).dtype == np.uint8
    with pytest.raises(ValueError, match="threshold"):
        threshold(p, 1.5)


def test_boxes_from_components():
    mask = np.zeros((50, 60), np.uint8)
    prob = np.zeros((50, 60), np.float32)
    mask[5:15, 10:30] = 255  # 10 x 20 = 200 px
    prob[5:15, 10:30] = 0.9
    mask[40:42, 50:53] = 255  # 6 px
    prob[40:42, 50:53] = 0.7
    mask[30, 0] = 255  # 1 px, diagonal neighbour joins it (8-connectivity)
    mask[31, 1] = 255
    prob[30, 0] = prob[31, 1] = 0.8
    boxes = boxes_from_mask(mask, prob)
    assert len(boxes) == 3
    big = [b for b in boxes if b.area == 200][0]
    assert (big.x0, big.y0, big.x1, big.y1) == (10, 5, 30, 15)
    assert big.score == pytest.approx(0.9)
    assert big.center == (20.0, 10.0) and big.size == (20, 10)
    assert [b.score for b in boxes] == sorted([b.score for b in boxes], reverse=True)
    diag = [b for b in boxes if b.area == 2][0]
    assert (diag.x0, diag.y0, diag.x1, diag.y1) == (0, 30, 2, 32)


def test_min_area_drops_and_clears():
    mask = np.zeros((20, 20), np.uint8)
    mask[1:3, 1:3] = 255
    mask[10:20, 10:20] = 255
    prob = mask.astype(np.float32) / 255
    boxes = boxes_from_mask(mask, prob, min_area=5)
    assert len(boxes) == 1 and boxes[0].area == 100
    assert mask[1:3, 1:3].max() == 0  # the dropped component is cleared from the mask
    assert boxes_from_mask(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.float32)) == []


def test_mask_iou():
    a = np.zeros((4, 4), np.uint8)
    b = np.zeros((4, 4), np.uint8)
    assert mask_iou(a, b) == 1.0
    a[0, :2] = 255
    b[0, 1:3] = 1
    assert mask_iou(a, b) == pytest.approx(1 / 3)
    assert mask_iou(a, np.zeros_like(a)) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        mask_iou(a, np.zeros((3, 3)))
