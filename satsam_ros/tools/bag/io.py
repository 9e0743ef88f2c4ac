"""Rosbag2 files: open them, write frames into them, read frames out of them.

Pure Python on top of the ``rosbags`` library (its own ROS 2 type store; no rosbag2
install needed), MCAP or sqlite3 storage. A bag holds ``sensor_msgs/msg/Image`` on an
image topic (mono8 for 8-bit gray, mono16 for 16-bit gray, bgr8 for colour), or
``sensor_msgs/msg/CompressedImage`` (PNG or JPEG, image_transport's ``compressed``
format strings, see :mod:`satsam_ros.core.compressed`) on ``<topic>/compressed``, and, where
the truth is known, the ground-truth mask as a mono8 image (0 = background, 255 =
satellite) on :data:`GROUND_TRUTH_TOPIC` with the same header stamp. A frame with no
satellite has an all-zero mask; a frame whose truth is unknown has no ground-truth
message at all. Stamps are integer nanoseconds (``sec * 1e9 + nanosec``) everywhere.

Making bags from datasets is :mod:`.make`; replaying them through the node is
:mod:`.evaluate`.
"""

from __future__ import annotations

import shutil
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from ...core.compressed import CODECS, DEFAULT_JPEG_QUALITY, DEFAULT_MAX_PIXELS, decode_compressed, encode_compressed
from ...core.imaging import FrameError, array_to_image_fields, image_fields_to_array

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
#: camera message types a bag evaluation replays
CAMERA_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
#: how image_transport names the compressed transport of a base topic
COMPRESSED_SUFFIX = "/compressed"
STRING_TYPE = "std_msgs/msg/String"
DIAGNOSTICS_TYPE = "diagnostic_msgs/msg/DiagnosticArray"
DEFAULT_TOPIC = "/camera/image_raw"
GROUND_TRUTH_TOPIC = "/satsam/ground_truth/mask"
DEFAULT_FRAME_ID = "camera"
STORAGES = ("mcap", "sqlite3")
#: rosbag2 metadata version written (8: read by Iron, Jazzy, Kilted and newer)
BAG_VERSION = 8
#: default header stamp of the first frame made by ``bag make`` (2023-11-14T22:13:20Z),
#: fixed so that the same data always gives the same bag
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000
NS = 1_000_000_000


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

    ``topic`` given: it must exist and carry sensor_msgs/msg/Image or CompressedImage
    (BagError naming it and listing the bag's topics otherwise). ``topic`` None: the one
    such topic other than ``truth_topic`` (BagError when there are none or several).
    """
    listing = f"topics in {bag}:\n{describe_topics(topics)}"
    if topic is not None:
        if topic not in topics:
            near = [t for t in topics if t.rstrip("/").split("/")[-1] == topic.rstrip("/").split("/")[-1]]
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise BagError(f"topic {topic!r} is not in {bag}{hint}; {listing}")
        if topics[topic].msgtype not in CAMERA_TYPES:
            raise BagError(
                f"topic {topic!r} in {bag} carries {topics[topic].msgtype}, not {IMAGE_TYPE} or "
                f"{COMPRESSED_TYPE}; {listing}"
            )
        return topic
    images = [t for t, info in topics.items() if info.msgtype in CAMERA_TYPES and t != truth_topic]
    if len(images) == 1:
        return images[0]
    if not images:
        raise BagError(f"{bag} has no {IMAGE_TYPE} or {COMPRESSED_TYPE} topic to replay; {listing}")
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
    return store.types[IMAGE_TYPE](header=_header(stamp, frame_id), height=height, width=width, encoding=enc,
                                   is_bigendian=0, step=step, data=np.frombuffer(data, dtype=np.uint8))


def compressed_message(image: np.ndarray, stamp: int, codec: str, frame_id: str = DEFAULT_FRAME_ID,
                       encoding: Optional[str] = None, jpeg_quality: int = DEFAULT_JPEG_QUALITY):
    """A rosbags ``sensor_msgs/msg/CompressedImage`` of ``image`` as image_transport's
    compressed publisher writes it (``codec`` "png": lossless, 16-bit kept; "jpeg":
    lossy, 8-bit only). BagError when the image cannot be stored so."""
    store = typestore()
    enc = encoding or encoding_for(image)
    try:
        fmt, data = encode_compressed(image, enc, codec, jpeg_quality=jpeg_quality)
    except ValueError as exc:
        raise BagError(str(exc)) from exc
    return store.types[COMPRESSED_TYPE](header=_header(stamp, frame_id), format=fmt,
                                        data=np.frombuffer(data, dtype=np.uint8))


def _header(stamp: int, frame_id: str):
    store = typestore()
    sec, nanosec = split_stamp(stamp)
    return store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=str(frame_id))


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


def message_to_array(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[np.ndarray, str]:
    """A (rosbags or rclpy) Image or CompressedImage message -> (array, channel order),
    validated as the node validates it (:func:`satsam_ros.core.imaging.image_fields_to_array`,
    :func:`satsam_ros.core.compressed.decode_compressed` with ``max_pixels``; FrameError
    naming the problem)."""
    data = msg.data
    if isinstance(data, np.ndarray):
        data = data.tobytes()
    if hasattr(msg, "format"):
        return decode_compressed(msg.format, data, max_pixels)
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
              total: Optional[int] = None, compress: Optional[str] = None,
              jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> BagSummary:
    """Write ``frames`` to a new rosbag2 directory ``path``.

    Images go to ``topic``: sensor_msgs/Image, or with ``compress`` ("png" or "jpeg")
    sensor_msgs/CompressedImage as image_transport writes it (``topic`` is then usually
    ``<camera>/compressed``). Each frame with a ``truth`` also gets a mono8 0/255 mask
    (always raw: it must stay exact) with the same header on ``truth_topic`` (the topic
    exists only when some frame has a truth). Raises BagError when ``path`` exists or a
    frame cannot be stored; a half-written bag is removed.
    """
    from tqdm import tqdm

    check_topic_name(topic, "topic")
    check_topic_name(truth_topic, "truth topic")
    if topic == truth_topic:
        raise BagError(f"the image topic and the ground-truth topic must differ; both are {topic!r}")
    if compress is not None and compress not in CODECS:
        raise BagError(f"compression must be one of {', '.join(CODECS)}; got {compress!r}")
    store = typestore()
    writer = open_writer(path, storage)
    summary = BagSummary(str(path), storage, topic, truth_topic, 0, 0, 0)
    ok = False
    try:
        msgtype = COMPRESSED_TYPE if compress else IMAGE_TYPE
        image_conn = writer.add_connection(topic, msgtype, typestore=store)
        truth_conn = None
        for i, frame in enumerate(tqdm(frames, total=total, desc="bag make", unit="frame", disable=not progress)):
            where = f"frame {i} (stamp {format_stamp(frame.stamp)})"
            try:
                msg = (compressed_message(frame.image, frame.stamp, compress, frame.frame_id, frame.encoding,
                                          jpeg_quality) if compress else
                       image_message(frame.image, frame.stamp, frame.frame_id, frame.encoding))
            except BagError as exc:
                raise BagError(f"{where}: {exc}") from exc
            log_time = int(frame.log_time if frame.log_time is not None else frame.stamp)
            if log_time < 0:
                raise BagError(f"{where}: the bag time must be >= 0 ns, got {log_time} (give the frame a log_time)")
            writer.write(image_conn, log_time, serialize(msg, msgtype))
            summary.frames += 1
            kind = msg.format if compress else msg.encoding
            summary.encodings[kind] = summary.encodings.get(kind, 0) + 1
            summary.first_stamp = frame.stamp if summary.first_stamp is None else summary.first_stamp
            summary.last_stamp = frame.stamp
            if frame.truth is None:
                continue
            truth = np.asarray(frame.truth)
            if truth.ndim == 3 and truth.shape[2] == 1:
                truth = truth[:, :, 0]
            if truth.shape != np.shape(frame.image)[:2]:
                raise BagError(f"{where}: ground-truth mask is {truth.shape}, the image is "
                               f"{np.shape(frame.image)[:2]}")
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


def check_topic_name(topic: str, what: str) -> None:
    if not isinstance(topic, str) or not topic.startswith("/") or topic.endswith("/") or " " in topic:
        raise BagError(f"{what} must be an absolute ROS topic name like /camera/image_raw; got {topic!r}")


# --------------------------------------------------------------------------------------
# Reading bags


@dataclass
class BagImage:
    """One image message of a bag: ``index`` (order on its topic), header ``stamp`` and
    bag ``log_time`` (ns), ``frame_id``, ``encoding`` (a CompressedImage's ``format``),
    the serialized CDR ``raw`` and its ``msgtype`` (Image or CompressedImage)."""

    index: int
    stamp: int
    log_time: int
    raw: bytes
    frame_id: str = ""
    encoding: str = ""
    msgtype: str = IMAGE_TYPE
    _msg: Any = None

    @property
    def compressed(self) -> bool:
        return self.msgtype == COMPRESSED_TYPE

    def message(self):
        if self._msg is None:
            self._msg = typestore().deserialize_cdr(self.raw, self.msgtype)
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


def topic_type(path, topic: str) -> str:
    """The message type of ``topic`` in a bag (Image when the topic is absent)."""
    info = bag_topics(path).get(topic)
    return info.msgtype if info is not None else IMAGE_TYPE


def read_images(path, topic: str, decode: bool = True) -> Iterator[BagImage]:
    """The Image or CompressedImage messages on ``topic`` in bag order (``decode``: fill
    frame_id and encoding; the pixels are decoded on demand by :meth:`BagImage.array`)."""
    msgtype = topic_type(path, topic)
    for index, log_time, raw in iter_raw(path, topic):
        item = BagImage(index, cdr_stamp(raw), log_time, raw, msgtype=msgtype)
        if decode:
            msg = item.message()
            item.frame_id = str(msg.header.frame_id)
            item.encoding = str(msg.format if item.compressed else msg.encoding)
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
    (matched by stamp; None when absent), as :class:`BagFrame` (image as stored; a
    compressed one decoded, colour in B, G, R order)."""
    topic = choose_image_topic(bag_topics(path), topic, truth_topic, path)
    truths = read_masks(path, truth_topic)
    seen: Dict[int, int] = {}
    frames = []
    for item in read_images(path, topic):
        arr, order = item.array()
        encoding = item.encoding
        if item.compressed:  # decoded: stored again as the array says (B, G, R for colour)
            arr = arr[:, :, 2::-1] if order.startswith("rgb") else (arr[:, :, :3] if arr.ndim == 3 else arr)
            encoding = None
        k = seen.get(item.stamp, 0)
        seen[item.stamp] = k + 1
        cands = truths.get(item.stamp, [])
        truth = (cands[k].astype(np.uint8) * 255) if k < len(cands) else None
        frames.append(BagFrame(np.array(arr), item.stamp, item.frame_id, truth, encoding, item.log_time))
    return frames
