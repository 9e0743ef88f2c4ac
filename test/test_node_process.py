"""detect_node as a process: bad start-up parameters fail fast, signals shut it down cleanly."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from node_helpers import NodeProcess, RosHarness, image_msg, wait_diag

BASE = {"model": "tiny", "backend": "torch", "device": "cpu"}


BAD_STARTUP = [  # (parameters, words the error message must contain)
    ({"size": 300}, ["'size'", "512, 1024, 2048", "300"]),
    ({"size": 1536}, ["'size'", "512, 1024, 2048"]),
    ({"mode": "slow"}, ["'mode'", "fast, faithful"]),
    ({"backend": "gpu"}, ["'backend'", "auto, torch, onnxruntime, tensorrt"]),
    ({"device": "tpu"}, ["'device'", "auto, cpu, cuda"]),
    ({"qos_reliability": "sometimes"}, ["'qos_reliability'", "best_effort, reliable"]),
    ({"threshold": 1.5}, ["'threshold'", "-1", "[0, 1]"]),
    ({"threshold": -0.25}, ["'threshold'", "-1", "[0, 1]"]),
    ({"patch_size": 250}, ["'patch_size'", "steps of 16"]),
    ({"min_area": -2}, ["'min_area'", "-1 (from the checkpoint)"]),
    ({"qos_depth": 0}, ["'qos_depth'", "[1, 100]"]),
    ({"size": "big"}, ["'size'", "512, 1024, 2048"]),
    ({"patch_size": 1024}, ["patch_size", "size=512"]),
]


@pytest.mark.parametrize("params,words", [
    pytest.param(p, w, id=" ".join(f"{k}:={v}" for k, v in p.items())) for p, w in BAD_STARTUP])
def test_bad_startup_parameter_exits_nonzero_naming_it(installed_node, params, words):
    start = time.monotonic()
    proc = NodeProcess(installed_node, dict(BASE, size=512, **params) if "size" not in params
                       else dict(BASE, **params), namespace="/satsam_bad")
    try:
        rc = proc.wait(30)
        elapsed = time.monotonic() - start
        _, err = proc.output()
    finally:
        proc.close()
    assert rc != 0, err
    for word in words:
        assert word in err, f"{word!r} not in stderr: {err}"
    assert "Traceback" not in err, err
    assert elapsed < 15.0, f"took {elapsed:.1f} s to fail"


def test_missing_model_exits_nonzero_naming_it(installed_node):
    proc = NodeProcess(installed_node, dict(BASE, size=512, model="/nonexistent/satsam/model"),
                       namespace="/satsam_bad")
    try:
        rc = proc.wait(60)
        _, err = proc.output()
    finally:
        proc.close()
    assert rc != 0
    assert "/nonexistent/satsam/model" in err and "no such directory" in err, err
    assert "Traceback" not in err, err


def test_sigint_and_sigterm_exit_zero_with_the_worker_busy(installed_node):
    """Both signals end the node with status 0, also while a frame is being processed."""
    procs = {sig: NodeProcess(installed_node, dict(BASE, size=512, extra_latency_ms=20000),
                              namespace=f"/satsam_{sig.name.lower()}")
             for sig in (signal.SIGINT, signal.SIGTERM)}
    ros = RosHarness("satsam_test_signals")
    try:
        diag = ros.collect("/diagnostics", DiagnosticArray)
        pubs = {sig: ros.publisher(f"{p.namespace}/image") for sig, p in procs.items()}
        for sig, pub in pubs.items():
            ros.wait_matched(pub, 90, f"node for {sig.name} to subscribe", procs[sig])
        frame = np.zeros((64, 80), np.uint8)
        for pub in pubs.values():
            pub.publish(image_msg(frame, "mono8"))
        # the worker is inside its 20 s per-frame sleep: received 1, processed 0
        for sig, proc in procs.items():
            wait_diag(diag, lambda v: v["frames_received"] == "1" and v["frames_processed"] == "0", 15,
                      f"the {sig.name} node to be busy with the frame", input_topic=f"{proc.namespace}/image")
        for sig, proc in procs.items():
            t0 = time.monotonic()
            rc = proc.stop(sig, timeout=15)
            took = time.monotonic() - t0
            _, err = proc.output()
            assert rc == 0, f"{sig.name}: exit status {rc}\n{err}"
            assert took < 10.0, f"{sig.name}: took {took:.1f} s"
            assert "shutting down" in err and "Traceback" not in err, err
    finally:
        ros.close()
        for proc in procs.values():
            proc.close()
