"""ROS message <-> array helpers for the node (the ROS shell; rclpy-free itself).

Nothing here imports rclpy. Message classes are passed in or imported lazily, so
the functions are testable with the message packages alone (and the
Detection2DArray builder even with stand-in classes, since ``vision_msgs`` is not
installable from PyPI).

* :func:`image_msg_to_array`: ``sensor_msgs/Image`` -> (H x W or H x W x C array,
  channel order), validated by :func:`satsam_ros.imaging.image_fields_to_array`
  (raises :class:`satsam_ros.imaging.FrameError`).
* :func:`compressed_msg_to_array`: ``sensor_msgs/CompressedImage`` (image_transport's
  ``compressed`` transport: JPEG or PNG) -> (array, channel order), validated and
  size-limited by :func:`satsam_ros.core.compressed.decode_compressed`.
* :func:`array_to_image_msg`: array + encoding + header -> ``sensor_msgs/Image``.
* :func:`detections_json`: header + boxes -> the JSON text published on
  ``detections_json`` (std_msgs/String).
* :func:`build_detection_array`: header + boxes -> ``vision_msgs/Detection2DArray``,
  for every layout of ``BoundingBox2D.center``: vision_msgs 4.x (Humble, Iron, Jazzy
  and newer: ``vision_msgs/Pose2D``, ``center.position.x``) and 3.0.x / 2.0.x
  (Galactic, Foxy: ``geometry_msgs/Pose2D``, ``center.x``).
"""

from __future__ import annotations

import array
import json
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np

from ..core.compressed import decode_compressed
from ..core.imaging import array_to_image_fields, image_fields_to_array
from ..core.postprocess import Box

#: class id of every detection the node publishes
CLASS_ID = "satellite"


def image_msg_to_array(msg) -> Tuple[np.ndarray, str]:
    """Validate a ``sensor_msgs/Image`` and view its pixels as an array.

    Returns ``(array, order)`` as :func:`satsam_ros.imaging.image_fields_to_array`:
    H x W (one channel) or H x W x C, dtype from the encoding; order "mono", "rgb",
    "bgr", "rgba" or "bgra". Raises FrameError naming the bad field.
    """
    return image_fields_to_array(
        msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian)
    )


def compressed_msg_to_array(msg, max_pixels: int) -> Tuple[np.ndarray, str]:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG or PNG, image_transport's format
    strings) into ``(array, order)`` like :func:`image_msg_to_array`; images over
    ``max_pixels`` (width x height, read from the file's header before decoding) and
    anything undecodable raise FrameError naming the problem."""
    return decode_compressed(msg.format, msg.data, max_pixels)


def array_to_image_msg(arr: np.ndarray, encoding: str, header, image_cls=None):
    """Pack an array as a ``sensor_msgs/Image`` carrying ``header`` (little endian).

    ``arr`` must fit ``encoding`` (e.g. H x W uint8 for mono8, H x W float32 for
    32FC1, H x W x 3 uint8 for bgr8). ``image_cls`` defaults to sensor_msgs' Image.
    """
    if image_cls is None:
        from sensor_msgs.msg import Image as image_cls
    height, width, step, data = array_to_image_fields(arr, encoding)
    msg = image_cls()
    msg.header = header
    msg.height = height
    msg.width = width
    msg.step = step
    msg.encoding = encoding
    msg.is_bigendian = 0
    # array.array is the fast path of the generated setter (bytes would be checked
    # element by element)
    msg.data = array.array("B", data)
    return msg


def stamp_dict(header) -> Dict[str, Any]:
    """``{"sec", "nanosec"}`` of a header's stamp."""
    return {"sec": int(header.stamp.sec), "nanosec": int(header.stamp.nanosec)}


def detections_json(
    header,
    boxes: Iterable[Box],
    width: int,
    height: int,
    threshold: float,
    extra: Optional[Dict[str, Any]] = None,
) -> str:
    """The JSON document published on ``detections_json``.

    Keys: ``stamp`` ({sec, nanosec}), ``frame_id``, ``width``/``height`` (input
    pixels), ``threshold``, ``class_id``, ``boxes``: one object per connected
    component with ``x0, y0, x1, y1`` (XYXY input pixels, half-open), ``score``
    (mean probability), ``area`` (pixels), ``center`` [cx, cy] and ``size`` [w, h]
    (input pixels, as in the Detection2D bounding box). ``extra`` entries are added.
    """
    doc: Dict[str, Any] = {
        "stamp": stamp_dict(header),
        "frame_id": str(header.frame_id),
        "width": int(width),
        "height": int(height),
        "threshold": float(threshold),
        "class_id": CLASS_ID,
        "boxes": [
            dict(b.to_dict(), center=list(b.center), size=list(b.size)) for b in boxes
        ],
    }
    if extra:
        doc.update(extra)
    return json.dumps(doc)


def _set_center(center, cx: float, cy: float) -> None:
    """Fill a BoundingBox2D.center of either layout.

    vision_msgs 4.x (Humble and newer): ``vision_msgs/Pose2D`` (``position.x``,
    ``position.y``, ``theta``). 3.0.x and 2.0.x (Galactic, Foxy):
    ``geometry_msgs/Pose2D`` (``x``, ``y``, ``theta``).
    """
    if hasattr(center, "position"):
        center.position.x = float(cx)
        center.position.y = float(cy)
    else:
        center.x = float(cx)
        center.y = float(cy)
    center.theta = 0.0


def _hypothesis(hyp_cls, score: float):
    """ObjectHypothesisWithPose for class ``satellite``.

    Galactic and newer: ``hypothesis.class_id`` / ``hypothesis.score``; Foxy:
    ``id`` / ``score`` directly on the message.
    """
    hyp = hyp_cls()
    if hasattr(hyp, "hypothesis"):
        hyp.hypothesis.class_id = CLASS_ID
        hyp.hypothesis.score = float(score)
    else:
        hyp.id = CLASS_ID
        hyp.score = float(score)
    return hyp


def build_detection_array(header, boxes: Sequence[Box], msgs: Any = None):
    """``vision_msgs/Detection2DArray``: one Detection2D per box, with ``header``.

    Box centre and size are in input pixels (``center`` = middle of the half-open
    XYXY box, ``size_x``/``size_y`` = width/height); one hypothesis per detection:
    class id ``satellite`` with score = the box's mean probability.
    ``msgs`` is the ``vision_msgs.msg`` module (or anything with the classes
    Detection2DArray, Detection2D, ObjectHypothesisWithPose); imported when None.
    """
    if msgs is None:
        import vision_msgs.msg as msgs
    out = msgs.Detection2DArray()
    out.header = header
    detections = []
    for i, box in enumerate(boxes):
        det = msgs.Detection2D()
        det.header = header
        if hasattr(det, "id"):
            det.id = str(i)
        cx, cy = box.center
        w, h = box.size
        _set_center(det.bbox.center, cx, cy)
        det.bbox.size_x = float(w)
        det.bbox.size_y = float(h)
        det.results = [_hypothesis(msgs.ObjectHypothesisWithPose, box.score)]
        detections.append(det)
    out.detections = detections
    return out
