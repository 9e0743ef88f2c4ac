"""Logits -> probability -> mask -> boxes, and back to the input frame's size."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List

import cv2
import numpy as np


@dataclass(frozen=True)
class Box:
    """One connected component of the mask, in input-frame pixels.

    ``x0, y0`` is the top-left pixel, ``x1, y1`` is one past the bottom-right pixel
    (XYXY, half-open), so ``x1 - x0`` is the width. ``score`` is the mean
    probability over the component's pixels, ``area`` its pixel count.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    score: float
    area: int

    @property
    def center(self):
        return ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)

    @property
    def size(self):
        return (self.x1 - self.x0, self.y1 - self.y0)

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable sigmoid (via tanh, no overflow), float32 in [0, 1]."""
    x = np.asarray(logits, dtype=np.float32)
    out = np.tanh(x * np.float32(0.5))
    out += np.float32(1.0)
    out *= np.float32(0.5)
    return out


def threshold(prob: np.ndarray, thr: float) -> np.ndarray:
    """Probability -> uint8 mask with 255 where ``prob > thr`` and 0 elsewhere."""
    if not 0.0 <= thr <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {thr}")
    return np.where(prob > np.float32(thr), np.uint8(255), np.uint8(0))


def _component_sums(labels: np.ndarray, prob: np.ndarray, stats: np.ndarray, count: int) -> np.ndarray:
    """Sum of ``prob`` over each labelled component 1..count-1 (float64).

    A few components (the usual case): sum inside each component's bounding box only,
    so the cost follows the objects' size, not the frame's. Many components: one
    ``bincount`` over the whole frame.
    """
    if count - 1 > 32:
        return np.bincount(labels.ravel(), weights=prob.ravel().astype(np.float64), minlength=count)[1:]
    sums = np.empty(count - 1, dtype=np.float64)
    for i in range(1, count):
        x, y, w, h = (int(v) for v in stats[i, :4])
        sel = labels[y:y + h, x:x + w] == i
        sums[i - 1] = prob[y:y + h, x:x + w][sel].sum(dtype=np.float64)
    return sums


def boxes_from_mask(mask: np.ndarray, prob: np.ndarray, min_area: int = 0) -> List[Box]:
    """Connected components (8-connectivity) of an H x W 0/255 mask -> boxes.

    Components with fewer than ``min_area`` pixels are dropped *and* cleared from
    ``mask`` in place, so the published mask and boxes always agree. Boxes are sorted
    by score, best first.
    """
    # cv2 takes any nonzero uint8 as foreground: a 0/255 mask needs no conversion
    binary = mask if mask.dtype == np.uint8 and mask.ndim == 2 else (mask > 0).astype(np.uint8)
    if cv2.countNonZero(binary) == 0:  # the common empty frame: labelling it costs ms
        return []
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return []
    areas = stats[1:, cv2.CC_STAT_AREA]
    sums = _component_sums(labels, prob, stats, count)
    boxes = []
    small = []
    for i in range(count - 1):
        area = int(areas[i])
        if area < min_area:
            small.append(i + 1)
            continue
        x, y, w, h = (int(v) for v in stats[i + 1, :4])
        boxes.append(Box(x, y, x + w, y + h, float(sums[i] / area), area))
    if small:
        mask[np.isin(labels, small)] = 0
    boxes.sort(key=lambda b: -b.score)
    return boxes


def mask_iou(pred: np.ndarray, true: np.ndarray) -> float:
    """IoU of two H x W masks (nonzero = foreground). Two empty masks give 1.0."""
    if pred.shape != true.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {true.shape}")
    p = pred > 0
    t = true > 0
    union = np.count_nonzero(p | t)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(p & t)) / float(union)
