"""Frames in, SAM input out: the one place where pixels are converted.

Two jobs live here, both free of rclpy so they are testable anywhere:

* ``image_fields_to_array`` / ``array_to_image_fields``: a validated converter between
  the fields of a ``sensor_msgs/Image`` (encoding, height, width, step, is_bigendian,
  data) and a numpy array. It does the checks the C++ cv_bridge does and the Python one
  does not (encoding allow-list, ``step >= width * bytes_per_pixel``,
  ``height * step == len(data)``, non-empty, finite floats).
* ``to_sam_rgb`` / ``normalize``: any supported frame (H x W or H x W x C;
  uint8, uint16 or float32) becomes an H x W x 3 float32 image on SAM's 0..255 scale,
  then SAM's per-channel mean/std normalisation.

Intensity conventions (documented once, used everywhere):

* uint8: taken as is (0..255).
* uint16: divided by 257, so 65535 maps to 255.
* float32/float64: taken as intensities in [0, 1] (the usual 32FC1 camera
  convention), multiplied by 255 and clipped.
* one channel is replicated to three; four channels drop alpha; ``bgr`` order is
  swapped to RGB when the caller says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import numpy as np

#: image file suffixes the tools read (``satsam detect`` folders, ``bag make`` image
#: folders, dataset backgrounds)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pgm", ".ppm")

# SAM's normalisation (ImageNet statistics on the 0..255 scale), as in the original
# segment-anything predictor and transformers' SamImageProcessor.
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


class FrameError(ValueError):
    """A frame or Image message that cannot be processed; the message says why."""


@dataclass(frozen=True)
class EncodingInfo:
    """How one ROS image encoding lays out its pixels."""

    dtype: str  # numpy dtype name, native byte order
    channels: int
    order: str  # "mono", "rgb", "bgr", "rgba", "bgra"

    @property
    def bytes_per_pixel(self) -> int:
        return np.dtype(self.dtype).itemsize * self.channels


#: The encodings the node accepts (sensor_msgs/image_encodings names).
ENCODINGS = {
    "mono8": EncodingInfo("uint8", 1, "mono"),
    "8UC1": EncodingInfo("uint8", 1, "mono"),
    "mono16": EncodingInfo("uint16", 1, "mono"),
    "16UC1": EncodingInfo("uint16", 1, "mono"),
    "rgb8": EncodingInfo("uint8", 3, "rgb"),
    "bgr8": EncodingInfo("uint8", 3, "bgr"),
    "rgba8": EncodingInfo("uint8", 4, "rgba"),
    "bgra8": EncodingInfo("uint8", 4, "bgra"),
    "32FC1": EncodingInfo("float32", 1, "mono"),
}


def image_fields_to_array(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data: bytes,
    is_bigendian: bool = False,
) -> Tuple[np.ndarray, str]:
    """Validate the fields of a sensor_msgs/Image and view them as an array.

    Returns ``(array, order)``: array is H x W (one channel) or H x W x C, dtype from
    the encoding in native byte order (a copy when the message's byte order differs or
    rows are padded); order is "mono", "rgb", "bgr", "rgba" or "bgra".
    Raises FrameError naming the offending field.
    """
    info = ENCODINGS.get(encoding)
    if info is None:
        raise FrameError(
            f"unsupported encoding {encoding!r}; supported: {', '.join(sorted(ENCODINGS))}"
        )
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise FrameError(f"empty image: height={height}, width={width}")
    row_bytes = width * info.bytes_per_pixel
    if step < row_bytes:
        raise FrameError(
            f"step {step} is smaller than width * bytes_per_pixel = {width} * "
            f"{info.bytes_per_pixel} = {row_bytes} for encoding {encoding}"
        )
    buf = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else data
    if len(buf) != height * step:
        raise FrameError(
            f"data length {len(buf)} does not equal height * step = {height} * {step}"
            f" = {height * step}"
        )
    raw = np.frombuffer(buf, dtype=np.uint8).reshape(height, step)
    if step != row_bytes:  # padded rows: drop the padding
        raw = np.ascontiguousarray(raw[:, :row_bytes])
    native = np.dtype(info.dtype)
    arr = raw.view(native.newbyteorder(">" if is_bigendian else "<"))
    if arr.dtype.byteorder not in ("=", "|") and native.itemsize > 1:
        arr = arr.astype(native)  # bring foreign byte order to native
    shape = (height, width, info.channels) if info.channels > 1 else (height, width)
    arr = arr.reshape(shape)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise FrameError(f"{encoding} image contains NaN or infinite values")
    return arr, info.order


def array_to_image_fields(array: np.ndarray, encoding: str) -> Tuple[int, int, int, bytes]:
    """Pack an array as Image fields ``(height, width, step, data)`` (little endian).

    The array must match the encoding's dtype and channel count; rows are not padded.
    """
    info = ENCODINGS.get(encoding)
    if info is None:
        raise FrameError(
            f"unsupported encoding {encoding!r}; supported: {', '.join(sorted(ENCODINGS))}"
        )
    arr = np.asarray(array)
    want_ndim = 2 if info.channels == 1 else 3
    if arr.ndim == 3 and info.channels == 1 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != want_ndim or (want_ndim == 3 and arr.shape[2] != info.channels):
        raise FrameError(
            f"array of shape {arr.shape} does not fit encoding {encoding} "
            f"({info.channels} channel(s))"
        )
    if arr.dtype != np.dtype(info.dtype):
        raise FrameError(f"array dtype {arr.dtype} does not fit encoding {encoding} ({info.dtype})")
    arr = np.ascontiguousarray(arr, dtype=np.dtype(info.dtype).newbyteorder("<"))
    height, width = arr.shape[:2]
    return height, width, width * info.bytes_per_pixel, arr.tobytes()


def check_frame(frame: np.ndarray) -> np.ndarray:
    """Validate a frame for the detector and return it as an array.

    Accepts H x W or H x W x C (C in 1, 3, 4) of uint8, uint16, float32 or float64.
    Raises FrameError for anything else, for empty frames and for NaN/inf values.
    """
    arr = np.asarray(frame)
    if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
        raise FrameError(f"frame has {arr.shape[2]} channels; expected 1, 3 or 4")
    if arr.ndim not in (2, 3):
        raise FrameError(f"frame must be H x W or H x W x C, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise FrameError(f"empty frame of shape {arr.shape}")
    if arr.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise FrameError(f"frame dtype {arr.dtype} unsupported; expected uint8, uint16 or float32")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise FrameError("frame contains NaN or infinite values")
    return arr


def to_sam_planes(frame: np.ndarray, order: str = "rgb") -> np.ndarray:
    """Any supported frame -> H x W x C float32 on SAM's 0..255 scale: C = 1 for a
    one-channel (gray) frame, whose R, G and B are that one plane (broadcast it, as
    :func:`to_sam_rgb` does, only where three copies are needed), else C = 3 (RGB).

    ``order`` names the channel order of a 3/4-channel frame ("rgb", "bgr", "rgba",
    "bgra"); it is ignored for one-channel frames.
    """
    arr = check_frame(frame)
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32)
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) * np.float32(1.0 / 257.0)
    else:
        out = np.clip(arr.astype(np.float32) * np.float32(255.0), 0.0, 255.0)
    if out.ndim == 2:
        out = out[:, :, None]
    if out.shape[2] == 1:
        return out
    out = out[:, :, :3]
    if order.startswith("bgr"):
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def to_sam_rgb(frame: np.ndarray, order: str = "rgb") -> np.ndarray:
    """Any supported frame -> H x W x 3 float32 RGB on SAM's 0..255 scale.

    ``order`` names the channel order of a 3/4-channel frame ("rgb", "bgr", "rgba",
    "bgra"); it is ignored for one-channel frames.
    """
    out = to_sam_planes(frame, order)
    return np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out


def normalize(rgb: np.ndarray) -> np.ndarray:
    """SAM's normalisation of an ... x 3 float32 RGB image on the 0..255 scale."""
    mean = np.asarray(SAM_PIXEL_MEAN, dtype=np.float32)
    std = np.asarray(SAM_PIXEL_STD, dtype=np.float32)
    return (rgb - mean) / std


def to_uint8_gray(frame: np.ndarray, order: str = "rgb") -> np.ndarray:
    """Any supported frame -> H x W uint8 grayscale, for overlays and previews."""
    rgb = to_sam_rgb(frame, order)
    gray = rgb @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(gray + 0.5, 0, 255).astype(np.uint8)


def read_image_file(path: Path) -> Tuple[np.ndarray, str]:
    """Read an image file as stored: ``(array, order)``.

    H x W (order "mono"; a single channel axis is dropped) or H x W x 3/4 (order
    "bgr" / "bgra", as OpenCV reads files); uint8 or uint16 as stored. Raises
    ValueError naming the file when it does not exist or is not a readable image.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"{path}: not a readable image (supported: {', '.join(IMAGE_SUFFIXES)})")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return img, "mono"
    return img, "bgra" if img.shape[2] == 4 else "bgr"
