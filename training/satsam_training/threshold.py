"""Choosing the probability threshold on validation frames.

The Detector runs once per frame (the node's code path) and gives the H x W
probability map; every threshold of the grid is then applied with
``satsam_ros.postprocess.threshold`` (and ``boxes_from_mask`` with each ``min_area``
of the grid, which clears the components the node would drop), and scored with
``satsam_ros.metrics``. The chosen (threshold, min_area) pair maximises frame
accuracy; ties go to the higher mean IoU, then the lower false-alarm rate, then the
middle of the tied run (the most robust choice on a plateau).

The result is stored in the checkpoint's ``satsam.json`` (``threshold``, ``min_area``
plus ``provenance.threshold_tuning``), rewritten atomically, and the sweep is written
as ``threshold_curve.csv`` (every pair) and ``threshold_curve.png`` (the thresholds at
the chosen min_area).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from . import report
from .evaluate import DetectorChoice, EvaluationError, checkpoint_dir, load_frames


def default_grid(step: float = 0.05) -> List[float]:
    """Thresholds step, 2*step, ..., up to 1 - step (0 and 1 are degenerate)."""
    if not 0.0 < step < 0.5:
        raise ValueError(f"threshold grid step must be in (0, 0.5), got {step}")
    count = int(round(1.0 / step))
    return [round(i * step, 6) for i in range(1, count) if 0.0 < i * step < 1.0]


def _min_areas(min_area: Union[int, Sequence[int]]) -> List[int]:
    values = [int(min_area)] if isinstance(min_area, (int, float)) else [int(v) for v in min_area]
    if not values:
        raise ValueError("min_area: give at least one value")
    for v in values:
        if v < 0:
            raise ValueError(f"min_area {v} must be >= 0 pixels")
    return values


def sweep(
    probabilities_and_truths,
    thresholds: Sequence[float],
    min_area: Union[int, Sequence[int]] = 0,
) -> List[Dict[str, Any]]:
    """Score every (min_area, threshold) pair on (probability H x W float32, true mask
    H x W or None, seconds or None) triples; returns one row per pair: ``threshold``,
    ``min_area`` + the :class:`satsam_ros.metrics.MetricAccumulator` summary, ordered by
    min_area, then threshold."""
    from satsam_ros.core import postprocess
    from satsam_ros.core.metrics import MetricAccumulator

    thresholds = [float(t) for t in thresholds]
    for t in thresholds:
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"threshold {t} is outside [0, 1]")
    pairs = [(a, t) for a in _min_areas(min_area) for t in thresholds]
    accs = [MetricAccumulator() for _ in pairs]
    for prob, true, seconds in probabilities_and_truths:
        for (area, t), acc in zip(pairs, accs):
            mask = postprocess.threshold(prob, t)
            if area > 0:
                postprocess.boxes_from_mask(mask, prob, area)
            acc.add(mask, true, seconds=seconds)
    return [dict(threshold=t, min_area=a, **acc.summary()) for (a, t), acc in zip(pairs, accs)]


def choose(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The best row (see the module docstring for the rule)."""
    if not rows:
        raise ValueError("no thresholds were scored")

    def key(row):
        miou = row["mean_iou"] if row["mean_iou"] is not None else -1.0
        far = row["false_alarm_rate"] if row["false_alarm_rate"] is not None else 0.0
        return (row["accuracy"] or 0.0, round(miou, 9), -far)

    best_key = max(key(r) for r in rows)
    tied = [r for r in rows if key(r) == best_key]
    return tied[(len(tied) - 1) // 2]


@dataclass
class Grid:
    """What a threshold tuning sweeps: thresholds (None: :func:`default_grid`) and
    min_area values (input pixels, as the node's ``min_area``)."""

    thresholds: Optional[Sequence[float]] = None
    min_areas: Sequence[int] = (0,)

    def threshold_values(self) -> List[float]:
        return list(self.thresholds) if self.thresholds is not None else default_grid()


def tune_threshold(
    choice: DetectorChoice,
    data,
    split: str = "val",
    grid: Optional[Grid] = None,
    out=None,
    write: bool = True,
    progress: bool = True,
    log: Optional[Callable[[str], None]] = None,
    command: Optional[str] = None,
) -> Dict[str, Any]:
    """Sweep thresholds and ``min_area`` values for a checkpoint on ``data``/``split``
    and store the best pair in its satsam.json.

    ``choice.model``: a checkpoint directory (or a ``fit`` run directory, or
    ``builtin``); its threshold and min_area are what is tuned, so they are ignored.
    ``out``: where the CSV/PNG go (default: the checkpoint directory). With
    ``write=False`` satsam.json is left unchanged. ``command`` is recorded in the
    provenance. Returns a dict with ``threshold`` (the chosen one), ``best`` (its
    metrics row), ``rows`` and the paths written.
    """
    grid = grid or Grid()
    ckpt = checkpoint_dir(choice.spec)
    if write and (ckpt is None or not (ckpt / "config.json").is_file()):
        raise EvaluationError(
            f"tune-threshold: {choice.model!r} is not a checkpoint directory (it needs one to store the threshold "
            "in satsam.json); pass a directory written by `satsam-train fit`"
        )
    thresholds, areas = grid.threshold_values(), _min_areas(grid.min_areas)
    frames = load_frames(data, split)
    detector = replace(choice, min_area=0).open()  # raw maps: the sweep clears small components itself
    rows = sweep(_probability_maps(detector, frames, progress), thresholds, min_area=areas)
    best = choose(rows)
    result: Dict[str, Any] = {
        "model": str(choice.model),
        "data": str(Path(data).resolve()),
        "split": split,
        "size": detector.config.size,
        "frames": len(frames),
        "threshold": best["threshold"],
        "min_area": best["min_area"],
        "previous_threshold": float(detector.meta.threshold),
        "previous_min_area": int(detector.meta.min_area),
        "best": best,
        "rows": rows,
    }
    out_dir = Path(out) if out is not None else ckpt
    if out_dir is not None:
        result.update(_write_curve(out_dir, rows, best, f"{Path(str(choice.model)).name}: {split} split of "
                                   f"{Path(data).name}, S = {detector.config.size}, {len(frames)} frames"))
    if write and ckpt is not None:
        tuning = {"grid": [float(t) for t in thresholds], "min_area_grid": areas, "command": command}
        result["satsam_json"] = str(_store(ckpt, result, tuning))
        if log is not None:
            log(f"tune-threshold: stored threshold {best['threshold']:.3f} and min_area {best['min_area']} in "
                f"{result['satsam_json']}")
    return result


def _probability_maps(detector, frames, progress: bool):
    """(H x W probability, true mask or None, seconds) per frame, as the sweep takes them."""
    from tqdm import tqdm

    for frame in tqdm(frames, desc=f"threshold sweep S={detector.config.size}", unit="frame",
                      disable=not progress):
        res = detector.detect(frame.image())
        yield res.probability, frame.mask(), res.timings["total"]


def _write_curve(out_dir: Path, rows: Sequence[Dict[str, Any]], best: Dict[str, Any], title: str) -> Dict[str, str]:
    """threshold_curve.csv (every pair) and .png (the thresholds at the chosen min_area)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = ["threshold", "min_area", "accuracy", "mean_iou", "false_alarm_rate", "miss_rate", "correct",
               "frames", "false_alarms", "misses"]
    csv_path = report.write_csv(out_dir / "threshold_curve.csv", rows, columns)
    png_path = report.plot_threshold_curve(
        [r for r in rows if r["min_area"] == best["min_area"]], best["threshold"], out_dir / "threshold_curve.png",
        title=f"{title}, min_area {best['min_area']}",
    )
    return {"csv": str(csv_path), "png": str(png_path)}


def _store(ckpt: Path, result: Dict[str, Any], tuning: Dict[str, Any]) -> Path:
    """Write the chosen pair and ``provenance.threshold_tuning`` into ckpt/satsam.json, atomically."""
    from satsam_ros.core.meta import META_FILE, SatsamMeta

    best = result["best"]
    meta = SatsamMeta.read(ckpt)
    meta.threshold = float(best["threshold"])
    meta.min_area = int(best["min_area"])
    meta.provenance = dict(meta.provenance or {})
    meta.provenance["threshold_tuning"] = {
        "data": result["data"],
        "split": result["split"],
        "size": result["size"],
        "frames": result["frames"],
        "grid": tuning["grid"],
        "min_area_grid": tuning["min_area_grid"],
        "min_area": int(best["min_area"]),
        "accuracy": best["accuracy"],
        "mean_iou": best["mean_iou"],
        "false_alarm_rate": best["false_alarm_rate"],
        "previous_threshold": result["previous_threshold"],
        "command": tuning["command"],
        "tuned": report.now_iso(),
    }
    meta.validate()
    return report.atomic_write_text(ckpt / META_FILE, meta.to_json())
