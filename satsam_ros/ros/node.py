"""The ROS 2 node ``satsam_detector`` (executable ``detect_node``): a thin shell around
:class:`satsam_ros.core.detector.Detector`.

One frame's way through it: the ``image`` subscription callback converts the message
(:mod:`satsam_ros.ros.convert`, validated) and puts the frame in a one-slot mailbox
(:mod:`satsam_ros.ros.mailbox`); the worker thread (:mod:`satsam_ros.ros.worker`) takes it,
runs the Detector (or the ROI tracker around it) and publishes (:mod:`satsam_ros.ros.outputs`)
``probability``, ``overlay``, ``detections_json``, ``detections`` and last ``mask``, each with
the input frame's header. A frame that arrives while another one waits replaces it and is
counted as dropped, so the newest frame always wins and latency stays bounded under overload.

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
from .outputs import Outputs
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
from .worker import FrameWorker

DIAGNOSTICS_PERIOD_S = 1.0

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
        self._outputs: Optional[Outputs] = None
        self._sub = None
        self._rejected_reason = ""
        self.transition_error = ""
        # validation first, so the start-up values are checked too
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.settings = self._declare_all()
        self._declared = True
        self.stats = Stats()
        self._mailbox = LatestFrameMailbox()
        self._worker = FrameWorker(self, self._mailbox, self._stop)
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
        from ..core.detector import parse_cascade
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
                mode=p["mode"], patch_size=p["patch_size"], overlap=p["overlap"], cascade=parse_cascade(p["cascade"]),
                cascade_margin=None if p["cascade_margin"] == -1 else p["cascade_margin"],
                cascade_max_patches=None if p["cascade_max_patches"] == -1 else p["cascade_max_patches"],
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
            self._outputs = Outputs(self)
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
            self._worker.start()
            self._create_subscription()
        except Exception as exc:  # noqa: BLE001
            return self._failed("activate", exc, state)
        p, det = self.settings, self._detector
        self.get_logger().info(
            f"ready: model {p['model']!r}, {det.backend.describe()}, size {det.config.size} "
            f"({len(det.grid.origins)} patches of {det.config.patch_size}, {det.config.mode}; cascade "
            f"{det.describe_cascade()}), "
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
        self._destroy_outputs()
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
        self._worker.stop()

    def _teardown(self) -> None:
        self._deactivate()
        self._destroy_outputs()
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
    def _destroy_outputs(self) -> None:
        outputs, self._outputs = self._outputs, None
        if outputs is not None:
            outputs.destroy()

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
            self._worker.reject(msg.header, exc)
            return
        self._mailbox.put(FrameItem(msg.header, frame, order, received))

    def _on_compressed(self, msg) -> None:
        """Subscription callback of the compressed transport: the worker decodes (only
        the frames it takes: a frame replaced while waiting is never decoded)."""
        received = time.monotonic()
        self.stats.count("received")
        self._mailbox.put(FrameItem(msg.header, None, "", received, compressed=msg))

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
