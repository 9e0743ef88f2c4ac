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

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from . import report
from .evaluate import EvaluationError, checkpoint_dir, default_size, load_frames, resolve_model


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


def tune_threshold(
    model: str,
    data,
    split: str = "val",
    size: Optional[int] = None,
    thresholds: Optional[Sequence[float]] = None,
    out=None,
    device: str = "auto",
    min_area: Union[int, Sequence[int]] = 0,
    write: bool = True,
    progress: bool = True,
    log: Optional[Callable[[str], None]] = None,
) -> Dict[str, Any]:
    """Sweep thresholds (and ``min_area`` values) for a checkpoint on ``data``/``split``
    and store the best pair.

    ``model``: a checkpoint directory (or a ``fit`` run directory, or ``builtin``).
    ``out``: where the CSV/PNG go (default: the checkpoint directory). With
    ``write=False`` satsam.json is left unchanged. Returns a dict with ``threshold``
    (the chosen one), ``best`` (its metrics row), ``rows`` and the paths written.
    """
    from tqdm import tqdm

    from satsam_ros.model import META_FILE, SatsamMeta
    from satsam_ros.runtime import open_detector

    spec = resolve_model(model)
    ckpt = checkpoint_dir(spec)
    if write and (ckpt is None or not (ckpt / "config.json").is_file()):
        raise EvaluationError(
            f"tune-threshold: {model!r} is not a checkpoint directory (it needs one to store the threshold in "
            "satsam.json); pass a directory written by `satsam-train fit`"
        )
    grid = list(thresholds) if thresholds is not None else default_grid()
    s = default_size(spec, size)
    frames = load_frames(data, split)
    try:
        areas = _min_areas(min_area)
        detector = open_detector(spec, backend="torch", device=device, size=s, min_area=0)  # raw maps; the sweep clears
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"tune-threshold: model {model!r}: {exc}") from exc

    def triples():
        for frame in tqdm(frames, desc=f"threshold sweep S={s}", unit="frame", disable=not progress):
            res = detector.detect(frame.image())
            yield res.probability, frame.mask(), res.timings["total"]

    rows = sweep(triples(), grid, min_area=areas)
    best = choose(rows)
    result: Dict[str, Any] = {
        "model": str(model),
        "data": str(Path(data).resolve()),
        "split": split,
        "size": s,
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
        out_dir.mkdir(parents=True, exist_ok=True)
        columns = ["threshold", "min_area", "accuracy", "mean_iou", "false_alarm_rate", "miss_rate", "correct",
                   "frames", "false_alarms", "misses"]
        result["csv"] = str(report.write_csv(out_dir / "threshold_curve.csv", rows, columns))
        result["png"] = str(report.plot_threshold_curve(
            [r for r in rows if r["min_area"] == best["min_area"]], best["threshold"], out_dir / "threshold_curve.png",
            title=f"{Path(str(model)).name}: {split} split of {Path(data).name}, S = {s}, {len(frames)} frames, "
                  f"min_area {best['min_area']}",
        ))
    if write and ckpt is not None:
        meta = SatsamMeta.read(ckpt)
        meta.threshold = float(best["threshold"])
        meta.min_area = int(best["min_area"])
        meta.provenance = dict(meta.provenance or {})
        meta.provenance["threshold_tuning"] = {
            "data": result["data"],
            "split": split,
            "size": s,
            "frames": len(frames),
            "grid": [float(t) for t in grid],
            "min_area_grid": areas,
            "min_area": int(best["min_area"]),
            "accuracy": best["accuracy"],
            "mean_iou": best["mean_iou"],
            "false_alarm_rate": best["false_alarm_rate"],
            "previous_threshold": result["previous_threshold"],
            "command": report.command_line(),
            "tuned": report.now_iso(),
        }
        meta.validate()
        report.atomic_write_text(ckpt / META_FILE, meta.to_json())
        result["satsam_json"] = str(ckpt / META_FILE)
        if log is not None:
            log(f"tune-threshold: stored threshold {best['threshold']:.3f} and min_area {best['min_area']} in "
                f"{ckpt / META_FILE}")
    return result

