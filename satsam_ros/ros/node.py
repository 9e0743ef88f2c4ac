"""The ROS 2 node ``satsam_detector`` (executable ``detect_node``): a thin shell around
:class:`satsam_ros.detector.Detector`.

Topics (relative names; the launch file puts the node in namespace ``satsam``):

* in ``image`` (sensor_msgs/Image: mono8, mono16, rgb8, bgr8, rgba8, bgra8, 32FC1,
  also 8UC1/16UC1), sensor-data QoS: keep-last ``qos_depth`` (1), reliability
  ``qos_reliability`` (best_effort).
* out, each carrying the input frame's header: ``mask`` (mono8, 0/255, input size),
  ``probability`` (32FC1 in [0, 1], ``publish_probability``), ``detections``
  (vision_msgs/Detection2DArray, only where vision_msgs imports),
  ``detections_json`` (std_msgs/String, always), ``overlay`` (bgr8,
  ``publish_overlay``), and ``/diagnostics`` (diagnostic_msgs/DiagnosticArray, ~1 Hz).

Inference runs on a worker thread fed by a one-slot mailbox: the subscription
callback only validates the frame and puts it in the slot; a frame that arrives while
another one waits replaces it and the replaced one is counted as dropped. So the
newest frame always wins and latency stays bounded under overload.

Not a lifecycle node on purpose: it is active as soon as it is up (a lifecycle node
left unconfigured silently publishes nothing). SIGINT/SIGTERM shut it down cleanly
(worker joined, exit 0). A bad parameter at start-up prints a message naming the
parameter and its allowed values and exits with status 2.
"""

from __future__ import annotations

import collections
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import numpy as np

from ..core.detector import MODES
from ..core.imaging import FrameError
from ..core.tiling import ALLOWED_SIZES
from ..runtime import BACKENDS, DEFAULT_BACKEND, DEFAULT_DEVICE, DEFAULT_MODEL, DEVICES

NODE_NAME = "satsam_detector"
RELIABILITIES = ("best_effort", "reliable")
DIAGNOSTICS_PERIOD_S = 1.0
REJECT_LOG_THROTTLE_S = 2.0
LATENCY_WINDOW = 200  # frames kept for the latency percentiles
OUTPUT_QOS_DEPTH = 5
INT32_MAX = 2 ** 31 - 1


class StartupError(RuntimeError):
    """The node cannot start (bad parameter, model or backend); the message says why."""


# --------------------------------------------------------------------------------------
# Parameters: one table, used for declaring, validating and documenting.


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter.

    ``choices``: allowed values (checked in the on-set callback, listed in the
    description). ``int_range`` / ``float_range``: (from, to, step) for the
    descriptor. ``live``: may change while the node runs (else read-only).
    """

    name: str
    default: Any
    description: str
    choices: Tuple[Any, ...] = ()
    int_range: Optional[Tuple[int, int, int]] = None
    float_range: Optional[Tuple[float, float, float]] = None
    live: bool = False


PARAMS: Tuple[ParamSpec, ...] = (
    ParamSpec("size", 512, "Frames are resized to size x size before tiling (S).",
              choices=ALLOWED_SIZES),
    ParamSpec("model", DEFAULT_MODEL, "Model: 'builtin' (the shipped model, trained on synthetic frames), "
              "'tiny' (small random SAM for tests: its output means nothing), "
              "'vit-b', a checkpoint directory or a hub id (needs network)."),
    ParamSpec("backend", DEFAULT_BACKEND,
              "Inference engine ('auto' picks TensorRT, ONNX Runtime or torch and logs why).", choices=BACKENDS),
    ParamSpec("device", DEFAULT_DEVICE, "Where the model runs ('auto': cuda when available, else cpu).",
              choices=DEVICES),
    ParamSpec("threshold", -1.0, "Mask threshold on the probability: -1 = the checkpoint's "
              "tuned value, else 0..1.", float_range=(-1.0, 1.0, 0.0), live=True),
    ParamSpec("patch_size", 256, "Patch side P in resized pixels (multiple of 16, <= size).",
              int_range=(16, 2048, 16)),
    ParamSpec("overlap", 0, "Patch overlap in resized pixels (blended), 0..patch_size/2.",
              int_range=(0, 1024, 1)),
    ParamSpec("mode", "fast", "fast: batched patches at the model's own input size; faithful: "
              "one patch per pass at 1024 as the reference pipeline (slow).", choices=MODES),
    ParamSpec("min_area", -1, "Drop connected components smaller than this (input pixels); -1 = the "
              "checkpoint's tuned value.", int_range=(-1, INT32_MAX, 1), live=True),
    ParamSpec("publish_probability", True, "Publish the 32FC1 probability image.", live=True),
    ParamSpec("publish_overlay", False, "Publish a bgr8 overlay (frame, mask, boxes).", live=True),
    ParamSpec("qos_reliability", "best_effort", "Reliability of the image subscription.",
              choices=RELIABILITIES),
    ParamSpec("qos_depth", 1, "Keep-last depth of the image subscription.",
              int_range=(1, 100, 1)),
    ParamSpec("roi_tracking", False, "Stream ROI tracking: after a detection, run only the patches "
              "near the last box (roi_margin) and scan in full every roi_full_scan_every frames or when "
              "the target is lost. Off by default: it trades recall on new objects for speed.", live=True),
    ParamSpec("roi_margin", 48, "ROI tracking: input pixels added on every side of the last box.",
              int_range=(0, 100000, 1), live=True),
    ParamSpec("roi_full_scan_every", 10, "ROI tracking: a full scan at least every this many frames.",
              int_range=(1, 100000, 1), live=True),
    ParamSpec("extra_latency_ms", 0, "Testing aid: sleep this long per frame in the worker "
              "(simulates a slow backend). Keep 0 in production.",
              int_range=(0, 60000, 1)),
)
PARAM_SPECS: Dict[str, ParamSpec] = {p.name: p for p in PARAMS}


def _fmt(values) -> str:
    return ", ".join(str(v) for v in values)


def allowed_values(spec: ParamSpec) -> str:
    """Human text of a parameter's allowed values ("one of 512, 1024, 2048", ...)."""
    if spec.choices:
        return f"one of {_fmt(spec.choices)}"
    if spec.name == "threshold":
        return "-1 (from the checkpoint) or in [0, 1]"
    if spec.name == "min_area":
        return f"-1 (from the checkpoint) or an integer in [0, {INT32_MAX}]"
    if spec.name == "model":
        return "tiny, builtin, vit-b, a checkpoint directory or a hub id"
    if spec.int_range is not None:
        lo, hi, step = spec.int_range
        return f"an integer in [{lo}, {hi}]" + (f" in steps of {step}" if step > 1 else "")
    if isinstance(spec.default, bool):
        return "true or false"
    return f"a {type(spec.default).__name__}"


def check_parameter(name: str, value: Any) -> Optional[str]:
    """Validate one parameter value; return None when fine, else the reason.

    The reason names the parameter and the allowed values, e.g.
    ``"parameter 'size' must be one of 512, 1024, 2048; got 300"``. Names that are
    not the node's own (use_sim_time, ...) are not checked here.
    """
    spec = PARAM_SPECS.get(name)
    if spec is None:
        return None
    if spec.choices and value not in spec.choices:
        return f"parameter '{name}' must be {allowed_values(spec)}; got {value!r}"
    if name == "model" and not str(value).strip():
        return f"parameter 'model' must be {allowed_values(spec)}; got an empty string"
    if name == "threshold" and value != -1.0 and not 0.0 <= value <= 1.0:
        return f"parameter 'threshold' must be {allowed_values(spec)}; got {value}"
    if spec.int_range is not None:
        lo, hi, step = spec.int_range
        if not lo <= value <= hi or (step > 1 and (value - lo) % step):
            return f"parameter '{name}' must be {allowed_values(spec)}; got {value}"
    return None


# --------------------------------------------------------------------------------------
# The newest-frame-wins mailbox and the counters (plain Python, no rclpy).


class LatestFrameMailbox:
    """A one-slot mailbox between the subscription callback and the worker.

    ``put`` stores an item; an item still waiting is replaced and counted in
    ``dropped``. ``take`` blocks until an item is there (returns it, empties the slot
    and marks the taker busy until ``done``) or the mailbox is closed (returns None).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False
        self._busy = False
        self.dropped = 0

    def put(self, item: Any) -> bool:
        """Store ``item``; True when it replaced a waiting one."""
        with self._cond:
            replaced = self._item is not None
            if replaced:
                self.dropped += 1
            self._item = item
            self._cond.notify()
            return replaced

    def take(self, timeout: Optional[float] = None) -> Any:
        """The waiting item (slot emptied), or None when closed or after ``timeout``."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            if self._closed or self._item is None:
                return None
            item, self._item = self._item, None
            self._busy = True
            return item

    def done(self) -> None:
        """The taken item is finished (published, rejected or failed)."""
        with self._cond:
            self._busy = False

    def pending(self) -> int:
        """Items waiting in the slot (0 or 1)."""
        with self._cond:
            return 0 if self._item is None else 1

    def in_progress(self) -> int:
        """Items taken and not yet done (0 or 1)."""
        with self._cond:
            return 1 if self._busy else 0

    def close(self) -> None:
        """Wake the worker for good; a waiting item is discarded."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def percentile(values, q: float) -> float:
    """q-th percentile (0..100) of a sequence of numbers, NaN when empty."""
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


class Stats:
    """Thread-safe counters and latency windows of the node."""

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self.lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.rejected = 0
        self.errors = 0
        self.last_problem = ""
        self.latency: Deque[float] = collections.deque(maxlen=window)  # receive -> publish, s
        self.stamp_age: Deque[float] = collections.deque(maxlen=window)  # stamp -> publish, s
        self.inference: Deque[float] = collections.deque(maxlen=window)  # detect() total, s

    def count(self, field: str, problem: str = "") -> None:
        with self.lock:
            setattr(self, field, getattr(self, field) + 1)
            if problem:
                self.last_problem = problem

    def record(self, latency: float, stamp_age: float, inference: float) -> None:
        with self.lock:
            self.processed += 1
            self.latency.append(latency)
            self.stamp_age.append(stamp_age)
            self.inference.append(inference)

    def snapshot(self) -> Dict[str, Any]:
        with self.lock:
            return {
                "received": self.received,
                "processed": self.processed,
                "rejected": self.rejected,
                "errors": self.errors,
                "last_problem": self.last_problem,
                "latency": list(self.latency),
                "stamp_age": list(self.stamp_age),
                "inference": list(self.inference),
            }


@dataclass
class FrameItem:
    """A validated frame waiting for the worker."""

    header: Any
    frame: np.ndarray
    order: str
    received: float  # time.monotonic() in the callback


# --------------------------------------------------------------------------------------
# The node.

try:  # the ROS shell: only this module (and ros_io) may need rclpy
    import rclpy
    from rcl_interfaces.msg import (
        FloatingPointRange,
        IntegerRange,
        ParameterDescriptor,
        SetParametersResult,
    )
    from rclpy.exceptions import (
        InvalidParameterTypeException,
        InvalidParameterValueException,
        ParameterException,
    )
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
except ImportError as _rclpy_error:  # pragma: no cover - exercised only without ROS
    Node = object  # type: ignore[assignment,misc]
    _RCLPY_IMPORT_ERROR: Optional[ImportError] = _rclpy_error
else:
    _RCLPY_IMPORT_ERROR = None


def descriptor(spec: ParamSpec):
    """The ParameterDescriptor of one parameter (description, allowed values, range, read_only)."""
    text = spec.description
    if spec.choices:
        text += f" Allowed: {_fmt(spec.choices)}."
    text += " Changeable at run time." if spec.live else " Read-only (set at start-up)."
    desc = ParameterDescriptor(name=spec.name, description=text, read_only=not spec.live)
    if spec.int_range is not None:
        lo, hi, step = spec.int_range
        desc.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=step)]
    if spec.float_range is not None:
        lo, hi, step = spec.float_range
        desc.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi, step=step)]
    if spec.choices:
        desc.additional_constraints = f"one of {_fmt(spec.choices)}"
    return desc


class DetectorNode(Node):
    """``satsam_detector``: parameters, QoS, the latest-frame worker and publishers."""

    def __init__(self, stop: Optional[threading.Event] = None, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._stop = stop if stop is not None else threading.Event()
        self._detector = None
        self._tracker = None
        self._worker: Optional[threading.Thread] = None
        self._rejected_reason = ""
        # validation first, so the start-up values are checked too
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.settings = self._declare_all()
        self._publish_probability = bool(self.settings["publish_probability"])
        self._publish_overlay = bool(self.settings["publish_overlay"])
        self._detector = self._build_detector()
        self._tracker = self._make_tracker()
        self._vision_msgs = self._import_vision_msgs()
        self._setup_io()

    # ---- parameters -------------------------------------------------------------
    def _declare_all(self) -> Dict[str, Any]:
        values = {}
        for spec in PARAMS:
            self._rejected_reason = ""
            try:
                param = self.declare_parameter(spec.name, spec.default, descriptor(spec))
            except InvalidParameterValueException as exc:
                raise StartupError(self._rejected_reason or self._range_reason(spec, exc)) from exc
            except InvalidParameterTypeException as exc:
                raise StartupError(f"parameter '{spec.name}' must be {allowed_values(spec)} "
                                   f"({exc.args[0]})") from exc
            except ParameterException as exc:
                raise StartupError(f"parameter '{spec.name}': {exc}") from exc
            values[spec.name] = param.value
        cross = self._check_combination(values)
        if cross:
            raise StartupError(cross)
        return values

    @staticmethod
    def _range_reason(spec: ParamSpec, exc: Exception) -> str:
        return f"parameter '{spec.name}' must be {allowed_values(spec)} ({exc.args[0]})"

    @staticmethod
    def _check_combination(values: Dict[str, Any]) -> str:
        from ..core.detector import DetectorConfig

        cfg = DetectorConfig(size=values["size"], patch_size=values["patch_size"],
                             overlap=values["overlap"], mode=values["mode"])
        try:
            cfg.validate()
        except ValueError as exc:
            return f"parameters size/patch_size/overlap/mode do not fit together: {exc}"
        return ""

    def _on_set_parameters(self, params) -> SetParametersResult:
        for param in params:
            reason = check_parameter(param.name, param.value)
            if reason:
                self._rejected_reason = reason
                if self._detector is not None:
                    self.get_logger().warning(f"refused parameter change: {reason}")
                return SetParametersResult(successful=False, reason=reason)
        if self._detector is not None:  # live change: apply
            for param in params:
                self._apply_live(param.name, param.value)
        return SetParametersResult(successful=True)

    def _apply_live(self, name: str, value: Any) -> None:
        det = self._detector
        if name == "threshold":
            det.config.threshold = None if value == -1.0 else float(value)
            det.threshold = float(det.meta.threshold if value == -1.0 else value)
            self.get_logger().info(f"threshold now {det.threshold}")
        elif name == "min_area":
            det.config.min_area = None if value == -1 else int(value)
            det.min_area = int(det.meta.min_area if value == -1 else value)
            self.get_logger().info(f"min_area now {det.min_area}")
        elif name == "publish_probability":
            self._publish_probability = bool(value)
        elif name == "publish_overlay":
            self._publish_overlay = bool(value)
        elif name in ("roi_tracking", "roi_margin", "roi_full_scan_every"):
            self.settings[name] = value
            self._tracker = self._make_tracker()
            self.get_logger().info(f"{name} now {value}")

    def _make_tracker(self):
        """A fresh RoiTracker from the current settings, or None when ROI tracking is off."""
        from ..core.roi import RoiTracker

        p = self.settings
        if not p["roi_tracking"]:
            return None
        return RoiTracker(self._detector, margin=int(p["roi_margin"]), full_scan_every=int(p["roi_full_scan_every"]))

    # ---- detector ---------------------------------------------------------------
    def _build_detector(self):
        from ..runtime import open_detector

        p = self.settings
        if p["model"] == "tiny":
            self.get_logger().warning(
                "model 'tiny' has random weights: its masks mean nothing (use 'builtin', the "
                "shipped trained model, or your own checkpoint)"
            )
        threshold = None if p["threshold"] == -1.0 else float(p["threshold"])
        try:
            return open_detector(
                model=p["model"], backend=p["backend"], device=p["device"], size=p["size"],
                mode=p["mode"], patch_size=p["patch_size"], overlap=p["overlap"],
                threshold=threshold, min_area=None if p["min_area"] == -1 else p["min_area"],
            )
        except Exception as exc:  # noqa: BLE001 - any failure here ends start-up with its message
            raise StartupError(
                f"cannot build the detector (model {p['model']!r}, backend {p['backend']!r}, "
                f"device {p['device']!r}): {exc}"
            ) from exc

    def _import_vision_msgs(self):
        try:
            import vision_msgs.msg as vision
        except ImportError:
            self.get_logger().warning(
                "vision_msgs is not installed: no Detection2DArray will be published on "
                "'detections'; boxes are still published as JSON on 'detections_json' "
                "(install ros-<distro>-vision-msgs to get them)"
            )
            return None
        return vision

    # ---- topics, worker, diagnostics --------------------------------------------
    def _setup_io(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        p = self.settings
        reliability = (ReliabilityPolicy.RELIABLE if p["qos_reliability"] == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        in_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(p["qos_depth"]),
                            reliability=reliability, durability=DurabilityPolicy.VOLATILE)
        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=OUTPUT_QOS_DEPTH,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
        self._pub_mask = self.create_publisher(Image, "mask", out_qos)
        self._pub_prob = self.create_publisher(Image, "probability", out_qos)
        self._pub_overlay = self.create_publisher(Image, "overlay", out_qos)
        self._pub_json = self.create_publisher(String, "detections_json", out_qos)
        self._pub_det = (self.create_publisher(self._vision_msgs.Detection2DArray, "detections", out_qos)
                         if self._vision_msgs is not None else None)
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._string_cls = String

        self.stats = Stats()
        self._mailbox = LatestFrameMailbox()
        self._extra_latency_s = int(p["extra_latency_ms"]) / 1000.0
        self._worker = threading.Thread(target=self._work, name="satsam-worker", daemon=True)
        self._worker.start()
        self._diag_last: Tuple[float, int, int] = (time.monotonic(), 0, 0)
        self._diag_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        # the subscription last: once it is matched, the node is ready
        self._sub = self.create_subscription(Image, "image", self._on_image, in_qos)
        det = self._detector
        self.get_logger().info(
            f"ready: model {p['model']!r}, {det.backend.describe()}, size {det.config.size} "
            f"({len(det.grid.origins)} patches of {det.config.patch_size}, {det.config.mode}), "
            f"threshold {det.threshold}; input {self._sub.topic_name} "
            f"({p['qos_reliability']}, depth {p['qos_depth']})"
        )
        reason = getattr(det, "backend_reason", "")
        if reason:
            self.get_logger().info(f"backend {p['backend']!r} -> {det.backend.name}: {reason}")

    def _on_image(self, msg) -> None:
        from .convert import image_msg_to_array

        received = time.monotonic()
        self.stats.count("received")
        try:
            frame, order = image_msg_to_array(msg)
        except FrameError as exc:
            self._reject(msg, exc)
            return
        self._mailbox.put(FrameItem(msg.header, frame, order, received))

    def _reject(self, msg, exc: Exception) -> None:
        text = f"{exc}"
        self.stats.count("rejected", text)
        self.get_logger().warning(
            f"skipped a bad frame (frame_id {msg.header.frame_id!r}, stamp "
            f"{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}): {text}",
            throttle_duration_sec=REJECT_LOG_THROTTLE_S,
        )

    def _work(self) -> None:
        while not self._stop.is_set():
            item = self._mailbox.take()
            if item is None:
                return
            try:
                self._process(item)
            finally:
                self._mailbox.done()

    def _process(self, item: FrameItem) -> None:
        """Detect on one frame and publish; errors are counted and logged, never raised."""
        if self._extra_latency_s > 0 and self._stop.wait(self._extra_latency_s):
            return
        tracker = self._tracker  # one read: a live parameter change swaps it whole
        try:
            result = (tracker or self._detector).detect(item.frame, item.order)
        except FrameError as exc:  # e.g. a frame the converter let through
            self.stats.count("rejected", str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - the node must never die from input
            self.stats.count("errors", f"{type(exc).__name__}: {exc}")
            self.get_logger().error(f"detection failed: {type(exc).__name__}: {exc}",
                                    throttle_duration_sec=REJECT_LOG_THROTTLE_S)
            return
        if self._stop.is_set():
            return
        try:
            self._publish(item, result, tracker.last_scan if tracker is not None else "full")
        except Exception as exc:  # noqa: BLE001 - e.g. during shutdown
            if self._stop.is_set():
                return
            self.stats.count("errors", f"publish: {exc}")
            self.get_logger().error(f"publishing failed: {exc}", throttle_duration_sec=REJECT_LOG_THROTTLE_S)

    def _publish(self, item: FrameItem, result, scan: str = "full") -> None:
        from .convert import array_to_image_msg, build_detection_array, detections_json

        header = item.header
        # the mask last: whoever has a frame's mask has been sent everything else of it
        if self._publish_probability:
            self._pub_prob.publish(array_to_image_msg(result.probability, "32FC1", header))
        if self._publish_overlay:
            from ..tools.cli import overlay_image

            picture = overlay_image(item.frame, result.mask, result.boxes, item.order)
            self._pub_overlay.publish(array_to_image_msg(picture, "bgr8", header))
        height, width = result.mask.shape
        text = detections_json(header, result.boxes, width, height, result.threshold,
                               {"inference_ms": round(result.timings["total"] * 1000.0, 3),
                                "patches": int(result.patches), "scan": scan})
        self._pub_json.publish(self._string_cls(data=text))
        if self._pub_det is not None:
            self._pub_det.publish(build_detection_array(header, result.boxes, self._vision_msgs))
        self._pub_mask.publish(array_to_image_msg(result.mask, "mono8", header))
        done = time.monotonic()
        now_ns = self.get_clock().now().nanoseconds
        stamp_ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
        self.stats.record(done - item.received, (now_ns - stamp_ns) / 1e9, result.timings["total"])

    def diagnostics_values(self) -> List[Tuple[str, str]]:
        """The key/value pairs of the node's diagnostic status (see the README, "Diagnostics")."""
        snap = self.stats.snapshot()
        now = time.monotonic()
        last_t, last_rx, last_done = self._diag_last
        dt = max(now - last_t, 1e-9)
        self._diag_last = (now, snap["received"], snap["processed"])
        det = self._detector

        def ms(values, q):
            v = percentile(values, q)
            return "nan" if v != v else f"{v * 1000.0:.1f}"

        return [
            ("input_rate_hz", f"{(snap['received'] - last_rx) / dt:.2f}"),
            ("processed_rate_hz", f"{(snap['processed'] - last_done) / dt:.2f}"),
            ("frames_received", str(snap["received"])),
            ("frames_processed", str(snap["processed"])),
            ("frames_dropped", str(self._mailbox.dropped)),
            ("frames_rejected", str(snap["rejected"])),
            ("frames_pending", str(self._mailbox.pending())),
            ("frames_in_progress", str(self._mailbox.in_progress())),
            ("processing_errors", str(snap["errors"])),
            ("latency_p50_ms", ms(snap["latency"], 50)),
            ("latency_p95_ms", ms(snap["latency"], 95)),
            ("stamp_age_p50_ms", ms(snap["stamp_age"], 50)),
            ("stamp_age_p95_ms", ms(snap["stamp_age"], 95)),
            ("inference_p50_ms", ms(snap["inference"], 50)),
            ("backend", det.backend.name),
            ("device", str(det.backend.device)),
            ("model", str(self.settings["model"])),
            ("size", str(det.config.size)),
            ("mode", det.config.mode),
            ("threshold", f"{det.threshold:g}"),
            ("min_area", str(det.min_area)),
            ("roi_tracking", self._roi_status()),
            ("input_topic", self._sub.topic_name),
            ("last_problem", snap["last_problem"]),
        ]

    def _roi_status(self) -> str:
        tracker = self._tracker
        if tracker is None:
            return "off"
        st = tracker.stats
        return (f"on (margin {tracker.margin}, full scan every {tracker.full_scan_every}): {st['frames']} frames, "
                f"{st['full']} full, {st['roi']} roi, {st['rescan']} rescans")

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        rejected_before = getattr(self, "_diag_rejected", 0)
        values = self.diagnostics_values()
        vals = dict(values)
        rejected = int(vals["frames_rejected"]) + int(vals["processing_errors"])
        self._diag_rejected = rejected
        status = DiagnosticStatus()
        status.name = f"{self.get_name()}: detector"
        status.hardware_id = f"{vals['backend']}/{vals['device']}"
        if rejected > rejected_before:
            status.level = DiagnosticStatus.WARN
            status.message = f"{rejected - rejected_before} bad frame(s) or error(s): {vals['last_problem']}"
        elif vals["frames_received"] == "0":
            status.level = DiagnosticStatus.OK
            status.message = f"waiting for frames on {vals['input_topic']}"
        else:
            status.level = DiagnosticStatus.OK
            status.message = (f"{vals['processed_rate_hz']} Hz processed of {vals['input_rate_hz']} Hz in, "
                              f"latency p50 {vals['latency_p50_ms']} ms")
        status.values = [KeyValue(key=k, value=v) for k, v in values]
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [status]
        self._pub_diag.publish(msg)

    # ---- shutdown ---------------------------------------------------------------
    def shutdown(self, timeout: float = 30.0) -> bool:
        """Stop the worker and wait for it; True when it finished within ``timeout``."""
        self._stop.set()
        if getattr(self, "_mailbox", None) is not None:
            self._mailbox.close()
        if self._worker is None:
            return True
        self._worker.join(timeout)
        if self._worker.is_alive():
            self.get_logger().warning(f"worker still busy after {timeout:.0f} s; leaving it")
            return False
        return True


def _install_signal_handlers(stop: threading.Event) -> Callable[[], None]:
    """SIGINT and SIGTERM set ``stop``; returns a function restoring the old handlers."""
    previous = {}

    def handler(signum, _frame):
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``detect_node``: run until SIGINT/SIGTERM, return the exit status.

    0 after a clean shutdown; 2 when the node cannot start (the reason is printed on
    stderr and names the parameter and its allowed values).
    """
    if _RCLPY_IMPORT_ERROR is not None:
        print(f"detect_node: rclpy is not importable ({_RCLPY_IMPORT_ERROR}); source a ROS 2 "
              "installation or install the ROS 2 Python wheels", file=sys.stderr)
        return 2
    from rclpy.executors import SingleThreadedExecutor

    args = sys.argv if argv is None else argv
    try:  # our own SIGINT/SIGTERM handling (rclpy's would raise in the middle of a spin)
        from rclpy.signals import SignalHandlerOptions
    except ImportError:  # rclpy older than Humble: its handlers are replaced below
        rclpy.init(args=args)
    else:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    restore = _install_signal_handlers(stop)
    node = None
    try:
        try:
            node = DetectorNode(stop)
        except StartupError as exc:
            print(f"detect_node: {exc}", file=sys.stderr)
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
        node.get_logger().info("shutting down")
        node.shutdown()
        executor.remove_node(node)
        return 0
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
        restore()


if __name__ == "__main__":
    sys.exit(main())
