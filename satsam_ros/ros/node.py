"""The ROS 2 node ``satsam_detector`` (executable ``detect_node``): a thin shell around
:class:`satsam_ros.core.detector.Detector`.

One frame's way through it: the ``image`` subscription callback converts the message
(:mod:`satsam_ros.ros.convert`, validated) and puts the frame in a one-slot mailbox
(:mod:`satsam_ros.ros.mailbox`); the worker thread takes it, runs the Detector (or the
ROI tracker around it) and publishes ``probability``, ``overlay``, ``detections_json``,
``detections`` and last ``mask``, each with the input frame's header. A frame that
arrives while another one waits replaces it and is counted as dropped, so the newest
frame always wins and latency stays bounded under overload.

Parameters are one table (:mod:`satsam_ros.ros.params`), validated in an on-set
callback registered before they are declared; the Detector is opened by
:func:`satsam_ros.runtime.open_detector`; ``/diagnostics`` (about 1 Hz) says what
:mod:`satsam_ros.ros.diagnostics` makes of the counters. docs/node.md is the reference.

Not a lifecycle node on purpose: it is active as soon as it is up (a lifecycle node
left unconfigured silently publishes nothing); the steps a lifecycle node would run on
activation are the methods ``_create_publishers``, ``_start_worker`` and
``_create_subscription``. SIGINT/SIGTERM shut it down cleanly (worker joined, exit 0).
A bad parameter at start-up prints a message naming the parameter and its allowed
values and exits with status 2.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ..core.imaging import FrameError
from . import diagnostics
from .mailbox import FrameItem, LatestFrameMailbox, Stats
from .params import NODE_NAME, PARAMS, ParamSpec, allowed_values, check_combination, check_parameter, descriptor

DIAGNOSTICS_PERIOD_S = 1.0
REJECT_LOG_THROTTLE_S = 2.0
OUTPUT_QOS_DEPTH = 5

try:  # the ROS shell: only the modules of satsam_ros.ros need rclpy
    import rclpy
    from rcl_interfaces.msg import SetParametersResult
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


class StartupError(RuntimeError):
    """The node cannot start (bad parameter, model or backend); the message says why."""


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
        self._detector = self._open_detector()
        self._tracker = self._make_tracker()
        self.stats = Stats()
        self._mailbox = LatestFrameMailbox()
        # activation: outputs, worker, diagnostics, then the input (once it is matched, the node is ready)
        self._create_publishers()
        self._start_worker()
        self._start_diagnostics()
        self._create_subscription()
        self._log_ready()

    # ---- parameters -------------------------------------------------------------
    def _declare_all(self) -> Dict[str, Any]:
        values = {}
        for spec in PARAMS:
            values[spec.name] = self._declare(spec)
        cross = check_combination(values)
        if cross:
            raise StartupError(cross)
        return values

    def _declare(self, spec: ParamSpec) -> Any:
        """Declare one parameter; StartupError naming it and its allowed values when refused."""
        self._rejected_reason = ""
        try:
            return self.declare_parameter(spec.name, spec.default, descriptor(spec)).value
        except InvalidParameterValueException as exc:
            raise StartupError(self._rejected_reason or
                               f"parameter '{spec.name}' must be {allowed_values(spec)} ({exc.args[0]})") from exc
        except InvalidParameterTypeException as exc:
            raise StartupError(f"parameter '{spec.name}' must be {allowed_values(spec)} ({exc.args[0]})") from exc
        except ParameterException as exc:
            raise StartupError(f"parameter '{spec.name}': {exc}") from exc

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

    # ---- detector ---------------------------------------------------------------
    def _open_detector(self):
        from ..model import RANDOM_SPECS
        from ..runtime import open_detector

        p = self.settings
        if p["model"] in RANDOM_SPECS:
            self.get_logger().warning(
                f"model {p['model']!r} has random weights: its masks mean nothing (use 'builtin', the "
                "shipped trained model, or your own checkpoint)"
            )
        try:
            return open_detector(
                model=p["model"], backend=p["backend"], device=p["device"], size=p["size"],
                mode=p["mode"], patch_size=p["patch_size"], overlap=p["overlap"],
                threshold=None if p["threshold"] == -1.0 else float(p["threshold"]),
                min_area=None if p["min_area"] == -1 else p["min_area"],
            )
        except Exception as exc:  # noqa: BLE001 - any failure here ends start-up with its message
            raise StartupError(
                f"cannot build the detector (model {p['model']!r}, backend {p['backend']!r}, "
                f"device {p['device']!r}): {exc}"
            ) from exc

    def _make_tracker(self):
        """A fresh RoiTracker from the current settings, or None when ROI tracking is off."""
        from ..core.roi import RoiTracker

        p = self.settings
        if not p["roi_tracking"]:
            return None
        return RoiTracker(self._detector, margin=int(p["roi_margin"]), full_scan_every=int(p["roi_full_scan_every"]))

    # ---- activation ---------------------------------------------------------------
    def _create_publishers(self) -> None:
        """mask, probability, overlay, detections_json, detections (where vision_msgs
        imports) and /diagnostics: reliable, keep-last, volatile."""
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=OUTPUT_QOS_DEPTH,
                             reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        self._pub_mask = self.create_publisher(Image, "mask", out_qos)
        self._pub_prob = self.create_publisher(Image, "probability", out_qos)
        self._pub_overlay = self.create_publisher(Image, "overlay", out_qos)
        self._pub_json = self.create_publisher(String, "detections_json", out_qos)
        self._vision_msgs = self._import_vision_msgs()
        self._pub_det = (self.create_publisher(self._vision_msgs.Detection2DArray, "detections", out_qos)
                         if self._vision_msgs is not None else None)
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._string_cls = String

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

    def _start_worker(self) -> None:
        """The thread that takes frames from the mailbox, detects and publishes."""
        self._extra_latency_s = int(self.settings["extra_latency_ms"]) / 1000.0
        self._worker = threading.Thread(target=self._work, name="satsam-worker", daemon=True)
        self._worker.start()

    def _start_diagnostics(self) -> None:
        self._diag_clock = diagnostics.new_clock()
        self._diag_problems = 0
        self._diag_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)

    def _create_subscription(self) -> None:
        """The image input: sensor-data QoS (keep-last qos_depth, qos_reliability, volatile)."""
        from sensor_msgs.msg import Image

        p = self.settings
        reliability = (ReliabilityPolicy.RELIABLE if p["qos_reliability"] == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        in_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(p["qos_depth"]),
                            reliability=reliability, durability=DurabilityPolicy.VOLATILE)
        self._sub = self.create_subscription(Image, "image", self._on_image, in_qos)

    def _log_ready(self) -> None:
        p, det = self.settings, self._detector
        self.get_logger().info(
            f"ready: model {p['model']!r}, {det.backend.describe()}, size {det.config.size} "
            f"({len(det.grid.origins)} patches of {det.config.patch_size}, {det.config.mode}), "
            f"threshold {det.threshold}; input {self._sub.topic_name} "
            f"({p['qos_reliability']}, depth {p['qos_depth']})"
        )
        self.get_logger().info(f"backend {p['backend']!r} -> {det.backend.name}: {det.backend_reason}")

    # ---- one frame ----------------------------------------------------------------
    def _on_image(self, msg) -> None:
        """Subscription callback: validate, then hand the frame to the worker's mailbox."""
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
        """Every output of one frame with its header; the mask last (whoever has a
        frame's mask has been sent everything else of it)."""
        from .convert import array_to_image_msg, build_detection_array, detections_json

        header = item.header
        if self._publish_probability:
            self._pub_prob.publish(array_to_image_msg(result.probability, "32FC1", header))
        if self._publish_overlay:
            from ..core.overlay import overlay_image

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

    # ---- diagnostics ------------------------------------------------------------
    def diagnostics_values(self):
        """The key/value pairs of the node's diagnostic status (docs/node.md, "Diagnostics")."""
        snap = self.stats.snapshot()
        rates = self._diag_clock.rates(time.monotonic(), snap["received"], snap["processed"])
        box = self._mailbox
        queue = {"dropped": box.dropped, "pending": box.pending(), "in_progress": box.in_progress()}
        context = {"model": str(self.settings["model"]), "roi_tracking": diagnostics.roi_status(self._tracker),
                   "input_topic": self._sub.topic_name}
        return diagnostics.status_values(snap, queue, rates, self._detector, context)

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        values = self.diagnostics_values()
        vals = dict(values)
        level, message, self._diag_problems = diagnostics.status_level(vals, self._diag_problems)
        status = DiagnosticStatus()
        status.name = f"{self.get_name()}: detector"
        status.hardware_id = f"{vals['backend']}/{vals['device']}"
        status.level = DiagnosticStatus.WARN if level == diagnostics.WARN else DiagnosticStatus.OK
        status.message = message
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


def _init_rclpy(args: List[str]) -> None:
    """rclpy.init without rclpy's own signal handlers (ours set the stop event instead)."""
    try:
        from rclpy.signals import SignalHandlerOptions
    except ImportError:  # rclpy older than Humble: its handlers are replaced afterwards
        rclpy.init(args=args)
    else:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)


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

    _init_rclpy(sys.argv if argv is None else argv)
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
