"""The validated Image-field converter and the one SAM input conversion."""

import numpy as np
import pytest

from satsam_ros.core import imaging
from satsam_ros.core.imaging import FrameError, array_to_image_fields, image_fields_to_array, to_sam_rgb

RNG = np.random.default_rng(1)

CASES = {
    "mono8": RNG.integers(0, 256, (5, 7), dtype=np.uint8),
    "8UC1": RNG.integers(0, 256, (5, 7), dtype=np.uint8),
    "mono16": RNG.integers(0, 65536, (5, 7), dtype=np.uint16),
    "16UC1": RNG.integers(0, 65536, (5, 7), dtype=np.uint16),
    "rgb8": RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8),
    "bgr8": RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8),
    "rgba8": RNG.integers(0, 256, (5, 7, 4), dtype=np.uint8),
    "bgra8": RNG.integers(0, 256, (5, 7, 4), dtype=np.uint8),
    "32FC1": RNG.random((5, 7), dtype=np.float32),
}


@pytest.mark.parametrize("encoding", sorted(CASES))
def test_round_trip_every_encoding(encoding):
    arr = CASES[encoding]
    h, w, step, data = array_to_image_fields(arr, encoding)
    assert (h, w) == arr.shape[:2]
    assert step == w * imaging.ENCODINGS[encoding].bytes_per_pixel
    back, order = image_fields_to_array(encoding, h, w, step, data)
    np.testing.assert_array_equal(back, arr)
    assert back.dtype == arr.dtype
    assert order == imaging.ENCODINGS[encoding].order


def test_padded_rows_are_cropped():
    arr = CASES["rgb8"]
    h, w, step, data = array_to_image_fields(arr, "rgb8")
    padded = b"".join(data[r * step:(r + 1) * step] + b"\xee" * 5 for r in range(h))
    back, _ = image_fields_to_array("rgb8", h, w, step + 5, padded)
    np.testing.assert_array_equal(back, arr)


def test_big_endian_mono16():
    arr = CASES["mono16"]
    data = arr.astype(">u2").tobytes()
    back, _ = image_fields_to_array("mono16", arr.shape[0], arr.shape[1], arr.shape[1] * 2, data, is_bigendian=True)
    np.testing.assert_array_equal(back, arr)
    assert back.dtype == np.uint16 and back.dtype.isnative


@pytest.mark.parametrize(
    "fields, words",
    [
        (("yuv422", 4, 4, 8, bytes(32)), ["unsupported encoding", "yuv422", "mono8"]),
        (("mono8", 4, 4, 3, bytes(12)), ["step 3", "width * bytes_per_pixel"]),
        (("mono16", 4, 4, 6, bytes(24)), ["step 6", "= 8"]),
        (("mono8", 4, 4, 4, bytes(15)), ["data length 15", "height * step"]),
        (("mono8", 0, 4, 4, b""), ["empty image"]),
        (("rgb8", 2, 0, 0, b""), ["empty image"]),
    ],
)
def test_malformed_fields_are_named(fields, words):
    with pytest.raises(FrameError) as err:
        image_fields_to_array(*fields)
    for word in words:
        assert word in str(err.value)


def test_nan_float_image_rejected():
    arr = CASES["32FC1"].copy()
    arr[2, 3] = np.nan
    h, w, step, data = array_to_image_fields(arr, "32FC1")
    with pytest.raises(FrameError, match="NaN"):
        image_fields_to_array("32FC1", h, w, step, data)


def test_array_to_fields_checks_dtype_and_channels():
    with pytest.raises(FrameError, match="dtype"):
        array_to_image_fields(np.zeros((2, 2), np.float32), "mono8")
    with pytest.raises(FrameError, match="channel"):
        array_to_image_fields(np.zeros((2, 2, 3), np.uint8), "mono8")


@pytest.mark.parametrize(
    "frame, expected",
    [
        (np.full((2, 3), 200, np.uint8), 200.0),
        (np.full((2, 3), 65535, np.uint16), 255.0),
        (np.full((2, 3), 257 * 10, np.uint16), 10.0),
        (np.full((2, 3), 0.5, np.float32), 127.5),
        (np.full((2, 3), 2.0, np.float32), 255.0),  # clipped
        (np.full((2, 3, 1), 7, np.uint8), 7.0),
    ],
)
def test_to_sam_rgb_scales_every_dtype(frame, expected):
    out = to_sam_rgb(frame)
    assert out.shape == (2, 3, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_channel_orders():
    bgr = np.zeros((1, 1, 3), np.uint8)
    bgr[0, 0] = (10, 20, 30)
    np.testing.assert_array_equal(to_sam_rgb(bgr, "bgr")[0, 0], [30, 20, 10])
    np.testing.assert_array_equal(to_sam_rgb(bgr, "rgb")[0, 0], [10, 20, 30])
    bgra = np.zeros((1, 1, 4), np.uint8)
    bgra[0, 0] = (10, 20, 30, 99)
    np.testing.assert_array_equal(to_sam_rgb(bgra, "bgra")[0, 0], [30, 20, 10])


@pytest.mark.parametrize(
    "frame, words",
    [
        (np.zeros((0, 5), np.uint8), "empty"),
        (np.zeros((5,), np.uint8), "H x W"),
        (np.zeros((2, 2, 2), np.uint8), "channels"),
        (np.zeros((2, 2), np.int64), "dtype"),
        (np.array([[np.nan, 1.0]], np.float32), "NaN"),
        (np.array([[np.inf, 1.0]], np.float32), "NaN or infinite"),
    ],
)
def test_bad_frames_raise_clear_errors(frame, words):
    with pytest.raises(FrameError, match=words):
        to_sam_rgb(frame)


def test_normalize_matches_sam_statistics():
    rgb = np.broadcast_to(np.asarray(imaging.SAM_PIXEL_MEAN, np.float32), (2, 2, 3)).copy()
    np.testing.assert_allclose(imaging.normalize(rgb), 0.0, atol=1e-6)
    rgb += np.asarray(imaging.SAM_PIXEL_STD, np.float32)
    np.testing.assert_allclose(imaging.normalize(rgb), 1.0, atol=1e-6)
