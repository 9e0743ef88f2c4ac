"""The node's coarse-to-fine parameters (issue 22), in process: ``cascade`` and
``cascade_margin`` reach the Detector (``auto``: the checkpoint's setting for the node's
size), are read-only, bad values are refused naming the parameter, and ``/diagnostics``
reports the setting and the patches run per frame. Frames go straight into the worker's
mailbox (no DDS peer needed).

The checkpoint: a tiny SAM whose ``satsam.json`` turns the cascade on at S = 1024 and
gives S = 512 a threshold nothing exceeds, so the coarse pass proposes nothing and every
frame stops there (4 patches instead of 16).
"""

from __future__ import annotations

import copy
import time

import pytest

from satsam_ros.core.synthetic import synthetic_frame
from satsam_ros.ros.mailbox import FrameItem


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from satsam_ros.model import load_model, save_checkpoint

    model, meta = load_model("tiny")
    meta = copy.deepcopy(meta)
    meta.postprocess = {"512": {"threshold": 1.0}, "1024": {"cascade": 512, "cascade_margin": 8}}
    return save_checkpoint(model, meta, tmp_path_factory.mktemp("casnode") / "model")


@pytest.fixture
def ros_context():
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    yield context
    rclpy.try_shutdown(context=context)


def _run(context, checkpoint, *extra, frames=2):
    """A node at size 1024 with ``extra`` parameters, ``frames`` frames through it; its
    diagnostics values and Detector settings."""
    from node_helpers import wait_until
    from std_msgs.msg import Header

    from satsam_ros.ros.node import DetectorNode

    args = ["--ros-args", "-p", f"model:={checkpoint}", "-p", "backend:=torch", "-p", "device:=cpu",
            "-p", "size:=1024", "-p", "autostart:=false"]
    for item in extra:
        args += ["-p", item]
    node = DetectorNode(context=context, cli_args=args)
    try:
        before = dict(node.diagnostics_values())
        node.trigger_configure()
        node.trigger_activate()
        for i in range(frames):
            node._mailbox.put(FrameItem(Header(frame_id="f"), synthetic_frame(3 + i)[0], "mono", time.monotonic()))
            wait_until(lambda n=i: node.stats.snapshot()["processed"] > n, 60.0, "the worker to process the frame")
        det = node._detector
        out = (before, dict(node.diagnostics_values()), (det.cascade_size, det.cascade_margin)
               + ((det.cascade_max_patches,) if det.cascade_max_patches else ()), node)
        node.finish()
        return out
    finally:
        node.destroy_node()


def test_auto_takes_the_checkpoints_cascade_and_diagnostics_count_the_patches(ros_context, checkpoint):
    from rclpy.parameter import Parameter

    before, after, setting, node = _run(ros_context, checkpoint)
    assert before["cascade"] == "from the checkpoint (margin from the checkpoint) once configured"
    assert before["patches_run_p50"] == "nan"
    assert setting == (512, 8)
    assert after["cascade"] == "512 first, margin 8 px: 2 of 2 frames stopped at the coarse pass"
    assert after["patches_run_p50"] == "4"  # the coarse pass only
    refused = node.set_parameters([Parameter("cascade", value=0)])[0]
    assert not refused.successful  # read-only


def test_off_runs_every_patch_and_the_margin_overrides(ros_context, checkpoint):
    _, after, setting, _ = _run(ros_context, checkpoint, "cascade:=0", frames=1)
    assert setting == (0, 8) and after["cascade"] == "off" and after["patches_run_p50"] == "16"
    _, after, setting, _ = _run(ros_context, checkpoint, "cascade:=512", "cascade_margin:=20", frames=1)
    assert setting == (512, 20) and after["cascade"].startswith("512 first, margin 20 px: 1 of 1")


@pytest.fixture(scope="module")
def proposing(tmp_path_factory):
    """S = 512 at threshold 0 publishes the whole frame, so the coarse pass proposes all 16
    patches at 1024; the checkpoint caps a frame at 3 of them."""
    from satsam_ros.model import load_model, save_checkpoint

    model, meta = load_model("tiny")
    meta = copy.deepcopy(meta)
    meta.postprocess = {"512": {"threshold": 0.0},
                        "1024": {"cascade": 512, "cascade_margin": 0, "cascade_max_patches": 3}}
    return save_checkpoint(model, meta, tmp_path_factory.mktemp("capnode") / "model")


def test_the_patch_cap_from_the_checkpoint_or_the_parameter(ros_context, proposing):
    from rclpy.parameter import Parameter

    before, after, setting, node = _run(ros_context, proposing)
    assert before["cascade"] == "from the checkpoint (margin from the checkpoint) once configured"
    assert setting == (512, 0, 3)
    assert after["cascade"] == "512 first, margin 0 px, at most 3 patches: 0 of 2 frames stopped at the coarse " \
                               "pass, 2 capped"
    assert after["patches_run_p50"] == "7"  # 4 coarse + 3 of the 16 proposed
    assert not node.set_parameters([Parameter("cascade_max_patches", value=8)])[0].successful  # read-only
    _, after, setting, _ = _run(ros_context, proposing, "cascade_max_patches:=0", frames=1)
    assert setting == (512, 0) and after["patches_run_p50"] == "20"  # no cap: all 16 after the coarse 4
    _, after, setting, _ = _run(ros_context, proposing, "cascade_max_patches:=5", frames=1)
    assert setting == (512, 0, 5) and after["patches_run_p50"] == "9"


@pytest.mark.parametrize("item, words", [
    ("cascade_max_patches:=-2", "parameter 'cascade_max_patches' must be -1 (from the checkpoint) or an integer"),
    ("cascade:=256", "parameter 'cascade' must be one of -1, 0, 512, 1024; got 256"),
    ("cascade:=off", "parameter 'cascade' must be one of -1, 0, 512, 1024"),  # YAML: a boolean, the wrong type
    ("cascade_margin:=-2", "parameter 'cascade_margin' must be -1 (from the checkpoint) or an integer"),
])
def test_bad_values_are_refused_naming_the_parameter(ros_context, checkpoint, item, words):
    from satsam_ros.ros.node import DetectorNode, StartupError

    args = ["--ros-args", "-p", f"model:={checkpoint}", "-p", "size:=1024", "-p", "autostart:=false", "-p", item]
    with pytest.raises(StartupError, match=words.replace("(", r"\(").replace(")", r"\)")):
        DetectorNode(context=ros_context, cli_args=args)
