"""The installed detect_node on ONNX Runtime (``-p backend:=onnxruntime -p model:=X.onnx``)
over real DDS: every published mask equals the torch Detector's mask on the same frame,
except at ties (pixels whose torch probability lies within satsam_ros.core.parity's
probability bound of the threshold: two engines, two float32 summation orders)."""

from __future__ import annotations

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from node_helpers import NodeProcess, RosHarness, image_msg, same_stamp, wait_diag
from numerics import LogitRecorder, assert_masks_equal_except_ties

from satsam_ros.core.synthetic import synthetic_frame
from satsam_ros.deploy.onnx_export import export_model
from satsam_ros.ros.convert import image_msg_to_array
from satsam_ros.runtime import open_detector

NS = "/satsam_ort"
TOPIC = "/test_onnx_node/camera/image_raw"


def frames():
    noise = np.random.default_rng(8).integers(0, 256, (480, 600), dtype=np.uint8)
    return [synthetic_frame(61)[0], synthetic_frame(62, with_satellite=False)[0], noise]


def test_node_on_onnxruntime_publishes_the_torch_masks(installed_node, tmp_path):
    onnx_file = export_model("tiny", tmp_path / "tiny.onnx", size=512, verify=False).path
    torch_det = open_detector("tiny", backend="torch", device="cpu", size=512)  # its own threshold, 0.65
    thr = torch_det.threshold
    torch_det.backend = recorder = LogitRecorder(torch_det.backend)  # the scale of the probability bound
    reference = [torch_det.detect(f, "mono") for f in frames()]
    expected = [r.mask for r in reference]
    assert sum(set(np.unique(m)) == {0, 255} for m in expected) >= 2, "the comparison needs non-trivial masks"

    params = {"size": 512, "model": str(onnx_file), "backend": "onnxruntime", "device": "cpu",
              "qos_reliability": "reliable", "qos_depth": 10}
    proc = NodeProcess(installed_node, params, namespace=NS, remaps={"image": TOPIC})
    ros = RosHarness("satsam_test_onnx_node")
    try:
        pub = ros.publisher(TOPIC)
        masks = ros.collect(f"{NS}/mask")
        diag = ros.collect("/diagnostics", DiagnosticArray)
        ros.wait_matched(pub, 90, "detect_node (onnxruntime) to subscribe to its image topic", proc)
        ros.wait_publishers([masks], 30)
        for i, (frame, want) in enumerate(zip(frames(), expected)):
            msg = image_msg(frame, "mono8", frame_id=f"ort_{i}")
            pub.publish(msg)
            got = masks.wait_for(lambda m, s=msg.header.stamp: same_stamp(m.header.stamp, s), 60,
                                 f"the mask of frame {i}")
            arr, _ = image_msg_to_array(got)
            # a tie may flip, nothing else; (the frame without a satellite may give an empty mask)
            sides = "both" if set(np.unique(want)) == {0, 255} else "none"
            assert_masks_equal_except_ties(reference[i].probability, thr, want, arr, recorder.scale, sides=sides,
                                           what=f"frame {i}: node (onnxruntime) vs torch")
        values = wait_diag(diag, lambda v: int(v["frames_processed"]) >= 3, 10, "diagnostics", input_topic=TOPIC)
        assert values["backend"] == "onnxruntime" and float(values["threshold"]) == pytest.approx(thr)
    finally:
        proc.stop()
        ros.close()
        proc.close()
