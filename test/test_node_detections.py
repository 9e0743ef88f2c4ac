"""`detections` (vision_msgs/Detection2DArray) over real DDS, with real vision_msgs builds.

vision_msgs is not on PyPI, so ``test/interfaces/`` holds its message layouts and
``ros_interfaces`` builds them with colcon and rosidl from the PyPI wheels (once per
cache key, kept in ``build/test_interfaces``). For each layout the installed
``detect_node`` runs with that build importable, an independent client process
(``detections_probe.py``) reads every Detection2DArray field by field, and each
message is compared with ``detections_json`` of the same frame and with the Detector
run in this process.

Layouts (from the vision_msgs sources, see test/interfaces/*/package.xml):
``4``: vision_msgs 4.0.0 and 4.1.1, the releases of Humble, Iron and Jazzy (Kilted and
Rolling ship 4.2.0): ``BoundingBox2D.center`` is a vision_msgs/Pose2D
(``position.x``, ``position.y``, ``theta``); ``3``: vision_msgs 3.0.x (Galactic):
``center`` is a geometry_msgs/Pose2D (``x``, ``y``, ``theta``); ``2``: vision_msgs
2.0.x (Foxy): as 3.0.x, and ObjectHypothesisWithPose carries ``id``/``score`` itself
and Detection2D has no ``id`` (but ``source_img``, ``is_tracking``, ``tracking_id``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, node_env
from node_helpers import NodeProcess, RosHarness, image_msg, wait_until
from ros_interfaces import INTERFACES, build_interface, default_cache_root, interface_env
from std_msgs.msg import String

from satsam_ros.core.detector import Detector
from satsam_ros.core.synthetic import synthetic_frame
from satsam_ros.runtime import open_detector

THRESHOLD = 0.65  # the tiny model's own: 15 to 20 components per synthetic frame, none on a black one
MIN_AREA = 40
PARAMS = {
    "size": 512, "model": "tiny", "backend": "torch", "device": "cpu", "threshold": THRESHOLD,
    "min_area": MIN_AREA, "qos_reliability": "reliable", "qos_depth": 10,
}
# layout -> package directory under test/interfaces, and fields of the built messages
LAYOUTS = {
    "4": ("vision_msgs_4", {"BoundingBox2D": {"center": "vision_msgs/Pose2D"},
                            "ObjectHypothesisWithPose": {"hypothesis": "vision_msgs/ObjectHypothesis"},
                            "Detection2D": {"id": "string"}}),
    "3": ("vision_msgs_3", {"BoundingBox2D": {"center": "geometry_msgs/Pose2D"},
                            "ObjectHypothesisWithPose": {"hypothesis": "vision_msgs/ObjectHypothesis"},
                            "Detection2D": {"id": "string"}}),
    "2": ("vision_msgs_2", {"BoundingBox2D": {"center": "geometry_msgs/Pose2D"},
                            "ObjectHypothesisWithPose": {"id": "string", "score": "double"},
                            "Detection2D": {"source_img": "sensor_msgs/Image", "tracking_id": "string"}}),
}
PROBE = Path(__file__).resolve().parent / "detections_probe.py"


@pytest.fixture(scope="session")
def vision_msgs_prefix():
    """layout -> install prefix of its vision_msgs build (built on first use, cached)."""
    built = {}

    def get(layout: str) -> Path:
        if layout not in built:
            built[layout] = build_interface(INTERFACES / LAYOUTS[layout][0], default_cache_root(REPO))
        return built[layout]
    return get


class Probe:
    """detections_probe.py in its own process; its JSON lines read back."""

    def __init__(self, topic: str, layout: str, env: dict):
        self._dir = tempfile.TemporaryDirectory(prefix="satsam_probe_")
        self._out = open(Path(self._dir.name) / "stdout", "w+")
        self._err = open(Path(self._dir.name) / "stderr", "w+")
        self.proc = subprocess.Popen([sys.executable, str(PROBE), topic, layout], env=env,
                                     stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL)

    def lines(self) -> list:
        complete = Path(self._dir.name, "stdout").read_text().split("\n")[:-1]  # not a line being written
        if self.proc.poll() not in (None, 0):
            raise AssertionError(f"the probe exited with {self.proc.returncode}:\n"
                                 + Path(self._dir.name, "stderr").read_text()[-3000:])
        return [json.loads(line) for line in complete]

    def message(self, stamp: dict):
        return next((d for d in self.lines() if d.get("stamp") == stamp), None)

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(30)
        self._out.close()
        self._err.close()
        self._dir.cleanup()
        return code


def _frames():
    """(name, array, encoding, channel order); the last one gives no detection."""
    return [
        ("synthetic 1", synthetic_frame(1, 512, 641)[0], "mono8", "mono"),
        ("synthetic 4", synthetic_frame(4, 512, 641)[0], "mono8", "mono"),
        ("black", np.zeros((240, 320), np.uint8), "mono8", "mono"),
    ]


def _compare_one_frame(layout: str, pub, json_col, probe: Probe, detector: Detector, name: str,
                       frame: np.ndarray, encoding: str, order: str) -> int:
    """Publish one frame; its Detection2DArray must equal detections_json and the Detector.

    Returns the number of detections.
    """
    msg = image_msg(frame, encoding, frame_id=f"cam_{name.replace(' ', '_')}")
    stamp = {"sec": msg.header.stamp.sec, "nanosec": msg.header.stamp.nanosec}
    pub.publish(msg)
    doc = json.loads(json_col.wait_for(lambda m: json.loads(m.data)["stamp"] == stamp, 60,
                                       f"detections_json of {name}").data)
    got = wait_until(lambda: probe.message(stamp), 10, f"the Detection2DArray of {name}")
    assert got["frame_id"] == doc["frame_id"] == msg.header.frame_id

    dets, boxes = got["detections"], doc["boxes"]
    want = detector.detect(frame, order).boxes
    assert len(dets) == len(boxes) == len(want), name
    assert doc["class_id"] == "satellite"
    for i, (det, box, ref) in enumerate(zip(dets, boxes, want)):
        assert (det["stamp"], det["frame_id"]) == (stamp, msg.header.frame_id)
        assert det["id"] == (None if layout == "2" else str(i))
        assert det["center"] == box["center"] == [float(c) for c in ref.center], (name, i)
        assert det["size"] == [float(s) for s in box["size"]] == [float(s) for s in ref.size], (name, i)
        assert det["theta"] == 0.0
        assert det["results"] == [{"class_id": doc["class_id"], "score": box["score"]}]
        assert box["score"] == pytest.approx(ref.score, abs=1e-6)
        assert det["pose_xyz"] == [[0.0, 0.0, 0.0]]
    return len(dets)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_detections_carry_the_boxes_of_detections_json(installed_node, vision_msgs_prefix, layout):
    prefix = vision_msgs_prefix(layout)
    env = interface_env(prefix, node_env())
    ns = f"/satsam_vision{layout}"
    image_topic = f"{ns}/camera/image_raw"
    proc = NodeProcess(installed_node, PARAMS, namespace=ns, remaps={"image": image_topic}, env=env)
    probe = Probe(f"{ns}/detections", layout, env)
    ros = RosHarness(f"satsam_test_vision{layout}")
    try:
        pub = ros.publisher(image_topic)
        json_col = ros.collect(f"{ns}/detections_json", String)
        ros.wait_matched(pub, 90, "detect_node to subscribe to its image topic", proc)
        ros.wait_publishers([json_col], 30)
        wait_until(lambda: any(d.get("matched") for d in probe.lines()), 30, "the probe to match `detections`")
        _, err = proc.output()
        assert "vision_msgs is not installed" not in err, err

        # the probe imported the layout we built
        fields = next(d["layout"] for d in probe.lines() if "layout" in d)
        for msg_type, expected in LAYOUTS[layout][1].items():
            assert {k: fields[msg_type].get(k) for k in expected} == expected, (msg_type, fields[msg_type])
        assert ("id" in fields["Detection2D"]) == (layout != "2"), fields["Detection2D"]
        assert fields["Detection2DArray"]["detections"] == "sequence<vision_msgs/Detection2D>"

        detector = open_detector(model="tiny", backend="torch", device="cpu", size=512,
                                 threshold=THRESHOLD, min_area=MIN_AREA)
        counts = [_compare_one_frame(layout, pub, json_col, probe, detector, *case) for case in _frames()]
        assert counts[0] > 1 and counts[1] > 1 and counts[2] == 0, counts
        assert proc.alive()
    finally:
        ros.close()
        rc = proc.stop()
        probe_rc = probe.close()
        proc.close()
    assert rc == 0 and probe_rc == 0
