"""Scoring a replay: the node's masks against the bag's ground truth, and the summary.

Frames are scored with :class:`satsam_ros.core.metrics.MetricAccumulator`, the one
metric (IoU > 0.5 correct; an empty frame only when nothing is predicted), so a bag
evaluation's accuracy means what training evaluation's does, error budget included:
its grid ceiling uses the mask grid of the model and size the node reported in its
diagnostics (:func:`mask_grid_of`; none when the model's encoder input is unknown).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ...core.imaging import FrameError
from ...core.metrics import FrameRecord, MaskGrid, MetricAccumulator
from ...core.stats import summary_ms
from .io import BagError, format_stamp, read_images
from .replay import NODE_COUNTERS, ReplayRun


def iter_truth(bag, truth_topic: str, stamps: Sequence[int],
               only: Optional[Iterable[int]] = None) -> Iterator[Tuple[int, np.ndarray]]:
    """(frame index, H x W bool ground-truth mask) for the frames whose stamp has a
    mask on ``truth_topic``, streamed in bag order (the k-th mask of a stamp belongs
    to the k-th frame of that stamp). ``only``: just these frame indices."""
    frames_of: Dict[int, List[int]] = {}
    for i, stamp in enumerate(stamps):
        frames_of.setdefault(stamp, []).append(i)
    wanted = None if only is None else set(only)
    used: Dict[int, int] = {}
    for item in read_images(bag, truth_topic, decode=False):
        k = used.get(item.stamp, 0)
        used[item.stamp] = k + 1
        indices = frames_of.get(item.stamp, [])
        if k >= len(indices) or (wanted is not None and indices[k] not in wanted):
            continue
        try:
            arr, _order = item.array()
        except FrameError as exc:
            raise BagError(f"{truth_topic} message {item.index} (stamp {format_stamp(item.stamp)}): {exc}") from exc
        if arr.ndim != 2:
            raise BagError(f"{truth_topic} message {item.index}: a mask must have one channel, got "
                           f"{item.message().encoding}")
        yield indices[k], arr > 0


@dataclass
class Scored:
    """The metric over the answered frames with a ground-truth mask."""

    accumulator: MetricAccumulator
    records: Dict[int, FrameRecord]  # frame index -> its record
    with_truth: int  # frames with a ground-truth mask (answered or not)


def mask_grid_of(settings: Dict[str, str]) -> Optional[MaskGrid]:
    """The mask grid of the node's model at its size, from the diagnostics' ``model``
    and ``size`` (the model's encoder input E from its satsam.json, its ONNX metadata
    or the named random spec, without loading weights; E / 4 cells per 256 patch), or
    None when either is unknown."""
    from ...model import BUILTIN_DIR, RANDOM_SPECS, SatsamMeta

    spec, size = settings.get("model"), settings.get("size")
    if not spec or not size or not str(size).isdigit():
        return None
    e: Optional[int] = None
    try:
        if spec in RANDOM_SPECS:
            e = RANDOM_SPECS[spec].encoder_input_size
        elif spec == "builtin" or Path(spec).is_dir() and (Path(spec) / "satsam.json").is_file():
            e = SatsamMeta.read(BUILTIN_DIR if spec == "builtin" else Path(spec)).encoder_input_size
        elif spec.endswith(".onnx") and Path(spec).is_file():
            from ...artefacts import read_onnx_meta

            e = read_onnx_meta(spec).encoder_input_size
    except (OSError, ValueError):
        return None
    return MaskGrid(int(size), 256, int(e) // 4) if e else None


def score_answers(bag: Path, truth_topic: str, run: ReplayRun) -> Scored:
    """Score every answered frame that has a ground-truth mask on ``truth_topic``."""
    acc = MetricAccumulator(grid=mask_grid_of(run.node_settings))
    records: Dict[int, FrameRecord] = {}
    with_truth = 0
    stamps = run.stamps
    for i, truth in iter_truth(bag, truth_topic, stamps):
        with_truth += 1
        answer = run.answers.get(i)
        if answer is None:
            continue
        pred = answer.mask()
        if pred.shape != truth.shape:
            raise BagError(f"frame {i} (stamp {format_stamp(stamps[i])}): the node's mask is {pred.shape}, "
                           f"the ground truth {truth.shape}")
        records[i] = acc.add(pred, truth, seconds=answer.arrival - run.sends[i], frame_id=i)
    return Scored(acc, records, with_truth)


def drop_breakdown(run: ReplayRun, sent: int) -> Tuple[Optional[Dict[str, int]], Optional[Dict[str, int]]]:
    """(the node's counter changes over the replay, where the dropped frames went); both
    None when the node's diagnostics were not received."""
    if run.baseline is None or run.final is None:
        return None, None
    counters = {k: run.final[k] - run.baseline[k] for k in NODE_COUNTERS if k != "frames_pending"}
    breakdown = {
        "lost_before_node": sent - counters["frames_received"],
        "dropped_in_node": counters["frames_dropped"],
        "rejected_by_node": counters["frames_rejected"],
        "node_errors": counters["processing_errors"],
        "outputs_not_received": counters["frames_processed"] - len(run.answers),
        "still_pending": run.final["frames_pending"],
    }
    return counters, breakdown


def summarise(run: ReplayRun, opts, scored: Optional[Scored]) -> Dict[str, Any]:
    """The summary dict of a bag evaluation (``metrics.json``; see docs/bag.md)."""
    sent_times = [s for s in run.sends if s is not None]
    sent, answered = len(sent_times), len(run.answers)
    first_send, last_send = min(sent_times), max(sent_times)
    last_arrival = max((a.arrival for a in run.answers.values()), default=None)
    span = (last_arrival - first_send) if last_arrival is not None else None
    counters, breakdown = drop_breakdown(run, sent)
    summary: Dict[str, Any] = {
        "bag": str(run.bag),
        "image_topic": run.topic,
        "input_topic": run.input_topic,
        "frames_in_bag": len(run.index),
        "ground_truth": scored is not None,
        "truth_topic": opts.truth_topic if scored is not None else None,
        "rate": opts.rate,
        "attach": bool(opts.attach),
        "ros_domain_id": run.domain,
        "node": dict(run.node_settings, namespace=opts.namespace,
                     parameters=opts.node_parameters() if not opts.attach else {}),
        "frames_sent": sent,
        "frames_answered": answered,
        "frames_dropped": sent - answered,
        "dropped_breakdown": breakdown,
        "node_counters": counters,
        "unmatched_outputs": run.unmatched,
        "duplicate_outputs": run.duplicates,
        "latency_ms": summary_ms(run.latencies()),
        "throughput_fps": (answered / span) if span and span > 0 else None,
        "send_rate_hz": ((sent - 1) / (last_send - first_send)) if sent > 1 and last_send > first_send else None,
        "duration_s": span,
        "restamped": bool(opts.restamp),
        "problems": list(run.problems),
    }
    summary.update(_accuracy(scored))
    return summary


def _accuracy(scored: Optional[Scored]) -> Dict[str, Any]:
    """The accuracy fields of the summary (all None without ground truth)."""
    if scored is None:
        return dict.fromkeys(("accuracy", "mean_iou", "false_alarms", "false_alarm_rate", "empty_frames",
                              "metrics", "error_budget"))
    metrics = scored.accumulator.summary()
    metrics["frames_with_truth"] = scored.with_truth
    metrics["unanswered_with_truth"] = scored.with_truth - metrics["frames"]
    return {
        "accuracy": metrics["accuracy"],
        "mean_iou": metrics["mean_iou"],
        "false_alarms": metrics["false_alarms"],
        "false_alarm_rate": metrics["false_alarm_rate"],
        "empty_frames": metrics["empty_frames"],
        "metrics": metrics,
        "error_budget": metrics.pop("error_budget"),
    }
