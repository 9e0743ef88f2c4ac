"""The node with a model that has the presence head (a tiny-edgetam checkpoint whose
``satsam.json`` tunes ``min_object_score`` for S = 512), in process: the parameter goes
live, -1 returns to the checkpoint's value for the node's size, bad values are refused
naming it, and ``/diagnostics`` reports the gate and counts the patches it silenced.
Frames go straight into the worker's mailbox (no DDS peer needed)."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest

from satsam_ros.core.synthetic import synthetic_frame
from satsam_ros.ros.mailbox import FrameItem


@pytest.fixture(scope="module")
def edgetam_checkpoint(tmp_path_factory):
    from satsam_ros.model import load_model, save_checkpoint

    model, meta = load_model("tiny-edgetam")
    meta = copy.deepcopy(meta)
    meta.postprocess = {"512": {"threshold": 0.65, "min_object_score": 1.0},  # gates every patch
                        "1024": {"threshold": 0.65}}
    return save_checkpoint(model, meta, tmp_path_factory.mktemp("etnode") / "model")


def test_min_object_score_is_live_and_counted_in_diagnostics(edgetam_checkpoint):
    import rclpy
    from node_helpers import wait_until
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions
    from std_msgs.msg import Header

    from satsam_ros.ros.node import DetectorNode

    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        args = ["--ros-args", "-p", f"model:={edgetam_checkpoint}", "-p", "backend:=torch", "-p", "device:=cpu",
                "-p", "size:=512", "-p", "autostart:=false"]
        node = DetectorNode(context=context, cli_args=args)
        before = dict(node.diagnostics_values())
        assert before["presence"] == "min_object_score from the checkpoint once configured"
        node.trigger_configure()
        det = node._detector
        assert det.backend.has_presence and det.post.min_object_score == 1.0
        node.trigger_activate()

        def send(n_before):
            frame = synthetic_frame(3)[0]
            node._mailbox.put(FrameItem(Header(frame_id="f"), frame, "mono", time.monotonic()))
            wait_until(lambda: node.stats.snapshot()["processed"] > n_before, 60.0, "the worker to process the frame")

        send(0)  # min_object_score 1.0: every patch gated
        values = dict(node.diagnostics_values())
        assert values["presence"] == "min_object_score 1" and values["patches_gated"] == "4"

        assert node.set_parameters([Parameter("min_object_score", value=0.0)])[0].successful
        assert det.post.min_object_score == 0.0
        assert dict(node.diagnostics_values())["presence"] == "off (min_object_score 0)"
        send(1)  # off: nothing more gated
        assert dict(node.diagnostics_values())["patches_gated"] == "4"

        refused = node.set_parameters([Parameter("min_object_score", value=1.5)])[0]  # outside the descriptor
        assert not refused.successful and "min_object_score" in refused.reason and det.post.min_object_score == 0.0
        refused = node.set_parameters([Parameter("min_object_score", value=-0.5)])[0]  # in the range, not allowed
        assert not refused.successful and "'min_object_score'" in refused.reason and det.post.min_object_score == 0.0

        assert node.set_parameters([Parameter("min_object_score", value=-1.0)])[0].successful
        assert det.post.min_object_score == 1.0  # the checkpoint's value for size 512
        send(2)
        assert dict(node.diagnostics_values())["patches_gated"] == "8"
        node.finish()
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_diagnostics_say_when_the_model_has_no_head():
    from types import SimpleNamespace

    from satsam_ros.ros import diagnostics

    sam = SimpleNamespace(backend=SimpleNamespace(has_presence=False), post=SimpleNamespace(min_object_score=0.5))
    assert diagnostics.presence_status(sam, {}) == "no object-score head (not applied)"
    et = SimpleNamespace(backend=SimpleNamespace(has_presence=True), post=SimpleNamespace(min_object_score=0.25))
    assert diagnostics.presence_status(et, {}) == "min_object_score 0.25"
    assert diagnostics.presence_status(None, {"min_object_score": 0.3}) == "min_object_score 0.3"
    assert np.isclose(float(diagnostics.presence_status(et, {}).split()[-1]), 0.25)
