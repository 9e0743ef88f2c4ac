"""satsam_ros.bag without a node: writing and reading rosbag2 files, `satsam bag make`,
and the errors `satsam bag eval` gives before it starts anything (wrong topic, ...).

Bags are read back both with the project's reader and straight with ``rosbags`` (the
library any other tool would use), so a writer bug cannot hide behind a matching
reader bug.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from satsam_ros.core.synthetic import synthetic_frame
from satsam_ros.tools.bag import evaluate, make
from satsam_ros.tools.bag import io as bag
from satsam_ros.tools.cli import main

START = bag.DEFAULT_START_NS
STORE = get_typestore(Stores.ROS2_HUMBLE)  # another distro's definitions: Image is the same everywhere


def _test_frames():
    gray, truth = synthetic_frame(3)
    gray16 = (gray.astype(np.uint16) * 257) ^ np.uint16(0x00FF)  # every bit pattern differs from 8-bit
    colour = np.dstack([gray, 255 - gray, np.roll(gray, 7, axis=1)])  # B, G, R all different
    odd = np.arange(35, dtype=np.uint8).reshape(5, 7)
    return [
        bag.BagFrame(gray, START, "cam_a", truth=truth),
        bag.BagFrame(gray16, START + 100_000_000, "cam_b"),  # truth unknown: no ground-truth message
        bag.BagFrame(colour, START + 200_000_000, "cam_c", truth=np.zeros(gray.shape, np.uint8)),  # empty frame
        # negative sec and nanosec at its maximum in the header; bag times cannot be negative
        bag.BagFrame(odd, -5 * 10**9 + 999_999_999, "odd", log_time=START + 300_000_000),
    ]


def _raw_messages(path, topic):
    """(log time, deserialized message) straight from rosbags."""
    with Reader(path) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return [(t, STORE.deserialize_cdr(raw, c.msgtype)) for c, t, raw in reader.messages(connections=conns)]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_write_read_round_trip_is_bit_identical(tmp_path, storage):
    frames = _test_frames()
    path = tmp_path / f"bag_{storage}"
    summary = bag.write_bag(path, frames, topic="/cam/image", storage=storage)
    assert (summary.frames, summary.truth_frames, summary.empty_frames) == (4, 2, 1)
    assert summary.encodings == {"mono8": 2, "mono16": 1, "bgr8": 1}
    meta = (path / "metadata.yaml").read_text()
    assert f"storage_identifier: {storage}" in meta

    topics = bag.bag_topics(path)
    assert topics == {"/cam/image": bag.TopicInfo(bag.IMAGE_TYPE, 4),
                      bag.GROUND_TRUTH_TOPIC: bag.TopicInfo(bag.IMAGE_TYPE, 2)}

    back = bag.read_frames(path)
    assert [b.encoding for b in back] == ["mono8", "mono16", "bgr8", "mono8"]
    for want, got in zip(frames, back):
        assert got.stamp == want.stamp and got.frame_id == want.frame_id
        assert got.log_time == (want.stamp if want.log_time is None else want.log_time)
        assert got.image.dtype == want.image.dtype and np.array_equal(got.image, want.image)
    assert np.array_equal(back[0].truth, np.where(frames[0].truth > 0, 255, 0))
    assert back[1].truth is None and back[3].truth is None
    assert back[2].truth is not None and not back[2].truth.any()

    # the same bag through rosbags alone: header, fields and pixel bytes
    raw = _raw_messages(path, "/cam/image")
    assert [t for t, _ in raw] == [f.stamp if f.log_time is None else f.log_time for f in frames]
    for (_t, msg), want in zip(raw, frames):
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == bag.split_stamp(want.stamp)
        assert msg.header.frame_id == want.frame_id and msg.is_bigendian == 0
        assert msg.height == want.image.shape[0] and msg.width == want.image.shape[1]
        assert msg.step == want.image.shape[1] * want.image.itemsize * (3 if want.image.ndim == 3 else 1)
        assert bytes(msg.data) == want.image.astype(want.image.dtype.newbyteorder("<")).tobytes()
    truth_msgs = _raw_messages(path, bag.GROUND_TRUTH_TOPIC)
    assert [m.encoding for _t, m in truth_msgs] == ["mono8", "mono8"]
    assert set(np.unique(np.frombuffer(bytes(truth_msgs[0][1].data), np.uint8))) == {0, 255}


def test_png_compressed_bag_round_trip_is_exact(tmp_path):
    """CompressedImage as image_transport records it: read back with rosbags and OpenCV
    alone, and with the project's reader (PNG: every pixel, 16 bits kept)."""
    frames = _test_frames()
    path = tmp_path / "png"
    summary = bag.write_bag(path, frames, topic="/cam/image/compressed", compress="png")
    assert summary.encodings == {"mono8; png compressed mono8": 2, "mono16; png compressed mono16": 1,
                                 "bgr8; png compressed bgr8": 1}
    assert bag.bag_topics(path) == {"/cam/image/compressed": bag.TopicInfo(bag.COMPRESSED_TYPE, 4),
                                    bag.GROUND_TRUTH_TOPIC: bag.TopicInfo(bag.IMAGE_TYPE, 2)}
    for (_t, msg), want in zip(_raw_messages(path, "/cam/image/compressed"), frames):
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == bag.split_stamp(want.stamp)
        assert msg.header.frame_id == want.frame_id and bytes(msg.data[:8]) == b"\x89PNG\r\n\x1a\n"
        pixels = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_UNCHANGED)
        assert pixels.dtype == want.image.dtype and np.array_equal(pixels, want.image)
    back = bag.read_frames(path)
    assert [b.encoding for b in back] == [None] * 4  # decoded: stored again as the arrays say
    for want, got in zip(frames, back):
        assert got.image.dtype == want.image.dtype and np.array_equal(got.image, want.image)
        assert got.stamp == want.stamp
    assert np.array_equal(back[0].truth, np.where(frames[0].truth > 0, 255, 0))
    assert bag.choose_image_topic(bag.bag_topics(path)) == "/cam/image/compressed"


def test_jpeg_compressed_bag_and_what_jpeg_cannot_hold(tmp_path):
    gray, colour = synthetic_frame(2)[0], np.dstack([synthetic_frame(s)[0] for s in (3, 4, 5)])
    bag.write_bag(tmp_path / "jpg", [bag.BagFrame(gray, START), bag.BagFrame(colour, START + 1)],
                  topic="/c/compressed", compress="jpeg", jpeg_quality=90)
    msgs = [m for _t, m in _raw_messages(tmp_path / "jpg", "/c/compressed")]
    assert [m.format for m in msgs] == ["mono8; jpeg compressed mono8", "bgr8; jpeg compressed bgr8"]
    back = bag.read_frames(tmp_path / "jpg")
    for want, got in zip((gray, colour), back):
        assert got.image.shape == want.shape and np.abs(got.image.astype(int) - want.astype(int)).mean() < 8
    deep = gray.astype(np.uint16) * 257
    with pytest.raises(bag.BagError, match=r"frame 1 .*JPEG holds 8 bits per channel; compress mono16 with png"):
        bag.write_bag(tmp_path / "j16", [bag.BagFrame(gray, START), bag.BagFrame(deep, START + 1)], compress="jpeg")
    assert not (tmp_path / "j16").exists()
    with pytest.raises(bag.BagError, match="compression must be one of jpeg, png"):
        bag.write_bag(tmp_path / "x", [bag.BagFrame(gray, START)], compress="webp")


def test_bag_make_compress_writes_the_compressed_topic(tmp_path, capsys):
    d = tmp_path / "imgs"
    pics = [synthetic_frame(s)[0] for s in (1, 2)]
    for name, img in zip(("a.png", "b.png"), pics):
        _write_png(d / name, img)
    assert main(["bag", "make", str(d), "--out", str(tmp_path / "bag"), "--compress", "jpeg",
                 "--jpeg-quality", "80"]) == 0
    out = capsys.readouterr().out
    assert "2 frames on /camera/image_raw/compressed (2 mono8; jpeg compressed mono8)" in out
    assert "jpeg-compressed" in out
    assert list(bag.bag_topics(tmp_path / "bag")) == ["/camera/image_raw/compressed"]
    with pytest.raises(SystemExit):  # argparse: not a codec
        main(["bag", "make", str(d), "--out", str(tmp_path / "bag2"), "--compress", "tiff"])


def test_eval_publishes_compressed_frames_where_the_node_reads_them():
    assert evaluate.publish_topic("/cam/image_raw/compressed", True) == "/cam/image_raw/compressed"
    assert evaluate.publish_topic("/cam/jpeg_stream", True) == "/cam/jpeg_stream/compressed"
    assert evaluate.publish_topic("/cam/image_raw", False) == "/cam/image_raw"
    run = SimpleNamespace(input_topic="/cam/image_raw/compressed", compressed=True)
    assert evaluate.node_image_topic(run) == "/cam/image_raw"
    assert evaluate.node_image_topic(SimpleNamespace(input_topic="/cam", compressed=False)) == "/cam"


def test_write_bag_refuses_existing_path_and_bad_frames(tmp_path):
    gray, _ = synthetic_frame(0)
    bag.write_bag(tmp_path / "b", [bag.BagFrame(gray, START)])
    with pytest.raises(bag.BagError, match="exists already"):
        bag.write_bag(tmp_path / "b", [bag.BagFrame(gray, START)])
    with pytest.raises(bag.BagError, match=r"frame 1 .*float32"):
        bag.write_bag(tmp_path / "c", [bag.BagFrame(gray, START), bag.BagFrame(gray.astype(np.float32), START + 1)])
    assert not (tmp_path / "c").exists()  # a failed bag is removed, not left half-written
    with pytest.raises(bag.BagError, match=r"ground-truth mask is \(10, 10\)"):
        bag.write_bag(tmp_path / "d", [bag.BagFrame(gray, START, truth=np.zeros((10, 10), np.uint8))])
    with pytest.raises(bag.BagError, match="bag time must be >= 0"):
        bag.write_bag(tmp_path / "f", [bag.BagFrame(gray, -1)])
    with pytest.raises(bag.BagError, match="absolute ROS topic name"):
        bag.write_bag(tmp_path / "e", [bag.BagFrame(gray, START)], topic="camera")


def test_cdr_stamp_patching_keeps_everything_else():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    raw = bag.serialize(bag.image_message(gray, 7 * 10**9 + 5, "f"))
    assert bag.cdr_stamp(raw) == 7 * 10**9 + 5
    new = bag.cdr_with_stamp(raw, 123_456_789_012)
    assert bag.cdr_stamp(new) == 123_456_789_012 and len(new) == len(raw) and new[12:] == raw[12:]
    msg = STORE.deserialize_cdr(new, bag.IMAGE_TYPE)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (123, 456_789_012)
    assert np.array_equal(bytes(msg.data), gray.tobytes())


def _write_png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray((mask > 0).astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


@pytest.fixture()
def coco_dir(tmp_path):
    """A COCO test split with every kind of label: compressed RLE (8-bit gray),
    polygon (16-bit gray), uncompressed RLE (colour), no annotation (empty) and a
    bbox-only annotation (truth unknown)."""
    d = tmp_path / "coco"
    gray, truth = synthetic_frame(11)
    h, w = gray.shape
    poly = [100, 100, 220, 110, 180, 200]
    poly_mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], h, w)))  # COCO's rasteriser
    small = np.zeros((6, 8), np.uint8)
    small[1:4, 2:6] = 1
    flat = small.flatten(order="F")  # COCO RLE runs are column-major, starting with zeros
    runs, value, count = [], 0, 0
    for v in flat:
        if v == value:
            count += 1
        else:
            runs.append(count)
            value, count = v, 1
    runs.append(count)
    images = {
        1: ("images/test/a.png", gray),
        2: ("images/test/b16.png", gray.astype(np.uint16) * 257),
        3: ("images/test/c.png", np.dstack([small * 200, small * 100 + 20, small * 50 + 3]).astype(np.uint8)),
        4: ("images/test/d.png", synthetic_frame(12, with_satellite=False)[0]),
        5: ("images/test/e.png", gray),
    }
    for name, img in images.values():
        _write_png(d / name, img)
    doc = {
        "images": [{"id": i, "file_name": n, "width": img.shape[1], "height": img.shape[0]}
                   for i, (n, img) in images.items()],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "segmentation": _rle(truth)},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1], "segmentation": [poly]},
            {"id": 3, "image_id": 3, "category_id": 1, "bbox": [0, 0, 1, 1],
             "segmentation": {"size": [6, 8], "counts": [int(r) for r in runs]}},
            {"id": 4, "image_id": 5, "category_id": 1, "bbox": [10, 10, 5, 5], "segmentation": []},
            {"id": 5, "image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5]},  # another category: ignored
        ],
        "categories": [{"id": 1, "name": "satellite"}, {"id": 2, "name": "cloud"}],
    }
    (d / "test.json").write_text(json.dumps(doc))
    return d, images, {1: truth > 0, 2: poly_mask > 0, 3: small > 0, 4: np.zeros((h, w), bool)}


def test_bag_make_from_coco(coco_dir, tmp_path, capsys):
    d, images, truths = coco_dir
    out = tmp_path / "made"
    assert main(["bag", "make", str(d), "--out", str(out), "--storage", "sqlite3", "--rate", "4",
                 "--topic", "/x/image", "--frame-id", "cam9"]) == 0
    printed = capsys.readouterr().out
    assert "5 frames on /x/image" in printed and "4 ground-truth masks" in printed and "1 empty" in printed
    assert "1 labelled frame(s) have a bbox but no segmentation" in printed
    frames = bag.read_frames(out)
    assert [f.stamp - START for f in frames] == [0, 250_000_000, 500_000_000, 750_000_000, 1_000_000_000]
    assert [f.encoding for f in frames] == ["mono8", "mono16", "bgr8", "mono8", "mono8"]
    assert {f.frame_id for f in frames} == {"cam9"}
    for frame, (image_id, (_name, img)) in zip(frames, sorted(images.items())):
        assert np.array_equal(frame.image, img)
        if image_id in truths:
            assert np.array_equal(frame.truth > 0, truths[image_id]), image_id
        else:
            assert frame.truth is None  # bbox-only: truth unknown, nothing written
    assert "storage_identifier: sqlite3" in (out / "metadata.yaml").read_text()


def test_bag_make_from_image_folder_has_no_ground_truth(tmp_path):
    d = tmp_path / "imgs"
    pics = [synthetic_frame(s)[0] for s in (1, 2, 3)]
    for name, img in zip(("b.png", "a.png", "c.png"), pics):
        _write_png(d / name, img)
    (d / "readme.txt").write_text("not an image")
    summary = make.make_bag(d, tmp_path / "bag", rate=2.0, progress=False)
    assert (summary.frames, summary.truth_frames) == (3, 0)
    topics = bag.bag_topics(tmp_path / "bag")
    assert list(topics) == [bag.DEFAULT_TOPIC]
    frames = bag.read_frames(tmp_path / "bag")
    assert [np.array_equal(f.image, p) for f, p in zip(frames, (pics[1], pics[0], pics[2]))] == [True] * 3
    assert [f.stamp - START for f in frames] == [0, 500_000_000, 1_000_000_000]


def test_bag_make_errors_name_the_problem(tmp_path, coco_dir):
    d, _images, _truths = coco_dir
    with pytest.raises(SystemExit, match="no such dataset directory"):
        main(["bag", "make", str(tmp_path / "nope"), "--out", str(tmp_path / "o1")])
    with pytest.raises(SystemExit, match=r"val\.json.*it has test\.json"):
        main(["bag", "make", str(d), "--split", "val", "--out", str(tmp_path / "o2")])
    with pytest.raises(SystemExit, match="rate must be a positive number"):
        main(["bag", "make", str(d), "--rate", "0", "--out", str(tmp_path / "o3")])
    (tmp_path / "o4").mkdir()
    with pytest.raises(SystemExit, match="exists already"):
        main(["bag", "make", str(d), "--out", str(tmp_path / "o4")])
    bad = json.loads((d / "test.json").read_text())
    bad["annotations"][0]["segmentation"]["size"] = [1, 1]
    (d / "test.json").write_text(json.dumps(bad))
    with pytest.raises(SystemExit, match=r"test.json: annotations\[0\] \(id 1\): segmentation: RLE size \[1, 1\]"):
        main(["bag", "make", str(d), "--out", str(tmp_path / "o5")])


@pytest.fixture()
def mixed_bag(tmp_path):
    """A bag written with rosbags alone: two image topics and a String topic."""
    path = tmp_path / "mixed"
    gray = synthetic_frame(5)[0]
    writer = Writer(path, version=8, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    img = writer.add_connection("/cam_left/image_raw", bag.IMAGE_TYPE, typestore=STORE)
    img2 = writer.add_connection("/cam_right/image_raw", bag.IMAGE_TYPE, typestore=STORE)
    note = writer.add_connection("/notes", bag.STRING_TYPE, typestore=STORE)
    raw = bag.serialize(bag.image_message(gray, START))
    writer.write(img, START, raw)
    writer.write(img2, START, raw)
    writer.write(note, START, bytes(STORE.serialize_cdr(STORE.types[bag.STRING_TYPE](data="hello"), bag.STRING_TYPE)))
    writer.close()
    return path


def test_eval_names_a_missing_topic_and_lists_the_bag(mixed_bag, tmp_path):
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as err:
        main(["bag", "eval", str(mixed_bag), "--topic", "/cam_left/image_rect", "--out", str(out)])
    text = str(err.value)
    assert "topic '/cam_left/image_rect' is not in" in text
    for listed in ("/cam_left/image_raw", "/cam_right/image_raw", "/notes", "std_msgs/msg/String"):
        assert listed in text
    assert not (out / "node.log").exists()  # refused before any node was started

    with pytest.raises(SystemExit) as err:
        main(["bag", "eval", str(mixed_bag), "--topic", "image_raw", "--out", str(out)])
    assert "did you mean /cam_left/image_raw, /cam_right/image_raw" in str(err.value)


def test_eval_names_a_mistyped_topic_and_ambiguous_bags(mixed_bag, tmp_path):
    with pytest.raises(SystemExit, match=r"'/notes' .* carries std_msgs/msg/String, not sensor_msgs/msg/Image"):
        main(["bag", "eval", str(mixed_bag), "--topic", "/notes", "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match=r"several image topics \(/cam_left/image_raw, /cam_right/image_raw\)"):
        main(["bag", "eval", str(mixed_bag), "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="cannot open it as a rosbag2"):
        main(["bag", "eval", str(tmp_path), "--out", str(tmp_path / "r")])


def test_eval_refuses_repeated_stamps_without_restamp(tmp_path):
    gray = synthetic_frame(1)[0]
    bag.write_bag(tmp_path / "dup", [bag.BagFrame(gray, START), bag.BagFrame(gray, START, log_time=START + 1)])
    with pytest.raises(SystemExit, match=r"1 frame\(s\) on /camera/image_raw repeat .* --restamp"):
        main(["bag", "eval", str(tmp_path / "dup"), "--out", str(tmp_path / "r")])


@pytest.mark.parametrize("value, message", [
    ("0", "rate must be a positive number"), ("fast", "rate must be a positive number"),
])
def test_eval_option_errors(tmp_path, value, message):
    gray = synthetic_frame(1)[0]
    bag.write_bag(tmp_path / "b", [bag.BagFrame(gray, START)])
    with pytest.raises(SystemExit, match=message):
        main(["bag", "eval", str(tmp_path / "b"), "--rate", value, "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="NAME:=VALUE"):
        main(["bag", "eval", str(tmp_path / "b"), "--node-param", "extra_latency_ms=3", "--out", str(tmp_path / "r")])
    assert evaluate.parse_rate("MAX") == "max" and evaluate.parse_rate("step") == "step"
    assert evaluate.parse_rate("0.5") == 0.5


def test_bag_info_lists_topics(mixed_bag, capsys):
    assert main(["bag", "info", str(mixed_bag)]) == 0
    out = capsys.readouterr().out
    assert "/cam_left/image_raw" in out and "sensor_msgs/msg/Image, 1 message(s)" in out and "/notes" in out


def test_make_synthetic_bag_is_reproducible(tmp_path):
    a = make.make_synthetic_bag(tmp_path / "a", count=5, seed=3, rate=20.0, storage="sqlite3")
    make.make_synthetic_bag(tmp_path / "b", count=5, seed=3, rate=20.0)
    assert (a.frames, a.truth_frames, a.empty_frames) == (5, 5, 1)
    fa, fb = bag.read_frames(tmp_path / "a"), bag.read_frames(tmp_path / "b")
    for i, (x, y) in enumerate(zip(fa, fb)):
        want_image, want_truth = synthetic_frame(3 + i, with_satellite=i != 3)
        assert x.stamp == y.stamp == START + i * 50_000_000
        assert np.array_equal(x.image, want_image) and np.array_equal(y.image, want_image)
        assert np.array_equal(x.truth, want_truth) and np.array_equal(y.truth, want_truth)
