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

A managed (lifecycle) node that starts itself: with ``autostart`` (the default) it
configures and activates at start-up, so a plain launch runs at once; with
``autostart:=false`` it waits, unconfigured, for a lifecycle manager
(``<node>/change_state``). ``configure`` loads the model and creates the outputs;
``activate`` starts the worker and subscribes to the input; ``deactivate`` undoes that;
``cleanup`` releases the model; ``shutdown`` (from any state), SIGINT and SIGTERM end
the process with status 0. ``/diagnostics`` reports in every state. A bad parameter at
start-up prints a message naming the parameter and its allowed values and exits with
status 2, as does a model or backend that fails to load under autostart; under a
manager that failure fails the ``configure`` transition and the node stays up.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, Optional

from ..core.imaging import FrameError
from . import diagnostics
from .mailbox import FrameItem, LatestFrameMailbox, Stats
from .params import (
    NODE_NAME,
    PARAMS,
    POST_PARAMS,
    ParamSpec,
    allowed_values,
    check_combination,
    check_parameter,
    descriptor,
)

DIAGNOSTICS_PERIOD_S = 1.0
REJECT_LOG_THROTTLE_S = 2.0
OUTPUT_QOS_DEPTH = 5

try:  # the ROS shell: only the modules of satsam_ros.ros need rclpy
    from rcl_interfaces.msg import SetParametersResult
    from rclpy.exceptions import (
        InvalidParameterTypeException,
        InvalidParameterValueException,
        ParameterException,
    )
    from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy_impl
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
except ImportError as _rclpy_error:  # pragma: no cover - exercised only without ROS
    LifecycleNode = object  # type: ignore[assignment,misc]
    RCLPY_IMPORT_ERROR: Optional[ImportError] = _rclpy_error
else:
    RCLPY_IMPORT_ERROR = None


#: the states a shutdown transition starts from
SHUTDOWN_FROM = ("unconfigured", "inactive", "active")


class StartupError(RuntimeError):
    """The node cannot start (bad parameter, model or backend); the message says why."""


class DetectorNode(LifecycleNode):
    """``satsam_detector``: parameters, lifecycle, QoS, the latest-frame worker and publishers."""

    def __init__(self, stop: Optional[threading.Event] = None, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._stop = stop if stop is not None else threading.Event()
        self._declared = False
        self._detector = None
        self._tracker = None
        self._worker: Optional[threading.Thread] = None
        self._worker_stop = threading.Event()
        self._sub = None
        self._pubs: Dict[str, Any] = {}
        self._rejected_reason = ""
        self.transition_error = ""
        # validation first, so the start-up values are checked too
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.settings = self._declare_all()
        self._declared = True
        self.stats = Stats()
        self._mailbox = LatestFrameMailbox()
        self.input_topic = self._resolve_input_topic()
        self._start_diagnostics()  # reports in every lifecycle state

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
                if self._declared:
                    self.get_logger().warning(f"refused parameter change: {reason}")
                return SetParametersResult(successful=False, reason=reason)
        if self._declared:  # live change: apply (read-only ones never get here)
            for param in params:
                self._apply_live(param.name, param.value)
        return SetParametersResult(successful=True)

    def _apply_live(self, name: str, value: Any) -> None:
        """Store a live change; the Detector and tracker follow when configured (else
        ``configure`` builds them from the stored values)."""
        if name not in self.settings:
            return
        self.settings[name] = value
        det = self._detector
        if name in POST_PARAMS and det is not None:  # -1: the checkpoint's value for this size
            det.set_post(**{name: None if value == -1 else value})
            self.get_logger().info(f"{name} now {getattr(det.post, name)}")
        elif name in ("roi_tracking", "roi_margin", "roi_full_scan_every") and det is not None:
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
                **{name: None if p[name] == -1 else p[name] for name in POST_PARAMS},
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

    def _release_detector(self) -> None:
        """Close the Detector (its backend lets go of the model and GPU memory) and drop it."""
        det, self._detector, self._tracker = self._detector, None, None
        if det is not None:
            det.close()
            self.get_logger().info("model released")

    # ---- lifecycle ----------------------------------------------------------------
    def lifecycle_state(self) -> str:
        """The current lifecycle state's label ("unconfigured", "inactive", "active",
        "finalized", or a transition state while one runs)."""
        # rclpy (Humble to Kilted) has no public getter; its get_state service reads the same
        return str(self._state_machine.current_state[1])

    def on_configure(self, state):
        """Load the model and create the output publishers; FAILURE (back to
        unconfigured, the reason logged and kept in ``transition_error``) when it cannot."""
        try:
            self._detector = self._open_detector()
            self._tracker = self._make_tracker()
            self._create_publishers()
        except Exception as exc:  # noqa: BLE001 - the manager gets FAILURE, the log says why
            return self._failed("configure", exc, state)
        det = self._detector
        self.get_logger().info(f"configured: backend {self.settings['backend']!r} -> {det.backend.name}: "
                               f"{det.backend_reason}")
        return super().on_configure(state)

    def on_activate(self, state):
        """Enable the outputs, start the worker, subscribe to the input (a matched
        subscription means the node is ready)."""
        try:
            result = super().on_activate(state)
            self._start_worker()
            self._create_subscription()
        except Exception as exc:  # noqa: BLE001
            return self._failed("activate", exc, state)
        p, det = self.settings, self._detector
        self.get_logger().info(
            f"ready: model {p['model']!r}, {det.backend.describe()}, size {det.config.size} "
            f"({len(det.grid.origins)} patches of {det.config.patch_size}, {det.config.mode}), "
            f"threshold {det.threshold}; input {self._sub.topic_name} "
            f"({p['image_transport']}, {p['qos_reliability']}, depth {p['qos_depth']})")
        return result

    def _failed(self, transition: str, exc: Exception, state):
        """A transition that cannot complete: undo it, log and keep the reason; FAILURE
        (the state stays where it was, so a manager may retry)."""
        self.transition_error = str(exc) if isinstance(exc, StartupError) else f"{type(exc).__name__}: {exc}"
        self.get_logger().error(f"{transition} failed: {self.transition_error}")
        if transition == "activate":
            self._deactivate()
            super().on_deactivate(state)
        else:
            self._teardown()
        return TransitionCallbackReturn.FAILURE

    def on_deactivate(self, state):
        """Unsubscribe, let the worker finish its frame and stop, disable the outputs."""
        self._deactivate()
        self.get_logger().info("inactive: not subscribed, publishing nothing")
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        """Destroy the outputs and release the model."""
        result = super().on_cleanup(state)
        self._destroy_publishers()
        self._release_detector()
        return result

    def on_shutdown(self, state):
        """From any state: tear everything down, then end the process (status 0)."""
        self._teardown()
        self._stop.set()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state):
        """A transition raised: tear everything down and go back to unconfigured."""
        self.get_logger().error(f"error during a transition from {state.label}: back to unconfigured")
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _deactivate(self) -> None:
        if self._sub is not None:
            self.destroy_subscription(self._sub)
            self._sub = None
        self._stop_worker()

    def _teardown(self) -> None:
        self._deactivate()
        self._destroy_publishers()
        self._release_detector()

    def start_up(self) -> Optional[str]:
        """``autostart``: configure, then activate; None when active (or stopped by a
        signal on the way), else why it could not."""
        for transition in (self.trigger_configure, self.trigger_activate):
            if self._stop.is_set():
                return None
            self.transition_error = ""
            if transition() != TransitionCallbackReturn.SUCCESS:
                return self.transition_error or f"the lifecycle transition {transition.__name__} failed"
        return None

    def finish(self) -> None:
        """Shut down (the lifecycle transition) unless already finalized; idempotent."""
        if self.lifecycle_state() in SHUTDOWN_FROM:
            try:
                self.trigger_shutdown()
            except _rclpy_impl.RCLError as exc:  # Humble raises where newer rclpy logs
                self.get_logger().error(f"shutdown transition: {exc}")
        self._teardown()

    # ---- activation ---------------------------------------------------------------
    def _create_publishers(self) -> None:
        """mask, probability, overlay, detections_json, detections (where vision_msgs
        imports): lifecycle publishers (they publish only while active), reliable,
        keep-last, volatile."""
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=OUTPUT_QOS_DEPTH,
                             reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        pubs = {name: self.create_lifecycle_publisher(Image, name, out_qos)
                for name in ("mask", "probability", "overlay")}
        pubs["detections_json"] = self.create_lifecycle_publisher(String, "detections_json", out_qos)
        self._vision_msgs = self._import_vision_msgs()
        if self._vision_msgs is not None:
            pubs["detections"] = self.create_lifecycle_publisher(self._vision_msgs.Detection2DArray, "detections",
                                                                 out_qos)
        self._string_cls = String
        self._pubs = pubs

    def _destroy_publishers(self) -> None:
        pubs, self._pubs = self._pubs, {}
        for pub in pubs.values():
            self.destroy_lifecycle_publisher(pub)

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
        self._worker_stop = threading.Event()
        self._mailbox.open()
        self._worker = threading.Thread(target=self._work, args=(self._worker_stop,), name="satsam-worker",
                                        daemon=True)
        self._worker.start()

    def _stop_worker(self, timeout: float = 30.0) -> bool:
        """Stop the worker (a frame in inference is finished first; a waiting one is
        dropped) and wait for it; True when it ended within ``timeout``."""
        worker, self._worker = self._worker, None
        self._worker_stop.set()
        self._mailbox.close()
        if worker is None:
            return True
        worker.join(timeout)
        if worker.is_alive():
            self.get_logger().warning(f"worker still busy after {timeout:.0f} s; leaving it")
            return False
        return True

    def _start_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_clock = diagnostics.new_clock()
        self._diag_problems = 0
        self._diag_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)

    def _resolve_input_topic(self) -> str:
        """The input's full name: ``image`` expanded and remapped; with the compressed
        transport ``<that>/compressed``, as image_transport names it."""
        base = self.resolve_topic_name("image")
        return base.rstrip("/") + "/compressed" if self.settings["image_transport"] == "compressed" else base

    def _create_subscription(self) -> None:
        """The image input: sensor-data QoS (keep-last qos_depth, qos_reliability, volatile);
        sensor_msgs/Image on ``image`` or CompressedImage on ``<image>/compressed``."""
        from sensor_msgs.msg import CompressedImage, Image

        p = self.settings
        reliability = (ReliabilityPolicy.RELIABLE if p["qos_reliability"] == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        in_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(p["qos_depth"]),
                            reliability=reliability, durability=DurabilityPolicy.VOLATILE)
        if p["image_transport"] == "compressed":
            self._sub = self.create_subscription(CompressedImage, self.input_topic, self._on_compressed, in_qos)
        else:
            self._sub = self.create_subscription(Image, "image", self._on_image, in_qos)

    # ---- one frame ----------------------------------------------------------------
    def _on_image(self, msg) -> None:
        """Subscription callback: validate, then hand the frame to the worker's mailbox."""
        from .convert import image_msg_to_array

        received = time.monotonic()
        self.stats.count("received")
        try:
            frame, order = image_msg_to_array(msg)
        except FrameError as exc:
            self._reject(msg.header, exc)
            return
        self._mailbox.put(FrameItem(msg.header, frame, order, received))

    def _on_compressed(self, msg) -> None:
        """Subscription callback of the compressed transport: the worker decodes (only
        the frames it takes: a frame replaced while waiting is never decoded)."""
        received = time.monotonic()
        self.stats.count("received")
        self._mailbox.put(FrameItem(msg.header, None, "", received, compressed=msg))

    def _reject(self, header, exc: Exception) -> None:
        text = f"{exc}"
        self.stats.count("rejected", text)
        self.get_logger().warning(
            f"skipped a bad frame (frame_id {header.frame_id!r}, stamp "
            f"{header.stamp.sec}.{header.stamp.nanosec:09d}): {text}",
            throttle_duration_sec=REJECT_LOG_THROTTLE_S,
        )

    def _work(self, stop: threading.Event) -> None:
        while not stop.is_set():
            item = self._mailbox.take()
            if item is None:
                return
            try:
                self._process(item, stop)
            finally:
                self._mailbox.done()

    def _decode(self, item: FrameItem) -> Optional[FrameItem]:
        """The item with pixels: a compressed frame decoded (None, counted and logged
        as rejected, when it cannot be), a raw one as it is."""
        if item.frame is not None:
            return item
        from .convert import compressed_msg_to_array

        try:
            frame, order = compressed_msg_to_array(item.compressed, int(self.settings["max_decoded_pixels"]))
        except FrameError as exc:
            self._reject(item.header, exc)
            return None
        return FrameItem(item.header, frame, order, item.received)

    def _process(self, item: FrameItem, stop: threading.Event) -> None:
        """Detect on one frame and publish; errors are counted and logged, never raised."""
        if self._extra_latency_s > 0 and stop.wait(self._extra_latency_s):
            return
        item = self._decode(item)
        if item is None:
            return
        tracker, detector = self._tracker, self._detector  # one read: a live change swaps the tracker whole
        try:
            result = (tracker or detector).detect(item.frame, item.order)
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

        header, pubs, p = item.header, self._pubs, self.settings
        if p["publish_probability"]:
            pubs["probability"].publish(array_to_image_msg(result.probability, "32FC1", header))
        if p["publish_overlay"]:
            from ..core.overlay import overlay_image

            picture = overlay_image(item.frame, result.mask, result.boxes, item.order)
            pubs["overlay"].publish(array_to_image_msg(picture, "bgr8", header))
        height, width = result.mask.shape
        text = detections_json(header, result.boxes, width, height, result.threshold,
                               {"inference_ms": round(result.timings["total"] * 1000.0, 3),
                                "patches": int(result.patches), "scan": scan})
        pubs["detections_json"].publish(self._string_cls(data=text))
        if "detections" in pubs:
            pubs["detections"].publish(build_detection_array(header, result.boxes, self._vision_msgs))
        pubs["mask"].publish(array_to_image_msg(result.mask, "mono8", header))
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
                   "input_topic": self.input_topic, "image_transport": self.settings["image_transport"],
                   "lifecycle_state": self.lifecycle_state(), "settings": self.settings}
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
