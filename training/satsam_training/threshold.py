"""Choosing the post-processing on validation frames: threshold, min_area and the priors.

The Detector runs once per frame (the node's code path) and gives the patches' logits
and presence scores; each presence gate (``min_object_score``, models with the head)
turns them into an H x W probability map (:meth:`Detector.probability`, the node's
code). Every setting of the grid is then applied with the Detector's own
post-processing (``satsam_ros.core.postprocess``: ``threshold``, ``find_objects``
with each ``group_gap``, ``select_objects`` with each ``min_area``, ``max_objects``
and ``min_score``) and scored with ``satsam_ros.core.metrics`` (from pixel counts of
the kept objects, so a grid of thousands of settings costs milliseconds per frame).
The chosen setting maximises frame accuracy; ties go to the higher mean IoU, then the
lower false-alarm rate, then (where the cascade is swept) to the cascade with the
smallest margin, which costs least, then the middle of the tied run (the most robust
choice on a plateau). Where the cascade is swept, full tiling (which costs 3-16 times
the coarse pass) must also earn its cost: the best cascaded setting is chosen unless
full tiling's accuracy beats it by more than one binomial standard error on the tuning
frames (``sqrt(p (1 - p) / n)``, the one-standard-error rule; at p = 0.33 on 100 frames,
4.7 points), since a lead of a frame or two among thousands of settings is the noise of
the tuning set, not a property of the model.

The coarse-to-fine cascade (S above the coarse size, ``Grid.cascades`` and
``Grid.cascade_margins``) is swept as exactly and cheaply: the full S grid runs once
(:meth:`Detector.run_patches` with ``cascade=False``) and the coarse pass once
(:meth:`Detector.coarse_pass`: the checkpoint's post-processing for the coarse size, so
tune that size first); each margin then selects its patches from the full output
(:meth:`RawPatches.select`: the unselected patches get the skipped-patch logit, as a
cascaded run gives them, since patches are computed independently), and every such
output goes through the same gates and settings. The chosen ``cascade`` and
``cascade_margin`` are stored with the rest in ``postprocess[S]``, and so is the cap on
the S patches a cascaded frame runs (``cascade_max_patches``: not swept; the choice's, else
the checkpoint's), under which every cascaded setting is scored.

The result is stored in the checkpoint's ``satsam.json`` for the frame size it was
tuned at (``postprocess[S]``; and ``threshold`` / ``min_area`` at the top when S is
the size the checkpoint was trained for) plus ``provenance.threshold_tuning[S]``,
rewritten atomically, and the sweep is written as ``threshold_curve.csv`` (every
setting) and ``threshold_curve.png`` (the thresholds at the chosen other settings), the
chosen setting's error budget (:mod:`satsam_ros.core.metrics`) as
``threshold_budget.png`` and in the result (``best["error_budget"]``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from satsam_ros.core.metrics import MaskGrid

from . import report
from .evaluate import DetectorChoice, EvaluationError, checkpoint_dir, load_frames

POST_KEYS = ("threshold", "min_area", "max_objects", "min_score", "group_gap", "min_object_score")
CASCADE_KEYS = ("cascade", "cascade_margin")  # also tuned where Grid.cascades is given at S above the coarse size


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
    max_objects: Sequence[int] = (0,),
    min_scores: Sequence[float] = (0.0,),
    group_gaps: Sequence[int] = (0,),
    grid=None,
) -> List[Dict[str, Any]]:
    """Score every post-processing setting on (probability H x W float32, true mask
    H x W or None, seconds or None) triples; returns one row per setting: its
    ``threshold``, ``min_area``, ``max_objects``, ``min_score``, ``group_gap`` + the
    :class:`satsam_ros.core.metrics.MetricAccumulator` summary (without the error
    budget: :func:`sweep_accumulators` keeps it). ``grid``: the model's
    :class:`satsam_ros.core.metrics.MaskGrid` (the budget's grid ceiling)."""
    settings, accs = sweep_accumulators(probabilities_and_truths, thresholds, min_area, max_objects, min_scores,
                                        group_gaps, grid)
    return [dict(post.to_dict(), **acc.summary(budget=False)) for post, acc in zip(settings, accs)]


def sweep_accumulators(probabilities_and_truths, thresholds: Sequence[float],
                       min_area: Union[int, Sequence[int]] = 0, max_objects: Sequence[int] = (0,),
                       min_scores: Sequence[float] = (0.0,), group_gaps: Sequence[int] = (0,), grid=None):
    """(settings, one MetricAccumulator per setting) of :func:`sweep`: every frame
    scored with its error-budget category (the published objects that overlap the
    truth, from the kept objects' pixel counts)."""
    import numpy as np

    from satsam_ros.core import postprocess
    from satsam_ros.core.metrics import MetricAccumulator

    thresholds = [float(t) for t in thresholds]
    for t in thresholds:
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"threshold {t} is outside [0, 1]")
    # thresholds innermost: each run of rows is one threshold curve (the tie rule picks its middle)
    settings = [postprocess.PostConfig(t, a, k, m, g).validate()
                for g in group_gaps for a in _min_areas(min_area) for k in max_objects for m in min_scores
                for t in thresholds]
    accs = [MetricAccumulator(grid=grid) for _ in settings]
    by_mask: Dict[tuple, List[int]] = {}
    for i, post in enumerate(settings):
        by_mask.setdefault((post.group_gap, post.threshold), []).append(i)
    for prob, true, seconds in probabilities_and_truths:
        truth = None if true is None else np.asarray(true) > 0
        true_area = 0 if truth is None else int(np.count_nonzero(truth))
        extent, ceiling = accs[0].truth_facts(truth)
        for (gap, t), members in by_mask.items():
            objects = postprocess.find_objects(postprocess.threshold(prob, t), prob, gap)
            inter = np.zeros(len(objects), dtype=np.int64)
            if true_area and len(objects):
                per_label = np.bincount(objects.labels[truth], minlength=int(objects.labels.max()) + 1)
                inter = np.array([int(per_label[m].sum()) for m in objects.members], dtype=np.int64)
            for i in members:
                keep = postprocess.select_objects(objects, settings[i])
                kept_inter, kept_area = inter[keep], objects.areas[keep]
                accs[i].add_counts(int(kept_inter.sum()), true_area, int(kept_area.sum()), seconds,
                                   touch_area=int(kept_area[kept_inter > 0].sum()), extent=extent,
                                   ceiling_iou=ceiling)
    return settings, accs


def choose(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The best row (see the module docstring for the rule)."""
    if not rows:
        raise ValueError("no thresholds were scored")

    def key(row):
        miou = row["mean_iou"] if row["mean_iou"] is not None else -1.0
        far = row["false_alarm_rate"] if row["false_alarm_rate"] is not None else 0.0
        return (row["accuracy"] or 0.0, round(miou, 9), -far)

    cascaded = [r for r in rows if r.get("cascade")]
    if cascaded and len(cascaded) < len(rows):  # swept against full tiling: is full tiling's lead real?
        full_best = max(rows, key=key)
        if not full_best.get("cascade") and not _beyond_noise(full_best, max(cascaded, key=key)):
            rows = cascaded
    best_key = max(key(r) for r in rows)
    tied = [r for r in rows if key(r) == best_key]
    cheaper = [r for r in tied if r.get("cascade")]  # the cascade ties: it costs less, the more so
    if cheaper:  # the smaller its margin
        tied = [r for r in cheaper if r["cascade_margin"] == min(c["cascade_margin"] for c in cheaper)]
    return tied[(len(tied) - 1) // 2]


def _beyond_noise(better: Dict[str, Any], other: Dict[str, Any]) -> bool:
    """Whether ``better``'s frame accuracy leads ``other``'s by more than one binomial
    standard error on ``better``'s frames (no frames: no evidence of a lead)."""
    n = int(better.get("frames") or 0)
    p = float(better["accuracy"] or 0.0)
    if n <= 0:
        return False
    return p - float(other["accuracy"] or 0.0) > (p * (1.0 - p) / n) ** 0.5


@dataclass
class Grid:
    """What a tuning sweeps: thresholds (None: :func:`default_grid`), min_area values
    (input pixels, as the node's ``min_area``) and the priors ``max_objects`` (0 = all),
    ``min_score`` and ``group_gap`` (pixels). The defaults sweep the threshold alone."""

    thresholds: Optional[Sequence[float]] = None
    min_areas: Sequence[int] = (0,)
    max_objects: Sequence[int] = (0,)
    min_scores: Sequence[float] = (0.0,)
    group_gaps: Sequence[int] = (0,)
    min_object_scores: Sequence[float] = (0.0,)  # presence gates (models with the head; 0 = off)
    cascades: Optional[Sequence[int]] = None  # coarse sizes to try (0 = off: full tiling); None: not swept
    cascade_margins: Sequence[int] = (32,)  # input-frame pixels around the coarse proposals

    def threshold_values(self) -> List[float]:
        return list(self.thresholds) if self.thresholds is not None else default_grid()

    def describe(self) -> Dict[str, List[Any]]:
        return {"grid": [float(t) for t in self.threshold_values()], "min_area_grid": _min_areas(self.min_areas),
                "max_objects_grid": [int(k) for k in self.max_objects],
                "min_score_grid": [float(m) for m in self.min_scores],
                "group_gap_grid": [int(g) for g in self.group_gaps],
                "min_object_score_grid": [float(m) for m in self.min_object_scores],
                **({} if self.cascades is None else {"cascade_grid": [int(c) for c in self.cascades],
                                                     "cascade_margin_grid": [int(m) for m in self.cascade_margins]})}

    def cascade_variants(self, size: int) -> List[Any]:
        """(coarse size, margin) pairs to try at frame size ``size``: (0, None) is full
        tiling; none swept (or nothing coarser than ``size``): [(0, None)] only."""
        coarse = sorted({int(c) for c in (self.cascades or (0,)) if int(c) < int(size)})
        if len({c for c in coarse if c}) > 1:
            raise ValueError(f"cascade: one coarse size per tuning run; got {coarse}")
        for m in self.cascade_margins:
            if int(m) < 0:
                raise ValueError(f"cascade margin {m} must be >= 0 pixels")
        out: List[Any] = [(0, None)] if 0 in coarse or not coarse else []
        out += [(c, int(m)) for c in coarse if c for m in self.cascade_margins]
        return out


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
    # raw maps: the sweep applies each setting itself; the coarse grid only to propose patches
    if grid.cascades is None:  # not swept: tuned as the size runs now (the checkpoint's cascade, or off)
        detector = replace(choice, min_area=0, cascade=None, cascade_margin=None).open()
        variants = [(detector.cascade_size, detector.cascade_margin if detector.cascade_size else None)]
    else:
        variants = grid.cascade_variants(choice.frame_size())
        detector = replace(choice, min_area=0, cascade=max(c for c, _ in variants), cascade_margin=None).open()
    swept = grid.cascades is not None and any(c for c, _ in variants)
    cap = int(detector.cascade_max_patches)  # the cascade's patch cap: tuned under, stored with the rest
    raws = _raw_patches(detector, frames, progress)
    gates = [float(m) for m in grid.min_object_scores]
    for m in gates:
        if not 0.0 <= m <= 1.0:
            raise ValueError(f"min_object_score {m} is outside [0, 1]")
    if all(raw.score_logits is None for raw, _, _, _ in raws):
        gates = [0.0]  # no presence head: the gate does not exist for this model
    settings, accs, tags = [], [], []
    for coarse, margin in variants:  # the cascade outermost, then the gate: each pair is one set of maps
        outputs = [(raw if not coarse else raw.select(detector.cascade_select(first, (raw.height, raw.width),
                                                                              margin), first),
                    true, seconds if not coarse else None) for raw, first, true, seconds in raws]
        for gate in gates:
            maps = ((detector.probability(raw, gate)[0], true, seconds) for raw, true, seconds in outputs)
            gate_settings, gate_accs = sweep_accumulators(
                maps, thresholds, min_area=areas, max_objects=grid.max_objects, min_scores=grid.min_scores,
                group_gaps=grid.group_gaps, grid=MaskGrid.of_detector(detector))
            settings += [replace(post, min_object_score=gate) for post in gate_settings]
            accs += gate_accs
            tags += [{"cascade": coarse, "cascade_margin": margin}] * len(gate_settings)
    rows = [dict(post.to_dict(), **(tag if swept else {}), **acc.summary(budget=False))
            for post, tag, acc in zip(settings, tags, accs)]
    keys = POST_KEYS + (CASCADE_KEYS if swept else ())
    chosen = choose(rows)
    best = dict(chosen, error_budget=accs[rows.index(chosen)].budget())  # where the chosen setting fails
    previous = detector.meta.post_for(detector.config.size).to_dict()
    if swept:
        previous.update(zip(CASCADE_KEYS, detector.meta.cascade_for(detector.config.size)))
    result: Dict[str, Any] = {
        "model": str(choice.model),
        "data": str(Path(data).resolve()),
        "split": split,
        "size": detector.config.size,
        "frames": len(frames),
        "threshold": best["threshold"],
        "min_area": best["min_area"],
        "postprocess": {k: best[k] for k in keys},
        "previous_threshold": float(detector.meta.threshold),
        "previous_min_area": int(detector.meta.min_area),
        "previous_postprocess": previous,
        "cascade_max_patches": cap,
        "best": best,
        "rows": rows,
    }
    out_dir = Path(out) if out is not None else ckpt
    if out_dir is not None:
        result.update(_write_curve(out_dir, rows, best, f"{Path(str(choice.model)).name}: {split} split of "
                                   f"{Path(data).name}, S = {detector.config.size}, {len(frames)} frames"))
    if write and ckpt is not None:
        tuning = dict(grid.describe(), command=command)
        result["satsam_json"] = str(_store(ckpt, result, tuning))
        if log is not None:
            log(f"tune-threshold: stored {_describe(best)} for S = {result['size']} in {result['satsam_json']}")
    return result


def _raw_patches(detector, frames, progress: bool):
    """[(the Detector's RawPatches of every patch, its coarse pass or None, true mask or
    None, seconds)] per frame: the model runs once, every cascade margin, presence gate
    and setting is tried on its output."""
    import time

    from tqdm import tqdm

    out = []
    for frame in tqdm(frames, desc=f"threshold sweep S={detector.config.size}", unit="frame",
                      disable=not progress):
        t0 = time.perf_counter()
        image = frame.image()
        raw = detector.run_patches(image, cascade=False)  # every patch: the cascade's choices select from it
        seconds = time.perf_counter() - t0
        out.append((raw, detector.coarse_pass(image), frame.mask(), seconds))
    return out


def _write_curve(out_dir: Path, rows: Sequence[Dict[str, Any]], best: Dict[str, Any], title: str) -> Dict[str, str]:
    """threshold_curve.csv (every setting), .png (the thresholds at the chosen other
    settings) and threshold_budget.png (the chosen setting's error budget)."""
    from satsam_ros.figures import plot_error_budget

    out_dir.mkdir(parents=True, exist_ok=True)
    keys = POST_KEYS + (CASCADE_KEYS if "cascade" in best else ())
    columns = list(keys) + ["accuracy", "mean_iou", "false_alarm_rate", "miss_rate", "correct", "frames",
                            "false_alarms", "misses"]
    csv_path = report.write_csv(out_dir / "threshold_curve.csv", rows, columns)
    same = [r for r in rows if all(r[k] == best[k] for k in keys if k != "threshold")]
    png_path = report.plot_threshold_curve(
        same, best["threshold"], out_dir / "threshold_curve.png",
        title=f"{title}, " + _describe(best, with_threshold=False),
    )
    budget_path = plot_error_budget(best["error_budget"], out_dir / "threshold_budget.png",
                                    title=f"{title}, chosen: " + _describe(best))
    return {"csv": str(csv_path), "png": str(png_path), "budget_png": str(budget_path)}


def _describe(row: Dict[str, Any], with_threshold: bool = True) -> str:
    parts = [f"threshold {row['threshold']:.3f}"] if with_threshold else []
    parts += [f"min_area {row['min_area']}", f"max_objects {row['max_objects']}", f"min_score {row['min_score']:g}",
              f"min_object_score {row.get('min_object_score', 0.0):g}",
              f"group_gap {row['group_gap']}"]
    if "cascade" in row:
        parts.append(f"cascade {row['cascade']} (margin {row['cascade_margin']})" if row["cascade"] else
                     "cascade off")
    return ", ".join(parts)


def _store(ckpt: Path, result: Dict[str, Any], tuning: Dict[str, Any]) -> Path:
    """Write the chosen setting for this size and ``provenance.threshold_tuning`` into
    ckpt/satsam.json, atomically."""
    from satsam_ros.core.meta import META_FILE, SatsamMeta

    best = result["best"]
    size = int(result["size"])
    meta = SatsamMeta.read(ckpt)
    meta.postprocess = dict(meta.postprocess or {})
    entry = {k: best[k] for k in POST_KEYS}
    if "cascade" in best:  # swept: store the choice (off: 0, no margin)
        entry["cascade"] = int(best["cascade"])
        if best["cascade"]:
            entry["cascade_margin"] = int(best["cascade_margin"])
    else:  # not swept: the size keeps the cascade it had
        old = (meta.postprocess.get(str(size)) or {})
        entry.update({k: old[k] for k in CASCADE_KEYS if k in old})
    if entry.get("cascade") and result.get("cascade_max_patches"):  # the cap it was tuned under
        entry["cascade_max_patches"] = int(result["cascade_max_patches"])
    meta.postprocess[str(size)] = entry
    if meta.size is None or int(meta.size) == size:
        meta.threshold = float(best["threshold"])
        meta.min_area = int(best["min_area"])
    meta.provenance = dict(meta.provenance or {})
    record = {
        "data": report.repo_path(result["data"]),
        "split": result["split"],
        "size": size,
        "frames": result["frames"],
        **{k: v for k, v in tuning.items() if k != "command"},
        "chosen": {k: best[k] for k in POST_KEYS + (CASCADE_KEYS if "cascade" in best else ())},
        "cascade_max_patches": int(result.get("cascade_max_patches") or 0),
        "accuracy": best["accuracy"],
        "mean_iou": best["mean_iou"],
        "false_alarm_rate": best["false_alarm_rate"],
        "error_budget": best["error_budget"]["counts"],
        "previous": result["previous_postprocess"],
        "command": tuning["command"],
        "tuned": report.now_iso(),
    }
    tunings = meta.provenance.get("threshold_tuning")
    if not isinstance(tunings, dict) or "size" in tunings:  # older single-size record: keep it under its size
        tunings = {str(tunings["size"]): tunings} if isinstance(tunings, dict) else {}
    tunings[str(size)] = record
    meta.provenance["threshold_tuning"] = tunings
    meta.validate()
    return report.atomic_write_text(ckpt / META_FILE, meta.to_json())
