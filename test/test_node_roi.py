"""ROI tracking in the installed node (``roi_tracking``): the node's scans and masks over
a moving-satellite sequence equal the in-process RoiTracker's on the same frames.

The tracker's own logic (patch choice, full scans, loss) is tested in test_roi.py;
this checks the node wiring: the parameters reach the tracker, the tracker (not the
bare Detector) runs every frame, ``detections_json`` reports the scan, a live
``roi_tracking:=false`` switches back to full scans, and the diagnostics say so.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from node_helpers import (
    NODE_NAME,
    NodeProcess,
    RosHarness,
    image_msg,
    same_stamp,
    wait_diag,
    wait_until,
)
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from std_msgs.msg import String

from satsam_ros.core.roi import RoiTracker
from satsam_ros.core.synthetic import moving_sequence
from satsam_ros.runtime import open_detector

NS = "/satsam_roi"
TOPIC = "/roi_test/image"
EVERY = 4
MARGIN = 16
SIZE = 1024  # 16 patches: the satellite's neighbourhood covers a few of them
FRAMES = 10


@pytest.fixture(scope="module")
def setup():
    """The shipped model (it finds the satellite, so the tracker has a box to follow)."""
    frames = [f for f, _ in moving_sequence(FRAMES, seed=3)]
    det = open_detector("builtin", backend="torch", device="cpu", size=SIZE, cascade=0)  # full scans: 16 patches
    tracker = RoiTracker(det, margin=MARGIN, full_scan_every=EVERY)
    expected = []
    for frame in frames:
        res = tracker.detect(frame, "mono")
        expected.append((tracker.last_scan, res.patches, res.mask))
    return {"frames": frames, "expected": expected}


def test_node_runs_the_tracker_like_the_in_process_one(installed_node, setup):
    kinds = [k for k, _, _ in setup["expected"]]
    assert "roi" in kinds and kinds[0] == "full", kinds  # the sequence exercises tracking
    assert min(p for k, p, _ in setup["expected"] if k == "roi") < 16
    params = {"size": SIZE, "model": "builtin", "backend": "torch", "device": "cpu", "roi_tracking": True,
              "roi_margin": MARGIN, "roi_full_scan_every": EVERY, "qos_reliability": "reliable", "qos_depth": 10,
              "cascade": 0}  # full tiling (the shipped model's checkpoint cascades at 1024: test_node_cascade.py)
    proc = NodeProcess(installed_node, params, namespace=NS, remaps={"image": TOPIC})
    ros = RosHarness("satsam_test_roi")
    try:
        pub = ros.publisher(TOPIC)
        masks, docs = ros.collect(f"{NS}/mask"), ros.collect(f"{NS}/detections_json", String)
        diag = ros.collect("/diagnostics", DiagnosticArray)
        ros.wait_matched(pub, 120, "detect_node to subscribe", proc)
        ros.wait_publishers([masks, docs], 30)
        for i, (frame, (kind, patches, mask)) in enumerate(zip(setup["frames"], setup["expected"])):
            msg = image_msg(frame, "mono8", frame_id=f"roi{i}")
            pub.publish(msg)  # one at a time: the tracker's state depends on the order
            got = masks.wait_for(lambda m, s=msg.header.stamp: same_stamp(m.header.stamp, s), 120, f"mask {i}")
            doc = json.loads(docs.wait_for(
                lambda d, name=f"roi{i}": json.loads(d.data)["frame_id"] == name, 30, f"detections {i}").data)
            assert (doc["scan"], doc["patches"]) == (kind, patches), f"frame {i}"
            np.testing.assert_array_equal(np.frombuffer(bytes(got.data), np.uint8).reshape(mask.shape), mask)
        values = wait_diag(diag, lambda v: v.get("roi_tracking", "").startswith("on") and
                           f"{FRAMES} frames" in v["roi_tracking"], 30, "ROI diagnostics")
        assert f"{kinds.count('roi')} roi" in values["roi_tracking"]

        # live switch off: full scans from the next frame on
        client = ros.node.create_client(SetParameters, f"{NS}/{NODE_NAME}/set_parameters")
        wait_until(client.service_is_ready, 30, "the set_parameters service")
        future = client.call_async(SetParameters.Request(
            parameters=[Parameter("roi_tracking", value=False).to_parameter_msg()]))
        wait_until(future.done, 30, "the set_parameters reply")
        assert future.result().results[0].successful
        msg = image_msg(setup["frames"][1], "mono8", frame_id="after")
        pub.publish(msg)
        doc = json.loads(docs.wait_for(lambda d: json.loads(d.data)["frame_id"] == "after", 120, "after").data)
        assert (doc["scan"], doc["patches"]) == ("full", 16)
    finally:
        proc.stop()
        ros.close()
        proc.close()
