"""The node's ``/diagnostics`` status: which keys, what values, which level.

Pure Python: the node gathers the numbers and publishes the message; this module
decides what the status says (docs/node.md, "Diagnostics", lists the keys).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ..core.stats import percentile

OK, WARN = "OK", "WARN"


@dataclass
class RateClock:
    """Counters at the last report, to turn totals into rates."""

    t: float
    received: int = 0
    processed: int = 0

    def rates(self, now: float, received: int, processed: int) -> Tuple[float, float]:
        """(input Hz, processed Hz) since the last call; the clock moves to ``now``."""
        dt = max(now - self.t, 1e-9)
        rates = ((received - self.received) / dt, (processed - self.processed) / dt)
        self.t, self.received, self.processed = now, received, processed
        return rates


def _ms(values, q: float) -> str:
    v = percentile(values, q)
    return "nan" if v is None else f"{v * 1000.0:.1f}"


def roi_status(tracker: Any) -> str:
    """One line about ROI tracking: off, or its settings and scan counts."""
    if tracker is None:
        return "off"
    st = tracker.stats
    return (f"on (margin {tracker.margin}, full scan every {tracker.full_scan_every}): {st['frames']} frames, "
            f"{st['full']} full, {st['roi']} roi, {st['rescan']} rescans")


def presence_status(detector: Any, settings: Dict[str, Any]) -> str:
    """The presence gate: ``min_object_score X`` (``off`` at 0), and whether the model has
    the object-score head it needs; before configuring, the parameter as set."""
    if detector is None:
        value = float(settings.get("min_object_score", -1.0))
        return "min_object_score from the checkpoint once configured" if value == -1.0 else \
            f"min_object_score {value:g}"
    value = float(getattr(detector.post, "min_object_score", 0.0))
    if not getattr(detector.backend, "has_presence", False):
        return "no object-score head (not applied)" if value > 0 else "no object-score head"
    return f"min_object_score {value:g}" if value > 0 else "off (min_object_score 0)"


def cascade_status(detector: Any, settings: Dict[str, Any], snapshot: Dict[str, Any]) -> str:
    """The cascade: ``off``, or its coarse size and margin and how many frames stopped at
    the coarse pass; before configuring, the parameters as set."""
    if detector is None:
        margin, size = int(settings.get("cascade_margin", -1)), int(settings.get("cascade", -1))
        what = {-1: "from the checkpoint", 0: "off"}.get(size, f"{size} first")
        return f"{what} (margin {'from the checkpoint' if margin == -1 else f'{margin} px'}) once configured"
    text = detector.describe_cascade() if hasattr(detector, "describe_cascade") else "off"
    frames = int(snapshot.get("cascade_frames", 0))
    if frames:
        text += f": {snapshot.get('cascade_stopped', 0)} of {frames} frames stopped at the coarse pass"
        if getattr(detector, "cascade_max_patches", 0):
            text += f", {snapshot.get('cascade_capped', 0)} capped"
    return text


def _median_count(values) -> str:
    v = percentile(values, 50)
    return "nan" if v is None else f"{v:g}"


def detector_values(detector: Any, settings: Dict[str, Any]) -> Dict[str, str]:
    """backend, device, size, mode, threshold, min_area, the other post-processing and the
    presence gate: what the Detector runs with, or, with no Detector (the node is
    unconfigured), the parameters it will be built from (``auto`` and -1 not yet resolved)."""
    if detector is None:
        return {"backend": str(settings["backend"]), "device": str(settings["device"]),
                "size": str(settings["size"]), "mode": str(settings["mode"]),
                "threshold": f"{float(settings['threshold']):g}", "min_area": str(settings["min_area"]),
                "postprocess": "from the checkpoint once configured",
                "presence": presence_status(None, settings)}
    post = detector.post
    return {"backend": detector.backend.name, "device": str(detector.backend.device),
            "size": str(detector.config.size), "mode": detector.config.mode,
            "threshold": f"{detector.threshold:g}", "min_area": str(detector.min_area),
            "postprocess": f"max_objects {post.max_objects}, min_score {post.min_score:g}, "
                           f"group_gap {post.group_gap}",
            "presence": presence_status(detector, settings)}


def status_values(snapshot: Dict[str, Any], queue: Dict[str, int], rates: Tuple[float, float], detector: Any,
                  context: Dict[str, Any]) -> List[Tuple[str, str]]:
    """The key/value pairs of the status, in the documented order.

    ``snapshot``: :meth:`satsam_ros.ros.mailbox.Stats.snapshot`; ``queue``: the
    mailbox's ``dropped``, ``pending`` and ``in_progress``; ``rates``: (input Hz,
    processed Hz); ``detector``: the Detector, or None while unconfigured; ``context``:
    ``model``, ``roi_tracking``, ``input_topic``, ``image_transport``,
    ``lifecycle_state`` and ``settings`` (the node's parameters, used without a Detector).
    """
    det = detector_values(detector, context.get("settings", {}))
    return [
        ("input_rate_hz", f"{rates[0]:.2f}"),
        ("processed_rate_hz", f"{rates[1]:.2f}"),
        ("frames_received", str(snapshot["received"])),
        ("frames_processed", str(snapshot["processed"])),
        ("frames_dropped", str(queue["dropped"])),
        ("frames_rejected", str(snapshot["rejected"])),
        ("frames_pending", str(queue["pending"])),
        ("frames_in_progress", str(queue["in_progress"])),
        ("processing_errors", str(snapshot["errors"])),
        ("latency_p50_ms", _ms(snapshot["latency"], 50)),
        ("latency_p95_ms", _ms(snapshot["latency"], 95)),
        ("stamp_age_p50_ms", _ms(snapshot["stamp_age"], 50)),
        ("stamp_age_p95_ms", _ms(snapshot["stamp_age"], 95)),
        ("inference_p50_ms", _ms(snapshot["inference"], 50)),
        ("backend", det["backend"]),
        ("device", det["device"]),
        ("model", str(context["model"])),
        ("size", det["size"]),
        ("mode", det["mode"]),
        ("threshold", det["threshold"]),
        ("min_area", det["min_area"]),
        ("postprocess", det["postprocess"]),
        ("presence", det["presence"]),
        ("patches_gated", str(snapshot.get("gated", 0))),
        ("patches_run_p50", _median_count(snapshot.get("patches", []))),
        ("cascade", cascade_status(detector, context.get("settings", {}), snapshot)),
        ("roi_tracking", str(context["roi_tracking"])),
        ("input_topic", str(context["input_topic"])),
        ("image_transport", str(context["image_transport"])),
        ("lifecycle_state", str(context["lifecycle_state"])),
        ("last_problem", snapshot["last_problem"]),
    ]


def status_level(values: Dict[str, str], problems_before: int) -> Tuple[str, str, int]:
    """(level OK/WARN, message, problems now) for one report.

    WARN when frames were rejected or failed since the report that had seen
    ``problems_before`` of them; otherwise OK: not processing (a lifecycle state other
    than active), waiting, or the rates and latency.
    """
    problems = int(values["frames_rejected"]) + int(values["processing_errors"])
    if problems > problems_before:
        return WARN, f"{problems - problems_before} bad frame(s) or error(s): {values['last_problem']}", problems
    state = values.get("lifecycle_state", "active")
    if state != "active":
        return OK, f"{state}: not processing frames (lifecycle state)", problems
    if values["frames_received"] == "0":
        return OK, f"waiting for frames on {values['input_topic']}", problems
    return OK, (f"{values['processed_rate_hz']} Hz processed of {values['input_rate_hz']} Hz in, "
                f"latency p50 {values['latency_p50_ms']} ms"), problems


def new_clock(now: Optional[float] = None) -> RateClock:
    """A rate clock starting now (``time.monotonic()``)."""
    return RateClock(time.monotonic() if now is None else now)
