"""Post-processing: patch logits -> S x S logits -> probability -> mask -> boxes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

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


def presence_gate(score_logits: np.ndarray, min_object_score: float) -> Tuple[np.ndarray, np.ndarray]:
    """N object-score logits -> (N float32 presence probabilities, N bool: gated).

    A patch is gated (publishes nothing) when its probability is under
    ``min_object_score``; 0 gates none.
    """
    prob = sigmoid(np.asarray(score_logits, dtype=np.float32).reshape(-1))
    if float(min_object_score) <= 0.0:
        return prob, np.zeros(prob.shape, dtype=bool)
    return prob, prob < np.float32(min_object_score)


def threshold(prob: np.ndarray, thr: float) -> np.ndarray:
    """Probability -> uint8 mask with 255 where ``prob > thr`` and 0 elsewhere."""
    if not 0.0 <= thr <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {thr}")
    return np.where(prob > np.float32(thr), np.uint8(255), np.uint8(0))


@dataclass(frozen=True)
class PostConfig:
    """How a probability map becomes the published mask and boxes.

    ``threshold``: probability above which a pixel is satellite. ``min_area``: objects
    with fewer pixels are dropped. ``max_objects``: keep only this many objects, best
    score first (0 = all; one satellite in view is the usual prior). ``min_score``:
    drop objects whose mean probability is below it (weak, blurry responses on
    clouds and coasts). ``group_gap``: connected components closer than this many
    pixels form one object (a satellite whose thin booms were not segmented comes
    out as a body and detached panels: one object, one box). ``min_object_score``:
    a patch whose presence probability (``sigmoid`` of the decoder's object-score
    logit; models with the head only, SAM 2 and EdgeTAM) is under it publishes
    nothing (0 = off; :func:`presence_gate`).
    """

    threshold: float = 0.65
    min_area: int = 0
    max_objects: int = 0
    min_score: float = 0.0
    group_gap: int = 0
    min_object_score: float = 0.0

    def validate(self) -> PostConfig:
        checks = [
            (0.0 <= float(self.threshold) <= 1.0, f"threshold must be in [0, 1]; got {self.threshold}"),
            (int(self.min_area) >= 0, f"min_area must be >= 0; got {self.min_area}"),
            (int(self.max_objects) >= 0, f"max_objects must be >= 0 (0 = all); got {self.max_objects}"),
            (0.0 <= float(self.min_score) <= 1.0, f"min_score must be in [0, 1]; got {self.min_score}"),
            (int(self.group_gap) >= 0, f"group_gap must be >= 0 pixels; got {self.group_gap}"),
            (0.0 <= float(self.min_object_score) <= 1.0,
             f"min_object_score must be in [0, 1]; got {self.min_object_score}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


@dataclass
class Objects:
    """The objects of a thresholded mask (see :func:`find_objects`).

    ``labels``: H x W int32 component labels of the mask (0 = background; 8-connected
    components, before grouping). Per object ``k``: ``members[k]`` its component
    labels, ``areas[k]`` its pixel count, ``sums[k]`` the sum of the probability over
    its pixels, ``bounds[k]`` its XYXY half-open box.
    """

    labels: np.ndarray
    members: List[List[int]]
    areas: np.ndarray
    sums: np.ndarray
    bounds: np.ndarray  # K x 4 int (x0, y0, x1, y1)

    @property
    def scores(self) -> np.ndarray:
        return self.sums / np.maximum(self.areas, 1)

    def __len__(self) -> int:
        return len(self.members)


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


def _groups(binary: np.ndarray, labels: np.ndarray, count: int, gap: int) -> List[List[int]]:
    """Component labels 1..count-1 grouped: components within ``gap`` pixels share a group."""
    if gap <= 0 or count <= 2:
        return [[i] for i in range(1, count)]
    radius = (int(gap) + 1) // 2
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    _, grouped = cv2.connectedComponents(cv2.dilate(binary, kernel), connectivity=8)
    fg = labels > 0
    pairs = np.unique(np.stack([labels[fg], grouped[fg]]), axis=1)  # 2 x M (component, group)
    by_group: Dict[int, List[int]] = {}
    for comp, group in pairs.T:
        by_group.setdefault(int(group), []).append(int(comp))
    return sorted(by_group.values(), key=lambda m: m[0])


def find_objects(mask: np.ndarray, prob: np.ndarray, group_gap: int = 0) -> Objects:
    """The objects of an H x W 0/255 mask with their areas, probability sums and boxes."""
    binary = mask if mask.dtype == np.uint8 and mask.ndim == 2 else (mask > 0).astype(np.uint8)
    empty = Objects(np.zeros(binary.shape, np.int32), [], np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4), int))
    if cv2.countNonZero(binary) == 0:  # the common empty frame: labelling it costs ms
        return empty
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return empty
    sums = _component_sums(labels, prob, stats, count)
    members = _groups(binary, labels, count, group_gap)
    areas = np.array([int(stats[m, cv2.CC_STAT_AREA].sum()) for m in members], dtype=np.int64)
    psum = np.array([float(sums[np.asarray(m) - 1].sum()) for m in members])
    bounds = np.array([[int(stats[m, 0].min()), int(stats[m, 1].min()),
                        int((stats[m, 0] + stats[m, 2]).max()), int((stats[m, 1] + stats[m, 3]).max())]
                       for m in members], dtype=int)
    return Objects(labels, members, areas, psum, bounds)


def select_objects(objects: Objects, post: PostConfig) -> List[int]:
    """Indices of the objects ``post`` keeps, best score first."""
    if not len(objects):
        return []
    scores = objects.scores
    keep = [k for k in range(len(objects))
            if objects.areas[k] >= post.min_area and scores[k] >= post.min_score]
    keep.sort(key=lambda k: -scores[k])
    return keep[: post.max_objects] if post.max_objects > 0 else keep


def apply_post(mask: np.ndarray, prob: np.ndarray, post: PostConfig) -> List[Box]:
    """Objects of the thresholded ``mask`` -> the kept ones as boxes, best score first.

    The components of the objects ``post`` drops are cleared from ``mask`` in place,
    so the published mask and boxes always agree.
    """
    objects = find_objects(mask, prob, post.group_gap)
    keep = select_objects(objects, post)
    if len(keep) < len(objects):
        kept = set(keep)
        dropped = [c for k in range(len(objects)) if k not in kept for c in objects.members[k]]
        mask[np.isin(objects.labels, dropped)] = 0
    scores = objects.scores
    return [Box(*(int(v) for v in objects.bounds[k]), float(scores[k]), int(objects.areas[k])) for k in keep]


def boxes_from_mask(mask: np.ndarray, prob: np.ndarray, min_area: int = 0) -> List[Box]:
    """Connected components (8-connectivity) of an H x W 0/255 mask -> boxes.

    Components with fewer than ``min_area`` pixels are dropped *and* cleared from
    ``mask`` in place, so the published mask and boxes always agree. Boxes are sorted
    by score, best first. (:func:`apply_post` with only ``min_area`` set.)
    """
    return apply_post(mask, prob, PostConfig(min_area=int(min_area)))


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
