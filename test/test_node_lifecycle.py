"""detect_node as a managed (lifecycle) node, driven like a lifecycle manager drives it.

The installed node runs as a process of its own with ``-p autostart:=false``; an
independent client requests transitions through ``lifecycle_msgs/srv/ChangeState`` on
``<node>/change_state`` and reads ``<node>/get_state``. "Publishes nothing" is checked
without sleeping: a frame sent while the node is not active must never be answered,
although a frame sent after it (once active again) is, and the node's own counters
(``/diagnostics``, reported in every state) must not have counted it.
"""

from __future__ import annotations

import gc
import signal
import time
import weakref

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from node_helpers import (
    NODE_NAME,
    LifecycleClient,
    NodeProcess,
    RosHarness,
    image_msg,
    make_responsive_model,
    same_stamp,
    wait_diag,
    wait_until,
)

from satsam_ros.core.synthetic import synthetic_frame
from satsam_ros.runtime import open_detector

BASE = {"model": "tiny", "backend": "torch", "device": "cpu", "size": 512, "qos_reliability": "reliable",
        "qos_depth": 10, "autostart": False}
THRESHOLD = 0.50005  # inside the tiny model's probabilities: masks with both values
ANSWER = 60.0


class Managed:
    """One node process, a harness with a publisher on its input, its mask, and a lifecycle client."""

    def __init__(self, installed_node, ns: str, params: dict):
        self.ns, self.image = ns, f"{ns}/camera"
        self.proc = NodeProcess(installed_node, params, namespace=ns, remaps={"image": self.image})
        self.ros = RosHarness(f"satsam_test_lifecycle_{ns.strip('/')}")
        self.pub = self.ros.publisher(self.image)
        self.mask = self.ros.collect(f"{ns}/mask")
        self.diag = self.ros.collect("/diagnostics", DiagnosticArray)
        self.life = LifecycleClient(self.ros, f"{ns}/{NODE_NAME}")

    def diag_values(self, predicate, what: str):
        return wait_diag(self.diag, predicate, 15, what, after=time.time(), input_topic=self.image)

    def send(self, seed: int):
        msg = image_msg(synthetic_frame(seed, 96, 128)[0], "mono8")
        self.pub.publish(msg)
        return msg

    def answered(self, msg) -> bool:
        return self.mask.by_stamp(msg.header.stamp) is not None

    def ask(self, seed: int):
        """Send a frame (once the node subscribes) and wait for its mask."""
        self.ros.wait_matched(self.pub, 30, "the node to subscribe", self.proc)
        msg = self.send(seed)
        return self.mask.wait_for(lambda m: same_stamp(m.header.stamp, msg.header.stamp), ANSWER, f"frame {seed}")

    def close(self):
        self.ros.close()
        self.proc.close()


@pytest.fixture
def managed(installed_node, request):
    made = []

    def make(ns: str, **params):
        node = Managed(installed_node, ns, dict(BASE, **params))
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()


def test_a_manager_brings_it_up_and_down_and_it_publishes_only_while_active(managed):
    m = managed("/satsam_lc", threshold=THRESHOLD)
    # unconfigured: services up, nothing loaded, no outputs, no input; diagnostics say so
    assert m.life.state() == "unconfigured"
    values = m.diag_values(lambda v: True, "diagnostics of the unconfigured node")
    assert values["lifecycle_state"] == "unconfigured" and "not processing" in values["_message"]
    assert (values["backend"], values["model"], values["frames_received"]) == ("torch", "tiny", "0")
    assert m.ros.node.count_publishers(f"{m.ns}/mask") == 0 and m.pub.get_subscription_count() == 0
    early = m.send(1)

    assert m.life.change("configure") and m.life.state() == "inactive"
    wait_until(lambda: m.ros.node.count_publishers(f"{m.ns}/mask") == 1, 10, "the mask publisher")
    assert m.pub.get_subscription_count() == 0  # inactive: not subscribed
    inactive = m.send(2)
    m.diag_values(lambda v: v["lifecycle_state"] == "inactive", "diagnostics of the inactive node")

    assert m.life.change("activate") and m.life.state() == "active"
    first = m.ask(3)
    detector = open_detector(model="tiny", backend="torch", device="cpu", size=512, threshold=THRESHOLD)
    expected = detector.detect(synthetic_frame(3, 96, 128)[0], "mono").mask
    got = np.frombuffer(bytes(first.data), np.uint8).reshape(first.height, first.width)
    assert np.array_equal(got, expected) and 0 < int((got > 0).sum()) < got.size
    assert not m.answered(early) and not m.answered(inactive)

    assert m.life.change("deactivate") and m.life.state() == "inactive"
    wait_until(lambda: m.pub.get_subscription_count() == 0, 10, "the node to unsubscribe")
    after_deactivate = m.send(4)
    values = m.diag_values(lambda v: v["lifecycle_state"] == "inactive", "diagnostics after deactivate")
    assert (values["frames_received"], values["frames_processed"]) == ("1", "1")  # only frame 3 counted

    # cleanup releases the model; configure + activate again work
    assert m.life.change("cleanup") and m.life.state() == "unconfigured"
    wait_until(lambda: m.ros.node.count_publishers(f"{m.ns}/mask") == 0, 10, "the outputs to go")
    assert m.life.change("configure") and m.life.change("activate") and m.life.state() == "active"
    again = m.ask(3)
    assert np.array_equal(np.frombuffer(bytes(again.data), np.uint8).reshape(96, 128), expected)
    assert not m.answered(after_deactivate)
    values = m.diag_values(lambda v: v["frames_processed"] == "2", "diagnostics after the second activation")
    assert values["lifecycle_state"] == "active" and values["frames_received"] == "2"

    # a transition that does not exist from here is refused; the node carries on
    assert not m.life.change("configure") and m.life.state() == "active"
    # shutdown from active ends the process with status 0
    assert m.life.change("shutdown")
    assert m.proc.wait(30) == 0, m.proc.describe()


def test_failing_configure_keeps_the_process_up_for_a_retry(managed, tmp_path):
    model = tmp_path / "model"  # does not exist yet: configure fails
    m = managed("/satsam_lc_bad", model=str(model))
    assert not m.life.change("configure")
    assert m.life.state() == "unconfigured" and m.proc.alive()
    wait_until(lambda: str(model) in m.proc.output()[1], 10, "the failure in the log")
    _, err = m.proc.output()
    assert "configure failed" in err and "no such directory" in err and "Traceback" not in err, err
    values = m.diag_values(lambda v: v["lifecycle_state"] == "unconfigured", "diagnostics after the failure")
    assert str(model) in values["model"]
    # the model appears (say, a mounted volume): the manager's retry succeeds
    make_responsive_model(model)
    assert m.life.change("configure") and m.life.change("activate")
    answer = m.ask(5)
    assert (answer.height, answer.width) == (96, 128)
    assert m.proc.stop(signal.SIGINT) == 0


def test_signals_exit_zero_from_every_state(managed):
    """SIGINT from unconfigured, inactive and active; SIGTERM too (from unconfigured)."""
    nodes = {(state, sig): managed(f"/satsam_lc_{state}_{sig.name.lower()}")
             for state, sig in (("unconfigured", signal.SIGINT), ("inactive", signal.SIGINT),
                                ("active", signal.SIGINT), ("unconfigured", signal.SIGTERM))}
    assert nodes["inactive", signal.SIGINT].life.change("configure")
    active = nodes["active", signal.SIGINT]
    assert active.life.change("configure") and active.life.change("activate")
    for (state, _sig), m in nodes.items():
        assert m.life.state() == state
    for (state, sig), m in nodes.items():
        rc = m.proc.stop(sig)
        assert rc == 0, f"{sig.name} from {state}: status {rc}\n{m.proc.describe()}"
        _, err = m.proc.output()
        assert "Traceback" not in err, err


def test_cleanup_releases_the_model_in_process():
    """In this process, so the model object itself can be watched: after cleanup nothing
    holds it (the backend dropped it; on CUDA the cache is emptied too)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from satsam_ros.ros.node import DetectorNode

    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        args = ["--ros-args"] + [x for k, v in dict(BASE, autostart=False).items()
                                 for x in ("-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}")]
        node = DetectorNode(context=context, cli_args=args)
        assert node.lifecycle_state() == "unconfigured" and node._detector is None
        from rclpy.lifecycle import TransitionCallbackReturn

        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        module = weakref.ref(node._detector.backend.module)
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS and node.lifecycle_state() == "active"
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        gc.collect()
        assert module() is None, "the model is still referenced after cleanup"
        assert node._detector is None and node.lifecycle_state() == "unconfigured"
        node.finish()
        assert node.lifecycle_state() == "finalized"
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_live_minus_one_restores_the_checkpoints_value_for_the_size(tmp_path):
    """threshold / min_area / max_objects / min_score / group_gap change live, and -1 goes
    back to the checkpoint's post-processing *for the node's size* (satsam.json
    ``postprocess``), not to its size-independent defaults."""
    import json

    import rclpy
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions

    from satsam_ros.ros.node import DetectorNode

    model = make_responsive_model(tmp_path / "model")
    meta = json.loads((model / "satsam.json").read_text())
    meta.update(threshold=0.3, min_area=5, postprocess={"512": {"threshold": 0.61, "min_area": 77, "max_objects": 1,
                                                                 "min_score": 0.7, "group_gap": 6}})
    (model / "satsam.json").write_text(json.dumps(meta))
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        args = ["--ros-args", "-p", f"model:={model}", "-p", "backend:=torch", "-p", "device:=cpu",
                "-p", "size:=512", "-p", "autostart:=false"]
        node = DetectorNode(context=context, cli_args=args)
        node.trigger_configure()
        det = node._detector
        assert (det.threshold, det.min_area) == (0.61, 77)
        assert all(r.successful for r in node.set_parameters([Parameter("threshold", value=0.2),
                                                              Parameter("min_area", value=3)]))
        assert (det.threshold, det.min_area) == (0.2, 3)
        assert all(r.successful for r in node.set_parameters([Parameter("threshold", value=-1.0),
                                                              Parameter("min_area", value=-1)]))
        assert (det.threshold, det.min_area) == (0.61, 77)
        # the priors tuned with the threshold (max_objects, min_score, group_gap) likewise
        assert (det.post.max_objects, det.post.min_score, det.post.group_gap) == (1, 0.7, 6)
        assert all(r.successful for r in node.set_parameters([Parameter("max_objects", value=0),
                                                              Parameter("min_score", value=0.0),
                                                              Parameter("group_gap", value=0)]))
        assert (det.post.max_objects, det.post.min_score, det.post.group_gap) == (0, 0.0, 0)
        refused = node.set_parameters([Parameter("min_score", value=-0.5)])[0]  # in the range, not allowed
        assert not refused.successful and "'min_score'" in refused.reason and det.post.min_score == 0.0
        assert all(r.successful for r in node.set_parameters([Parameter("max_objects", value=-1),
                                                              Parameter("min_score", value=-1.0),
                                                              Parameter("group_gap", value=-1)]))
        assert (det.post.max_objects, det.post.min_score, det.post.group_gap) == (1, 0.7, 6)
        node.finish()
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
