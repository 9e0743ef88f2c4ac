"""The node's outputs: ``mask``, ``probability``, ``overlay``, ``detections_json`` and,
where vision_msgs imports, ``detections``; :class:`Outputs` creates their publishers in
the lifecycle ``configure`` transition and publishes one frame's results on them."""

from __future__ import annotations

import time
from typing import Any, Dict

from .mailbox import FrameItem

OUTPUT_QOS_DEPTH = 5


def import_vision_msgs(logger):
    """``vision_msgs.msg``, or None (with a warning on ``logger``) where it does not import."""
    try:
        import vision_msgs.msg as vision
    except ImportError:
        logger.warning(
            "vision_msgs is not installed: no Detection2DArray will be published on "
            "'detections'; boxes are still published as JSON on 'detections_json' "
            "(install ros-<distro>-vision-msgs to get them)"
        )
        return None
    return vision


class Outputs:
    """The output publishers of a configured node: lifecycle publishers (they publish
    only while it is active), reliable, keep-last, volatile."""

    def __init__(self, node) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=OUTPUT_QOS_DEPTH,
                             reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        pubs: Dict[str, Any] = {name: node.create_lifecycle_publisher(Image, name, out_qos)
                                for name in ("mask", "probability", "overlay")}
        pubs["detections_json"] = node.create_lifecycle_publisher(String, "detections_json", out_qos)
        self._vision_msgs = import_vision_msgs(node.get_logger())
        if self._vision_msgs is not None:
            pubs["detections"] = node.create_lifecycle_publisher(self._vision_msgs.Detection2DArray, "detections",
                                                                 out_qos)
        self._node = node
        self._string_cls = String
        self._pubs = pubs

    def destroy(self) -> None:
        """Destroy the publishers (``cleanup``); idempotent."""
        pubs, self._pubs = self._pubs, {}
        for pub in pubs.values():
            self._node.destroy_lifecycle_publisher(pub)

    def publish(self, item: FrameItem, result, scan: str = "full") -> None:
        """Every output of one frame with its header, the mask last (whoever has a frame's
        mask has been sent everything else of it); then the frame's latencies in the
        node's stats."""
        from .convert import array_to_image_msg, build_detection_array, detections_json

        node = self._node
        header, pubs, p = item.header, self._pubs, node.settings
        if p["publish_probability"]:
            pubs["probability"].publish(array_to_image_msg(result.probability, "32FC1", header))
        if p["publish_overlay"]:
            from ..core.overlay import overlay_image

            picture = overlay_image(item.frame, result.mask, result.boxes, item.order)
            pubs["overlay"].publish(array_to_image_msg(picture, "bgr8", header))
        height, width = result.mask.shape
        text = detections_json(header, result.boxes, width, height, result.threshold,
                               {"inference_ms": round(result.timings["total"] * 1000.0, 3),
                                "patches": int(result.patches), "scan": scan,
                                "coarse_patches": int(getattr(result, "coarse_patches", 0)),
                                "cascade": getattr(result, "cascade", None)})
        pubs["detections_json"].publish(self._string_cls(data=text))
        if "detections" in pubs:
            pubs["detections"].publish(build_detection_array(header, result.boxes, self._vision_msgs))
        pubs["mask"].publish(array_to_image_msg(result.mask, "mono8", header))
        done = time.monotonic()
        now_ns = node.get_clock().now().nanoseconds
        stamp_ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
        node.stats.record(done - item.received, (now_ns - stamp_ns) / 1e9, result.timings["total"])
