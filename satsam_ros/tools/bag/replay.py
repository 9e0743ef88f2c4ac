"""The DDS side of a bag evaluation: publish the bag's frames, record the node's answers.

:class:`Replayer` is an rclpy node of its own (its own context, on the evaluation's
domain): it publishes frames on the node's input and records every output with its
arrival time. Outputs are matched to inputs by header stamp. Only this module imports
rclpy, and only when a Replayer is made.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ...core.imaging import FrameError
from .io import (
    DIAGNOSTICS_TYPE,
    IMAGE_TYPE,
    STRING_TYPE,
    BagError,
    cdr_stamp,
    cdr_with_stamp,
    format_stamp,
    message_to_array,
    read_images,
    stamp_ns,
    typestore,
)
from .launch import LOOPBACK_ENV, NodeLauncher


@dataclass
class Answer:
    """The node's mask for one sent frame: arrival (time.monotonic()), packed bits."""

    arrival: float
    shape: Tuple[int, int]
    bits: np.ndarray  # np.packbits of the mask > 0

    def mask(self) -> np.ndarray:
        """H x W bool."""
        n = self.shape[0] * self.shape[1]
        return np.unpackbits(self.bits, count=n).reshape(self.shape).astype(bool)


@dataclass
class ReplayRun:
    """What one replay of a bag produced: the inputs of scoring and the report.

    ``index``: per frame (header stamp, bag time) in ns; ``send_stamps``: the stamp each
    frame was sent with (its own unless restamped); ``sends``: monotonic send time per
    frame (None: not sent); ``answers``: frame index -> the node's mask; ``boxes``:
    frame index -> boxes in its detections_json; ``baseline`` / ``final``: the node's
    counters before and after (None when its diagnostics were not received).
    """

    bag: Path
    topic: str
    input_topic: str
    domain: Optional[int]
    index: List[Tuple[int, int]]
    send_stamps: List[int]
    sends: List[Optional[float]] = field(default_factory=list)
    answers: Dict[int, Answer] = field(default_factory=dict)
    boxes: Dict[int, int] = field(default_factory=dict)
    baseline: Optional[Dict[str, int]] = None
    final: Optional[Dict[str, int]] = None
    unmatched: int = 0
    duplicates: int = 0
    node_settings: Dict[str, str] = field(default_factory=dict)
    problems: List[str] = field(default_factory=list)
    compressed: bool = False  # the frames are sensor_msgs/CompressedImage

    @property
    def stamps(self) -> List[int]:
        """The frames' header stamps as recorded in the bag."""
        return [s for s, _ in self.index]

    def take_answers(self, rep: Replayer) -> None:
        """Copy the replayer's answers, box counts and output counters."""
        with rep.cond:
            self.answers = dict(rep.answers)
            self.boxes = dict(rep.boxes)
            self.unmatched, self.duplicates = rep.unmatched, rep.duplicates

    def latencies(self) -> List[float]:
        """Seconds from send to answer of every answered frame, in frame order."""
        return [self.answers[i].arrival - self.sends[i] for i in sorted(self.answers)]


NODE_COUNTERS = ("frames_received", "frames_processed", "frames_dropped", "frames_rejected",
                 "processing_errors", "frames_pending")


class Replayer:
    """An rclpy node of its own: publishes frames, records the detector's outputs.

    Outputs (``<ns>/mask``, ``<ns>/detections_json``, ``/diagnostics``) are written to
    the output bag as they arrive (bag time = arrival wall-clock ns); masks whose stamp
    was sent are kept (packed) as answers.
    """

    def __init__(self, input_topic: str, namespace: str, domain_id: Optional[int], writer, loopback: bool,
                 compressed: bool = False):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import String

        self._rclpy = rclpy
        self._image_cls, self._diag_cls = Image, DiagnosticArray
        self.context = rclpy.Context()
        saved = {k: os.environ.get(k) for k in LOOPBACK_ENV}
        if loopback:  # rcl reads the discovery range when the context starts
            os.environ.update(LOOPBACK_ENV)
        try:
            rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.node = rclpy.create_node(f"satsam_bag_eval_{os.getpid()}", context=self.context)
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
        deep = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
        # a reliable writer matches both a best-effort and a reliable reader in the node
        self.compressed = compressed
        self.publisher = self.node.create_publisher(CompressedImage if compressed else Image, input_topic, reliable)
        ns = namespace.rstrip("/")
        self.topics = {"mask": f"{ns}/mask", "detections_json": f"{ns}/detections_json", "diagnostics": "/diagnostics"}
        self.writer = writer
        store = typestore()
        self._conns = {
            "mask": writer.add_connection(self.topics["mask"], IMAGE_TYPE, typestore=store),
            "detections_json": writer.add_connection(self.topics["detections_json"], STRING_TYPE, typestore=store),
            "diagnostics": writer.add_connection("/diagnostics", DIAGNOSTICS_TYPE, typestore=store),
        }
        self.cond = threading.Condition()
        self.sent: Dict[int, int] = {}  # stamp -> frame index
        self.warm_stamps: Dict[int, Optional[float]] = {}  # stamp -> arrival of its mask
        self.answers: Dict[int, Answer] = {}
        self.boxes: Dict[int, int] = {}  # frame index -> number of boxes in detections_json
        self.unmatched = 0
        self.duplicates = 0
        self.last_arrival = 0.0
        self.diagnostics: List[Tuple[float, Dict[str, str]]] = []  # (monotonic, node status values)
        self.record = False  # write diagnostics to the bag (after warm-up)
        self.errors: List[str] = []
        self.subs = [
            self.node.create_subscription(Image, self.topics["mask"], self._on_mask, deep, raw=True),
            self.node.create_subscription(String, self.topics["detections_json"], self._on_json, deep, raw=True),
            self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, deep, raw=True),
        ]
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._running = True
        self._thread = threading.Thread(target=self._spin, name="satsam-bag-eval-spin", daemon=True)
        self._thread.start()

    @property
    def input_topic(self) -> str:
        """The fully resolved topic frames are published on."""
        return self.publisher.topic_name

    def _spin(self) -> None:
        while self._running and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception as exc:  # noqa: BLE001 - reported, never silently lost
                if self._running:
                    self.errors.append(f"{type(exc).__name__}: {exc}")

    # ---- callbacks (executor thread) ----------------------------------------------
    def _on_mask(self, raw: bytes) -> None:
        arrival = time.monotonic()
        wall = time.time_ns()
        stamp = cdr_stamp(raw)
        with self.cond:
            if stamp in self.warm_stamps:
                if self.warm_stamps[stamp] is None:
                    self.warm_stamps[stamp] = arrival
                self.cond.notify_all()
                return
            index = self.sent.get(stamp)
            if index is None:
                self.unmatched += 1
                return
            if index in self.answers:
                self.duplicates += 1
                return
        from rclpy.serialization import deserialize_message

        msg = deserialize_message(raw, self._image_cls)
        try:
            arr, _order = message_to_array(msg)
        except FrameError as exc:
            self.errors.append(f"mask of stamp {format_stamp(stamp)} is not a valid image: {exc}")
            return
        if arr.ndim != 2:
            self.errors.append(f"mask of stamp {format_stamp(stamp)} has encoding {msg.encoding}, not mono8")
            return
        answer = Answer(arrival, (int(arr.shape[0]), int(arr.shape[1])), np.packbits(arr > 0))
        self.writer.write(self._conns["mask"], wall, raw)
        with self.cond:
            self.answers[index] = answer
            self.last_arrival = max(self.last_arrival, arrival)
            self.cond.notify_all()

    def _on_json(self, raw: bytes) -> None:
        wall = time.time_ns()
        from rclpy.serialization import deserialize_message
        from std_msgs.msg import String

        text = deserialize_message(raw, String).data
        try:
            doc = json.loads(text)
            stamp = stamp_ns(doc["stamp"]["sec"], doc["stamp"]["nanosec"])
            n_boxes = len(doc.get("boxes", []))
        except (ValueError, KeyError, TypeError) as exc:
            self.errors.append(f"unreadable detections_json: {exc}")
            return
        with self.cond:
            index = self.sent.get(stamp)
            if index is None:
                return
            self.boxes[index] = n_boxes
        self.writer.write(self._conns["detections_json"], wall, raw)

    def _on_diag(self, raw: bytes) -> None:
        arrival = time.monotonic()
        wall = time.time_ns()
        from rclpy.serialization import deserialize_message

        msg = deserialize_message(raw, self._diag_cls)
        topic = self.publisher.topic_name
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if values.get("input_topic") == topic and all(k in values for k in NODE_COUNTERS):
                with self.cond:
                    self.diagnostics.append((arrival, values))
                    self.cond.notify_all()
        if self.record:
            self.writer.write(self._conns["diagnostics"], wall, raw)

    # ---- main-thread helpers ----------------------------------------------------------
    def wait_ready(self, timeout: float, launcher: Optional[NodeLauncher]) -> None:
        """Wait until the node subscribes to the input and publishes masks (BagError after timeout)."""
        deadline = time.monotonic() + timeout
        mask_sub = self.subs[0]
        while True:
            if launcher is not None and not launcher.alive():
                raise BagError(f"detect_node exited (status {launcher.proc.returncode}) before subscribing to "
                               f"{self.input_topic}; its log ({launcher.log_path}):\n{launcher.log_tail()}")
            if self.publisher.get_subscription_count() > 0 and mask_sub.get_publisher_count() > 0:
                return
            if time.monotonic() > deadline:
                where = (f"the node's log ({launcher.log_path}):\n{launcher.log_tail()}" if launcher else
                         f"is a detect_node running in namespace {self.topics['mask'].rsplit('/', 1)[0] or '/'} "
                         f"with {self._node_input()}, on ROS_DOMAIN_ID "
                         f"{os.environ.get('ROS_DOMAIN_ID', '0')}?")
                raise BagError(f"no detector subscribed to {self.input_topic} (with {self.topics['mask']} published)"
                               f" within {timeout:.0f} s; {where}")
            time.sleep(0.05)

    def _node_input(self) -> str:
        """The node settings that make it read this replay's frames."""
        if self.compressed:
            return f"image_transport:=compressed and image:={self.input_topic.rsplit('/', 1)[0]}"
        return f"image:={self.input_topic}"

    def publish(self, raw: bytes) -> None:
        self.publisher.publish(raw)

    def latest_diag(self, after: float) -> Optional[Dict[str, int]]:
        """Counters of the newest node diagnostics received after ``after`` (monotonic)."""
        with self.cond:
            for t, values in reversed(self.diagnostics):
                if t < after:
                    break
                try:
                    return {k: int(values[k]) for k in NODE_COUNTERS}
                except ValueError:
                    return None
        return None

    def settings_from_diag(self) -> Dict[str, str]:
        with self.cond:
            if not self.diagnostics:
                return {}
            values = self.diagnostics[-1][1]
        return {k: values[k] for k in ("model", "backend", "device", "size", "mode", "threshold") if k in values}

    def close(self) -> None:
        self._running = False
        self._thread.join(5)
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


def idle(counters: Dict[str, int], base: Dict[str, int]) -> bool:
    """The node has nothing received that is not yet processed, dropped or rejected."""
    d = {k: counters[k] - base[k] for k in NODE_COUNTERS if k != "frames_pending"}
    done = d["frames_processed"] + d["frames_dropped"] + d["frames_rejected"] + d["processing_errors"]
    return counters["frames_pending"] == 0 and d["frames_received"] == done


def warm_up(rep: Replayer, first_raw: bytes, count: int, timeout: float, taken: set,
             launcher: Optional[NodeLauncher]) -> float:
    """Send ``count`` frames with stamps of their own until each is answered; returns
    the monotonic time of the last answer (BagError if the node never answers)."""
    last = time.monotonic()
    stamp = 1  # 0.000000001 s onwards; never one of the bag's stamps
    for _ in range(count):
        for _attempt in range(3):
            while stamp in taken:
                stamp += 1
            with rep.cond:
                rep.warm_stamps[stamp] = None
            rep.publish(cdr_with_stamp(first_raw, stamp))
            deadline = time.monotonic() + timeout
            with rep.cond:
                while rep.warm_stamps[stamp] is None and time.monotonic() < deadline:
                    if launcher is not None and not launcher.alive():
                        break
                    rep.cond.wait(0.1)
                answered = rep.warm_stamps[stamp]
            stamp += 1
            if answered is not None:
                last = answered
                break
            if launcher is not None and not launcher.alive():
                raise BagError(f"detect_node exited (status {launcher.proc.returncode}) during warm-up; its log "
                               f"({launcher.log_path}):\n{launcher.log_tail()}")
        else:
            raise BagError(f"the node did not answer a warm-up frame on {rep.input_topic} in 3 attempts of "
                           f"{timeout:.0f} s (raise --timeout for a slow model; if the bag's frames are not valid "
                           "images the node rejects them: see its log)")
    return last


def first_valid_frame(bag: Path, topic: str) -> bytes:
    """CDR bytes of the first frame on ``topic`` that passes the node's image checks
    (the warm-up frame); the first frame when none does."""
    first = None
    for item in read_images(bag, topic, decode=False):
        first = item.raw if first is None else first
        try:
            item.array()
        except FrameError:
            continue
        return item.raw
    return first


def wait_baseline(rep: Replayer, after: float, limit: float = 3.0) -> Optional[Dict[str, int]]:
    """Counters of an idle node from diagnostics received after ``after``; None if none come."""
    deadline = time.monotonic() + limit
    zero = dict.fromkeys(NODE_COUNTERS, 0)
    while time.monotonic() < deadline:
        counters = rep.latest_diag(after)
        if counters is not None and counters["frames_pending"] == 0:
            # idle against itself: received == processed + dropped + rejected + errors
            if idle(counters, zero):
                return counters
        time.sleep(0.05)
    return None
