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
    return sigmoid_into(x, np.empty_like(x))


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
    """Probability -> uint8 mask with 255 where ``prob > thr`` and 0 elsewhere.

    ``thr`` is compared as float32 (as ``prob > np.float32(thr)``); one cv2 pass.
    """
    if not 0.0 <= thr <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {thr}")
    prob = np.asarray(prob)
    if prob.dtype == np.float32 and prob.ndim == 2 and prob.size:
        return cv2.compare(prob, float(np.float32(thr)), cv2.CMP_GT)
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
    components, before grouping), nonzero only inside ``window``. Per object ``k``:
    ``members[k]`` its component labels, ``areas[k]`` its pixel count, ``sums[k]`` the
    sum of the probability over its pixels, ``bounds[k]`` its XYXY half-open box.
    ``window``: (y0, x0, y1, x1), the part of the frame that holds every label (the
    mask's foreground and a margin); the rest of ``labels`` is 0. ``pixels``: the
    foreground's (ys, xs, component labels) in raster order (None when there is none).
    """

    labels: np.ndarray
    members: List[List[int]]
    areas: np.ndarray
    sums: np.ndarray
    bounds: np.ndarray  # K x 4 int (x0, y0, x1, y1)
    window: Tuple[int, int, int, int] = (0, 0, 0, 0)
    pixels: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None  # foreground (ys, xs, labels), raster order

    @property
    def scores(self) -> np.ndarray:
        return self.sums / np.maximum(self.areas, 1)

    def __len__(self) -> int:
        return len(self.members)


def _component_stats(ys: np.ndarray, xs: np.ndarray, lab: np.ndarray, count: int) -> np.ndarray:
    """count x 5 int64 (left, top, width, height, area) of labels 0..count-1, as
    ``cv2.connectedComponentsWithStats`` gives them for the foreground (row 0 unused),
    from the foreground pixels (``ys``, ``xs``, their labels ``lab``) only: the cost
    follows the objects, not the frame."""
    stats = np.zeros((count, 5), dtype=np.int64)
    area = np.bincount(lab, minlength=count)
    x0 = np.full(count, np.iinfo(np.int64).max)
    y0 = np.full(count, np.iinfo(np.int64).max)
    x1 = np.full(count, -1)
    y1 = np.full(count, -1)
    np.minimum.at(x0, lab, xs)
    np.minimum.at(y0, lab, ys)
    np.maximum.at(x1, lab, xs)
    np.maximum.at(y1, lab, ys)
    fg = slice(1, count)
    stats[fg, 0], stats[fg, 1] = x0[fg], y0[fg]
    stats[fg, 2], stats[fg, 3] = x1[fg] - x0[fg] + 1, y1[fg] - y0[fg] + 1
    stats[fg, 4] = area[fg]
    return stats


def _component_sums(values: np.ndarray, lab: np.ndarray, count: int) -> np.ndarray:
    """Sum (float64, in raster order) of the foreground pixels' probabilities ``values``
    per component 1..count-1 (``lab``: their labels)."""
    return np.bincount(lab, weights=values.astype(np.float64), minlength=count)[1:]


def _groups(binary: np.ndarray, ys: np.ndarray, xs: np.ndarray, lab: np.ndarray, count: int,
            gap: int) -> List[List[int]]:
    """Component labels 1..count-1 grouped: components within ``gap`` pixels share a group.

    Each component lies in one group of the dilated mask (it is connected, and so is
    its dilation), so one pixel per component names its group (``ys``, ``xs``: the
    foreground pixels, ``lab`` their labels). ``binary`` must hold the mask with at
    least ``group_margin(gap)`` pixels around its foreground (or the frame's edge), so
    the dilation is the frame's own.
    """
    if gap <= 0 or count <= 2:
        return [[i] for i in range(1, count)]
    radius = (int(gap) + 1) // 2
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    _, grouped = cv2.connectedComponents(cv2.dilate(binary, kernel), connectivity=8)
    group_of = np.zeros(count, dtype=np.int64)
    group_of[lab] = grouped[ys, xs]
    by_group: Dict[int, List[int]] = {}
    for comp in range(1, count):  # ascending: members ascending, groups in order of their first member
        by_group.setdefault(int(group_of[comp]), []).append(comp)
    return list(by_group.values())


def group_margin(gap: int) -> int:
    """Pixels around the foreground that :func:`_groups` needs to see (dilation radius + 2)."""
    return (int(gap) + 1) // 2 + 2 if int(gap) > 0 else 1


def find_objects(mask: np.ndarray, prob: np.ndarray, group_gap: int = 0) -> Objects:
    """The objects of an H x W 0/255 mask with their areas, probability sums and boxes.

    Labelling runs on the window around the foreground only (the mask's bounding
    rectangle and :func:`group_margin`), so its cost follows the objects, not the frame.
    """
    binary = mask if mask.dtype == np.uint8 and mask.ndim == 2 else (mask > 0).astype(np.uint8)
    empty = Objects(np.zeros(binary.shape, np.int32), [], np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4), int))
    if cv2.countNonZero(binary) == 0:  # the common empty frame: labelling it costs ms
        return empty
    bx, by, bw, bh = cv2.boundingRect(binary)
    pad = group_margin(group_gap)
    y0, x0 = max(0, by - pad), max(0, bx - pad)
    y0, x0 = y0 - y0 % 2, x0 - x0 % 2  # even: cv2 labels 2 x 2 blocks, so the frame's label order is kept
    y1, x1 = min(binary.shape[0], by + bh + pad), min(binary.shape[1], bx + bw + pad)
    crop = np.ascontiguousarray(binary[y0:y1, x0:x1])
    count, sub = cv2.connectedComponents(crop, connectivity=8)
    if count <= 1:
        return empty
    points = cv2.findNonZero(crop).reshape(-1, 2)  # the foreground, raster order
    xs, ys = points[:, 0].astype(np.intp), points[:, 1].astype(np.intp)
    lab = sub[ys, xs]
    stats = _component_stats(ys, xs, lab, count)
    sums = _component_sums(prob[y0:y1, x0:x1][ys, xs], lab, count)
    members = _groups(crop, ys, xs, lab, count, group_gap)
    stats[:, 0] += x0
    stats[:, 1] += y0
    labels = np.zeros(binary.shape, dtype=np.int32)
    labels[y0:y1, x0:x1] = sub
    k = len(members)
    group = np.zeros(count, dtype=np.intp)  # component label -> its object
    for g, m in enumerate(members):
        group[m] = g
    group = group[1:]
    comp = stats[1:]
    areas = np.bincount(group, weights=comp[:, cv2.CC_STAT_AREA], minlength=k).astype(np.int64)
    psum = np.bincount(group, weights=sums, minlength=k)
    bounds = np.empty((k, 4), dtype=int)
    bounds[:, :2] = np.iinfo(np.int64).max
    bounds[:, 2:] = -1
    np.minimum.at(bounds[:, 0], group, comp[:, 0])
    np.minimum.at(bounds[:, 1], group, comp[:, 1])
    np.maximum.at(bounds[:, 2], group, comp[:, 0] + comp[:, 2])
    np.maximum.at(bounds[:, 3], group, comp[:, 1] + comp[:, 3])
    return Objects(labels, members, areas, psum, bounds, (y0, x0, y1, x1), (ys + y0, xs + x0, lab))


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
        drop = np.zeros(sum(len(m) for m in objects.members) + 1, dtype=bool)  # by component label
        for k in range(len(objects)):
            if k not in kept:
                drop[objects.members[k]] = True
        ys, xs, lab = objects.pixels
        gone = drop[lab]
        mask[ys[gone], xs[gone]] = 0
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


def sigmoid_into(logits: np.ndarray, out: np.ndarray) -> np.ndarray:
    """:func:`sigmoid` of ``logits`` written into ``out`` (same shape, float32; e.g. a
    patch's place in the frame): the same float32 operations, no temporary frame."""
    np.multiply(logits, np.float32(0.5), out=out)
    np.tanh(out, out=out)
    out += np.float32(1.0)
    out *= np.float32(0.5)
    return out


def stitch_probability(grid: PatchGrid, logits: np.ndarray, chosen: Optional[List[int]],
                       silent: Optional[np.ndarray] = None, rows: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Low-res logits of the patches run (all, or ``chosen``) -> S x S float32 probability
    (``rows`` (a, b): its rows [a, b) only, which must hold every patch run).

    Equal to ``sigmoid(stitch_logits(...))`` with the ``silent`` patches (a bool per
    patch run: gated by the presence gate) given ``SKIPPED_LOGIT``: patches not run or
    silent are probability 0 (the sigmoid of ``SKIPPED_LOGIT`` is exactly 0). On an exact
    tiling only the patches that speak are upsampled and put through the sigmoid,
    straight into their place in the frame, so the cost follows the patches run, not S.
    With overlap the logits are blended first (the sigmoid of the blend).
    """
    p, total = grid.patch, len(grid)
    indices = range(total) if chosen is None else chosen
    a, b = (0, grid.size) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= a < b <= grid.size or any(not a <= grid.origins[i][0] <= b - p for i in indices):
        raise ValueError(f"rows [{a}, {b}) of the {grid.size} x {grid.size} frame must hold every patch run")
    if not (grid.overlap == 0 and grid.size % p == 0):
        if silent is not None and np.any(silent):
            logits = logits.copy()
            logits[np.asarray(silent, dtype=bool)] = np.float32(SKIPPED_LOGIT)
        return sigmoid(stitch_logits(grid, logits, chosen)[a:b])
    quiet = np.zeros(len(logits), dtype=bool) if silent is None else np.asarray(silent, dtype=bool)
    whole = chosen is None and not quiet.any()
    out = (np.empty if whole else np.zeros)((b - a, grid.size), dtype=np.float32)
    same = logits.shape[1] == p
    for k, i in enumerate(indices):
        if quiet[k]:
            continue
        y, x = grid.origins[i]
        up = logits[k] if same else cv2.resize(logits[k], (p, p), interpolation=cv2.INTER_LINEAR)
        sigmoid_into(up, out[y - a:y - a + p, x:x + p])
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
