"""An independent vision_msgs client: prints every Detection2DArray it receives as JSON.

Run as its own process with the environment of a built vision_msgs (see
``ros_interfaces.interface_env``)::

    python detections_probe.py TOPIC LAYOUT

``LAYOUT`` names the message layout the client reads, field by field, without the
node's helpers: ``4`` (vision_msgs 4.x: ``bbox.center.position.x``, Humble and newer),
``3`` (3.0.x: ``bbox.center.x``, Galactic) or ``2`` (2.0.x: ``bbox.center.x``, the
hypothesis' ``id`` and ``score`` on ObjectHypothesisWithPose itself, no
``Detection2D.id``, Foxy). Output, one JSON object a line on
stdout: first ``{"layout": {type: {field: type}}}`` (the fields of the imported
messages), then ``{"matched": true}`` once a publisher is matched, then one
``{"stamp", "frame_id", "detections": [...]}`` per message. Exits 0 on SIGINT/SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys

import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from vision_msgs.msg import BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesisWithPose


def _emit(doc) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def _centre(bbox, layout: str):
    """(x, y, theta) of the box centre as ``layout`` defines it."""
    centre = bbox.center
    if layout == "4":
        return centre.position.x, centre.position.y, centre.theta
    return centre.x, centre.y, centre.theta


def _hypothesis(result, layout: str):
    """{"class_id", "score"} of one ObjectHypothesisWithPose as ``layout`` defines it."""
    if layout == "2":
        return {"class_id": result.id, "score": result.score}
    return {"class_id": result.hypothesis.class_id, "score": result.hypothesis.score}


def _detection(det, layout: str):
    x, y, theta = _centre(det.bbox, layout)
    pose = [det.results[i].pose.pose.position for i in range(len(det.results))]
    return {
        "id": None if layout == "2" else det.id,
        "stamp": {"sec": det.header.stamp.sec, "nanosec": det.header.stamp.nanosec},
        "frame_id": det.header.frame_id,
        "center": [x, y], "theta": theta, "size": [det.bbox.size_x, det.bbox.size_y],
        "results": [_hypothesis(r, layout) for r in det.results],
        "pose_xyz": [[p.x, p.y, p.z] for p in pose],
    }


def main(topic: str, layout: str) -> int:
    if layout not in ("2", "3", "4"):
        raise SystemExit(f"layout must be 2, 3 or 4; got {layout!r}")
    _emit({"layout": {cls.__name__: cls.get_fields_and_field_types()
                      for cls in (Detection2DArray, Detection2D, BoundingBox2D, ObjectHypothesisWithPose)}})
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("detections_probe")
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)

    def received(msg) -> None:
        _emit({"stamp": {"sec": msg.header.stamp.sec, "nanosec": msg.header.stamp.nanosec},
               "frame_id": msg.header.frame_id,
               "detections": [_detection(d, layout) for d in msg.detections]})

    sub = node.create_subscription(Detection2DArray, topic, received, qos)
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(True))
    matched = False
    while not stop:
        rclpy.spin_once(node, timeout_sec=0.05)
        if not matched and sub.get_publisher_count() > 0:
            matched = True
            _emit({"matched": True})
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
