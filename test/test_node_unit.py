"""The node's pieces without DDS: parameter table and validation, the latest-frame
mailbox, the message helpers of ros_io (Image, JSON, Detection2DArray layouts), the
default config file, and agreement with the ROS 2 cv_bridge where it exists."""

from __future__ import annotations

import array
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from std_msgs.msg import Header

from satsam_ros import imaging, node
from satsam_ros.postprocess import Box
from satsam_ros.ros_io import (
    CLASS_ID,
    array_to_image_msg,
    build_detection_array,
    detections_json,
    image_msg_to_array,
)

REPO = Path(__file__).resolve().parents[1]

# ---- parameters ----------------------------------------------------------------------

BAD_VALUES = {
    "size": [300, 1536, 0],
    "model": ["", "   "],
    "backend": ["gpu", "TORCH"],
    "device": ["tpu", ""],
    "threshold": [1.5, -0.5, -1.0001],
    "patch_size": [8, 250, 4096],
    "overlap": [-1, 2048],
    "mode": ["slow"],
    "min_area": [-2],
    "qos_reliability": ["sometimes"],
    "qos_depth": [0, 101],
    "extra_latency_ms": [-5, 60001],
    "roi_margin": [-1],
    "roi_full_scan_every": [0],
}


def test_every_default_is_valid_and_every_bad_value_is_refused_naming_the_parameter():
    for spec in node.PARAMS:
        assert node.check_parameter(spec.name, spec.default) is None, spec.name
    for name, values in BAD_VALUES.items():
        for value in values:
            reason = node.check_parameter(name, value)
            assert reason is not None, f"{name}={value!r} accepted"
            assert f"'{name}'" in reason and node.allowed_values(node.PARAM_SPECS[name]) in reason, reason
    assert "512, 1024, 2048" in node.check_parameter("size", 300)
    assert node.check_parameter("threshold", -1.0) is None
    assert node.check_parameter("threshold", 0.0) is None and node.check_parameter("threshold", 1.0) is None
    assert node.check_parameter("use_sim_time", True) is None  # not ours: not judged here


def test_descriptors_describe_ranges_choices_and_read_only():
    live = {spec.name for spec in node.PARAMS if spec.live}
    assert live == {"threshold", "min_area", "publish_probability", "publish_overlay", "roi_tracking", "roi_margin",
                    "roi_full_scan_every"}
    for spec in node.PARAMS:
        desc = node.descriptor(spec)
        assert desc.name == spec.name and len(desc.description) > 20
        assert desc.read_only == (spec.name not in live)
        if spec.choices:
            assert node._fmt(spec.choices) in desc.description
    assert node.descriptor(node.PARAM_SPECS["size"]).description.endswith("Read-only (set at start-up).")
    rng = node.descriptor(node.PARAM_SPECS["patch_size"]).integer_range[0]
    assert (rng.from_value, rng.to_value, rng.step) == (16, 2048, 16)
    frng = node.descriptor(node.PARAM_SPECS["threshold"]).floating_point_range[0]
    assert (frng.from_value, frng.to_value) == (-1.0, 1.0)
    assert "Testing aid" in node.descriptor(node.PARAM_SPECS["extra_latency_ms"]).description


def test_default_config_file_holds_the_node_defaults():
    data = yaml.safe_load((REPO / "config" / "detect.yaml").read_text())
    params = data["/**"]["ros__parameters"]
    assert params == {spec.name: spec.default for spec in node.PARAMS}
    for name, value in params.items():  # same types as declared (a 1 for a 1.0 would be refused)
        assert type(value) is type(node.PARAM_SPECS[name].default), name


def test_docs_list_every_parameter_and_topic():
    text = (REPO / "README.md").read_text()  # the node's reference section lives in the README
    for spec in node.PARAMS:
        assert f"`{spec.name}`" in text, spec.name
    for topic in ("mask", "probability", "detections", "detections_json", "overlay", "/diagnostics"):
        assert f"`{topic}`" in text, topic


# ---- mailbox ----------------------------------------------------------------------------


def test_mailbox_newest_wins_and_counts_replaced_items():
    box = node.LatestFrameMailbox()
    assert box.take(timeout=0.01) is None
    assert box.put(1) is False
    assert box.put(2) is True and box.put(3) is True
    assert box.dropped == 2 and box.pending() == 1
    assert box.take(timeout=0.01) == 3
    assert box.pending() == 0 and box.take(timeout=0.01) is None


def test_mailbox_wakes_a_waiting_worker_and_close_releases_it():
    box = node.LatestFrameMailbox()
    got = []
    worker = threading.Thread(target=lambda: got.extend([box.take(), box.take()]))
    worker.start()
    time.sleep(0.05)
    box.put("frame")
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    box.put("discarded on close")
    box.close()
    worker.join(5)
    assert not worker.is_alive()
    assert got == ["frame", None]


def test_stats_and_percentiles():
    stats = node.Stats(window=3)
    for i in range(5):
        stats.record(latency=float(i), stamp_age=2.0 * i, inference=0.5)
    stats.count("received")
    stats.count("rejected", "bad step")
    snap = stats.snapshot()
    assert snap["processed"] == 5 and snap["received"] == 1 and snap["rejected"] == 1
    assert snap["latency"] == [2.0, 3.0, 4.0] and snap["last_problem"] == "bad step"
    assert node.percentile(snap["latency"], 50) == 3.0
    assert np.isnan(node.percentile([], 95))


# ---- ros_io -----------------------------------------------------------------------------


def _header(sec=12, nanosec=345, frame_id="cam") -> Header:
    h = Header()
    h.stamp.sec, h.stamp.nanosec, h.frame_id = sec, nanosec, frame_id
    return h


SAMPLES = {
    "mono8": np.arange(12, dtype=np.uint8).reshape(3, 4),
    "8UC1": np.arange(12, dtype=np.uint8).reshape(3, 4),
    "mono16": (np.arange(12, dtype=np.uint16) * 5000).reshape(3, 4),
    "16UC1": (np.arange(12, dtype=np.uint16) * 5000).reshape(3, 4),
    "rgb8": np.arange(36, dtype=np.uint8).reshape(3, 4, 3),
    "bgr8": np.arange(36, dtype=np.uint8).reshape(3, 4, 3),
    "rgba8": np.arange(48, dtype=np.uint8).reshape(3, 4, 4),
    "bgra8": np.arange(48, dtype=np.uint8).reshape(3, 4, 4),
    "32FC1": np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4),
}


@pytest.mark.parametrize("encoding", sorted(imaging.ENCODINGS))
def test_image_msg_round_trip(encoding):
    arr = SAMPLES[encoding]
    msg = array_to_image_msg(arr, encoding, _header())
    assert isinstance(msg.data, array.array)
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (3, 4, encoding, 0)
    assert msg.step == 4 * imaging.ENCODINGS[encoding].bytes_per_pixel
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (12, 345, "cam")
    back, order = image_msg_to_array(msg)
    assert order == imaging.ENCODINGS[encoding].order
    assert back.dtype == arr.dtype and np.array_equal(back, arr)


def test_image_msg_to_array_validates():
    msg = array_to_image_msg(SAMPLES["mono8"], "mono8", _header())
    msg.step = 3
    with pytest.raises(imaging.FrameError, match="step 3"):
        image_msg_to_array(msg)
    msg = array_to_image_msg(SAMPLES["mono16"], "mono16", _header())
    msg.is_bigendian = 1  # the same bytes read big endian
    back, _ = image_msg_to_array(msg)
    assert np.array_equal(back, SAMPLES["mono16"].byteswap())


def test_detections_json():
    boxes = [Box(10, 20, 30, 60, 0.9, 500), Box(0, 0, 2, 2, 0.6, 4)]
    doc = json.loads(detections_json(_header(), boxes, 641, 512, 0.65, {"inference_ms": 3.5}))
    assert doc["stamp"] == {"sec": 12, "nanosec": 345} and doc["frame_id"] == "cam"
    assert (doc["width"], doc["height"], doc["threshold"], doc["class_id"]) == (641, 512, 0.65, CLASS_ID)
    assert doc["boxes"][0] == {"x0": 10, "y0": 20, "x1": 30, "y1": 60, "score": 0.9, "area": 500,
                               "center": [20.0, 40.0], "size": [20, 40]}
    assert doc["inference_ms"] == 3.5
    assert json.loads(detections_json(_header(), [], 4, 3, 0.5))["boxes"] == []


class _Msg(SimpleNamespace):
    """Stand-in message: attributes as given, sub-messages made by the factories."""


def _fake_vision_msgs(layout: str):
    """Classes with the field layout of vision_msgs in one distro family.

    humble+ (vision_msgs 4.x): BoundingBox2D.center is vision_msgs/Pose2D (position.x,
    position.y, theta); galactic (3.0.x): geometry_msgs/Pose2D (x, y, theta); foxy (2.0.x):
    as galactic, and ObjectHypothesisWithPose has id/score directly, Detection2D no id.
    test_node_detections.py runs the same three layouts as real message builds.
    """
    def center():
        if layout == "humble+":
            return _Msg(position=_Msg(x=0.0, y=0.0), theta=0.0)
        return _Msg(x=0.0, y=0.0, theta=0.0)

    def hypothesis():
        if layout == "foxy":
            return _Msg(id="", score=0.0)
        return _Msg(hypothesis=_Msg(class_id="", score=0.0))

    class Detection2D(_Msg):
        def __init__(self):
            super().__init__(header=None, bbox=_Msg(center=center(), size_x=0.0, size_y=0.0), results=[])
            if layout != "foxy":
                self.id = ""

    return _Msg(Detection2DArray=lambda: _Msg(header=None, detections=[]), Detection2D=Detection2D,
                ObjectHypothesisWithPose=hypothesis)


def _centre(det):
    c = det.bbox.center
    return (c.position.x, c.position.y) if hasattr(c, "position") else (c.x, c.y)


def _class_score(hyp):
    return (hyp.hypothesis.class_id, hyp.hypothesis.score) if hasattr(hyp, "hypothesis") else (hyp.id, hyp.score)


def _check_detection_array(msgs):
    boxes = [Box(10, 20, 31, 61, 0.875, 500), Box(100, 0, 104, 2, 0.5, 8)]
    header = _header()
    out = build_detection_array(header, boxes, msgs)
    assert out.header is header and len(out.detections) == 2
    det = out.detections[0]
    assert det.header is header
    assert _centre(det) == (20.5, 40.5)
    assert (det.bbox.size_x, det.bbox.size_y) == (21.0, 41.0)
    assert len(det.results) == 1 and _class_score(det.results[0]) == (CLASS_ID, 0.875)
    assert _centre(out.detections[1]) == (102.0, 1.0)
    assert build_detection_array(header, [], msgs).detections == []


@pytest.mark.parametrize("layout", ["humble+", "galactic", "foxy"])
def test_detection_array_for_each_vision_msgs_layout(layout):
    _check_detection_array(_fake_vision_msgs(layout))


# ---- cv_bridge ------------------------------------------------------------------------

try:
    from cv_bridge import CvBridge
except ImportError as exc:
    CvBridge = None
    _CV_BRIDGE_ERROR = str(exc)
else:
    _CV_BRIDGE_ERROR = ""


@pytest.mark.skipif(CvBridge is None, reason=f"the ROS 2 cv_bridge is not importable ({_CV_BRIDGE_ERROR}); it is "
                    "not installable from PyPI, so agreement is checked only where ROS 2 is installed")
@pytest.mark.parametrize("encoding", sorted(imaging.ENCODINGS))
def test_our_converter_agrees_with_cv_bridge(encoding):
    bridge = CvBridge()
    rng = np.random.default_rng(0)
    sample = SAMPLES[encoding]
    size = (48, 64) + sample.shape[2:]
    if sample.dtype == np.float32:
        arr = rng.random(size, dtype=np.float32)
    else:
        arr = rng.integers(0, np.iinfo(sample.dtype).max + 1, size, dtype=sample.dtype)
    ours = array_to_image_msg(arr, encoding, _header())
    theirs = bridge.imgmsg_to_cv2(ours, desired_encoding="passthrough")
    assert np.array_equal(np.asarray(theirs).reshape(arr.shape), arr)
    back = bridge.cv2_to_imgmsg(arr, encoding=encoding)
    mine, _ = image_msg_to_array(back)
    assert np.array_equal(mine, arr)
