"""The installed detect_node running a SAM 2 model (``-p model:=tiny-sam2``) over real DDS:
every published mask equals, pixel for pixel, the mask the in-process Detector computes
on the same frame with the same settings, at the model's own threshold, and the masks
compared hold foreground."""

from __future__ import annotations

import json

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from node_helpers import NodeProcess, RosHarness, image_msg, same_stamp, wait_diag
from std_msgs.msg import String

from satsam_ros.core.synthetic import synthetic_frame
from satsam_ros.ros.convert import image_msg_to_array
from satsam_ros.runtime import open_detector

NS = "/satsam_sam2"
TOPIC = "/test_sam2_node/camera/image_raw"


def frames():
    rng = np.random.default_rng(21)
    noise = (rng.random((480, 600)) * 255).astype(np.uint8)
    return [synthetic_frame(61)[0], synthetic_frame(62, with_satellite=False)[0], noise]


def test_node_with_tiny_sam2_publishes_the_detector_masks(installed_node):
    reference = open_detector("tiny-sam2", backend="torch", device="cpu", size=512)
    expected = [reference.detect(f, "mono") for f in frames()]
    with_foreground = sum(bool(r.mask.any()) for r in expected)
    assert with_foreground >= 2, "the comparison needs masks with foreground"

    params = {"size": 512, "model": "tiny-sam2", "backend": "torch", "device": "cpu",
              "qos_reliability": "reliable", "qos_depth": 10}
    proc = NodeProcess(installed_node, params, namespace=NS, remaps={"image": TOPIC})
    ros = RosHarness("satsam_test_sam2_node")
    try:
        pub = ros.publisher(TOPIC)
        masks = ros.collect(f"{NS}/mask")
        found = ros.collect(f"{NS}/detections_json", String)
        diag = ros.collect("/diagnostics", DiagnosticArray)
        ros.wait_matched(pub, 90, "detect_node (tiny-sam2) to subscribe to its image topic", proc)
        ros.wait_publishers([masks, found], 30)
        for i, (frame, want) in enumerate(zip(frames(), expected)):
            msg = image_msg(frame, "mono8", frame_id=f"sam2_{i}")
            pub.publish(msg)
            got = masks.wait_for(lambda m, s=msg.header.stamp: same_stamp(m.header.stamp, s), 60,
                                 f"the mask of frame {i}")
            arr, _ = image_msg_to_array(got)
            assert np.array_equal(arr, want.mask), f"frame {i}: node and in-process Detector masks differ"
            text = found.wait_for(lambda m, fid=f"sam2_{i}": json.loads(m.data).get("frame_id") == fid, 30,
                                  f"the detections of frame {i}")
            boxes = json.loads(text.data)["boxes"]
            assert sorted((b["x0"], b["y0"], b["x1"], b["y1"], b["area"]) for b in boxes) == sorted(
                (b.x0, b.y0, b.x1, b.y1, b.area) for b in want.boxes)
        values = wait_diag(diag, lambda v: int(v["frames_processed"]) >= 3, 10, "diagnostics", input_topic=TOPIC)
        assert values["backend"] == "torch" and float(values["threshold"]) == pytest.approx(0.65)
    finally:
        proc.stop()
        ros.close()
        proc.close()
