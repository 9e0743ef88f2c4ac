"""Post-processing: patch logits -> S x S logits -> probability -> mask -> boxes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

import cv2
import numpy as np

from .tiling import PatchGrid

SKIPPED_LOGIT = -100.0  # logit of patches left out (ROI tracking): sigmoid gives exactly 0.0


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


def upsample_logits(logits: np.ndarray, size: int) -> np.ndarray:
    """N x m x m logits -> N x size x size, bilinear, one cv2 call per patch.

    (Measured faster than one multi-channel call, whose transposes cost more than the
    calls they save.)
    """
    n, m = logits.shape[0], logits.shape[1]
    if m == size:
        return logits
    out = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):
        out[i] = cv2.resize(logits[i], (size, size), interpolation=cv2.INTER_LINEAR)
    return out


def stitch_logits(grid: PatchGrid, logits: np.ndarray, chosen: Optional[List[int]]) -> np.ndarray:
    """Low-res logits of the patches run (all, or ``chosen``) -> S x S logits.

    Patches not run get ``SKIPPED_LOGIT``. On an exact tiling (no overlap) every patch
    is upsampled straight into its place in the frame: no N x P x P intermediate.
    """
    p, total = grid.patch, len(grid)
    indices = range(total) if chosen is None else chosen
    if grid.overlap == 0 and grid.size % p == 0:
        if chosen is None:
            out = np.empty((grid.size, grid.size), dtype=np.float32)
        else:
            out = np.full((grid.size, grid.size), SKIPPED_LOGIT, dtype=np.float32)
        same = logits.shape[1] == p
        for k, i in enumerate(indices):
            y, x = grid.origins[i]
            out[y:y + p, x:x + p] = logits[k] if same else cv2.resize(logits[k], (p, p),
                                                                      interpolation=cv2.INTER_LINEAR)
        return out
    up = upsample_logits(logits, p)
    if chosen is not None:
        full = np.full((total, p, p), SKIPPED_LOGIT, dtype=np.float32)
        full[chosen] = up
        up = full
    return grid.stitch(up)
