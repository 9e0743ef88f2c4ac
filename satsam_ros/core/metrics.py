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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .stats import percentile

IOU_THRESHOLD = 0.5


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

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _rate(num: int, den: int) -> Optional[float]:
    return float(num) / float(den) if den else None


class MetricAccumulator:
    """Collects frames and summarises them (see the module docstring for the fields)."""

    def __init__(self, iou_threshold: float = IOU_THRESHOLD):
        _check_iou_threshold(iou_threshold)
        self.iou_threshold = float(iou_threshold)
        self.records: List[FrameRecord] = []

    def __len__(self) -> int:
        return len(self.records)

    def add(
        self,
        pred: np.ndarray,
        true: Optional[np.ndarray],
        seconds: Optional[float] = None,
        frame_id: Any = None,
    ) -> FrameRecord:
        """Score one frame (H x W masks, nonzero = satellite; ``true`` None = empty frame)."""
        p = _as_mask(pred)
        t = _as_mask(true, like=p)
        if p.shape != t.shape:
            raise ValueError(f"frame {frame_id}: mask shapes differ: pred {p.shape} vs true {t.shape}")
        return self.add_counts(int(np.count_nonzero(p & t)), int(np.count_nonzero(t)), int(np.count_nonzero(p)),
                               seconds, frame_id)

    def add_counts(self, intersection: int, true_area: int, pred_area: int, seconds: Optional[float] = None,
                   frame_id: Any = None) -> FrameRecord:
        """Score one frame from its pixel counts (what :meth:`add` does after counting)."""
        iou, correct = score_counts(intersection, true_area, pred_area, self.iou_threshold)
        if seconds is not None and not np.isfinite(seconds):
            raise ValueError(f"frame {frame_id}: seconds must be finite, got {seconds}")
        record = FrameRecord(
            frame_id=frame_id if frame_id is not None else len(self.records),
            iou=float(iou),
            correct=bool(correct),
            true_empty=int(true_area) == 0,
            pred_empty=int(pred_area) == 0,
            true_area=int(true_area),
            pred_area=int(pred_area),
            seconds=None if seconds is None else float(seconds),
        )
        self.records.append(record)
        return record

    def summary(self) -> Dict[str, Any]:
        """The metrics as a JSON-ready dict (rates in [0, 1] or None; seconds or None)."""
        recs = self.records
        empty = [r for r in recs if r.true_empty]
        nonempty = [r for r in recs if not r.true_empty]
        correct = sum(r.correct for r in recs)
        false_alarms = sum(not r.pred_empty for r in empty)
        misses = sum(r.pred_empty for r in nonempty)
        seconds = [r.seconds for r in recs if r.seconds is not None]
        return {
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


def pick_examples(records: Mapping[Any, FrameRecord], count: int) -> List[Any]:
    """Keys of up to ``count`` records for an example figure: hits, misses, correct
    empty frames and false alarms in rotation (in the records' order within each
    group), so the figure shows successes and failures; returned sorted."""
    groups = [
        [k for k, r in records.items() if not r.true_empty and r.correct],
        [k for k, r in records.items() if not r.true_empty and not r.correct],
        [k for k, r in records.items() if r.true_empty and r.correct],
        [k for k, r in records.items() if r.true_empty and not r.correct],
    ]
    picked: List[Any] = []
    while len(picked) < count and any(groups):
        for group in groups:
            if group and len(picked) < count:
                picked.append(group.pop(0))
    return sorted(picked)
