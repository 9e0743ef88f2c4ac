"""Compressed input over real DDS: the installed node with ``-p image_transport:=compressed
-r image:=/cam`` reads ``/cam/compressed`` (sensor_msgs/CompressedImage) as image_transport
names it.

Two node processes read the same camera: one raw (``/cam``), one compressed
(``/cam/compressed``). Each frame is published both ways with the same header; the
PNG-compressed frame must give exactly the mask and probability the raw frame gives.
JPEG frames are compared with the Detector run here on the frame decoded here. Bad
compressed frames (garbage, unknown format, truncated, a decompression bomb) are
rejected, counted and logged while good frames keep being answered. The files are
written with OpenCV here, not with the node's own encoder.
"""

from __future__ import annotations

import array
import time
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from image_files import png_bomb
from node_helpers import (
    NODE_NAME,
    Collector,
    NodeProcess,
    RosHarness,
    counts,
    fresh_stamp_ns,
    header,
    image_msg,
    same_stamp,
    wait_diag,
    wait_until,
)
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage

from satsam_ros.core.synthetic import synthetic_frame
from satsam_ros.ros.convert import image_msg_to_array
from satsam_ros.runtime import open_detector

CAMERA = "/cam"
THRESHOLD = 0.50005  # inside the tiny model's probabilities: masks with both values
PARAMS = {"size": 512, "model": "tiny", "backend": "torch", "device": "cpu", "threshold": THRESHOLD,
          "qos_reliability": "reliable", "qos_depth": 10}
ANSWER = 60.0


@dataclass
class Env:
    raw_node: NodeProcess
    png_node: NodeProcess
    ros: RosHarness
    raw_pub: object
    cz_pub: object
    raw: dict
    cz: dict
    diag: Collector


def _outputs(ros: RosHarness, ns: str) -> dict:
    return {"mask": ros.collect(f"{ns}/mask"), "probability": ros.collect(f"{ns}/probability")}


@pytest.fixture(scope="module")
def env(installed_node):
    raw_node = NodeProcess(installed_node, PARAMS, namespace="/satsam_raw", remaps={"image": CAMERA})
    png_node = NodeProcess(installed_node, dict(PARAMS, image_transport="compressed"), namespace="/satsam_cz",
                           remaps={"image": CAMERA})
    ros = RosHarness("satsam_test_compressed")
    try:
        e = Env(raw_node, png_node, ros, ros.publisher(CAMERA), ros.publisher(f"{CAMERA}/compressed",
                                                                              CompressedImage),
                _outputs(ros, "/satsam_raw"), _outputs(ros, "/satsam_cz"), ros.collect("/diagnostics",
                                                                                        DiagnosticArray))
        ros.wait_matched(e.raw_pub, 90, "the raw node to subscribe to /cam", raw_node)
        ros.wait_matched(e.cz_pub, 90, "the compressed node to subscribe to /cam/compressed", png_node)
        yield e
    finally:
        for proc in (raw_node, png_node):
            proc.stop()
        ros.close()
        for proc in (raw_node, png_node):
            proc.close()


@pytest.fixture(scope="module")
def detector():
    return open_detector(model="tiny", backend="torch", device="cpu", size=512, threshold=THRESHOLD)


def compressed_msg(fmt: str, data: bytes, stamp_ns: int = 0, frame_id: str = "camera") -> CompressedImage:
    msg = CompressedImage()
    msg.header = header(stamp_ns or fresh_stamp_ns(), frame_id)
    msg.format = fmt
    msg.data = array.array("B", data)
    return msg


def wait_answer(outputs: dict, msg, what: str, kind: str = "mask"):
    return outputs[kind].wait_for(lambda m: same_stamp(m.header.stamp, msg.header.stamp), ANSWER, what)


def pixels(msg) -> np.ndarray:
    return image_msg_to_array(msg)[0]


def _gray(seed: int, height: int = 300, width: int = 401) -> np.ndarray:
    return synthetic_frame(seed, height, width)[0]


def _colour(seed: int) -> np.ndarray:
    return np.dstack([_gray(seed + c) for c in range(3)])


def _mono16(seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(0, 257, (300, 401))
    return (_gray(seed).astype(np.uint16) * 257 + noise).astype(np.uint16)


PNG_CASES = {  # name -> (raw encoding, frame, the pixels in the file as OpenCV writes them, format)
    "mono8": ("mono8", lambda: _gray(1), lambda f: f, "mono8; png compressed mono8"),
    "mono16 (image_transport's form)": ("mono16", lambda: _mono16(2), lambda f: f, "mono16; png compressed "),
    "bgr8": ("bgr8", lambda: _colour(3), lambda f: f, "bgr8; png compressed bgr8"),
    "rgb8 stored as bgr8": ("rgb8", lambda: _colour(6), lambda f: f[:, :, ::-1], "rgb8; png compressed bgr8"),
    "bare png": ("mono8", lambda: _gray(9), lambda f: f, "png"),
}


@pytest.mark.parametrize("case", list(PNG_CASES))
def test_png_frames_give_exactly_the_masks_of_the_raw_frames(env, case):
    encoding, make, in_file, fmt = PNG_CASES[case]
    frame = make()
    stamp = fresh_stamp_ns()
    raw = image_msg(frame, encoding, frame_id=f"raw {case}", stamp_ns=stamp)
    png = compressed_msg(fmt, cv2.imencode(".png", np.ascontiguousarray(in_file(frame)))[1].tobytes(), stamp,
                         f"png {case}")
    env.raw_pub.publish(raw)
    env.cz_pub.publish(png)
    raw_mask = wait_answer(env.raw, raw, f"the raw node's mask of {case}")
    png_mask = wait_answer(env.cz, png, f"the compressed node's mask of {case}")
    assert (png_mask.height, png_mask.width) == frame.shape[:2]
    assert png_mask.header.frame_id == f"png {case}" and same_stamp(png_mask.header.stamp, png.header.stamp)
    a, b = pixels(raw_mask), pixels(png_mask)
    assert np.array_equal(a, b), f"{case}: {int((a != b).sum())} pixels differ"
    assert 0 < int((b > 0).sum()) < b.size, "a mask of one value compares nothing"
    raw_prob = wait_answer(env.raw, raw, "raw probability", "probability")
    png_prob = wait_answer(env.cz, png, "png probability", "probability")
    assert np.array_equal(pixels(raw_prob), pixels(png_prob))


@pytest.mark.parametrize("fmt,frame", [
    ("mono8; jpeg compressed mono8", lambda: _gray(20)),
    ("bgr8; jpeg compressed bgr8", lambda: _colour(21)),
    ("jpeg", lambda: _gray(22)),
])
def test_jpeg_frames_are_detected_on_the_decoded_picture(env, detector, fmt, frame):
    img = frame()
    data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    msg = compressed_msg(fmt, data)
    env.cz_pub.publish(msg)
    mask = pixels(wait_answer(env.cz, msg, f"the mask of a {fmt} frame"))
    expected = detector.detect(decoded, "bgr" if decoded.ndim == 3 else "mono").mask
    assert mask.shape == img.shape[:2] and np.array_equal(mask, expected)


def _cz_diag(env: Env, predicate, what: str):
    return wait_diag(env.diag, predicate, 15, what, after=time.time(), input_topic=f"{CAMERA}/compressed")


BAD = {  # name -> (format, data, words of the log line)
    "garbage": ("png", b"this is not an image" * 10, "neither PNG nor JPEG"),
    "unknown format": ("tiff", b"II*\x00" + bytes(100), "unsupported compressed format 'tiff'"),
    "compressedDepth": ("16UC1; compressedDepth png", b"\0" * 64, "unsupported compressed format"),
    "truncated png": ("png", None, "cannot be decoded"),
    "jpeg called png": ("png", b"jpeg", "a JPEG file"),
    "empty": ("jpeg", b"", "no data"),
    "decompression bomb": ("mono8; png compressed mono8", png_bomb(10_000, 5_000), "over the limit of 40000000"),
}


def test_bad_compressed_frames_are_rejected_counted_and_the_node_keeps_answering(env):
    good = cv2.imencode(".png", _gray(30))[1].tobytes()
    jpeg = cv2.imencode(".jpg", _gray(31))[1].tobytes()
    start = _cz_diag(env, lambda v: v["frames_pending"] == "0" and v["frames_in_progress"] == "0", "idle node")
    for i, (name, (fmt, data, words)) in enumerate(BAD.items()):
        data = good[: len(good) // 2] if data is None else (jpeg if data == b"jpeg" else data)
        msg = compressed_msg(fmt, data, frame_id=f"bad {name}")
        env.cz_pub.publish(msg)
        # judged before the next frame is sent (it could otherwise replace this one in the mailbox)
        values = _cz_diag(env, lambda v, n=i + 1: int(v["frames_rejected"]) - int(start["frames_rejected"]) == n,
                          f"the {name} frame rejected")
        assert words in values["last_problem"], (name, values["last_problem"])
        answer = compressed_msg("png", good)
        env.cz_pub.publish(answer)
        wait_answer(env.cz, answer, f"a good frame after the {name} frame")
        assert env.cz["mask"].by_stamp(msg.header.stamp) is None, name
    values = _cz_diag(env, lambda v: v["frames_pending"] == "0" and v["frames_in_progress"] == "0",
                      "the node idle again")
    c, c0 = counts(values), counts(start)
    assert c["frames_rejected"] - c0["frames_rejected"] == len(BAD)
    assert c["frames_processed"] - c0["frames_processed"] == len(BAD)  # the good ones in between
    assert c["frames_received"] == (c["frames_processed"] + c["frames_dropped"] + c["frames_rejected"]
                                    + c["processing_errors"] + c["frames_pending"] + c["frames_in_progress"])
    assert values["image_transport"] == "compressed" and env.png_node.alive()
    _, err = env.png_node.output()
    logged = [line for line in err.splitlines() if "skipped a bad frame" in line]
    assert logged and all("Traceback" not in line for line in err.splitlines())
    assert any(BAD["garbage"][2] in line for line in logged), logged  # the first one is always logged


def test_pixel_limit_is_a_live_parameter(env):
    client = env.ros.node.create_client(SetParameters, f"/satsam_cz/{NODE_NAME}/set_parameters")
    wait_until(client.service_is_ready, 10, "set_parameters")

    def set_limit(value: int) -> bool:
        req = SetParameters.Request()
        req.parameters = [Parameter("max_decoded_pixels", value=value).to_parameter_msg()]
        future = client.call_async(req)
        wait_until(future.done, 10, "the reply")
        return future.result().results[0].successful

    frame = cv2.imencode(".png", _gray(40, 96, 128))[1].tobytes()  # 12288 pixels
    assert set_limit(12_000)
    try:
        start = _cz_diag(env, lambda v: True, "a report")
        refused = compressed_msg("png", frame)
        env.cz_pub.publish(refused)
        values = _cz_diag(env, lambda v: int(v["frames_rejected"]) > int(start["frames_rejected"]),
                          "the frame over the limit rejected")
        assert "128 x 96 = 12288 pixels" in values["last_problem"] and "12000" in values["last_problem"]
    finally:
        assert set_limit(40_000_000)
    accepted = compressed_msg("png", frame)
    env.cz_pub.publish(accepted)
    wait_answer(env.cz, accepted, "the same frame under the limit again")
    assert not set_limit(0)  # out of range: refused


def test_the_compressed_node_reads_only_the_compressed_topic(env):
    """Remapping image:=/cam moved the input to /cam/compressed; /cam is the raw node's alone."""
    node = env.ros.node
    assert node.count_subscribers(f"{CAMERA}/compressed") == 1
    assert node.count_subscribers(CAMERA) == 1  # the raw node
    values = _cz_diag(env, lambda v: True, "a report")
    assert values["input_topic"] == f"{CAMERA}/compressed"
