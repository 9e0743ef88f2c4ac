"""The node's pieces without DDS: parameter table and validation, the latest-frame
mailbox, the diagnostics rules, the message conversion (Image, JSON, Detection2DArray
layouts), the default config file, the launch file's arguments, and agreement with the
ROS 2 cv_bridge where it exists."""

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

from satsam_ros.core import imaging
from satsam_ros.core.postprocess import Box
from satsam_ros.core.stats import percentile
from satsam_ros.ros import diagnostics, mailbox, params
from satsam_ros.ros.convert import (
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
    "max_objects": [-2, 1001],
    "min_score": [1.5, -0.5],
    "group_gap": [-2],
    "min_object_score": [1.5, -0.5],
    "qos_reliability": ["sometimes"],
    "qos_depth": [0, 101],
    "extra_latency_ms": [-5, 60001],
    "roi_margin": [-1],
    "roi_full_scan_every": [0],
    "image_transport": ["theora", "Compressed", ""],
    "max_decoded_pixels": [0, -1],
    "cascade": [256, 2048, -2, "512", "off"],
    "cascade_margin": [-2, 100001],
}


def test_every_default_is_valid_and_every_bad_value_is_refused_naming_the_parameter():
    for spec in params.PARAMS:
        assert params.check_parameter(spec.name, spec.default) is None, spec.name
    for name, values in BAD_VALUES.items():
        for value in values:
            reason = params.check_parameter(name, value)
            assert reason is not None, f"{name}={value!r} accepted"
            assert f"'{name}'" in reason and params.allowed_values(params.PARAM_SPECS[name]) in reason, reason
    assert "512, 1024, 2048" in params.check_parameter("size", 300)
    assert params.check_parameter("threshold", -1.0) is None
    assert params.check_parameter("threshold", 0.0) is None and params.check_parameter("threshold", 1.0) is None
    assert params.check_parameter("use_sim_time", True) is None  # not ours: not judged here


def test_descriptors_describe_ranges_choices_and_read_only():
    live = {spec.name for spec in params.PARAMS if spec.live}
    assert live == {"threshold", "min_area", "max_objects", "min_score", "group_gap", "min_object_score",
                    "publish_probability",
                    "publish_overlay", "roi_tracking", "roi_margin", "roi_full_scan_every", "max_decoded_pixels"}
    for spec in params.PARAMS:
        desc = params.descriptor(spec)
        assert desc.name == spec.name and desc.description.startswith(spec.description)
        assert desc.read_only == (spec.name not in live)
        tail = desc.description[len(spec.description):]
        expected = (f" Allowed: {', '.join(map(str, spec.choices))}." if spec.choices else "") + (
            " Changeable at run time." if spec.live else " Read-only (set at start-up).")
        assert tail == expected, spec.name
        assert desc.additional_constraints == (f"one of {', '.join(map(str, spec.choices))}" if spec.choices else "")
    assert params.descriptor(params.PARAM_SPECS["size"]).description.endswith("Read-only (set at start-up).")
    rng = params.descriptor(params.PARAM_SPECS["patch_size"]).integer_range[0]
    assert (rng.from_value, rng.to_value, rng.step) == (16, 2048, 16)
    frng = params.descriptor(params.PARAM_SPECS["threshold"]).floating_point_range[0]
    assert (frng.from_value, frng.to_value) == (-1.0, 1.0)
    assert "Testing aid" in params.descriptor(params.PARAM_SPECS["extra_latency_ms"]).description


def test_default_config_file_holds_the_node_defaults():
    data = yaml.safe_load((REPO / "config" / "detect.yaml").read_text())
    values = data["/**"]["ros__parameters"]
    assert values == {spec.name: spec.default for spec in params.PARAMS}
    for name, value in values.items():  # same types as declared (a 1 for a 1.0 would be refused)
        assert type(value) is type(params.PARAM_SPECS[name].default), name


def test_docs_list_every_parameter_and_topic():
    text = (REPO / "docs" / "node.md").read_text()  # the node reference
    for spec in params.PARAMS:
        assert f"`{spec.name}`" in text, spec.name
    for topic in ("mask", "probability", "detections", "detections_json", "overlay", "/diagnostics"):
        assert f"`{topic}`" in text, topic


# ---- mailbox ----------------------------------------------------------------------------


def test_mailbox_newest_wins_and_counts_replaced_items():
    box = mailbox.LatestFrameMailbox()
    assert box.take(timeout=0.01) is None
    assert box.put(1) is False
    assert box.put(2) is True and box.put(3) is True
    assert box.dropped == 2 and box.pending() == 1
    assert box.take(timeout=0.01) == 3
    assert box.pending() == 0 and box.take(timeout=0.01) is None


def test_mailbox_wakes_a_waiting_worker_and_close_releases_it():
    box = mailbox.LatestFrameMailbox()
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


def test_mailbox_close_counts_what_it_drops_and_open_reuses_it():
    """Deactivation closes the mailbox, activation opens it again: every frame received
    is still accounted for (dropped when discarded or put while closed)."""
    box = mailbox.LatestFrameMailbox()
    box.put("waiting")
    box.close()
    assert box.dropped == 1 and box.pending() == 0 and box.take(timeout=0.01) is None
    assert box.put("while closed") is False and box.dropped == 2 and box.pending() == 0
    box.open()
    assert box.put("after open") is False and box.take(timeout=0.01) == "after open" and box.dropped == 2


def test_stats_and_percentiles():
    stats = mailbox.Stats(window=3)
    for i in range(5):
        stats.record(latency=float(i), stamp_age=2.0 * i, inference=0.5)
    stats.count("received")
    stats.count("rejected", "bad step")
    snap = stats.snapshot()
    assert snap["processed"] == 5 and snap["received"] == 1 and snap["rejected"] == 1
    assert snap["latency"] == [2.0, 3.0, 4.0] and snap["last_problem"] == "bad step"
    assert percentile(snap["latency"], 50) == 3.0
    assert percentile([], 95) is None



# ---- diagnostics -------------------------------------------------------------------------

DIAGNOSTIC_KEYS = [
    "input_rate_hz", "processed_rate_hz", "frames_received", "frames_processed", "frames_dropped",
    "frames_rejected", "frames_pending", "frames_in_progress", "processing_errors", "latency_p50_ms",
    "latency_p95_ms", "stamp_age_p50_ms", "stamp_age_p95_ms", "inference_p50_ms", "backend", "device", "model",
    "size", "mode", "threshold", "min_area", "postprocess", "presence", "patches_gated", "patches_run_p50", "cascade",
    "roi_tracking",
    "input_topic", "image_transport",
    "lifecycle_state", "last_problem",
]


def test_diagnostics_rates_between_reports():
    clock = diagnostics.RateClock(t=10.0)
    assert clock.rates(12.0, received=20, processed=10) == (10.0, 5.0)
    assert clock.rates(13.0, received=25, processed=15) == (5.0, 5.0)


def test_diagnostics_level_warns_only_about_new_problems():
    base = {"frames_rejected": "0", "processing_errors": "0", "frames_received": "0", "input_topic": "/cam",
            "last_problem": "", "processed_rate_hz": "5.00", "input_rate_hz": "10.00", "latency_p50_ms": "12.0"}
    assert diagnostics.status_level(base, 0) == ("OK", "waiting for frames on /cam", 0)
    running = dict(base, frames_received="30")
    assert diagnostics.status_level(running, 0) == ("OK", "5.00 Hz processed of 10.00 Hz in, latency p50 12.0 ms", 0)
    bad = dict(running, frames_rejected="2", processing_errors="1", last_problem="step 10 is too small")
    assert diagnostics.status_level(bad, 0) == ("WARN", "3 bad frame(s) or error(s): step 10 is too small", 3)
    assert diagnostics.status_level(bad, 3)[:2] == ("OK", "5.00 Hz processed of 10.00 Hz in, latency p50 12.0 ms")
    for state in ("unconfigured", "inactive", "finalized"):  # not processing: said so, not "waiting"
        assert diagnostics.status_level(dict(base, lifecycle_state=state), 0) == (
            "OK", f"{state}: not processing frames (lifecycle state)", 0)
    assert diagnostics.status_level(dict(bad, lifecycle_state="inactive"), 0)[0] == "WARN"


def test_diagnostics_values_in_the_documented_order():
    stats = mailbox.Stats()
    stats.count("received")
    stats.count("received")
    stats.record(latency=0.020, stamp_age=0.030, inference=0.010)
    for patches, stage in ((4, "stopped"), (13, "refined"), (4, "stopped")):  # a cascade at S = 2048
        stats.record_patches(patches, stage)
    detector = SimpleNamespace(backend=SimpleNamespace(name="onnxruntime", device="cpu"),
                               config=SimpleNamespace(size=512, mode="fast"), threshold=0.65, min_area=100,
                               post=SimpleNamespace(max_objects=1, min_score=0.7, group_gap=8),
                               describe_cascade=lambda: "512 first, margin 32 px")
    values = diagnostics.status_values(stats.snapshot(), {"dropped": 1, "pending": 0, "in_progress": 1},
                                       (2.0, 1.0), detector, _context(input_topic="/satsam/image"))
    assert [k for k, _ in values] == DIAGNOSTIC_KEYS
    v = dict(values)
    assert (v["input_rate_hz"], v["processed_rate_hz"], v["frames_received"], v["frames_processed"]) == (
        "2.00", "1.00", "2", "1")
    assert (v["frames_dropped"], v["frames_in_progress"], v["latency_p50_ms"], v["stamp_age_p95_ms"]) == (
        "1", "1", "20.0", "30.0")
    assert (v["backend"], v["threshold"], v["min_area"], v["input_topic"]) == ("onnxruntime", "0.65", "100",
                                                                                "/satsam/image")
    assert (v["image_transport"], v["lifecycle_state"]) == ("raw", "active")
    assert v["postprocess"] == "max_objects 1, min_score 0.7, group_gap 8"
    assert v["patches_run_p50"] == "4"
    assert v["cascade"] == "512 first, margin 32 px: 2 of 3 frames stopped at the coarse pass"
    empty = dict(diagnostics.status_values(mailbox.Stats().snapshot(), {"dropped": 0, "pending": 0,
                                                                        "in_progress": 0}, (0.0, 0.0), detector,
                                           _context()))
    assert empty["latency_p95_ms"] == "nan"  # no frame yet: no latency, not 0
    assert empty["patches_run_p50"] == "nan" and empty["cascade"] == "512 first, margin 32 px"


def _context(**changes):
    base = {"model": "builtin", "roi_tracking": "off", "input_topic": "/i", "image_transport": "raw",
            "lifecycle_state": "active", "settings": {spec.name: spec.default for spec in params.PARAMS}}
    return dict(base, **changes)


def test_diagnostics_without_a_detector_report_the_parameters_and_the_state():
    """Unconfigured (no model loaded): the settings it will be configured with, as set."""
    settings = dict(_context()["settings"], backend="onnxruntime", device="cpu", size=1024, threshold=0.7)
    v = dict(diagnostics.status_values(mailbox.Stats().snapshot(), {"dropped": 0, "pending": 0, "in_progress": 0},
                                       (0.0, 0.0), None, _context(lifecycle_state="unconfigured", settings=settings,
                                                                  image_transport="compressed")))
    assert [k for k in v] == DIAGNOSTIC_KEYS
    assert (v["backend"], v["device"], v["size"], v["mode"], v["threshold"], v["min_area"]) == (
        "onnxruntime", "cpu", "1024", "fast", "0.7", "-1")
    assert (v["lifecycle_state"], v["image_transport"], v["frames_processed"]) == ("unconfigured", "compressed", "0")
    assert v["cascade"] == "from the checkpoint (margin from the checkpoint) once configured"


def test_docs_list_every_diagnostic_key():
    text = (REPO / "docs" / "node.md").read_text()
    for key in DIAGNOSTIC_KEYS:
        assert f"`{key}`" in text, key


# ---- launch file -------------------------------------------------------------------------


def _stub_launch_modules(monkeypatch):
    """Stand-ins for ament_index_python, launch and launch_ros (not on PyPI) that record
    what the launch file declares."""
    import sys
    import types

    seen = {"args": [], "nodes": []}

    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, mod)

    class Argument:
        def __init__(self, name, default_value=None, choices=None, description=""):
            seen["args"].append(SimpleNamespace(name=name, default=default_value, choices=choices,
                                                description=description))

    class Node:
        def __init__(self, **kwargs):
            seen["nodes"].append(kwargs)

    module("ament_index_python")
    module("ament_index_python.packages", get_package_share_directory=lambda pkg: f"/share/{pkg}")
    module("launch", LaunchDescription=list)
    module("launch.actions", DeclareLaunchArgument=Argument)
    module("launch.substitutions", LaunchConfiguration=lambda name: f"$({name})")
    module("launch_ros")
    module("launch_ros.actions", Node=Node)
    module("launch_ros.parameter_descriptions",
           ParameterValue=lambda value, value_type: SimpleNamespace(value=value, type=value_type))
    return seen


def test_launch_arguments_follow_the_node_parameter_table(monkeypatch):
    import importlib.util

    seen = _stub_launch_modules(monkeypatch)
    spec = importlib.util.spec_from_file_location("detect_launch", REPO / "launch" / "detect.launch.py")
    launch_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch_file)
    launch_file.generate_launch_description()
    args = {a.name: a for a in seen["args"]}
    parameter_args = ["size", "model", "backend", "device", "threshold", "cascade", "cascade_max_patches",
                      "image_transport", "autostart"]
    assert list(args) == parameter_args + ["image", "params_file", "namespace"]
    for name in parameter_args:
        table = params.PARAM_SPECS[name]
        assert args[name].description == table.description
        if isinstance(table.default, bool):
            assert args[name].default == str(table.default).lower() and args[name].choices == ["true", "false"]
        else:
            assert args[name].default == str(table.default)
            assert args[name].choices == ([str(c) for c in table.choices] or None)
    assert args["size"].choices == ["512", "1024", "2048"] and args["threshold"].default == "-1.0"
    assert args["image_transport"].choices == ["raw", "compressed"] and args["autostart"].default == "true"
    assert args["params_file"].default == "/share/satsam_ros/config/detect.yaml"
    (node,) = seen["nodes"]
    assert node["executable"] == "detect_node" and node["name"] == params.NODE_NAME == "satsam_detector"
    assert node["remappings"] == [("image", "$(image)")]
    file_params, overrides = node["parameters"]
    assert file_params == "$(params_file)"  # the file first: the launch arguments win
    assert {k: (v.value, v.type) for k, v in overrides.items()} == {
        "size": ("$(size)", int), "model": ("$(model)", str), "backend": ("$(backend)", str),
        "device": ("$(device)", str), "threshold": ("$(threshold)", float), "cascade": ("$(cascade)", int),
        "cascade_max_patches": ("$(cascade_max_patches)", int),
        "image_transport": ("$(image_transport)", str), "autostart": ("$(autostart)", bool)}

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
