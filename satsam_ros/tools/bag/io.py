"""Rosbag2 files for evaluation: make them, read them, replay them through the live node.

Pure Python on top of the ``rosbags`` library (its own ROS 2 type store; no rosbag2
install needed), MCAP or sqlite3 storage. Three parts:

* **Writing** (:func:`write_bag`, :func:`make_bag`): frames -> a rosbag2 with
  ``sensor_msgs/msg/Image`` on an image topic (mono8 for 8-bit gray, mono16 for 16-bit
  gray, bgr8 for colour) and, where the truth is known, the ground-truth mask as a mono8
  image (0 = background, 255 = satellite) on :data:`GROUND_TRUTH_TOPIC` with the same
  header stamp. A frame with no satellite has an all-zero mask; a frame whose truth is
  unknown (a bbox-only label, a folder of images) has no ground-truth message at all.
* **Reading** (:func:`bag_topics`, :func:`read_images`, :func:`read_masks`,
  :func:`read_frames`, :func:`choose_image_topic`).
* **Replay evaluation** (:func:`run_bag_eval`): starts the installed ``detect_node``
  (or attaches to a running one), publishes the bag's images over DDS with their
  recorded timing, records every output with its arrival time, matches outputs to
  inputs by header stamp, scores them with :mod:`satsam_ros.metrics` (the one metric
  implementation) and writes a report directory (see :func:`run_bag_eval`).

Stamps are handled as integer nanoseconds (``sec * 1e9 + nanosec``) everywhere.
Only the replay part imports rclpy, and only when it runs.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import shutil
import signal
import struct
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ...core.imaging import FrameError, array_to_image_fields, image_fields_to_array, to_uint8_gray

IMAGE_TYPE = "sensor_msgs/msg/Image"
STRING_TYPE = "std_msgs/msg/String"
DIAGNOSTICS_TYPE = "diagnostic_msgs/msg/DiagnosticArray"
DEFAULT_TOPIC = "/camera/image_raw"
GROUND_TRUTH_TOPIC = "/satsam/ground_truth/mask"
DEFAULT_NAMESPACE = "/satsam"
DEFAULT_FRAME_ID = "camera"
STORAGES = ("mcap", "sqlite3")
#: rosbag2 metadata version written (8: read by Iron, Jazzy, Kilted and newer)
BAG_VERSION = 8
#: default header stamp of the first frame made by ``bag make`` (2023-11-14T22:13:20Z),
#: fixed so that the same data always gives the same bag
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000
RATE_MODES = ("max", "step")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pgm", ".ppm")
NS = 1_000_000_000
LOOPBACK_ENV = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_LOCALHOST_ONLY": "1"}
MAX_DOMAIN_ID = 101


class BagError(ValueError):
    """A bag, a topic or a dataset that cannot be used; the message names it."""


def stamp_ns(sec: int, nanosec: int) -> int:
    """Integer nanoseconds of a ROS stamp."""
    return int(sec) * NS + int(nanosec)


def split_stamp(ns: int) -> Tuple[int, int]:
    """(sec, nanosec) of integer nanoseconds (nanosec in [0, 1e9))."""
    sec, nanosec = divmod(int(ns), NS)
    return int(sec), int(nanosec)


def format_stamp(ns: int) -> str:
    sec, nanosec = split_stamp(ns)
    return f"{sec}.{nanosec:09d}"


# --------------------------------------------------------------------------------------
# rosbags access


_STORE: Any = None


def typestore():
    """The rosbags type store used for every bag (ROS 2 Kilted definitions, else the
    library's latest; sensor_msgs/Image is the same in every ROS 2 distribution)."""
    global _STORE
    if _STORE is None:
        try:
            from rosbags.typesys import Stores, get_typestore
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError(
                f"bag files need the 'rosbags' package (pip install rosbags; see requirements.txt): {exc}"
            ) from exc
        _STORE = get_typestore(getattr(Stores, "ROS2_KILTED", Stores.LATEST))
    return _STORE


def _storage_plugin(storage: str):
    from rosbags.rosbag2 import StoragePlugin

    if storage not in STORAGES:
        raise BagError(f"storage must be one of {', '.join(STORAGES)}; got {storage!r}")
    return StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3


def open_writer(path, storage: str = "mcap"):
    """An opened rosbags Writer for a new bag directory ``path`` (BagError if it exists)."""
    from rosbags.rosbag2 import Writer

    path = Path(path)
    if path.exists():
        raise BagError(f"{path} exists already; rosbag2 bags are never overwritten (choose another --out)")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = Writer(path, version=BAG_VERSION, storage_plugin=_storage_plugin(storage))
    writer.open()
    return writer


def _open_reader(path):
    """An opened rosbags Reader; BagError naming the path when it is not a rosbag2."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if path.is_file() and (path.parent / "metadata.yaml").is_file():
        path = path.parent  # a storage file inside a bag directory
    if not path.exists():
        raise BagError(f"bag {path}: no such file or directory")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises its own ReaderError, KeyError, OSError, ...
        raise BagError(f"bag {path}: cannot open it as a rosbag2 (a directory with metadata.yaml): {exc}") from exc
    return reader


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag: message type (``sensor_msgs/msg/Image``) and message count."""

    msgtype: str
    count: int


def bag_topics(path) -> Dict[str, TopicInfo]:
    """The topics of a bag: ``{name: TopicInfo(msgtype, count)}``, sorted by name."""
    reader = _open_reader(path)
    try:
        topics: Dict[str, TopicInfo] = {}
        for conn in reader.connections:
            old = topics.get(conn.topic)
            count = int(conn.msgcount) + (old.count if old else 0)
            topics[conn.topic] = TopicInfo(conn.msgtype, count)
        return dict(sorted(topics.items()))
    finally:
        reader.close()


def describe_topics(topics: Dict[str, TopicInfo]) -> str:
    """Human list of a bag's topics, one per line: ``name (type, N messages)``."""
    if not topics:
        return "  (the bag has no topics)"
    width = max(len(name) for name in topics)
    return "\n".join(f"  {name:<{width}}  {info.msgtype}, {info.count} message(s)" for name, info in topics.items())


def choose_image_topic(topics: Dict[str, TopicInfo], topic: Optional[str] = None,
                       truth_topic: str = GROUND_TRUTH_TOPIC, bag: Any = "the bag") -> str:
    """The image topic to replay.

    ``topic`` given: it must exist and carry sensor_msgs/msg/Image (BagError naming it
    and listing the bag's topics otherwise). ``topic`` None: the one Image topic other
    than ``truth_topic`` (BagError when there are none or several).
    """
    listing = f"topics in {bag}:\n{describe_topics(topics)}"
    if topic is not None:
        if topic not in topics:
            near = [t for t in topics if t.rstrip("/").split("/")[-1] == topic.rstrip("/").split("/")[-1]]
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise BagError(f"topic {topic!r} is not in {bag}{hint}; {listing}")
        if topics[topic].msgtype != IMAGE_TYPE:
            raise BagError(
                f"topic {topic!r} in {bag} carries {topics[topic].msgtype}, not {IMAGE_TYPE} "
                f"(compressed images are not supported); {listing}"
            )
        return topic
    images = [t for t, info in topics.items() if info.msgtype == IMAGE_TYPE and t != truth_topic]
    if len(images) == 1:
        return images[0]
    if not images:
        raise BagError(f"{bag} has no {IMAGE_TYPE} topic to replay; {listing}")
    raise BagError(f"{bag} has several image topics ({', '.join(images)}); choose one with --topic; {listing}")


# --------------------------------------------------------------------------------------
# Image messages


def encoding_for(image: np.ndarray) -> str:
    """The sensor_msgs/Image encoding of an array as this module writes it.

    H x W uint8 -> mono8, H x W uint16 -> mono16, H x W x 3 uint8 -> bgr8 (channels in
    B, G, R order, as OpenCV reads files). Anything else: BagError.
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2 and arr.dtype == np.uint8:
        return "mono8"
    if arr.ndim == 2 and arr.dtype == np.uint16:
        return "mono16"
    if arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8:
        return "bgr8"
    raise BagError(
        f"cannot store an image of shape {arr.shape} and dtype {arr.dtype}: expected H x W uint8 (mono8), "
        "H x W uint16 (mono16) or H x W x 3 uint8 (bgr8)"
    )


def image_message(image: np.ndarray, stamp: int, frame_id: str = DEFAULT_FRAME_ID,
                  encoding: Optional[str] = None):
    """A rosbags ``sensor_msgs/msg/Image`` of ``image`` (little endian, unpadded rows)."""
    store = typestore()
    enc = encoding or encoding_for(image)
    try:
        height, width, step, data = array_to_image_fields(image, enc)
    except FrameError as exc:
        raise BagError(str(exc)) from exc
    sec, nanosec = split_stamp(stamp)
    header = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=str(frame_id))
    return store.types[IMAGE_TYPE](header=header, height=height, width=width, encoding=enc, is_bigendian=0,
                                   step=step, data=np.frombuffer(data, dtype=np.uint8))


def serialize(msg, msgtype: str = IMAGE_TYPE) -> bytes:
    """CDR bytes of a rosbags message (what rosbag2 stores and DDS carries)."""
    return bytes(typestore().serialize_cdr(msg, msgtype))


def cdr_stamp(raw: bytes) -> int:
    """Header stamp (ns) of a serialized message that starts with a std_msgs/Header
    (sensor_msgs/Image does), read straight from the CDR bytes."""
    if len(raw) < 12:
        raise BagError(f"serialized message of {len(raw)} bytes is too short to hold a header")
    endian = "<" if raw[1] == 1 else ">"
    sec, nanosec = struct.unpack_from(endian + "iI", raw, 4)
    return stamp_ns(sec, nanosec)


def cdr_with_stamp(raw: bytes, stamp: int) -> bytes:
    """A copy of serialized ``raw`` (starting with a Header) with its stamp replaced."""
    buf = bytearray(raw)
    endian = "<" if buf[1] == 1 else ">"
    sec, nanosec = split_stamp(stamp)
    struct.pack_into(endian + "iI", buf, 4, sec, nanosec)
    return bytes(buf)


def message_to_array(msg) -> Tuple[np.ndarray, str]:
    """A (rosbags or rclpy) Image message -> (array, channel order), validated
    (:func:`satsam_ros.imaging.image_fields_to_array`; FrameError naming the field)."""
    data = msg.data
    if isinstance(data, np.ndarray):
        data = data.tobytes()
    return image_fields_to_array(msg.encoding, msg.height, msg.width, msg.step, bytes(data), bool(msg.is_bigendian))


# --------------------------------------------------------------------------------------
# Writing bags


@dataclass
class BagFrame:
    """One frame of a bag.

    ``image``: H x W uint8 / uint16 or H x W x 3 uint8 (BGR), stored as ``encoding``
    (default from :func:`encoding_for`). ``stamp``: header stamp in ns; ``log_time``:
    the bag's receive time in ns (default: the stamp). ``truth``: H x W ground-truth
    mask (nonzero = satellite; all zero = no satellite), or None when unknown.
    """

    image: np.ndarray
    stamp: int
    frame_id: str = DEFAULT_FRAME_ID
    truth: Optional[np.ndarray] = None
    encoding: Optional[str] = None
    log_time: Optional[int] = None


@dataclass
class BagSummary:
    """What :func:`write_bag` / :func:`make_bag` wrote."""

    path: str
    storage: str
    topic: str
    truth_topic: str
    frames: int
    truth_frames: int  # frames with a ground-truth mask message
    empty_frames: int  # of those, frames without a satellite (all-zero mask)
    first_stamp: Optional[int] = None
    last_stamp: Optional[int] = None
    encodings: Dict[str, int] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def write_bag(path, frames: Iterable[BagFrame], topic: str = DEFAULT_TOPIC, storage: str = "mcap",
              truth_topic: str = GROUND_TRUTH_TOPIC, progress: bool = False,
              total: Optional[int] = None) -> BagSummary:
    """Write ``frames`` to a new rosbag2 directory ``path``.

    Images go to ``topic``; each frame with a ``truth`` also gets a mono8 0/255 mask
    with the same header on ``truth_topic`` (the topic exists only when some frame has
    a truth). Raises BagError when ``path`` exists or a frame cannot be stored; a
    half-written bag is removed.
    """
    from tqdm import tqdm

    _check_topic_name(topic, "topic")
    _check_topic_name(truth_topic, "truth topic")
    if topic == truth_topic:
        raise BagError(f"the image topic and the ground-truth topic must differ; both are {topic!r}")
    store = typestore()
    writer = open_writer(path, storage)
    summary = BagSummary(str(path), storage, topic, truth_topic, 0, 0, 0)
    ok = False
    try:
        image_conn = writer.add_connection(topic, IMAGE_TYPE, typestore=store)
        truth_conn = None
        for i, frame in enumerate(tqdm(frames, total=total, desc="bag make", unit="frame", disable=not progress)):
            where = f"frame {i} (stamp {format_stamp(frame.stamp)})"
            try:
                msg = image_message(frame.image, frame.stamp, frame.frame_id, frame.encoding)
            except BagError as exc:
                raise BagError(f"{where}: {exc}") from exc
            log_time = int(frame.log_time if frame.log_time is not None else frame.stamp)
            if log_time < 0:
                raise BagError(f"{where}: the bag time must be >= 0 ns, got {log_time} (give the frame a log_time)")
            writer.write(image_conn, log_time, serialize(msg))
            summary.frames += 1
            summary.encodings[msg.encoding] = summary.encodings.get(msg.encoding, 0) + 1
            summary.first_stamp = frame.stamp if summary.first_stamp is None else summary.first_stamp
            summary.last_stamp = frame.stamp
            if frame.truth is None:
                continue
            truth = np.asarray(frame.truth)
            if truth.ndim == 3 and truth.shape[2] == 1:
                truth = truth[:, :, 0]
            if truth.shape != (msg.height, msg.width):
                raise BagError(f"{where}: ground-truth mask is {truth.shape}, the image is "
                               f"{(msg.height, msg.width)}")
            mask = np.where(truth > 0, 255, 0).astype(np.uint8)
            if truth_conn is None:
                truth_conn = writer.add_connection(truth_topic, IMAGE_TYPE, typestore=store)
            writer.write(truth_conn, log_time, serialize(image_message(mask, frame.stamp, frame.frame_id, "mono8")))
            summary.truth_frames += 1
            summary.empty_frames += int(not mask.any())
        ok = True
    finally:
        writer.close()
        if not ok:
            shutil.rmtree(path, ignore_errors=True)
    return summary


def _check_topic_name(topic: str, what: str) -> None:
    if not isinstance(topic, str) or not topic.startswith("/") or topic.endswith("/") or " " in topic:
        raise BagError(f"{what} must be an absolute ROS topic name like /camera/image_raw; got {topic!r}")


# --------------------------------------------------------------------------------------
# Datasets -> frames (a small COCO reader: the runtime does not import satsam_training)


@dataclass
class DatasetImage:
    """One image of a dataset directory.

    ``segmentations``: None when the image is unlabelled (a folder of images); an empty
    list for a frame without a satellite; else one COCO segmentation per annotation
    (None where an annotation has only a bbox).
    """

    path: Path
    image_id: Any = None
    width: Optional[int] = None
    height: Optional[int] = None
    segmentations: Optional[List[Any]] = None
    source: str = ""

    def image(self) -> np.ndarray:
        """The image as stored by OpenCV: H x W uint8/uint16 or H x W x 3 uint8 BGR
        (alpha dropped). BagError naming the file when unreadable or of another size."""
        import cv2

        img = cv2.imread(str(self.path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise BagError(f"{self.source or self.path}: cannot read image {self.path}")
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[:, :, :3]
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if self.width is not None and (img.shape[0], img.shape[1]) != (self.height, self.width):
            raise BagError(f"{self.source}: image id {self.image_id} ({self.path}) is {img.shape[1]} x "
                           f"{img.shape[0]} pixels but the labels say {self.width} x {self.height}")
        return np.ascontiguousarray(img)

    def truth(self, height: int, width: int) -> Optional[np.ndarray]:
        """H x W uint8 0/255 union of the annotations; zeros when there are none; None
        when unlabelled or when an annotation has no segmentation (truth unknown)."""
        if self.segmentations is None or any(s is None for s in self.segmentations):
            return None
        out = np.zeros((height, width), np.uint8)
        for i, seg in enumerate(self.segmentations):
            try:
                out |= decode_segmentation(seg, height, width)
            except (ValueError, TypeError, KeyError) as exc:
                raise BagError(f"{self.source}: image id {self.image_id}, annotation {i}: segmentation: {exc}") \
                    from exc
        return out * np.uint8(255)


def decode_segmentation(seg: Any, height: int, width: int) -> np.ndarray:
    """A COCO segmentation -> H x W uint8 0/1 (pycocotools).

    Accepts compressed RLE (``counts`` a string), uncompressed RLE (``counts`` a list)
    and polygons (a list of ``[x0, y0, x1, y1, ...]``). ValueError when the RLE size is
    not ``[height, width]`` or the structure is none of these.
    """
    from pycocotools import mask as mask_utils

    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            raise ValueError("RLE segmentation needs 'size' and 'counts'")
        if [int(v) for v in seg["size"]] != [int(height), int(width)]:
            raise ValueError(f"RLE size {seg['size']} does not match the image's [height, width] = "
                             f"[{height}, {width}]")
        counts = seg["counts"]
        if isinstance(counts, list):
            if sum(int(c) for c in counts) != height * width:
                raise ValueError(f"uncompressed RLE counts sum to {sum(int(c) for c in counts)}, "
                                 f"expected {height * width}")
            rle = mask_utils.frPyObjects(seg, height, width)
        elif isinstance(counts, (str, bytes)):
            rle = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        else:
            raise ValueError(f"RLE counts must be a string or a list, got {type(counts).__name__}")
    elif isinstance(seg, list) and seg:
        polys = []
        for i, poly in enumerate(seg):
            if not isinstance(poly, (list, tuple)) or len(poly) < 6 or len(poly) % 2:
                raise ValueError(f"polygon {i} must be a flat list [x0, y0, x1, y1, ...] of at least 3 points")
            polys.append([float(v) for v in poly])
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    else:
        raise ValueError(f"segmentation must be an RLE dict or a list of polygons, got {seg!r:.60}")
    return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)


def _category(data: Dict[str, Any], where: str, name: str = "satellite") -> Optional[Any]:
    cats = data.get("categories") or []
    if not cats:
        return None
    named = [c.get("id") for c in cats if isinstance(c, dict) and c.get("name") == name]
    if named:
        return named[0]
    if len(cats) == 1 and isinstance(cats[0], dict):
        return cats[0].get("id")
    raise BagError(f"{where}: no category named {name!r} among {', '.join(repr(c.get('name')) for c in cats)}")


def read_coco(json_path) -> List[DatasetImage]:
    """The images of a COCO JSON (file_name relative to its directory), sorted by id,
    with the segmentations of the ``satellite`` category (or of the only category).

    Frames without annotations are empty frames; an annotation without a (non-empty)
    ``segmentation`` leaves that frame's truth unknown. BagError names the file and
    entry for anything malformed.
    """
    path = Path(json_path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BagError(f"{path}: cannot read COCO JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise BagError(f"{path}: not a COCO file (no 'images' list)")
    cat = _category(data, str(path))
    root = path.parent
    images: Dict[Any, DatasetImage] = {}
    for i, entry in enumerate(data["images"]):
        if not isinstance(entry, dict) or any(k not in entry for k in ("id", "file_name", "width", "height")):
            raise BagError(f"{path}: images[{i}] needs id, file_name, width and height")
        if entry["id"] in images:
            raise BagError(f"{path}: images[{i}]: duplicate image id {entry['id']}")
        images[entry["id"]] = DatasetImage(root / str(entry["file_name"]), entry["id"], int(entry["width"]),
                                           int(entry["height"]), [], str(path))
    for i, ann in enumerate(data.get("annotations") or []):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise BagError(f"{path}: annotations[{i}] needs an image_id")
        if cat is not None and ann.get("category_id") != cat:
            continue
        target = images.get(ann["image_id"])
        if target is None:
            raise BagError(f"{path}: annotations[{i}]: image_id {ann['image_id']!r} is not in 'images'")
        seg = ann.get("segmentation")
        target.segmentations.append(seg if seg else None)
    return [images[k] for k in sorted(images, key=lambda k: (str(type(k)), k))]


def dataset_images(data, split: str = "test") -> Tuple[List[DatasetImage], str]:
    """The images of ``data`` and a description of where they came from.

    ``data`` is a COCO dataset directory (``DATA/<split>.json``), a COCO JSON file, or
    a directory of image files (sorted by name, no labels). BagError otherwise.
    """
    data = Path(data)
    if data.is_file() and data.suffix == ".json":
        return read_coco(data), f"COCO {data}"
    if not data.is_dir():
        raise BagError(f"{data}: no such dataset directory, COCO JSON or image folder")
    coco = data / f"{split}.json"
    if coco.is_file():
        return read_coco(coco), f"COCO {coco}"
    files = sorted(p for p in data.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if files:
        return [DatasetImage(p, i, source=str(p)) for i, p in enumerate(files)], f"image folder {data}"
    splits = sorted(p.stem for p in data.glob("*.json"))
    have = f" (it has {', '.join(splits)}.json: choose one with --split)" if splits else ""
    raise BagError(f"{data}: neither a COCO split {coco.name} nor image files ({', '.join(IMAGE_SUFFIXES)}){have}")


def make_bag(data, out, storage: str = "mcap", rate: float = 10.0, topic: str = DEFAULT_TOPIC,
             split: str = "test", frame_id: str = DEFAULT_FRAME_ID, start: int = DEFAULT_START_NS,
             truth_topic: str = GROUND_TRUTH_TOPIC, progress: bool = True) -> BagSummary:
    """A dataset (see :func:`dataset_images`) -> a rosbag2 at ``out``.

    Frame i gets header stamp (and bag time) ``start + round(i * 1e9 / rate)`` ns and
    ``frame_id``; labelled frames get their ground-truth mask on ``truth_topic``.
    """
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
        raise BagError(f"rate must be a positive number of frames per second; got {rate!r}")
    images, source = dataset_images(data, split)
    if not images:
        raise BagError(f"{source}: no images")
    unknown = [0]

    def frames() -> Iterator[BagFrame]:
        for i, item in enumerate(images):
            img = item.image()
            truth = item.truth(img.shape[0], img.shape[1])
            if truth is None and item.segmentations is not None:
                unknown[0] += 1
            yield BagFrame(img, int(start) + int(round(i * NS / float(rate))), frame_id, truth)

    summary = write_bag(out, frames(), topic, storage, truth_topic, progress=progress, total=len(images))
    summary.notes.append(f"from {source}, {rate:g} frames/s")
    if unknown[0]:
        summary.notes.append(f"{unknown[0]} labelled frame(s) have a bbox but no segmentation: no ground-truth "
                             "mask was written for them (they are replayed but not scored)")
    return summary


def make_synthetic_bag(out, count: int = 12, seed: int = 0, rate: float = 10.0, storage: str = "mcap",
                       topic: str = DEFAULT_TOPIC, empty_every: int = 4, progress: bool = False) -> BagSummary:
    """A bag of ``count`` 512 x 641 mono8 frames from :func:`satsam_ros.synthetic.synthetic_frame`
    (seeds ``seed``, ``seed + 1``, ...) with their ground-truth masks, ``rate`` frames/s;
    every ``empty_every``-th frame (the 4th, 8th, ...) has no satellite. For demos and
    quick checks; the same arguments always give the same frames and stamps."""
    from ...core.synthetic import synthetic_frame

    if int(count) < 1:
        raise BagError(f"count must be >= 1 frame; got {count}")
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
        raise BagError(f"rate must be a positive number of frames per second; got {rate!r}")

    def frames() -> Iterator[BagFrame]:
        for i in range(int(count)):
            empty = empty_every > 0 and (i + 1) % int(empty_every) == 0
            image, truth = synthetic_frame(int(seed) + i, with_satellite=not empty)
            yield BagFrame(image, DEFAULT_START_NS + int(round(i * NS / float(rate))), DEFAULT_FRAME_ID, truth)

    summary = write_bag(out, frames(), topic, storage, progress=progress, total=int(count))
    summary.notes.append(f"synthetic frames, seeds {seed}..{int(seed) + int(count) - 1}, {rate:g} frames/s")
    return summary


# --------------------------------------------------------------------------------------
# Reading bags


@dataclass
class BagImage:
    """One image message of a bag: ``index`` (order on its topic), header ``stamp`` and
    bag ``log_time`` (ns), ``frame_id``, ``encoding`` and the serialized CDR ``raw``."""

    index: int
    stamp: int
    log_time: int
    raw: bytes
    frame_id: str = ""
    encoding: str = ""
    _msg: Any = None

    def message(self):
        if self._msg is None:
            self._msg = typestore().deserialize_cdr(self.raw, IMAGE_TYPE)
        return self._msg

    def array(self) -> Tuple[np.ndarray, str]:
        """(pixels, channel order), validated; FrameError naming the bad field."""
        return message_to_array(self.message())


def iter_raw(path, topic: str) -> Iterator[Tuple[int, int, bytes]]:
    """(index, log_time, CDR bytes) of every message on ``topic``, in bag order."""
    reader = _open_reader(path)
    try:
        conns = [c for c in reader.connections if c.topic == topic]
        for i, (_conn, log_time, raw) in enumerate(reader.messages(connections=conns) if conns else []):
            yield i, int(log_time), bytes(raw)
    finally:
        reader.close()


def read_images(path, topic: str, decode: bool = True) -> Iterator[BagImage]:
    """The Image messages on ``topic`` in bag order (``decode``: fill frame_id and
    encoding; the pixels are decoded on demand by :meth:`BagImage.array`)."""
    for index, log_time, raw in iter_raw(path, topic):
        item = BagImage(index, cdr_stamp(raw), log_time, raw)
        if decode:
            msg = item.message()
            item.frame_id, item.encoding = str(msg.header.frame_id), str(msg.encoding)
        yield item


def read_masks(path, topic: str = GROUND_TRUTH_TOPIC) -> Dict[int, List[np.ndarray]]:
    """Masks on ``topic`` keyed by header stamp (ns) -> list of H x W bool arrays in bag
    order (several when stamps repeat). Empty when the topic is absent. BagError names
    a message that is not a valid one-channel image."""
    out: Dict[int, List[np.ndarray]] = {}
    for item in read_images(path, topic, decode=False):
        try:
            arr, order = item.array()
        except FrameError as exc:
            raise BagError(f"{topic} message {item.index} (stamp {format_stamp(item.stamp)}): {exc}") from exc
        if arr.ndim != 2:
            raise BagError(f"{topic} message {item.index}: a mask must have one channel, got {item.message().encoding}")
        out.setdefault(item.stamp, []).append(arr > 0)
    return out


def read_frames(path, topic: Optional[str] = None, truth_topic: str = GROUND_TRUTH_TOPIC) -> List[BagFrame]:
    """Every frame of ``topic`` (default: the only image topic) with its ground truth
    (matched by stamp; None when absent), as :class:`BagFrame` (image as stored)."""
    topic = choose_image_topic(bag_topics(path), topic, truth_topic, path)
    truths = read_masks(path, truth_topic)
    seen: Dict[int, int] = {}
    frames = []
    for item in read_images(path, topic):
        arr, _order = item.array()
        k = seen.get(item.stamp, 0)
        seen[item.stamp] = k + 1
        cands = truths.get(item.stamp, [])
        truth = (cands[k].astype(np.uint8) * 255) if k < len(cands) else None
        frames.append(BagFrame(np.array(arr), item.stamp, item.frame_id, truth, item.encoding, item.log_time))
    return frames


# --------------------------------------------------------------------------------------
# Replay evaluation: settings, node process


def parse_rate(value: Union[str, float]) -> Union[float, str]:
    """``--rate``: a positive factor on the recorded timing, ``max`` or ``step``."""
    text = str(value).strip().lower()
    if text in RATE_MODES:
        return text
    try:
        rate = float(text)
    except ValueError:
        rate = float("nan")
    if not math.isfinite(rate) or rate <= 0:
        raise BagError(f"rate must be a positive number (1.0 = recorded speed), 'max' or 'step'; got {value!r}")
    return rate


def parse_node_params(items: Optional[Iterable[str]]) -> Dict[str, str]:
    """``NAME:=VALUE`` strings (as ``ros2 run ... -p``) -> {name: value}."""
    out: Dict[str, str] = {}
    for item in items or ():
        name, sep, value = str(item).partition(":=")
        if not sep or not name.strip() or not value.strip():
            raise BagError(f"node parameter must look like NAME:=VALUE (e.g. extra_latency_ms:=200); got {item!r}")
        out[name.strip()] = value.strip()
    return out


@dataclass
class EvalOptions:
    """Settings of :func:`run_bag_eval` (the ``satsam bag eval`` options).

    Node settings left None take the node's own defaults. ``rate``: a factor on the
    recorded timing (2.0 = twice as fast), ``"max"`` (flood: every frame published
    back to back without waiting; the node keeps only the newest waiting frame, so
    a slow node drops frames) or ``"step"`` (lock-step: the next frame is sent as soon
    as the previous one was answered, or after ``timeout`` seconds without answer).
    """

    topic: Optional[str] = None
    truth_topic: str = GROUND_TRUTH_TOPIC
    size: Optional[int] = 512
    model: Optional[str] = None
    backend: Optional[str] = None
    device: Optional[str] = None
    mode: Optional[str] = None
    threshold: Optional[float] = None
    rate: Union[float, str] = 1.0
    attach: bool = False
    namespace: str = DEFAULT_NAMESPACE
    input_topic: Optional[str] = None  # where frames are published (default: the bag's topic)
    timeout: float = 30.0
    startup_timeout: float = 180.0
    warmup: int = 1
    node_params: Dict[str, str] = field(default_factory=dict)
    node_exe: Optional[str] = None
    restamp: bool = False
    storage: str = "mcap"
    examples: int = 6
    progress: bool = True
    domain_id: Optional[int] = None

    def validate(self) -> EvalOptions:
        self.rate = parse_rate(self.rate)
        if not self.timeout > 0 or not self.startup_timeout > 0:
            raise BagError(f"timeouts must be positive; got --timeout {self.timeout}, "
                           f"--startup-timeout {self.startup_timeout}")
        if int(self.warmup) < 0:
            raise BagError(f"warmup must be >= 0 frames; got {self.warmup}")
        if self.storage not in STORAGES:
            raise BagError(f"storage must be one of {', '.join(STORAGES)}; got {self.storage!r}")
        if self.threshold is not None and not 0.0 <= float(self.threshold) <= 1.0:
            raise BagError(f"threshold must be in [0, 1]; got {self.threshold}")
        if self.domain_id is not None and not 0 <= int(self.domain_id) <= MAX_DOMAIN_ID:
            raise BagError(f"domain id must be in [0, {MAX_DOMAIN_ID}]; got {self.domain_id}")
        if not self.namespace.startswith("/"):
            self.namespace = "/" + self.namespace
        if self.input_topic is not None:
            _check_topic_name(self.input_topic, "input topic")
        return self

    def node_parameters(self) -> Dict[str, str]:
        """The ``-p`` parameters for a launched node (explicit node_params win)."""
        params: Dict[str, str] = {}
        for name in ("size", "model", "backend", "device", "mode"):
            value = getattr(self, name)
            if value is not None:
                params[name] = str(value)
        if self.threshold is not None:
            params["threshold"] = repr(float(self.threshold))  # always a double literal
        params.update(self.node_params)
        return params


def find_node_executable(explicit: Optional[str] = None) -> Path:
    """The colcon-installed ``detect_node``: ``explicit``, else ``lib/satsam_ros/detect_node``
    under each AMENT_PREFIX_PATH entry, else under this source tree's ``install/``.
    BagError listing the places searched when none exists."""
    if explicit:
        path = Path(explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BagError(f"--node-exe {path}: not an executable file")
        return path
    candidates = [Path(p) / "lib" / "satsam_ros" / "detect_node"
                  for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    repo = Path(__file__).resolve().parents[3]
    candidates += [repo / "install" / "satsam_ros" / "lib" / "satsam_ros" / "detect_node",
                   repo / "install" / "lib" / "satsam_ros" / "detect_node"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    searched = "\n".join(f"  {p}" for p in candidates)
    raise BagError("the detect_node executable was not found; build it (make build, or colcon build) and "
                   "source install/setup.bash, pass --node-exe PATH, or start the node yourself and use "
                   f"--attach. Searched:\n{searched}")


def fresh_domain_id(rng: Optional[random.Random] = None) -> int:
    """A random ROS_DOMAIN_ID in 1..101 other than the current one (0 is left to real systems)."""
    rng = rng or random.SystemRandom()
    current = os.environ.get("ROS_DOMAIN_ID", "")
    return rng.choice([d for d in range(1, MAX_DOMAIN_ID + 1) if str(d) != current])


def node_environment(exe: Path, domain_id: int) -> Dict[str, str]:
    """Environment for a launched node: DDS on loopback, ``domain_id``, the install
    prefix of ``exe`` on AMENT_PREFIX_PATH/PYTHONPATH, this source tree on PYTHONPATH."""
    env = dict(os.environ)
    env.update(LOOPBACK_ENV)
    env["ROS_DOMAIN_ID"] = str(int(domain_id))
    env["PYTHONUNBUFFERED"] = "1"
    exe = Path(os.path.abspath(str(exe)))  # not resolved: a symlink-install script may point into build/
    prefix = exe.parents[2] if len(exe.parents) > 2 else exe.parent
    python_paths = [str(p) for p in sorted((prefix / "lib").glob("python*/site-packages"))]
    python_paths.append(str(Path(__file__).resolve().parents[3]))
    env["PYTHONPATH"] = os.pathsep.join(p for p in python_paths + [env.get("PYTHONPATH", "")] if p)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(p for p in (str(prefix), env.get("AMENT_PREFIX_PATH", "")) if p)
    return env


class NodeLauncher:
    """``detect_node`` in a process of its own; stdout and stderr go to ``log_path``.

    The node runs in ``namespace`` with its ``image`` input remapped to
    ``input_topic`` and ``params`` as ``-p name:=value``.
    """

    def __init__(self, exe: Path, namespace: str, input_topic: str, params: Dict[str, str], env: Dict[str, str],
                 log_path: Path):
        self.args = [str(exe), "--ros-args", "-r", f"__ns:={namespace}", "-r", f"image:={input_topic}"]
        for name, value in params.items():
            self.args += ["-p", f"{name}:={value}"]
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.args, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        """SIGINT and wait (SIGKILL after ``timeout``); the exit status."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            return self.proc.returncode
        finally:
            self._log.close()


# --------------------------------------------------------------------------------------
# Replay evaluation: the DDS side


@dataclass
class Answer:
    """The node's mask for one sent frame: arrival (time.monotonic()), packed bits."""

    arrival: float
    shape: Tuple[int, int]
    bits: np.ndarray  # np.packbits of the mask > 0

    def mask(self) -> np.ndarray:
        """H x W bool."""
        n = self.shape[0] * self.shape[1]
        return np.unpackbits(self.bits, count=n).reshape(self.shape).astype(bool)


NODE_COUNTERS = ("frames_received", "frames_processed", "frames_dropped", "frames_rejected",
                 "processing_errors", "frames_pending")


class Replayer:
    """An rclpy node of its own: publishes frames, records the detector's outputs.

    Outputs (``<ns>/mask``, ``<ns>/detections_json``, ``/diagnostics``) are written to
    the output bag as they arrive (bag time = arrival wall-clock ns); masks whose stamp
    was sent are kept (packed) as answers.
    """

    def __init__(self, input_topic: str, namespace: str, domain_id: Optional[int], writer, loopback: bool):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        self._rclpy = rclpy
        self._image_cls, self._diag_cls = Image, DiagnosticArray
        self.context = rclpy.Context()
        saved = {k: os.environ.get(k) for k in LOOPBACK_ENV}
        if loopback:  # rcl reads the discovery range when the context starts
            os.environ.update(LOOPBACK_ENV)
        try:
            rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.node = rclpy.create_node(f"satsam_bag_eval_{os.getpid()}", context=self.context)
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
        deep = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
        # a reliable writer matches both a best-effort and a reliable reader in the node
        self.publisher = self.node.create_publisher(Image, input_topic, reliable)
        ns = namespace.rstrip("/")
        self.topics = {"mask": f"{ns}/mask", "detections_json": f"{ns}/detections_json", "diagnostics": "/diagnostics"}
        self.writer = writer
        store = typestore()
        self._conns = {
            "mask": writer.add_connection(self.topics["mask"], IMAGE_TYPE, typestore=store),
            "detections_json": writer.add_connection(self.topics["detections_json"], STRING_TYPE, typestore=store),
            "diagnostics": writer.add_connection("/diagnostics", DIAGNOSTICS_TYPE, typestore=store),
        }
        self.cond = threading.Condition()
        self.sent: Dict[int, int] = {}  # stamp -> frame index
        self.warm_stamps: Dict[int, Optional[float]] = {}  # stamp -> arrival of its mask
        self.answers: Dict[int, Answer] = {}
        self.boxes: Dict[int, int] = {}  # frame index -> number of boxes in detections_json
        self.unmatched = 0
        self.duplicates = 0
        self.last_arrival = 0.0
        self.diagnostics: List[Tuple[float, Dict[str, str]]] = []  # (monotonic, node status values)
        self.record = False  # write diagnostics to the bag (after warm-up)
        self.errors: List[str] = []
        self.subs = [
            self.node.create_subscription(Image, self.topics["mask"], self._on_mask, deep, raw=True),
            self.node.create_subscription(String, self.topics["detections_json"], self._on_json, deep, raw=True),
            self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, deep, raw=True),
        ]
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._running = True
        self._thread = threading.Thread(target=self._spin, name="satsam-bag-eval-spin", daemon=True)
        self._thread.start()

    @property
    def input_topic(self) -> str:
        """The fully resolved topic frames are published on."""
        return self.publisher.topic_name

    def _spin(self) -> None:
        while self._running and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception as exc:  # noqa: BLE001 - reported, never silently lost
                if self._running:
                    self.errors.append(f"{type(exc).__name__}: {exc}")

    # ---- callbacks (executor thread) ----------------------------------------------
    def _on_mask(self, raw: bytes) -> None:
        arrival = time.monotonic()
        wall = time.time_ns()
        stamp = cdr_stamp(raw)
        with self.cond:
            if stamp in self.warm_stamps:
                if self.warm_stamps[stamp] is None:
                    self.warm_stamps[stamp] = arrival
                self.cond.notify_all()
                return
            index = self.sent.get(stamp)
            if index is None:
                self.unmatched += 1
                return
            if index in self.answers:
                self.duplicates += 1
                return
        from rclpy.serialization import deserialize_message

        msg = deserialize_message(raw, self._image_cls)
        try:
            arr, _order = message_to_array(msg)
        except FrameError as exc:
            self.errors.append(f"mask of stamp {format_stamp(stamp)} is not a valid image: {exc}")
            return
        if arr.ndim != 2:
            self.errors.append(f"mask of stamp {format_stamp(stamp)} has encoding {msg.encoding}, not mono8")
            return
        answer = Answer(arrival, (int(arr.shape[0]), int(arr.shape[1])), np.packbits(arr > 0))
        self.writer.write(self._conns["mask"], wall, raw)
        with self.cond:
            self.answers[index] = answer
            self.last_arrival = max(self.last_arrival, arrival)
            self.cond.notify_all()

    def _on_json(self, raw: bytes) -> None:
        wall = time.time_ns()
        from rclpy.serialization import deserialize_message
        from std_msgs.msg import String

        text = deserialize_message(raw, String).data
        try:
            doc = json.loads(text)
            stamp = stamp_ns(doc["stamp"]["sec"], doc["stamp"]["nanosec"])
            n_boxes = len(doc.get("boxes", []))
        except (ValueError, KeyError, TypeError) as exc:
            self.errors.append(f"unreadable detections_json: {exc}")
            return
        with self.cond:
            index = self.sent.get(stamp)
            if index is None:
                return
            self.boxes[index] = n_boxes
        self.writer.write(self._conns["detections_json"], wall, raw)

    def _on_diag(self, raw: bytes) -> None:
        arrival = time.monotonic()
        wall = time.time_ns()
        from rclpy.serialization import deserialize_message

        msg = deserialize_message(raw, self._diag_cls)
        topic = self.publisher.topic_name
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if values.get("input_topic") == topic and all(k in values for k in NODE_COUNTERS):
                with self.cond:
                    self.diagnostics.append((arrival, values))
                    self.cond.notify_all()
        if self.record:
            self.writer.write(self._conns["diagnostics"], wall, raw)

    # ---- main-thread helpers ----------------------------------------------------------
    def wait_ready(self, timeout: float, launcher: Optional[NodeLauncher]) -> None:
        """Wait until the node subscribes to the input and publishes masks (BagError after timeout)."""
        deadline = time.monotonic() + timeout
        mask_sub = self.subs[0]
        while True:
            if launcher is not None and not launcher.alive():
                raise BagError(f"detect_node exited (status {launcher.proc.returncode}) before subscribing to "
                               f"{self.input_topic}; its log ({launcher.log_path}):\n{launcher.log_tail()}")
            if self.publisher.get_subscription_count() > 0 and mask_sub.get_publisher_count() > 0:
                return
            if time.monotonic() > deadline:
                where = (f"the node's log ({launcher.log_path}):\n{launcher.log_tail()}" if launcher else
                         f"is a detect_node running in namespace {self.topics['mask'].rsplit('/', 1)[0] or '/'} "
                         f"with image:={self.input_topic}, on ROS_DOMAIN_ID "
                         f"{os.environ.get('ROS_DOMAIN_ID', '0')}?")
                raise BagError(f"no detector subscribed to {self.input_topic} (with {self.topics['mask']} published)"
                               f" within {timeout:.0f} s; {where}")
            time.sleep(0.05)

    def publish(self, raw: bytes) -> None:
        self.publisher.publish(raw)

    def latest_diag(self, after: float) -> Optional[Dict[str, int]]:
        """Counters of the newest node diagnostics received after ``after`` (monotonic)."""
        with self.cond:
            for t, values in reversed(self.diagnostics):
                if t < after:
                    break
                try:
                    return {k: int(values[k]) for k in NODE_COUNTERS}
                except ValueError:
                    return None
        return None

    def settings_from_diag(self) -> Dict[str, str]:
        with self.cond:
            if not self.diagnostics:
                return {}
            values = self.diagnostics[-1][1]
        return {k: values[k] for k in ("model", "backend", "device", "size", "mode", "threshold") if k in values}

    def close(self) -> None:
        self._running = False
        self._thread.join(5)
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


# --------------------------------------------------------------------------------------
# Replay evaluation: the run


def _idle(counters: Dict[str, int], base: Dict[str, int]) -> bool:
    """The node has nothing received that is not yet processed, dropped or rejected."""
    d = {k: counters[k] - base[k] for k in NODE_COUNTERS if k != "frames_pending"}
    done = d["frames_processed"] + d["frames_dropped"] + d["frames_rejected"] + d["processing_errors"]
    return counters["frames_pending"] == 0 and d["frames_received"] == done


def _warm_up(rep: Replayer, first_raw: bytes, count: int, timeout: float, taken: set,
             launcher: Optional[NodeLauncher]) -> float:
    """Send ``count`` frames with stamps of their own until each is answered; returns
    the monotonic time of the last answer (BagError if the node never answers)."""
    last = time.monotonic()
    stamp = 1  # 0.000000001 s onwards; never one of the bag's stamps
    for _ in range(count):
        for _attempt in range(3):
            while stamp in taken:
                stamp += 1
            with rep.cond:
                rep.warm_stamps[stamp] = None
            rep.publish(cdr_with_stamp(first_raw, stamp))
            deadline = time.monotonic() + timeout
            with rep.cond:
                while rep.warm_stamps[stamp] is None and time.monotonic() < deadline:
                    if launcher is not None and not launcher.alive():
                        break
                    rep.cond.wait(0.1)
                answered = rep.warm_stamps[stamp]
            stamp += 1
            if answered is not None:
                last = answered
                break
            if launcher is not None and not launcher.alive():
                raise BagError(f"detect_node exited (status {launcher.proc.returncode}) during warm-up; its log "
                               f"({launcher.log_path}):\n{launcher.log_tail()}")
        else:
            raise BagError(f"the node did not answer a warm-up frame on {rep.input_topic} in 3 attempts of "
                           f"{timeout:.0f} s (raise --timeout for a slow model; if the bag's frames are not valid "
                           "images the node rejects them: see its log)")
    return last


def _first_valid_frame(bag: Path, topic: str) -> bytes:
    """CDR bytes of the first frame on ``topic`` that passes the node's image checks
    (the warm-up frame); the first frame when none does."""
    first = None
    for item in read_images(bag, topic, decode=False):
        first = item.raw if first is None else first
        try:
            item.array()
        except FrameError:
            continue
        return item.raw
    return first


def _wait_baseline(rep: Replayer, after: float, limit: float = 3.0) -> Optional[Dict[str, int]]:
    """Counters of an idle node from diagnostics received after ``after``; None if none come."""
    deadline = time.monotonic() + limit
    zero = dict.fromkeys(NODE_COUNTERS, 0)
    while time.monotonic() < deadline:
        counters = rep.latest_diag(after)
        if counters is not None and counters["frames_pending"] == 0:
            # idle against itself: received == processed + dropped + rejected + errors
            if _idle(counters, zero):
                return counters
        time.sleep(0.05)
    return None


def run_bag_eval(bag, out, options: Optional[EvalOptions] = None, log: Optional[Callable[[str], None]] = None,
                 **overrides) -> Dict[str, Any]:
    """Replay ``bag`` through the detector node and write a report to ``out``.

    ``options`` (or keyword overrides of its fields) as :class:`EvalOptions`.
    Returns the summary dict (also ``out/metrics.json``). Files written in ``out``:

    * ``report.md``: the summary table, the drop breakdown, the metrics, the figures;
    * ``metrics.json``: the summary (counts, latency, throughput, accuracy);
    * ``per_frame.csv``: one row per sent frame (stamp, send time, latency, IoU, ...);
    * ``latency_histogram.png``, ``latency_over_time.png``, ``examples.png``;
    * ``outputs/``: a rosbag2 of the node's outputs (mask, detections_json, diagnostics);
    * ``node.log``: the launched node's output (not with ``attach``).

    Raises BagError (topic missing, node not starting, ...) with a message naming it.
    """
    from tqdm import tqdm

    opts = options or EvalOptions()
    for key, value in overrides.items():
        if not hasattr(opts, key):
            raise TypeError(f"unknown bag eval option {key!r}")
        setattr(opts, key, value)
    opts.validate()
    say = log or (lambda _text: None)
    bag = Path(bag)
    out = Path(out)

    topics = bag_topics(bag)
    topic = choose_image_topic(topics, opts.topic, opts.truth_topic, bag)
    if opts.truth_topic in topics and topics[opts.truth_topic].msgtype != IMAGE_TYPE:
        raise BagError(f"ground-truth topic {opts.truth_topic!r} carries {topics[opts.truth_topic].msgtype}, "
                       f"not {IMAGE_TYPE}; topics in {bag}:\n{describe_topics(topics)}")
    has_truth = opts.truth_topic in topics and topics[opts.truth_topic].count > 0
    say(f"bag {bag}:\n{describe_topics(topics)}")
    say(f"replaying {topic} ({topics[topic].count} frames); ground truth: "
        f"{opts.truth_topic if has_truth else 'none (timing figures only)'}")

    # stamps and timing first (no pixels): duplicates decide whether matching works
    index: List[Tuple[int, int]] = [(cdr_stamp(raw), log_time) for _i, log_time, raw in iter_raw(bag, topic)]
    if not index:
        raise BagError(f"topic {topic!r} in {bag} has no messages")
    stamps = [s for s, _ in index]
    if len(set(stamps)) != len(stamps) and not opts.restamp:
        dup = len(stamps) - len(set(stamps))
        raise BagError(f"{dup} frame(s) on {topic} repeat another frame's header stamp, so outputs cannot be "
                       "matched to inputs by stamp; re-run with --restamp (frames are then sent with unique stamps)")
    send_stamps = stamps
    if opts.restamp:  # unique stamps: the bag time, nudged by 1 ns on collisions
        send_stamps, used = [], set()
        for _stamp, log_time in index:
            s = log_time
            while s in used:
                s += 1
            used.add(s)
            send_stamps.append(s)

    out.mkdir(parents=True, exist_ok=True)
    out_bag = out / "outputs"
    if out_bag.exists():
        if not (out_bag / "metadata.yaml").is_file():
            raise BagError(f"{out_bag} exists and is not a bag from an earlier run; move it away")
        shutil.rmtree(out_bag)
    writer = open_writer(out_bag, opts.storage)

    launcher = None
    rep = None
    input_topic = opts.input_topic or topic
    domain = None
    try:
        if opts.attach:
            domain = opts.domain_id
        else:
            exe = find_node_executable(opts.node_exe)
            domain = opts.domain_id if opts.domain_id is not None else fresh_domain_id()
            params = opts.node_parameters()
            say(f"starting {exe} on ROS_DOMAIN_ID {domain} (loopback), namespace {opts.namespace}, "
                f"image:={input_topic}, " + " ".join(f"{k}:={v}" for k, v in params.items()))
            launcher = NodeLauncher(exe, opts.namespace, input_topic, params, node_environment(exe, domain),
                                    out / "node.log")
        rep = Replayer(input_topic, opts.namespace, domain, writer, loopback=not opts.attach)
        t_ready = time.monotonic()
        rep.wait_ready(opts.startup_timeout, launcher)
        say(f"node ready after {time.monotonic() - t_ready:.1f} s")
        first_raw = _first_valid_frame(bag, topic)
        warm_end = time.monotonic()
        if opts.warmup:
            warm_end = _warm_up(rep, first_raw, int(opts.warmup), max(opts.timeout, 10.0), set(send_stamps),
                                launcher)
        baseline = _wait_baseline(rep, warm_end + 0.05)
        rep.record = True

        # ---- replay -------------------------------------------------------------------
        sends: List[Optional[float]] = [None] * len(index)
        log0 = index[0][1]
        t0 = time.monotonic()
        bar = tqdm(total=len(index), desc="bag eval", unit="frame", disable=not opts.progress)
        try:
            for i, log_time, raw in iter_raw(bag, topic):
                if isinstance(opts.rate, float):
                    delay = t0 + (log_time - log0) / NS / opts.rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                elif opts.rate == "step" and i > 0:
                    deadline = sends[i - 1] + opts.timeout
                    with rep.cond:
                        while (i - 1) not in rep.answers and time.monotonic() < deadline:
                            rep.cond.wait(min(0.1, max(deadline - time.monotonic(), 0.001)))
                if launcher is not None and not launcher.alive():
                    raise BagError(f"detect_node exited (status {launcher.proc.returncode}) during the replay; "
                                   f"its log ({launcher.log_path}):\n{launcher.log_tail()}")
                payload = cdr_with_stamp(raw, send_stamps[i]) if opts.restamp else raw
                with rep.cond:
                    rep.sent[send_stamps[i]] = i
                sends[i] = time.monotonic()
                rep.publish(payload)
                bar.update(1)
                if i % 5 == 0:
                    bar.set_postfix(answered=len(rep.answers))
            last_send = time.monotonic()

            # ---- drain: until every frame is answered, or the node is idle, or quiet ------
            while True:
                with rep.cond:
                    answered = len(rep.answers)
                    last_arrival = rep.last_arrival
                    lat = [a.arrival - sends[k] for k, a in rep.answers.items()]
                now = time.monotonic()
                if answered == len(index):
                    break
                counters = rep.latest_diag(last_send + 0.5)
                if (baseline is not None and counters is not None and _idle(counters, baseline)
                        and counters["frames_processed"] - baseline["frames_processed"] <= answered):
                    break
                quiet = min(opts.timeout, max(2.0, 3.0 * max(lat))) if lat else opts.timeout
                if now - max(last_send, last_arrival) > quiet:
                    break
                time.sleep(0.05)
            bar.set_postfix(answered=answered)
        finally:
            bar.close()
        end = time.monotonic()
        final = rep.latest_diag(end) if baseline is not None else None
        deadline = end + 2.5
        while baseline is not None and final is None and time.monotonic() < deadline:
            time.sleep(0.05)
            final = rep.latest_diag(end)
        node_settings = rep.settings_from_diag()
        problems = list(rep.errors)
    finally:
        if rep is not None:
            rep.close()
        writer.close()
        status = launcher.stop() if launcher is not None else None
        if launcher is not None and status not in (0, None, -signal.SIGINT):
            say(f"note: detect_node exited with status {status}; see {launcher.log_path}")

    with rep.cond:
        answers = dict(rep.answers)
        boxes = dict(rep.boxes)
        unmatched, duplicates = rep.unmatched, rep.duplicates

    scored = _score(bag, opts.truth_topic, stamps, answers, sends) if has_truth else None
    summary = _summarise(bag, topic, opts, index, stamps, send_stamps, sends, answers, boxes, baseline, final,
                         unmatched, duplicates, node_settings, problems, scored, input_topic, domain)
    _write_report(out, summary, bag, topic, opts, stamps, send_stamps, sends, answers, boxes,
                  scored[1] if scored is not None else {}, say)
    return summary


# --------------------------------------------------------------------------------------
# Scoring and summary


def _ms_stats(values: Sequence[float]) -> Dict[str, Optional[float]]:
    if not values:
        return dict.fromkeys(("p50", "p95", "p99", "mean", "min", "max"))
    arr = np.asarray(values, dtype=np.float64) * 1000.0
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)),
            "p99": float(np.percentile(arr, 99)), "mean": float(arr.mean()), "min": float(arr.min()),
            "max": float(arr.max())}


def iter_truth(bag, truth_topic: str, stamps: Sequence[int],
               only: Optional[Iterable[int]] = None) -> Iterator[Tuple[int, np.ndarray]]:
    """(frame index, H x W bool ground-truth mask) for the frames whose stamp has a
    mask on ``truth_topic``, streamed in bag order (the k-th mask of a stamp belongs
    to the k-th frame of that stamp). ``only``: just these frame indices."""
    frames_of: Dict[int, List[int]] = {}
    for i, stamp in enumerate(stamps):
        frames_of.setdefault(stamp, []).append(i)
    wanted = None if only is None else set(only)
    used: Dict[int, int] = {}
    for item in read_images(bag, truth_topic, decode=False):
        k = used.get(item.stamp, 0)
        used[item.stamp] = k + 1
        indices = frames_of.get(item.stamp, [])
        if k >= len(indices) or (wanted is not None and indices[k] not in wanted):
            continue
        try:
            arr, _order = item.array()
        except FrameError as exc:
            raise BagError(f"{truth_topic} message {item.index} (stamp {format_stamp(item.stamp)}): {exc}") from exc
        if arr.ndim != 2:
            raise BagError(f"{truth_topic} message {item.index}: a mask must have one channel, got "
                           f"{item.message().encoding}")
        yield indices[k], arr > 0


def _score(bag: Path, truth_topic: str, stamps: Sequence[int], answers: Dict[int, Answer],
           sends: Sequence[Optional[float]]):
    """(MetricAccumulator over the answered frames with a ground-truth mask, records by
    frame index, number of frames with a ground-truth mask)."""
    from ...core.metrics import MetricAccumulator

    acc = MetricAccumulator()
    records: Dict[int, Any] = {}
    with_truth = 0
    for i, truth in iter_truth(bag, truth_topic, stamps):
        with_truth += 1
        answer = answers.get(i)
        if answer is None:
            continue
        pred = answer.mask()
        if pred.shape != truth.shape:
            raise BagError(f"frame {i} (stamp {format_stamp(stamps[i])}): the node's mask is {pred.shape}, "
                           f"the ground truth {truth.shape}")
        records[i] = acc.add(pred, truth, seconds=answer.arrival - sends[i], frame_id=i)
    return acc, records, with_truth


def _summarise(bag, topic, opts: EvalOptions, index, stamps, send_stamps, sends, answers, boxes, baseline, final,
               unmatched, duplicates, node_settings, problems, scored, input_topic, domain) -> Dict[str, Any]:
    sent = sum(1 for s in sends if s is not None)
    answered = len(answers)
    latencies = [answers[i].arrival - sends[i] for i in sorted(answers)]
    first_send = min(s for s in sends if s is not None)
    last_send = max(s for s in sends if s is not None)
    last_arrival = max((a.arrival for a in answers.values()), default=None)
    span = (last_arrival - first_send) if last_arrival is not None else None
    breakdown = None
    counters = None
    if baseline is not None and final is not None:
        counters = {k: final[k] - baseline[k] for k in NODE_COUNTERS if k != "frames_pending"}
        breakdown = {
            "lost_before_node": sent - counters["frames_received"],
            "dropped_in_node": counters["frames_dropped"],
            "rejected_by_node": counters["frames_rejected"],
            "node_errors": counters["processing_errors"],
            "outputs_not_received": counters["frames_processed"] - answered,
            "still_pending": final["frames_pending"],
        }
    summary: Dict[str, Any] = {
        "bag": str(bag),
        "image_topic": topic,
        "input_topic": input_topic,
        "frames_in_bag": len(index),
        "ground_truth": scored is not None,
        "truth_topic": opts.truth_topic if scored is not None else None,
        "rate": opts.rate,
        "attach": bool(opts.attach),
        "ros_domain_id": domain,
        "node": dict(node_settings, namespace=opts.namespace, parameters=opts.node_parameters() if not opts.attach
                     else {}),
        "frames_sent": sent,
        "frames_answered": answered,
        "frames_dropped": sent - answered,
        "dropped_breakdown": breakdown,
        "node_counters": counters,
        "unmatched_outputs": unmatched,
        "duplicate_outputs": duplicates,
        "latency_ms": _ms_stats(latencies),
        "throughput_fps": (answered / span) if span and span > 0 else None,
        "send_rate_hz": ((sent - 1) / (last_send - first_send)) if sent > 1 and last_send > first_send else None,
        "duration_s": span,
        "restamped": bool(opts.restamp),
        "problems": problems,
        "accuracy": None,
        "mean_iou": None,
        "false_alarms": None,
        "false_alarm_rate": None,
        "empty_frames": None,
        "metrics": None,
    }
    if scored is not None:
        acc, _records, with_truth = scored
        metrics = acc.summary()
        metrics["frames_with_truth"] = with_truth
        metrics["unanswered_with_truth"] = with_truth - metrics["frames"]
        summary.update({
            "accuracy": metrics["accuracy"],
            "mean_iou": metrics["mean_iou"],
            "false_alarms": metrics["false_alarms"],
            "false_alarm_rate": metrics["false_alarm_rate"],
            "empty_frames": metrics["empty_frames"],
            "metrics": metrics,
        })
    return summary


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100.0 * value:.1f} %"


def _num(value: Optional[float], fmt: str = ".1f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{unit}"


def summary_table(summary: Dict[str, Any]) -> str:
    """The report's summary as a markdown table (what ``satsam bag eval`` prints)."""
    lat = summary["latency_ms"]
    rows = [
        ("Frames sent / answered / dropped",
         f"{summary['frames_sent']} / {summary['frames_answered']} / {summary['frames_dropped']}"),
    ]
    metrics = summary.get("metrics")
    if metrics is not None:
        rows += [
            ("Accuracy (IoU > 0.5)", f"{_pct(summary['accuracy'])} ({metrics['correct']} of {metrics['frames']} "
                                     "scored frames)"),
            ("Mean IoU (frames with a satellite)", _num(summary["mean_iou"], ".3f")),
            ("False alarms on empty frames",
             f"{summary['false_alarms']} of {summary['empty_frames']} ({_pct(summary['false_alarm_rate'])})"),
        ]
    else:
        rows.append(("Accuracy", "n/a (no ground truth in the bag)"))
    rows += [
        ("Latency p50 / p95 / p99 (send -> mask)",
         f"{_num(lat['p50'])} / {_num(lat['p95'])} / {_num(lat['p99'])} ms"),
        ("Throughput", _num(summary["throughput_fps"], ".2f", " frames/s")),
    ]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    lines = [f"| {'Metric':<{width}} | {'Value':<{vwidth}} |", f"|{'-' * (width + 2)}|{'-' * (vwidth + 2)}|"]
    lines += [f"| {a:<{width}} | {b:<{vwidth}} |" for a, b in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# Report files


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_latency(summary: Dict[str, Any], sends: Sequence[Optional[float]], answers: Dict[int, Answer],
                 hist_path: Path, time_path: Path) -> None:
    """Latency histogram (with p50/p95/p99 lines) and latency over replay time (drops
    marked along the bottom) as PNGs."""
    t0 = min(s for s in sends if s is not None)
    xs = [sends[i] - t0 for i in sorted(answers)]
    ys = [(answers[i].arrival - sends[i]) * 1000.0 for i in sorted(answers)]
    lat = summary["latency_ms"]
    title = f"{summary['image_topic']}, rate {summary['rate']}"

    fig = _figure(7, 4)
    ax = fig.add_subplot(1, 1, 1)
    if ys:
        ax.hist(ys, bins=min(50, max(5, len(ys) // 2)), color="#4878a8")
        for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            ax.axvline(lat[q], color="k", linestyle=style, label=f"{q} {lat[q]:.1f} ms")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no frame was answered", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("end-to-end latency (send -> mask arrival), ms")
    ax.set_ylabel("frames")
    ax.set_title(f"Latency, {len(ys)} answered frames ({title})")
    fig.tight_layout()
    fig.savefig(str(hist_path))

    fig = _figure(8, 4)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(xs, ys, ".-", color="#4878a8", markersize=4, linewidth=0.8, label="answered")
    dropped = [sends[i] - t0 for i in range(len(sends)) if sends[i] is not None and i not in answers]
    if dropped:
        ax.plot(dropped, [0.0] * len(dropped), "x", color="#c03030", clip_on=False,
                label=f"dropped ({len(dropped)})")
    ax.set_xlabel("send time since the first frame, s")
    ax.set_ylabel("latency, ms")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Latency over time ({title})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(str(time_path))


def _pick_examples(records: Dict[int, Any], answered: Sequence[int], count: int) -> List[int]:
    """Up to ``count`` answered frames: hits, misses, correct empty frames and false
    alarms in rotation when scored, else evenly spaced."""
    if count <= 0 or not answered:
        return []
    if records:
        groups = [
            [i for i, r in records.items() if not r.true_empty and r.correct],
            [i for i, r in records.items() if not r.true_empty and not r.correct],
            [i for i, r in records.items() if r.true_empty and r.correct],
            [i for i, r in records.items() if r.true_empty and not r.correct],
        ]
        picked: List[int] = []
        while len(picked) < count and any(groups):
            for group in groups:
                if group and len(picked) < count:
                    picked.append(group.pop(0))
        return sorted(picked)
    pos = np.linspace(0, len(answered) - 1, min(count, len(answered)))
    return sorted({answered[int(round(p))] for p in pos})


def _outline(rgb: np.ndarray, mask: np.ndarray, colour: Tuple[int, int, int]) -> None:
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    thickness = max(1, int(round(max(rgb.shape[:2]) / 300)))
    cv2.drawContours(rgb, contours, -1, colour, thickness)


def plot_examples(bag: Path, topic: str, picks: List[int], answers: Dict[int, Answer],
                  truths: Dict[int, Optional[np.ndarray]], records: Dict[int, Any], path: Path, title: str) -> bool:
    """A strip of example frames: prediction outlined red, ground truth green."""
    if not picks:
        return False
    import cv2

    wanted = set(picks)
    images: Dict[int, np.ndarray] = {}
    for item in read_images(bag, topic, decode=False):
        if item.index in wanted:
            arr, order = item.array()
            images[item.index] = cv2.cvtColor(to_uint8_gray(arr, order), cv2.COLOR_GRAY2RGB)
        if len(images) == len(wanted):
            break
    fig = _figure(3.2 * len(picks), 3.2)
    for n, i in enumerate(picks):
        rgb = images[i]
        truth = truths.get(i)
        if truth is not None:
            _outline(rgb, truth, (40, 220, 40))
        _outline(rgb, answers[i].mask(), (230, 40, 40))
        ax = fig.add_subplot(1, len(picks), n + 1)
        ax.imshow(rgb)
        ax.set_axis_off()
        rec = records.get(i)
        if rec is not None:
            verdict = "correct" if rec.correct else "wrong"
            caption = f"#{i}: {'empty, ' if rec.true_empty else ''}IoU {rec.iou:.2f}, {verdict}"
        else:
            caption = f"#{i}: {int(answers[i].mask().sum())} px detected"
        ax.set_title(caption, fontsize=8)
    fig.suptitle(title + "  (red: prediction, green: ground truth)", fontsize=9)
    fig.tight_layout()
    fig.savefig(str(path))
    return True


def _write_report(out: Path, summary: Dict[str, Any], bag: Path, topic: str, opts: EvalOptions,
                  stamps: Sequence[int], send_stamps: Sequence[int], sends: Sequence[Optional[float]],
                  answers: Dict[int, Answer], boxes: Dict[int, int], records: Dict[int, Any],
                  say: Callable[[str], None]) -> None:
    summary.pop("_per_frame", None)
    files = {"report": "report.md", "metrics": "metrics.json", "per_frame": "per_frame.csv",
             "latency_histogram": "latency_histogram.png", "latency_over_time": "latency_over_time.png",
             "examples": "examples.png", "output_bag": "outputs"}
    if not opts.attach:
        files["node_log"] = "node.log"

    t0 = min(s for s in sends if s is not None)
    with open(out / files["per_frame"], "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "stamp", "bag_stamp", "sent_s", "answered", "latency_ms", "boxes", "scored", "iou",
                    "correct", "true_empty", "pred_empty", "true_area", "pred_area"])
        for i, send in enumerate(sends):
            ans = answers.get(i)
            rec = records.get(i)
            w.writerow([i, format_stamp(send_stamps[i]), format_stamp(stamps[i]),
                        "" if send is None else f"{send - t0:.6f}", int(ans is not None),
                        "" if ans is None else f"{(ans.arrival - send) * 1000.0:.3f}", boxes.get(i, ""),
                        int(rec is not None),
                        *(["", "", "", "", "", ""] if rec is None else
                          [f"{rec.iou:.6f}", int(rec.correct), int(rec.true_empty), int(rec.pred_empty),
                           rec.true_area, rec.pred_area])])

    plot_latency(summary, sends, answers, out / files["latency_histogram"], out / files["latency_over_time"])
    picks = _pick_examples(records, sorted(answers), opts.examples)
    truth_masks: Dict[int, Optional[np.ndarray]] = {}
    if picks and summary["ground_truth"]:
        truth_masks = dict(iter_truth(bag, opts.truth_topic, stamps, only=picks))
    if not plot_examples(bag, topic, picks, answers, truth_masks, records, out / files["examples"],
                         f"{bag.name} {topic}"):
        files.pop("examples")
    summary["files"] = dict(files)
    text = json.dumps(summary, indent=2, default=str) + "\n"
    (out / files["metrics"]).write_text(text)
    (out / files["report"]).write_text(report_markdown(summary, files))
    say(f"wrote {out}/report.md, metrics.json, per_frame.csv, figures and the output bag {out}/outputs")


def report_markdown(summary: Dict[str, Any], files: Dict[str, str]) -> str:
    """The text of ``report.md``."""
    node = summary["node"]
    settings = ", ".join(f"{k} {node[k]}" for k in ("model", "backend", "device", "size", "mode", "threshold")
                         if k in node)
    lines = [
        f"# Bag evaluation: {Path(summary['bag']).name}",
        "",
        f"Bag `{summary['bag']}`, topic `{summary['image_topic']}` ({summary['frames_in_bag']} frames), "
        f"replayed on `{summary['input_topic']}` at rate `{summary['rate']}`"
        + (" (attached to a running node)" if summary["attach"] else
           f" (node started for this run, ROS_DOMAIN_ID {summary['ros_domain_id']})") + ".",
        "",
        f"Node: {settings or 'settings unknown (no diagnostics received)'}.",
        "",
        summary_table(summary),
    ]
    if summary["ground_truth"]:
        m = summary["metrics"]
        lines += [
            f"Accuracy counts the answered frames that have a ground-truth mask ({m['frames']} of "
            f"{m['frames_with_truth']} such frames; {m['unanswered_with_truth']} were not answered). A frame is "
            "correct when IoU > 0.5; an empty frame only when the prediction is empty (`satsam_ros.metrics`, "
            "as in training evaluation).",
            "",
            "| Metric | Value |",
            "|---|---|",
            f"| frames scored | {m['frames']} ({m['nonempty_frames']} with a satellite, {m['empty_frames']} empty) |",
            f"| accuracy | {_pct(m['accuracy'])} |",
            f"| accuracy on frames with a satellite | {_pct(m['accuracy_nonempty'])} |",
            f"| accuracy on empty frames | {_pct(m['accuracy_empty'])} |",
            f"| mean / median IoU (frames with a satellite) | {_num(m['mean_iou'], '.3f')} / "
            f"{_num(m['median_iou'], '.3f')} |",
            f"| false alarms | {m['false_alarms']} ({_pct(m['false_alarm_rate'])} of empty frames) |",
            f"| misses (empty prediction) | {m['misses']} ({_pct(m['miss_rate'])}) |",
            "",
        ]
    else:
        lines += ["The bag has no ground truth: timing figures only.", ""]
    b = summary["dropped_breakdown"]
    if b is not None:
        lines += [
            "Where the dropped frames went (from the node's `/diagnostics` counters):",
            "",
            "| | frames |",
            "|---|---|",
            f"| lost before the node (transport, QoS) | {b['lost_before_node']} |",
            f"| replaced in the node's one-slot queue (newest frame wins) | {b['dropped_in_node']} |",
            f"| rejected by the node (bad frame) | {b['rejected_by_node']} |",
            f"| failed in the node | {b['node_errors']} |",
            f"| processed, but the mask did not arrive here | {b['outputs_not_received']} |",
            "",
        ]
    else:
        lines += ["(The node's diagnostics were not received, so the drops are not broken down.)", ""]
    lat = summary["latency_ms"]
    lines += [
        f"Latency is mask arrival here minus the send time of its frame: mean {_num(lat['mean'])} ms, "
        f"min {_num(lat['min'])} ms, max {_num(lat['max'])} ms. Throughput: answered frames / (last arrival - "
        f"first send) = {_num(summary['throughput_fps'], '.2f')} frames/s; frames were sent at "
        f"{_num(summary['send_rate_hz'], '.2f')} Hz.",
        "",
    ]
    if summary["unmatched_outputs"] or summary["duplicate_outputs"]:
        lines += [f"Outputs with a stamp that was not sent: {summary['unmatched_outputs']}; repeated outputs: "
                  f"{summary['duplicate_outputs']}.", ""]
    if summary["problems"]:
        lines += ["Problems seen:", ""] + [f"- {p}" for p in summary["problems"][:20]] + [""]
    lines += [f"![latency histogram]({files['latency_histogram']})", "",
              f"![latency over time]({files['latency_over_time']})", ""]
    if "examples" in files:
        lines += [f"![examples]({files['examples']})", ""]
    lines += ["Files: " + ", ".join(f"`{v}`" for v in files.values()) + ". The output bag holds the node's "
              "mask, detections_json and diagnostics messages as received (bag time = arrival time).", ""]
    return "\n".join(lines)

