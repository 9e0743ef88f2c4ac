"""Compressed frames (image_transport's ``compressed`` transport) without ROS: format
strings, decoding, the size limit read from the header before decoding, and every kind
of bad data refused with a FrameError naming it."""

from __future__ import annotations

import array
import struct

import cv2
import numpy as np
import pytest
from image_files import PNG_SIGNATURE, png_bomb, png_chunk

from satsam_ros.core.compressed import (
    CompressedFormat,
    decode_compressed,
    encode_compressed,
    jpeg_size,
    parse_format,
    png_size,
)
from satsam_ros.core.imaging import FrameError, to_sam_rgb
from satsam_ros.core.synthetic import synthetic_frame

LIMIT = 40_000_000


def _gray(height: int = 120, width: int = 161) -> np.ndarray:
    return synthetic_frame(3, height, width)[0]


def _colour(height: int = 90, width: int = 130) -> np.ndarray:
    return np.dstack([synthetic_frame(10 + c, height, width)[0] for c in range(3)])


def _mono16(height: int = 100, width: int = 140) -> np.ndarray:
    noise = np.random.default_rng(3).integers(0, 257, (height, width))
    return (_gray(height, width).astype(np.uint16) * 257 + noise).astype(np.uint16)


def _png(arr: np.ndarray) -> bytes:
    return cv2.imencode(".png", arr)[1].tobytes()


def _jpeg(arr: np.ndarray, quality: int = 95) -> bytes:
    return cv2.imencode(".jpg", arr, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


# ---- format strings ------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("jpeg", CompressedFormat("jpeg")),
    ("png", CompressedFormat("png")),
    ("JPEG", CompressedFormat("jpeg")),
    ("mono8; jpeg compressed mono8", CompressedFormat("jpeg", "mono8", "mono8")),
    ("bgr8; jpeg compressed bgr8", CompressedFormat("jpeg", "bgr8", "bgr8")),
    ("rgb8; jpeg compressed bgr8", CompressedFormat("jpeg", "rgb8", "bgr8")),
    ("bgr8; png compressed bgr8", CompressedFormat("png", "bgr8", "bgr8")),
    ("mono16; png compressed mono16", CompressedFormat("png", "mono16", "mono16")),
    ("mono16; png compressed ", CompressedFormat("png", "mono16", "")),  # image_transport's PNG of mono
    ("rgb16; png compressed bgr16", CompressedFormat("png", "rgb16", "bgr16")),
    ("mono16; jpeg compressed mono8", CompressedFormat("jpeg", "mono16", "mono8")),
])
def test_image_transport_format_strings_are_understood(text, expected):
    assert parse_format(text) == expected


def test_rgb_inside_follows_image_transport():
    """A colour file holds B, G, R unless its target says otherwise (image_transport's subscriber)."""
    assert not parse_format("rgb8; jpeg compressed bgr8").rgb_inside
    assert not parse_format("bgr8; png compressed bgr8").rgb_inside
    assert parse_format("rgb8; png compressed rgb8").rgb_inside
    assert not parse_format("png").rgb_inside and not parse_format("mono8; png compressed ").rgb_inside


@pytest.mark.parametrize("text,words", [
    ("", ["unsupported compressed format ''"]),
    ("tiff", ["'tiff'", "jpeg", "png"]),
    ("h264", ["'h264'"]),
    ("16UC1; compressedDepth png", ["compressedDepth"]),
    ("mono8; tiff compressed mono8", ["'mono8; tiff compressed mono8'"]),
    ("mono8; jpeg", ["'mono8; jpeg'"]),
    ("bayer_rggb8; jpeg compressed mono8", ["'bayer_rggb8'", "mono8, mono16"]),
    ("32FC1; png compressed ", ["'32FC1'"]),
])
def test_unknown_formats_are_refused_naming_them(text, words):
    with pytest.raises(FrameError) as err:
        parse_format(text)
    for word in words:
        assert word in str(err.value), str(err.value)


# ---- decoding ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "mono8; png compressed ", "mono8; png compressed mono8"])
def test_png_mono8_decodes_exactly(fmt):
    img = _gray()
    out, order = decode_compressed(fmt, _png(img), LIMIT)
    assert order == "mono" and out.dtype == np.uint8 and np.array_equal(out, img)


@pytest.mark.parametrize("fmt", ["mono16; png compressed ", "mono16; png compressed mono16", "16UC1; png compressed "])
def test_png_mono16_keeps_16_bits(fmt):
    img = _mono16()
    out, order = decode_compressed(fmt, _png(img), LIMIT)
    assert order == "mono" and out.dtype == np.uint16 and np.array_equal(out, img)


def test_png_colour_decodes_to_the_frame_the_detector_sees_raw():
    """bgr8 and rgb8 through PNG give exactly the SAM input of the raw frame."""
    bgr = _colour()
    out, order = decode_compressed("bgr8; png compressed bgr8", _png(bgr), LIMIT)
    assert order == "bgr" and np.array_equal(out, bgr)
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    fmt, data = encode_compressed(rgb, "rgb8", "png")  # stored B, G, R as image_transport does
    assert fmt == "rgb8; png compressed bgr8"
    out, order = decode_compressed(fmt, data, LIMIT)
    assert np.array_equal(to_sam_rgb(out, order), to_sam_rgb(rgb, "rgb"))
    # a file holding R, G, B in OpenCV's slots, as a "compressed rgb8" target says
    out, order = decode_compressed("rgb8; png compressed rgb8", _png(rgb), LIMIT)
    assert order == "rgb" and np.array_equal(to_sam_rgb(out, order), to_sam_rgb(rgb, "rgb"))


def test_png_with_alpha_keeps_four_channels():
    bgra = np.dstack([_colour(), np.full((90, 130), 200, np.uint8)])
    out, order = decode_compressed("bgra8; png compressed bgra8", _png(bgra), LIMIT)
    assert order == "bgra" and np.array_equal(out, bgra)


@pytest.mark.parametrize("fmt,make,order", [
    ("mono8; jpeg compressed mono8", _gray, "mono"),
    ("jpeg", _gray, "mono"),
    ("bgr8; jpeg compressed bgr8", _colour, "bgr"),
    ("jpeg", _colour, "bgr"),
])
def test_jpeg_decodes_close_to_the_original(fmt, make, order):
    img = make()
    out, got_order = decode_compressed(fmt, _jpeg(img), LIMIT)
    assert got_order == order and out.shape == img.shape and out.dtype == np.uint8
    error = np.abs(out.astype(int) - img.astype(int)).mean()
    assert error < 8.0  # lossy (and chroma subsampled), but the same picture
    if img.ndim == 3:  # in the channel order said: B and R swapped would be far off
        assert np.abs(out[:, :, ::-1].astype(int) - img.astype(int)).mean() > 3 * error


def test_encoder_writes_what_the_decoder_and_image_transport_read():
    gray, colour, deep = _gray(), _colour(), _mono16()
    assert encode_compressed(gray, "mono8", "jpeg")[0] == "mono8; jpeg compressed mono8"
    assert encode_compressed(colour, "bgr8", "jpeg")[0] == "bgr8; jpeg compressed bgr8"
    assert encode_compressed(colour, "rgb8", "jpeg")[0] == "rgb8; jpeg compressed bgr8"
    fmt, data = encode_compressed(deep, "mono16", "png")
    assert fmt == "mono16; png compressed mono16" and np.array_equal(decode_compressed(fmt, data, LIMIT)[0], deep)
    with pytest.raises(ValueError, match="JPEG holds 8 bits"):
        encode_compressed(deep, "mono16", "jpeg")
    with pytest.raises(ValueError, match="does not fit encoding bgr8"):
        encode_compressed(gray, "bgr8", "png")
    with pytest.raises(ValueError, match="codec must be one of jpeg, png"):
        encode_compressed(gray, "mono8", "webp")
    with pytest.raises(ValueError, match="jpeg_quality"):
        encode_compressed(gray, "mono8", "jpeg", jpeg_quality=0)


def test_message_data_of_any_buffer_type_decodes():
    img = _gray()
    data = _png(img)
    for buf in (data, array.array("B", data), memoryview(data), np.frombuffer(data, np.uint8)):
        assert np.array_equal(decode_compressed("png", buf, LIMIT)[0], img)


# ---- bad data --------------------------------------------------------------------------


def _refused(fmt, data, *words, limit=LIMIT):
    with pytest.raises(FrameError) as err:
        decode_compressed(fmt, data, limit)
    for word in words:
        assert word in str(err.value), str(err.value)
    return str(err.value)


def test_empty_garbage_and_mismatched_data_are_refused():
    png, jpg = _png(_gray()), _jpeg(_gray())
    _refused("png", b"", "no data")
    _refused("jpeg", b"not an image at all", "neither PNG nor JPEG")
    _refused("png", jpg, "a JPEG file", "'png'")
    _refused("mono8; jpeg compressed mono8", png, "a PNG file")


def test_truncated_and_corrupt_files_are_refused():
    png, jpg = _png(_gray()), _jpeg(_gray())
    _refused("png", png[:20], "IHDR")
    _refused("png", png[: len(png) // 2], "cannot be decoded")
    _refused("jpeg", jpg[:3], "truncated")
    _refused("jpeg", jpg[: len(jpg) // 2], "no end-of-image marker")
    corrupt = bytearray(png)
    corrupt[60:80] = bytes(20)
    _refused("png", bytes(corrupt), "cannot be decoded")


def test_broken_headers_are_refused():
    ihdr = struct.pack(">IIBBBBB", 64, 48, 12, 0, 0, 0, 0)  # bit depth 12 does not exist
    bad = PNG_SIGNATURE + png_chunk(b"IHDR", ihdr)
    _refused("png", bad + b"\0" * 20, "bit depth 12")
    empty = PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 48, 8, 0, 0, 0, 0))
    _refused("png", empty + b"\0" * 20, "empty PNG")
    jpg = bytearray(_jpeg(_gray()))
    sof = _sof_offset(bytes(jpg))
    jpg[sof + 5:sof + 7] = b"\0\0"  # height 0: "defined by a DNL marker"
    _refused("jpeg", bytes(jpg), "empty")


def test_channels_must_fit_the_declared_encoding():
    _refused("mono8; png compressed mono8", _png(_colour()), "declares mono8", "3 channels")


def _sof_offset(jpg: bytes) -> int:
    """Offset of the baseline SOF0 marker's length field in a JPEG written by OpenCV."""
    return jpg.index(b"\xff\xc0") + 2


def test_decompression_bombs_are_refused_before_decoding(monkeypatch):
    """The size comes from the header; the decoder is never called on an oversized file."""
    bomb = png_bomb(10_000, 5_000)  # 50 MP of zeros in a small file
    assert len(bomb) < 200_000 and png_size(bomb) == (10_000, 5_000)
    deep = bytearray(_jpeg(_gray()))
    sof = _sof_offset(bytes(deep))
    deep[sof + 3:sof + 7] = struct.pack(">HH", 60_000, 60_000)  # a JPEG header claiming 3.6 GP
    assert jpeg_size(bytes(deep)) == (60_000, 60_000)
    calls = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: calls.append(a) or real(*a))
    msg = _refused("png", bomb, "10000 x 5000 = 50000000 pixels", "limit of 40000000", "max_decoded_pixels")
    _refused("jpeg", bytes(deep), "60000 x 60000", "limit of 1000", limit=1000)
    assert calls == [], "the decoder ran on a file over the limit"
    # under the limit the same kind of file decodes (so the refusal above is the limit's doing)
    small = png_bomb(300, 200)
    out, order = decode_compressed("png", small, LIMIT)
    assert out.shape == (200, 300) and not out.any() and len(calls) == 1
    assert "pixels" in msg
    _refused("png", small, "300 x 200 = 60000 pixels", limit=59_999)
