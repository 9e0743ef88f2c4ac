"""Evaluating a model on labelled frames (COCO, the format of ``satsam_training.coco``).

Every frame goes through the Detector that :func:`satsam_ros.runtime.open_detector` opens
(the node's code path and defaults: the backend the node would pick) and is scored with
:mod:`satsam_ros.core.metrics` (the one metric). Outputs, in
``out``::

    metrics.json     the summary (accuracy, mean IoU, false-alarm and miss rates,
                     seconds per frame median / p95, the ``error_budget``) plus the
                     settings
    per_frame.csv    one row per frame: id, file, IoU, correct, areas, seconds, the
                     error-budget category, the true extent and the grid-ceiling IoU
    table.md         the reference's Table 1 layout (Image size | Accuracy | Runtime),
                     the full metric table and the error budget
    error_budget.png the budget as stacked bars, one per satellite size bucket
    examples.png     example frames, true mask outlined green, prediction red

The error budget (:mod:`satsam_ros.core.metrics`) splits the frames into correct,
missed, extra objects, poor mask and false alarm, per size of the true object, with
the grid ceiling of the model's mask grid at this S.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from satsam_ros.runtime import DEFAULT_BACKEND, DEFAULT_DEVICE

from . import report

NAMED_MODELS = ("tiny", "builtin", "vit-b", "tiny-sam2", "sam2-hiera-tiny", "tiny-edgetam")


class EvaluationError(ValueError):
    """An evaluation input that cannot be used; the message names it."""


def resolve_model(spec: str) -> str:
    """A model spec for ``load_model``; a training run directory (``fit --out``) is
    replaced by its ``model/`` checkpoint."""
    spec = str(spec)
    if spec in NAMED_MODELS:
        return spec
    path = Path(spec).expanduser()
    if path.is_dir() and not (path / "config.json").is_file() and (path / "model" / "config.json").is_file():
        return str(path / "model")
    return spec


def checkpoint_dir(spec: str) -> Optional[Path]:
    """The directory behind a spec (``builtin`` included), or None (tiny, vit-b, the SAM 2 specs, hub ids)."""
    from satsam_ros.model import BUILTIN_DIR

    spec = resolve_model(spec)
    if spec == "builtin":
        return BUILTIN_DIR
    path = Path(spec).expanduser()
    return path if path.is_dir() else None


def model_meta(spec: str):
    """The SatsamMeta of a spec without loading weights (defaults for tiny / hub ids)."""
    from satsam_ros.model import META_FILE, SatsamMeta

    directory = checkpoint_dir(spec)
    if directory is not None and (directory / META_FILE).is_file():
        return SatsamMeta.read(directory)
    return SatsamMeta()


def default_size(spec: str, size: Optional[int]) -> int:
    """``size`` if given, else the size the checkpoint was trained for, else 512."""
    from satsam_ros.core.tiling import check_size

    if size is not None:
        return check_size(size)
    meta_size = model_meta(spec).size
    return check_size(meta_size) if meta_size else 512


def load_frames(data, split: str):
    """The frames of one split of a COCO dataset directory (EvaluationError if unusable)."""
    from .coco import load_split

    try:
        frames = load_split(data, split)
    except (OSError, ValueError, KeyError) as exc:
        raise EvaluationError(f"--data {data}: cannot read split {split!r}: {exc}") from exc
    if not frames:
        raise EvaluationError(f"--data {data}: split {split!r} has no frames")
    return frames


@dataclass
class DetectorChoice:
    """Which Detector an evaluation runs: a model and its settings.

    ``model``: a spec for :func:`satsam_ros.runtime.open_detector` (a training run
    directory stands for its ``model/``); ``size`` None: the size the checkpoint was
    trained for, else 512; ``threshold`` / ``min_area`` / ``max_objects`` /
    ``min_score`` / ``group_gap`` / ``min_object_score`` None: the checkpoint's tuned
    values for that size;
    ``backend`` / ``device``: the runtime's defaults unless given; ``cascade`` /
    ``cascade_margin`` / ``cascade_max_patches`` None: the checkpoint's coarse-to-fine
    setting for that size (``cascade`` 0: full tiling; else the coarse size run first;
    ``cascade_max_patches`` 0: no cap on the S patches a frame runs).
    """

    model: str
    size: Optional[int] = None
    threshold: Optional[float] = None
    min_area: Optional[int] = None
    max_objects: Optional[int] = None
    min_score: Optional[float] = None
    group_gap: Optional[int] = None
    min_object_score: Optional[float] = None
    mode: str = "fast"
    overlap: int = 0
    backend: str = DEFAULT_BACKEND
    device: str = DEFAULT_DEVICE
    cascade: Optional[int] = None
    cascade_margin: Optional[int] = None
    cascade_max_patches: Optional[int] = None

    @property
    def spec(self) -> str:
        """The model spec to load (a run directory's ``model/``)."""
        return resolve_model(self.model)

    def frame_size(self) -> int:
        """S: ``size``, else the checkpoint's trained size, else 512."""
        return default_size(self.spec, self.size)

    def open(self):
        """The Detector (EvaluationError naming the model when it cannot be opened)."""
        from satsam_ros.runtime import open_detector

        try:
            return open_detector(self.spec, backend=self.backend, device=self.device, size=self.frame_size(),
                                 threshold=self.threshold, mode=self.mode, overlap=self.overlap,
                                 min_area=self.min_area, max_objects=self.max_objects,
                                 min_score=self.min_score, group_gap=self.group_gap,
                                 min_object_score=self.min_object_score, cascade=self.cascade,
                                 cascade_margin=self.cascade_margin,
                                 cascade_max_patches=self.cascade_max_patches)
        except (OSError, ValueError) as exc:
            raise EvaluationError(f"model {self.model!r}: {exc}") from exc


def evaluate(
    choice: DetectorChoice,
    data,
    split: str = "test",
    out=None,
    examples: int = 8,
    warmup: int = 1,
    progress: bool = True,
    detector=None,
    log: Optional[Callable[[str], None]] = None,
) -> Dict[str, Any]:
    """Run the chosen Detector on every frame of ``data``/``split`` and score it.

    Returns the metrics dict (also written to ``out/metrics.json`` when ``out`` is
    given). ``detector`` may be a ready Detector (then ``choice`` is only recorded).
    ``warmup`` frames are run once untimed first so lazy initialisation does not count
    as runtime.
    """
    from tqdm import tqdm

    from satsam_ros.core.metrics import MaskGrid, MetricAccumulator

    frames = load_frames(data, split)
    detector = detector if detector is not None else choice.open()
    s = detector.config.size
    for frame in frames[: max(0, int(warmup))]:
        detector.detect(frame.image())
    acc = MetricAccumulator(grid=MaskGrid.of_detector(detector))
    files: List[str] = []
    results = []
    t0 = time.time()
    for frame in tqdm(frames, desc=f"evaluate S={s}", unit="frame", disable=not progress):
        res = detector.detect(frame.image())
        acc.add(res.mask, frame.mask(), seconds=res.timings["total"], frame_id=frame.id,
                probability=res.probability, threshold=res.threshold)
        files.append(str(frame.path))
        results.append((res.timings, res.patches_run, res.cascade))
    result = _result(choice, data, split, detector, time.time() - t0)
    result.update(acc.summary())
    result["cost"] = frame_cost(results, acc.records)
    if out is not None:
        write_outputs(Path(out), result, acc, frames, files, examples, detector)
        if log is not None:
            log(f"evaluate: wrote {out}/metrics.json, table.md, per_frame.csv, examples.png")
    return result


def _result(choice: DetectorChoice, data, split: str, detector, seconds: float) -> Dict[str, Any]:
    """What was evaluated, and how (the settings part of metrics.json)."""
    return {
        "model": str(choice.model),
        "data": str(Path(data).resolve()),
        "split": split,
        "size": int(detector.config.size),
        "threshold": float(detector.threshold),
        "min_area": int(detector.min_area),
        "postprocess": detector.post.to_dict(),
        "backend": detector.backend.name,
        "device": str(detector.backend.device),
        "encoder_input_size": int(detector.backend.input_size),
        "patch_size": int(detector.config.patch_size),
        "mode": detector.config.mode,
        "model_trained_size": detector.meta.size,
        "cascade": int(getattr(detector, "cascade_size", 0)),
        "cascade_margin": int(getattr(detector, "cascade_margin", 0)),
        "cascade_max_patches": int(getattr(detector, "cascade_max_patches", 0)),
        "cascade_description": detector.describe_cascade() if hasattr(detector, "describe_cascade") else "off",
        "wall_seconds": seconds,
        "evaluated": report.now_iso(),
    }


def frame_cost(results, records) -> Dict[str, Any]:
    """Where the time goes, from each frame's (timings, patches run, cascade outcome):
    seconds per frame on frames with and without a satellite (median, p95), patches run
    per frame (the cascade's coarse ones included), the share of frames the cascade
    stopped at the coarse pass and their median seconds, and the pre + post share of the
    frame time."""
    from satsam_ros.core.stats import percentile

    def secs(empty: bool):
        return [t["total"] for (t, _, _), r in zip(results, records) if r.true_empty == empty]

    totals = sum(t["total"] for t, _, _ in results)
    outside = sum(t.get("pre", 0.0) + t.get("post", 0.0) for t, _, _ in results)
    cascaded = [c for _, _, c in results if c is not None]
    patches = [n for _, n, _ in results]
    return {
        "seconds_satellite_median": percentile(secs(False), 50.0),
        "seconds_satellite_p95": percentile(secs(False), 95.0),
        "seconds_empty_median": percentile(secs(True), 50.0),
        "seconds_empty_p95": percentile(secs(True), 95.0),
        "seconds_stopped_median": percentile([t["total"] for t, _, c in results if c == "stopped"], 50.0),
        "patches_median": percentile(patches, 50.0),
        "patches_mean": float(sum(patches)) / len(patches) if patches else None,
        "cascade_stopped_share": (sum(c == "stopped" for c in cascaded) / len(cascaded)) if cascaded else None,
        "cascade_capped_share": (sum(c == "capped" for c in cascaded) / len(cascaded)) if cascaded else None,
        "pre_post_share": outside / totals if totals > 0 else None,
    }


def write_outputs(out: Path, result: Dict[str, Any], acc, frames, files, examples: int, detector) -> None:
    """metrics.json, per_frame.csv, table.md and examples.png (see the module docstring)."""
    from satsam_ros.core.metrics import budget_markdown, pick_examples
    from satsam_ros.figures import plot_error_budget

    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "metrics.json", result)
    rows = []
    for rec, path in zip(acc.records, files):
        row = rec.to_dict()
        row["file"] = path
        rows.append(row)
    report.write_csv(out / "per_frame.csv", rows)
    model = Path(result["model"])  # a run's checkpoint folder is always "model": name its run too
    name = f"{model.parent.name}/{model.name}" if model.name == "model" and model.parent.name else model.name
    title = (f"model {name} on {Path(result['data']).name} ({result['split']}), "
             f"S = {result['size']}")
    text = (
        f"# Evaluation: {title}\n\n"
        f"Threshold {result['threshold']:.3f}, backend {result['backend']} on {result['device']}, "
        f"encoder input {result['encoder_input_size']}, cascade {result.get('cascade_description', 'off')}, "
        f"{result['frames']} frames.\n\n"
        + report.table1_markdown([result])
        + "\nRuntime: median seconds per frame (`Result.timings['total']`, after one warm-up frame).\n\n"
        + report.metrics_markdown(result)
        + "\n## Error budget\n\n" + budget_markdown(result["error_budget"])
    )
    report.atomic_write_text(out / "table.md", text)
    plot_error_budget(result["error_budget"], out / "error_budget.png", title=title)
    picked = pick_examples(dict(enumerate(acc.records)), examples)
    shown = []
    for i in picked:
        frame, rec = frames[i], acc.records[i]
        res = detector.detect(frame.image())
        img = frame.image()
        shown.append({
            "image": img if img.ndim == 2 else img[:, :, 0],
            "true": frame.mask(),
            "pred": res.mask,
            "caption": f"frame {rec.frame_id}: IoU {rec.iou:.2f} {(rec.category or '').replace('_', ' ')}",
        })
    if shown:
        report.plot_examples(shown, out / "examples.png", title=title)


def summary_line(result: Dict[str, Any]) -> str:
    """One human line of the main numbers."""
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f} %"

    secs = result.get("seconds_median")
    cascade = result.get("cascade_description", "off")
    return (
        f"S={result['size']}{'' if cascade == 'off' else f' (cascade {cascade})'}: accuracy "
        f"{pct(result['accuracy'])} over {result['frames']} frames, "
        f"mean IoU {'n/a' if result['mean_iou'] is None else format(result['mean_iou'], '.3f')}, "
        f"false alarms {pct(result['false_alarm_rate'])}, misses {pct(result['miss_rate'])}, "
        f"{'n/a' if secs is None else format(secs, '.3f')} s/frame (median)"
    )

