"""Helpers for the node tests over real DDS.

* :class:`NodeProcess`: the colcon-installed ``detect_node`` started as a separate
  process (``--ros-args -r __ns:=... -p name:=value ...``), output captured in files.
* :class:`RosHarness`: an rclpy context of its own with a test node spun by an
  executor on a thread; publishers and :class:`Collector` subscriptions.
* frame builders and ``/diagnostics`` readers.

Synchronisation is always "wait for a condition with a deadline", never a bare sleep.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import rclpy
from conftest import node_env
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from satsam_ros.ros.convert import array_to_image_msg

NODE_NAME = "satsam_detector"


def wait_until(predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.02):
    """Poll ``predicate`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(poll)


class NodeProcess:
    """``detect_node`` as colcon installed it, in its own process.

    ``params`` become ``-p name:=value`` (bools as true/false), ``remaps`` ``-r a:=b``,
    ``params_file`` ``--params-file PATH``; ``env`` replaces :func:`conftest.node_env`.
    stdout/stderr go to files (no pipe can fill up and block the node).
    """

    def __init__(self, executable: Path, params: Optional[Dict[str, object]] = None,
                 namespace: str = "/satsam", remaps: Optional[Dict[str, str]] = None,
                 params_file: Optional[Path] = None, env: Optional[Dict[str, str]] = None):
        self.args: List[str] = [str(executable), "--ros-args", "-r", f"__ns:={namespace}"]
        if params_file is not None:  # first, so the -p values win (as in the launch file)
            self.args += ["--params-file", str(params_file)]
        for name, value in (remaps or {}).items():
            self.args += ["-r", f"{name}:={value}"]
        for name, value in (params or {}).items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            self.args += ["-p", f"{name}:={value}"]
        self.namespace = namespace
        self._dir = tempfile.TemporaryDirectory(prefix="satsam_node_")
        self._out = open(Path(self._dir.name) / "stdout", "w+")
        self._err = open(Path(self._dir.name) / "stderr", "w+")
        self.proc = subprocess.Popen(self.args, env=env if env is not None else node_env(), stdout=self._out,
                                     stderr=self._err, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid

    def output(self) -> Tuple[str, str]:
        """(stdout, stderr) so far."""
        return (Path(self._dir.name, "stdout").read_text(errors="replace"),
                Path(self._dir.name, "stderr").read_text(errors="replace"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            out, err = self.output()
            raise AssertionError(f"node did not exit within {timeout} s\nstderr:\n{err[-3000:]}") from exc

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Send ``sig`` and return the exit status (SIGKILL if it hangs, then fail)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"node ignored signal {sig} for {timeout} s; killed") from None
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._out.close()
        self._err.close()
        self._dir.cleanup()

    def describe(self) -> str:
        out, err = self.output()
        return f"node {' '.join(self.args)} (rc={self.proc.poll()})\nstderr tail:\n{err[-2000:]}"


class Collector:
    """Messages received on one topic, with their receive time (time.time())."""

    def __init__(self) -> None:
        self.subscription = None
        self._lock = threading.Lock()
        self.items: List[Tuple[float, object]] = []

    def __call__(self, msg) -> None:
        now = time.time()
        with self._lock:
            self.items.append((now, msg))

    def snapshot(self) -> List[Tuple[float, object]]:
        with self._lock:
            return list(self.items)

    def find(self, predicate: Callable[[object], bool]):
        for _, msg in reversed(self.snapshot()):
            if predicate(msg):
                return msg
        return None

    def wait_for(self, predicate: Callable[[object], bool], timeout: float, what: str):
        return wait_until(lambda: self.find(predicate), timeout, what)

    def by_stamp(self, stamp) -> Optional[object]:
        return self.find(lambda m: same_stamp(m.header.stamp, stamp))


def same_stamp(a, b) -> bool:
    return a.sec == b.sec and a.nanosec == b.nanosec


def reliable(depth: int = 10) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE)


class RosHarness:
    """A test node in an rclpy context of its own, spun on a background thread."""

    def __init__(self, name: str):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._running = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._running and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def publisher(self, topic: str, msg_type=Image, qos: Optional[QoSProfile] = None):
        return self.node.create_publisher(msg_type, topic, qos or reliable())

    def collect(self, topic: str, msg_type=Image, qos: Optional[QoSProfile] = None) -> Collector:
        col = Collector()
        col.subscription = self.node.create_subscription(msg_type, topic, col, qos or reliable())
        return col

    def wait_publishers(self, collectors: Iterable[Collector], timeout: float) -> None:
        """Wait until every collector's subscription is matched by a publisher."""
        for col in collectors:
            sub = col.subscription
            wait_until(sub.get_publisher_count, timeout, f"a publisher on {sub.topic_name}")

    def wait_matched(self, publisher, timeout: float, what: str, proc: Optional[NodeProcess] = None) -> None:
        """Wait until ``publisher`` has a subscriber (the node is up and ready)."""
        def ready():
            if proc is not None and not proc.alive():
                raise AssertionError("node exited before subscribing: " + proc.describe())
            return publisher.get_subscription_count() > 0
        wait_until(ready, timeout, what)

    def close(self) -> None:
        self._running = False
        self._thread.join(5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


# ---- frames ----------------------------------------------------------------------


def header(stamp_ns: int, frame_id: str) -> Header:
    h = Header()
    h.stamp.sec = int(stamp_ns // 1_000_000_000)
    h.stamp.nanosec = int(stamp_ns % 1_000_000_000)
    h.frame_id = frame_id
    return h


_stamp_lock = threading.Lock()
_last_stamp = [0]


def fresh_stamp_ns() -> int:
    """Wall-clock nanoseconds, strictly increasing across calls."""
    with _stamp_lock:
        now = max(time.time_ns(), _last_stamp[0] + 1)
        _last_stamp[0] = now
        return now


def image_msg(arr: np.ndarray, encoding: str, frame_id: str = "camera", stamp_ns: Optional[int] = None):
    """A valid sensor_msgs/Image of ``arr`` with a fresh (or given) stamp."""
    return array_to_image_msg(arr, encoding, header(stamp_ns or fresh_stamp_ns(), frame_id))


def raw_image_msg(encoding: str, height: int, width: int, step: int, data: bytes,
                  frame_id: str = "bad", stamp_ns: Optional[int] = None) -> Image:
    """An Image with exactly these fields (no validation: for malformed frames)."""
    msg = Image()
    msg.header = header(stamp_ns or fresh_stamp_ns(), frame_id)
    msg.encoding, msg.height, msg.width, msg.step = encoding, height, width, step
    msg.data = bytes(data)
    return msg


# ---- diagnostics -------------------------------------------------------------------


def diag_values(msg: DiagnosticArray, node_name: str = NODE_NAME,
                input_topic: Optional[str] = None) -> Optional[Dict[str, str]]:
    """Key/values of the node's status in one DiagnosticArray, None when absent.

    ``input_topic`` tells apart nodes of the same name (in other namespaces).
    """
    for status in msg.status:
        if status.name.startswith(f"{node_name}:"):
            values = {kv.key: kv.value for kv in status.values}
            if input_topic is not None and values.get("input_topic") != input_topic:
                continue
            values["_level"] = int.from_bytes(status.level, "little") if isinstance(status.level, bytes) \
                else int(status.level)
            values["_message"] = status.message
            return values
    return None


def latest_diag(collector: Collector, node_name: str = NODE_NAME, after: float = 0.0,
                input_topic: Optional[str] = None) -> Optional[Dict[str, str]]:
    """The newest diagnostics of the node received after time ``after`` (time.time())."""
    for t, msg in reversed(collector.snapshot()):
        if t < after:
            break
        values = diag_values(msg, node_name, input_topic)
        if values is not None:
            return values
    return None


def wait_diag(collector: Collector, predicate: Callable[[Dict[str, str]], bool], timeout: float,
              what: str, node_name: str = NODE_NAME, after: float = 0.0,
              input_topic: Optional[str] = None) -> Dict[str, str]:
    """Wait for a diagnostics status of the node (received after ``after``) satisfying predicate."""
    def check():
        values = latest_diag(collector, node_name, after, input_topic)
        return values if values is not None and predicate(values) else None
    return wait_until(check, timeout, what, poll=0.05)


def counts(values: Dict[str, str], keys: Iterable[str] = ("frames_received", "frames_processed",
                                                          "frames_dropped", "frames_rejected",
                                                          "processing_errors", "frames_pending",
                                                          "frames_in_progress")):
    return {k: int(values[k]) for k in keys}


def rss_bytes(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


def make_responsive_model(out: Path) -> Path:
    """A checkpoint of the tiny architecture whose output depends on the frame.

    The ``tiny`` random SAM's weights are redrawn here at unit gain (seed 1), which
    answers each frame with masks that differ a great deal from frame to frame (the
    tests' THRESHOLDs are tuned to this model), so a frame-matching bug shows.
    """
    import torch

    from satsam_ros.model import load_model, save_checkpoint

    sam, meta = load_model("tiny")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in sam.parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=gen) / float(np.sqrt(param[0].numel())))
    return save_checkpoint(sam, meta, out)


# ---- lifecycle -------------------------------------------------------------------------


class LifecycleClient:
    """A lifecycle manager's view of one node: ``<node>/change_state`` and ``<node>/get_state``
    (lifecycle_msgs services) called from the harness's node."""

    def __init__(self, ros: RosHarness, node: str):
        from lifecycle_msgs.srv import ChangeState, GetState

        self._ros = ros
        self._change = ros.node.create_client(ChangeState, f"{node}/change_state")
        self._get = ros.node.create_client(GetState, f"{node}/get_state")
        self._types = ChangeState, GetState

    def _call(self, client, request, timeout: float):
        wait_until(client.service_is_ready, timeout, f"the service {client.srv_name}")
        future = client.call_async(request)
        wait_until(future.done, timeout, f"the reply of {client.srv_name}")
        return future.result()

    def change(self, transition: str, timeout: float = 120.0) -> bool:
        """Request a transition ("configure", "activate", "deactivate", "cleanup" by their
        lifecycle_msgs ids, as ``ros2 lifecycle set`` sends them; "shutdown" by label, which
        the node resolves from its current state); the service's ``success``."""
        from lifecycle_msgs.msg import Transition

        ids = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP}
        request = self._types[0].Request()
        request.transition = Transition(id=ids[transition]) if transition in ids else Transition(label=transition)
        return bool(self._call(self._change, request, timeout).success)

    def state(self, timeout: float = 30.0) -> str:
        """The label of the node's current state (``unconfigured``, ``inactive``, ...)."""
        return str(self._call(self._get, self._types[1].Request(), timeout).current_state.label)
