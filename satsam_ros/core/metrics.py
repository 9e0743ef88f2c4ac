"""The frame-level metric: one implementation for training, evaluation and bag replay.

The reference method counts a test frame as *correct* when the IoU of the predicted
and the true satellite mask is over 0.5 (strictly greater). A frame without a
satellite (an empty true mask) is correct only when the prediction is empty too.

Masks are H x W arrays where nonzero means "satellite" (the Detector's 0/255 uint8
mask, a 0/1 array or a bool array all work). ``None`` as the true mask means the frame
has no satellite, as a COCO frame without annotations does.

:class:`MetricAccumulator` collects frames one at a time and summarises them:

* ``accuracy``: correct frames / all frames (empty frames included);
* ``mean_iou``: mean IoU over the frames whose true mask is *non-empty* only. Empty
  frames are left out on purpose: their IoU is 1 or 0 by convention, which would
  mix the false-alarm rate into a number meant to say how well the satellite is
  outlined. Their behaviour is reported by ``false_alarm_rate``;
* ``false_alarm_rate``: empty frames with a non-empty prediction / empty frames;
* ``miss_rate``: non-empty frames with an empty prediction / non-empty frames;
* counts (``frames``, ``correct``, ``empty_frames``, ``nonempty_frames``,
  ``false_alarms``, ``misses``) and, when per-frame seconds were given,
  ``seconds_median`` / ``seconds_p95`` / ``seconds_mean``.

A rate whose denominator is zero is ``None`` (JSON ``null``), not 0, so "no empty
frames in the set" is never mistaken for "no false alarms".

**The error budget** says where the failures are. Every scored frame gets one
category (:data:`CATEGORIES`, decided by :func:`categorize` from pixel counts):

* an empty frame: ``correct_empty`` (nothing published) or ``false_alarm``;
* a frame with a satellite: ``correct`` (IoU > 0.5); ``missed`` (no published object
  overlaps the true mask); ``extra_objects`` (the objects that overlap the truth would
  alone give IoU > 0.5; others, elsewhere, pull it under); ``poor_mask`` (even the
  overlapping objects alone give IoU <= 0.5: too small, too large, fragmented).

Published objects are the 8-connected components of the published mask
(:func:`touching_area`). For every frame with a satellite the record also holds the
true object's extent (the larger side of its box, frame pixels; bucketed by
:data:`SIZE_BUCKETS`) and, when the accumulator knows the model's mask grid
(:class:`MaskGrid`), the **grid ceiling** (:func:`grid_ceiling`): the IoU of the true
mask taken down to the grid the decoder predicts at that S and back, i.e. what a
perfect model would publish. A frame whose ceiling is <= 0.5 cannot pass at that S
whatever the training. :func:`error_budget` counts it all, overall and per size bucket;
:func:`budget_markdown` prints it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from .stats import percentile

IOU_THRESHOLD = 0.5

#: the frame categories of the error budget (see the module docstring), in table order
CATEGORIES = ("correct", "missed", "extra_objects", "poor_mask", "correct_empty", "false_alarm")
#: categories of frames with a satellite, and of empty frames
SATELLITE_CATEGORIES = CATEGORIES[:4]
EMPTY_CATEGORIES = CATEGORIES[4:]
#: size buckets of the true object's extent in frame pixels: (label, low, high), low <= e < high
SIZE_BUCKETS = (("<16", 0, 16), ("16-32", 16, 32), ("32-64", 32, 64), ("64-128", 64, 128), (">=128", 128, None))


@dataclass(frozen=True)
class MaskGrid:
    """The grid a model's masks live on at one frame size S.

    The decoder predicts ``cells`` x ``cells`` logits per ``patch_size`` patch of the
    S x S resized frame (SAM, SAM 2, EdgeTAM: E / 4 cells for an encoder input E), so
    a frame is covered by :attr:`side` x :attr:`side` cells, each ``patch_size /
    cells`` pixels of S (4 px at E = 256).
    """

    size: int
    patch_size: int = 256
    cells: int = 64

    def __post_init__(self):
        for name in ("size", "patch_size", "cells"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"MaskGrid: {name} must be >= 1, got {getattr(self, name)}")

    @property
    def side(self) -> int:
        """Cells across the whole S x S frame."""
        return max(1, int(round(int(self.size) * int(self.cells) / int(self.patch_size))))

    @property
    def cell_pixels(self) -> float:
        """Side of one cell in pixels of the S x S frame."""
        return int(self.patch_size) / int(self.cells)

    @classmethod
    def of_detector(cls, detector) -> MaskGrid:
        """The grid of a :class:`satsam_ros.core.detector.Detector` (its S, patch size
        and the backend's low-resolution side)."""
        return cls(int(detector.config.size), int(detector.config.patch_size), int(detector.backend.low_res_size))

    def to_dict(self) -> Dict[str, Any]:
        return {"size": int(self.size), "patch_size": int(self.patch_size), "cells_per_patch": int(self.cells),
                "cells_per_frame_side": self.side, "cell_pixels_at_size": self.cell_pixels}


def _as_mask(mask: Optional[np.ndarray], like: Optional[np.ndarray] = None) -> np.ndarray:
    """H x W bool array from a mask (nonzero = foreground); None -> all False like ``like``."""
    if mask is None:
        if like is None:
            raise ValueError("both masks are None: at least the prediction must be an array")
        return np.zeros(np.shape(like)[:2], dtype=bool)
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise ValueError(f"a mask must be H x W (or H x W x 1), got shape {arr.shape}")
    return arr > 0


def score_counts(intersection: int, true_area: int, pred_area: int,
                 iou_threshold: float = IOU_THRESHOLD) -> Tuple[float, bool]:
    """(IoU, correct) of one frame from pixel counts: the rule every evaluation applies.

    IoU = intersection / union, 1.0 when both masks are empty. Correct: when the true
    mask is empty, only an empty prediction; otherwise IoU > ``iou_threshold``
    (strictly).
    """
    union = int(true_area) + int(pred_area) - int(intersection)
    iou = 1.0 if union == 0 else float(intersection) / float(union)
    correct = int(pred_area) == 0 if int(true_area) == 0 else iou > float(iou_threshold)
    return iou, bool(correct)


def frame_score(pred: np.ndarray, true: Optional[np.ndarray],
                iou_threshold: float = IOU_THRESHOLD) -> Tuple[float, bool]:
    """(IoU, correct) of one frame's H x W masks (see :func:`score_counts`).

    ``true`` None means no satellite. Raises ValueError when the shapes differ.
    """
    p = _as_mask(pred)
    t = _as_mask(true, like=p)
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {t.shape}")
    return score_counts(int(np.count_nonzero(p & t)), int(np.count_nonzero(t)), int(np.count_nonzero(p)),
                        iou_threshold)


def frame_iou(pred: np.ndarray, true: Optional[np.ndarray]) -> float:
    """IoU of the predicted and true H x W masks; 1.0 when both are empty.

    ``true`` may be None (no satellite in the frame). Raises ValueError when the
    shapes differ.
    """
    return frame_score(pred, true)[0]


def frame_correct(pred: np.ndarray, true: Optional[np.ndarray], iou_threshold: float = IOU_THRESHOLD) -> bool:
    """Whether one frame counts as correct (see :func:`frame_score`)."""
    _check_iou_threshold(iou_threshold)
    return frame_score(pred, true, iou_threshold)[1]


def _check_iou_threshold(value: float) -> None:
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1), got {value}")


# ------------------------------------------------------------------- error budget


def categorize(intersection: int, true_area: int, pred_area: int, touch_area: int,
               iou_threshold: float = IOU_THRESHOLD) -> str:
    """The error-budget category of one frame from pixel counts (module docstring).

    ``touch_area``: pixels of the published objects that overlap the true mask (their
    intersection with it is ``intersection``, since no other object overlaps it).
    """
    if int(true_area) == 0:
        return "correct_empty" if int(pred_area) == 0 else "false_alarm"
    iou, correct = score_counts(intersection, true_area, pred_area, iou_threshold)
    if correct:
        return "correct"
    if int(intersection) == 0:
        return "missed"
    if not int(intersection) <= int(touch_area) <= int(pred_area):
        raise ValueError(f"touch_area {touch_area} must lie in [intersection {intersection}, "
                         f"pred_area {pred_area}]")
    alone, _ = score_counts(intersection, true_area, touch_area, iou_threshold)
    return "extra_objects" if alone > float(iou_threshold) else "poor_mask"


def touching_area(pred: np.ndarray, true: Optional[np.ndarray]) -> int:
    """Pixels of the published objects (8-connected components of ``pred``) that
    overlap ``true``; 0 when either mask is empty."""
    p = _as_mask(pred)
    t = _as_mask(true, like=p)
    if not p.any() or not t.any():
        return 0
    count, labels = cv2.connectedComponents(p.astype(np.uint8), connectivity=8)
    hit = np.zeros(count, dtype=bool)
    hit[np.unique(labels[p & t])] = True
    hit[0] = False  # background
    return int(np.count_nonzero(hit[labels]))


def object_extent(true: Optional[np.ndarray]) -> int:
    """The larger side of the true mask's box, pixels (0 for an empty mask)."""
    if true is None:
        return 0
    t = _as_mask(true)
    rows, cols = np.flatnonzero(t.any(axis=1)), np.flatnonzero(t.any(axis=0))
    if not len(rows):
        return 0
    return int(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))


def size_bucket(extent: int) -> str:
    """The :data:`SIZE_BUCKETS` label of an extent in pixels."""
    for label, low, high in SIZE_BUCKETS:
        if extent >= low and (high is None or extent < high):
            return label
    raise ValueError(f"extent must be >= 0 pixels, got {extent}")


def grid_ceiling(true: np.ndarray, grid: MaskGrid) -> Optional[float]:
    """IoU of the H x W true mask with itself seen through the model's mask grid.

    The mask is area-averaged onto the grid's ``side`` x ``side`` cells (the frame is
    resized to S x S before tiling, so a cell covers H / side x W / side frame pixels),
    brought back to H x W bilinearly and cut at 0.5: what a model that predicts every
    cell's true coverage would publish. None for an empty mask.
    """
    t = _as_mask(true)
    if not t.any():
        return None
    h, w = t.shape
    g = grid.side
    down = cv2.resize(t.astype(np.float32), (g, g), interpolation=cv2.INTER_AREA)
    up = cv2.resize(down, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
    inter = int(np.count_nonzero(up & t))
    return inter / float(int(np.count_nonzero(up | t)))


def error_budget(records: Sequence[FrameRecord], iou_threshold: float = IOU_THRESHOLD,
                 grid: Optional[MaskGrid] = None) -> Dict[str, Any]:
    """The error budget of scored frames: counts and shares per category, overall and
    per size bucket, and the grid-ceiling failures (JSON-ready).

    ``counts`` / ``shares``: all frames; ``buckets[label]``: frames with a satellite of
    that extent (``frames``, ``counts``, ``shares``, ``ceiling_fails`` and
    ``ceiling_fail_share`` (None without a grid)); ``empty``: the empty frames;
    ``accuracy_ceiling_passes``: accuracy over the frames whose ceiling passes (empty
    frames included), what a target holds on where the grid caps it. ``missed_split``
    (in ``satellite`` and each bucket; None when no record knows ``seen``): the missed
    satellites whose probability never rose above the threshold anywhere on them
    (``unseen``: the model did not fire there, or its presence gate or the cascade left
    that patch out) and those where it did but the published mask holds none of it
    (``dropped``: min_area, min_score or max_objects removed it). Records scored
    from counts without the touching area have category None and are counted under
    ``uncategorised``.
    """
    def block(recs: Sequence[FrameRecord], cats: Sequence[str]) -> Dict[str, Any]:
        counts = {c: sum(r.category == c for r in recs) for c in cats}
        out: Dict[str, Any] = {"frames": len(recs), "counts": counts,
                               "shares": {c: _rate(n, len(recs)) for c, n in counts.items()}}
        if cats is SATELLITE_CATEGORIES:
            fails = sum(r.ceiling_iou is not None and r.ceiling_iou <= iou_threshold for r in recs)
            known = sum(r.ceiling_iou is not None for r in recs)
            out["ceiling_fails"] = int(fails) if known else None
            out["ceiling_fail_share"] = _rate(fails, known) if known else None
            missed = [r for r in recs if r.category == "missed"]
            told = [r for r in missed if r.seen is not None]
            out["missed_split"] = ({"unseen": sum(not r.seen for r in told), "dropped": sum(bool(r.seen) for r in told),
                                    "unknown": len(missed) - len(told)} if told else None)
        return out

    recs = list(records)
    sat = [r for r in recs if not r.true_empty]
    passes = [r for r in recs if r.true_empty or (r.ceiling_iou is not None and r.ceiling_iou > iou_threshold)]
    overall = block(recs, CATEGORIES)
    with_sat = block(sat, SATELLITE_CATEGORIES)
    return {
        "categories": list(CATEGORIES),
        "size_buckets": [label for label, _, _ in SIZE_BUCKETS],  # the order of ``buckets`` (JSON sorts keys)
        "frames": len(recs),
        "counts": overall["counts"],
        "shares": overall["shares"],
        "uncategorised": sum(r.category is None for r in recs),
        "satellite": with_sat,
        "empty": block([r for r in recs if r.true_empty], EMPTY_CATEGORIES),
        "buckets": {label: block([r for r in sat if r.size_bucket == label], SATELLITE_CATEGORIES)
                    for label, _, _ in SIZE_BUCKETS},
        "grid": grid.to_dict() if grid is not None else None,
        "accuracy_ceiling_passes": (_rate(sum(r.correct for r in passes), len(passes))
                                    if grid is not None else None),
        "frames_ceiling_passes": len(passes) if grid is not None else None,
    }


def budget_markdown(budget: Dict[str, Any]) -> str:
    """The error budget as a markdown table: one row per size bucket, the empty frames
    and all frames; frame counts with the share of the row in brackets."""
    def cell(n: Optional[int], den: int) -> str:
        if n is None:
            return "n/a"
        return f"{n} ({100.0 * n / den:.0f} %)" if den else str(n)

    head = ["frames", "correct", "missed", "extra objects", "poor mask", "false alarm", "grid ceiling fails"]
    lines = ["| satellite extent | " + " | ".join(head) + " |", "| --- " * (len(head) + 1) + "|"]
    rows = [(f"{label} px", budget["buckets"][label]) for label in budget["size_buckets"]]
    rows.append(("all with a satellite", budget["satellite"]))
    for name, b in rows:
        c, n = b["counts"], b["frames"]
        lines.append(f"| {name} | {n} | " + " | ".join(
            [cell(c[k], n) for k in SATELLITE_CATEGORIES] + ["-", cell(b["ceiling_fails"], n)]) + " |")
    e = budget["empty"]
    lines.append(f"| empty frames | {e['frames']} | {cell(e['counts']['correct_empty'], e['frames'])} | - | - | - | "
                 f"{cell(e['counts']['false_alarm'], e['frames'])} | - |")
    c, n = budget["counts"], budget["frames"]
    lines.append(f"| **all frames** | {n} | {cell(c['correct'] + c['correct_empty'], n)} | {cell(c['missed'], n)} | "
                 f"{cell(c['extra_objects'], n)} | {cell(c['poor_mask'], n)} | {cell(c['false_alarm'], n)} | "
                 f"{cell(budget['satellite']['ceiling_fails'], n)} |")
    text = "\n".join(lines) + "\n"
    grid = budget.get("grid")
    if grid:
        acc = budget["accuracy_ceiling_passes"]
        text += (f"\nMask grid: {grid['cells_per_patch']} cells per {grid['patch_size']} px patch at "
                 f"S = {grid['size']} ({grid['cell_pixels_at_size']:g} px of S per cell). Accuracy on the "
                 f"{budget['frames_ceiling_passes']} frames whose grid ceiling passes (empty frames included): "
                 f"{'n/a' if acc is None else format(100.0 * acc, '.1f') + ' %'}.\n")
    split = budget["satellite"].get("missed_split")
    if split:
        text += (f"\nMissed satellites: {split['unseen']} unseen (the probability never rose above the threshold "
                 f"on the satellite: the model did not fire), {split['dropped']} dropped (it did, and "
                 f"post-processing removed it)" + (f", {split['unknown']} not known" if split["unknown"] else "")
                 + ".\n")
    if budget.get("uncategorised"):
        text += f"\n{budget['uncategorised']} frame(s) scored without a category.\n"
    return text


@dataclass
class FrameRecord:
    """The metric's view of one frame (what :meth:`MetricAccumulator.add` stores)."""

    frame_id: Any
    iou: float
    correct: bool
    true_empty: bool
    pred_empty: bool
    true_area: int
    pred_area: int
    seconds: Optional[float] = None
    category: Optional[str] = None  # the error-budget category (CATEGORIES)
    extent: int = 0  # the true object's extent, frame pixels (0: empty frame)
    size_bucket: Optional[str] = None  # SIZE_BUCKETS label (None: empty frame)
    ceiling_iou: Optional[float] = None  # the grid ceiling (None: empty frame or no grid known)
    truth_peak: Optional[float] = None  # highest probability on a true pixel (None: empty frame or no map given)
    seen: Optional[bool] = None  # truth_peak above the mask's threshold (None: not known)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _rate(num: int, den: int) -> Optional[float]:
    return float(num) / float(den) if den else None


class MetricAccumulator:
    """Collects frames and summarises them (see the module docstring for the fields).

    ``grid``: the model's mask grid at this S (:meth:`MaskGrid.of_detector`); with it
    every frame with a satellite gets its grid ceiling, without it the ceiling is None.
    """

    def __init__(self, iou_threshold: float = IOU_THRESHOLD, grid: Optional[MaskGrid] = None):
        _check_iou_threshold(iou_threshold)
        self.iou_threshold = float(iou_threshold)
        self.grid = grid
        self.records: List[FrameRecord] = []

    def __len__(self) -> int:
        return len(self.records)

    def truth_facts(self, true: Optional[np.ndarray]) -> Tuple[int, Optional[float]]:
        """(extent, grid ceiling) of a true mask: what a record needs that depends on
        the truth alone (compute it once per frame when scoring many settings)."""
        if true is None:
            return 0, None
        t = _as_mask(true)
        if not t.any():
            return 0, None
        return object_extent(t), (grid_ceiling(t, self.grid) if self.grid is not None else None)

    def add(
        self,
        pred: np.ndarray,
        true: Optional[np.ndarray],
        seconds: Optional[float] = None,
        frame_id: Any = None,
        probability: Optional[np.ndarray] = None,
        threshold: Optional[float] = None,
    ) -> FrameRecord:
        """Score one frame (H x W masks, nonzero = satellite; ``true`` None = empty frame),
        its error-budget category included.

        ``probability`` (the H x W map ``pred`` was cut from) and ``threshold`` (where it
        was cut): the record of a frame with a satellite keeps the map's highest value on
        the satellite (``truth_peak``) and whether it lies above the threshold (``seen``),
        so that a missed satellite tells "the model never fired on it" from "it fired and
        post-processing dropped it" (:func:`error_budget`'s ``missed_split``)."""
        p = _as_mask(pred)
        t = _as_mask(true, like=p)
        if p.shape != t.shape:
            raise ValueError(f"frame {frame_id}: mask shapes differ: pred {p.shape} vs true {t.shape}")
        peak, seen = None, None
        if probability is not None and t.any():
            prob = np.asarray(probability)
            if prob.shape != t.shape:
                raise ValueError(f"frame {frame_id}: probability shape {prob.shape} differs from the masks' {t.shape}")
            peak = float(prob[t].max())
            if threshold is not None:
                seen = bool(np.float32(peak) > np.float32(threshold))  # as postprocess.threshold cuts the map
        extent, ceiling = self.truth_facts(t)
        return self.add_counts(int(np.count_nonzero(p & t)), int(np.count_nonzero(t)), int(np.count_nonzero(p)),
                               seconds, frame_id, touch_area=touching_area(p, t), extent=extent,
                               ceiling_iou=ceiling, truth_peak=peak, seen=seen)

    def add_counts(self, intersection: int, true_area: int, pred_area: int, seconds: Optional[float] = None,
                   frame_id: Any = None, touch_area: Optional[int] = None, extent: int = 0,
                   ceiling_iou: Optional[float] = None, truth_peak: Optional[float] = None,
                   seen: Optional[bool] = None) -> FrameRecord:
        """Score one frame from its pixel counts (what :meth:`add` does after counting).

        ``touch_area`` (pixels of the published objects overlapping the truth) decides
        the category between ``extra_objects`` and ``poor_mask``; without it the record
        has category None unless the counts alone decide it. ``extent`` and
        ``ceiling_iou``: :meth:`truth_facts` of the true mask; ``truth_peak`` / ``seen``:
        see :meth:`add`.
        """
        iou, correct = score_counts(intersection, true_area, pred_area, self.iou_threshold)
        if seconds is not None and not np.isfinite(seconds):
            raise ValueError(f"frame {frame_id}: seconds must be finite, got {seconds}")
        undecided = touch_area is None and int(true_area) > 0 and not correct and int(intersection) > 0
        category = None if undecided else categorize(
            intersection, true_area, pred_area, int(intersection) if touch_area is None else touch_area,
            self.iou_threshold)
        record = FrameRecord(
            frame_id=frame_id if frame_id is not None else len(self.records),
            iou=float(iou),
            correct=bool(correct),
            true_empty=int(true_area) == 0,
            pred_empty=int(pred_area) == 0,
            true_area=int(true_area),
            pred_area=int(pred_area),
            seconds=None if seconds is None else float(seconds),
            category=category,
            extent=int(extent),
            size_bucket=size_bucket(int(extent)) if int(true_area) > 0 else None,
            ceiling_iou=None if ceiling_iou is None else float(ceiling_iou),
            truth_peak=None if truth_peak is None else float(truth_peak),
            seen=None if seen is None else bool(seen),
        )
        self.records.append(record)
        return record

    def budget(self) -> Dict[str, Any]:
        """:func:`error_budget` of the frames so far."""
        return error_budget(self.records, self.iou_threshold, self.grid)

    def summary(self, budget: bool = True) -> Dict[str, Any]:
        """The metrics as a JSON-ready dict (rates in [0, 1] or None; seconds or None),
        with the ``error_budget`` unless ``budget`` is False (a sweep over thousands of
        settings asks for it only for the one it keeps)."""
        recs = self.records
        empty = [r for r in recs if r.true_empty]
        nonempty = [r for r in recs if not r.true_empty]
        correct = sum(r.correct for r in recs)
        false_alarms = sum(not r.pred_empty for r in empty)
        misses = sum(r.pred_empty for r in nonempty)
        seconds = [r.seconds for r in recs if r.seconds is not None]
        out = {
            "frames": len(recs),
            "correct": int(correct),
            "accuracy": _rate(correct, len(recs)),
            "iou_threshold": self.iou_threshold,
            "mean_iou": float(np.mean([r.iou for r in nonempty])) if nonempty else None,
            "median_iou": float(np.median([r.iou for r in nonempty])) if nonempty else None,
            "accuracy_nonempty": _rate(sum(r.correct for r in nonempty), len(nonempty)),
            "accuracy_empty": _rate(sum(r.correct for r in empty), len(empty)),
            "empty_frames": len(empty),
            "nonempty_frames": len(nonempty),
            "false_alarms": int(false_alarms),
            "false_alarm_rate": _rate(false_alarms, len(empty)),
            "misses": int(misses),
            "miss_rate": _rate(misses, len(nonempty)),
            "seconds_median": percentile(seconds, 50.0),
            "seconds_p95": percentile(seconds, 95.0),
            "seconds_mean": float(np.mean(seconds)) if seconds else None,
        }
        if budget:
            out["error_budget"] = self.budget()
        return out


def pick_examples(records: Mapping[Any, FrameRecord], count: int) -> List[Any]:
    """Keys of up to ``count`` records for an example figure: one of each error-budget
    category in turn (:data:`CATEGORIES` order; records without a category as hits,
    misses, correct empty frames and false alarms), in the records' order within each
    group, so the figure shows successes and every kind of failure; returned sorted."""
    def group_of(r: FrameRecord) -> str:
        if r.category is not None:
            return r.category
        if r.true_empty:
            return "correct_empty" if r.correct else "false_alarm"
        return "correct" if r.correct else "missed"

    groups = [[k for k, r in records.items() if group_of(r) == c] for c in CATEGORIES]
    picked: List[Any] = []
    while len(picked) < count and any(groups):
        for group in groups:
            if group and len(picked) < count:
                picked.append(group.pop(0))
    return sorted(picked)
