"""JPEG / PNG frames as image_transport's ``compressed`` transport carries them.

A ``sensor_msgs/CompressedImage`` holds a ``format`` string and the bytes of one JPEG or
PNG file. image_transport's compressed publisher writes ``format`` as
``"<encoding>; <codec> compressed <target>"``: the encoding of the original Image, the
codec, and the layout of the pixels inside the file, e.g. ``"mono8; jpeg compressed
mono8"``, ``"rgb8; jpeg compressed bgr8"``, ``"bgr8; png compressed bgr8"``,
``"mono16; png compressed "`` (its PNG writer leaves the target empty for one-channel
images; ``"mono16; png compressed mono16"`` means the same). Publishers older than that
write only ``"jpeg"`` or ``"png"``. This module reads all of these the way
image_transport's subscriber does, and writes the ``"<encoding>; <codec> compressed
<target>"`` form.

Decoding is validated like raw frames (:mod:`satsam_ros.core.imaging`): the format must
be understood, the data must be a JPEG or PNG of that codec, and the image size is read
from the file's header *before* any pixel is decoded, so a small file that would
decompress into a huge image (a decompression bomb) is refused without allocating it.
Every refusal is a :class:`~satsam_ros.core.imaging.FrameError` naming what is wrong.

Pure: numpy and OpenCV only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from .imaging import FrameError

CODECS = ("jpeg", "png")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
#: default limit on a compressed frame's width x height (8K UHD is 33.2 MP): the node's
#: ``max_decoded_pixels`` and the bag tools
DEFAULT_MAX_PIXELS = 40_000_000
#: image_transport's defaults (compressed publisher parameters jpeg_quality / png_level)
DEFAULT_JPEG_QUALITY = 95
DEFAULT_PNG_LEVEL = 3
#: encodings a compressed frame may declare (the part of ``format`` before ';')
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "rgb16", "bgr16", "rgba16", "bgra16")
MONO_ENCODINGS = ("mono8", "mono16", "8UC1", "16UC1")
#: JPEG start-of-frame markers (baseline, extended, progressive, lossless; Huffman and
#: arithmetic); 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) share the range but are not frames
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: JPEG markers that carry no length field
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}


@dataclass(frozen=True)
class CompressedFormat:
    """A parsed ``CompressedImage.format``.

    ``codec``: "jpeg" or "png". ``encoding``: the original Image encoding ("" for the
    old bare ``"jpeg"`` / ``"png"`` form). ``target``: the pixel layout inside the file
    as the publisher wrote it ("" when not given). ``rgb_inside``: a colour file holds
    R, G, B in OpenCV's B, G, R slots (image_transport treats every colour format
    whose target does not start with "bgr" so).
    """

    codec: str
    encoding: str = ""
    target: str = ""

    @property
    def rgb_inside(self) -> bool:
        return self.encoding in COLOR_ENCODINGS and not self.target.startswith("bgr")


def parse_format(text: str) -> CompressedFormat:
    """Parse a ``CompressedImage.format`` string; FrameError when it is not one of the
    forms image_transport's compressed transport writes (see the module docstring)."""
    raw = str(text)
    head, sep, rest = raw.partition(";")
    if not sep:
        codec = head.strip().lower()
        codec = "jpeg" if codec == "jpg" else codec
        if codec not in CODECS:
            raise FrameError(_format_help(raw))
        return CompressedFormat(codec)
    encoding = head.strip()
    words = rest.split()
    if len(words) not in (2, 3) or words[1] != "compressed" or words[0].lower() not in CODECS:
        raise FrameError(_format_help(raw))
    if encoding not in COLOR_ENCODINGS + MONO_ENCODINGS:
        raise FrameError(f"compressed frame of encoding {encoding!r} (format {raw!r}) is not supported; supported "
                         f"encodings: {', '.join(MONO_ENCODINGS + COLOR_ENCODINGS)}")
    return CompressedFormat(words[0].lower(), encoding, words[2] if len(words) == 3 else "")


def _format_help(raw: str) -> str:
    return (f"unsupported compressed format {raw!r}: expected image_transport's 'compressed' transport, "
            "'jpeg', 'png' or '<encoding>; jpeg|png compressed [<encoding>]' (e.g. 'mono8; jpeg compressed mono8', "
            "'bgr8; png compressed bgr8'); compressedDepth, tiff and video codecs are not supported")


def sniff_codec(data: bytes) -> str:
    """"png" or "jpeg" from the file signature; "" for anything else."""
    if data[:8] == PNG_SIGNATURE:
        return "png"
    if data[:2] == JPEG_SOI:
        return "jpeg"
    return ""


def png_size(data: bytes) -> Tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; FrameError when the header is broken.

    Also checks the bit depth / colour type pair against the PNG specification.
    """
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise FrameError(f"PNG data of {len(data)} bytes has no IHDR header chunk: not a complete PNG")
    length, = struct.unpack(">I", data[8:12])
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    allowed = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
    if length != 13 or colour not in allowed or depth not in allowed[colour]:
        raise FrameError(f"PNG header is invalid (IHDR length {length}, bit depth {depth}, colour type {colour})")
    if width == 0 or height == 0:
        raise FrameError(f"empty PNG image: width={width}, height={height}")
    return int(width), int(height)


def jpeg_size(data: bytes) -> Tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame segment, read by walking the marker
    segments up to it; FrameError when there is none before the image data or the end,
    when the size is zero, or when no end-of-image marker follows (a truncated stream)."""
    n, pos = len(data), 2
    while True:
        while pos < n and data[pos] != 0xFF:  # tolerate junk between segments, as decoders do
            pos += 1
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            raise FrameError("JPEG data ends before a start-of-frame segment: truncated or not a JPEG")
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            raise FrameError("JPEG data has no start-of-frame segment before its image data")
        if pos + 2 > n:
            raise FrameError("JPEG data ends inside a segment header: truncated")
        length, = struct.unpack(">H", data[pos:pos + 2])
        if length < 2 or pos + length > n:
            raise FrameError(f"JPEG segment 0xFF{marker:02X} of length {length} runs past the data: truncated")
        if marker in _JPEG_SOF:
            if length < 8:
                raise FrameError(f"JPEG start-of-frame segment of length {length} is too short")
            height, width = struct.unpack(">HH", data[pos + 3:pos + 7])
            if width == 0 or height == 0:
                raise FrameError(f"JPEG frame size {width} x {height} is empty (or defined later by a DNL "
                                 "marker, which is not supported)")
            if data.rfind(b"\xff\xd9") < pos + length:
                raise FrameError("JPEG data has no end-of-image marker after its frame: truncated")
            return int(width), int(height)
        pos += length


def compressed_size(data: bytes, codec: str) -> Tuple[int, int]:
    """(width, height) of a JPEG or PNG from its header alone (nothing decoded)."""
    return png_size(data) if codec == "png" else jpeg_size(data)


def _as_bytes(data) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, np.ndarray):
        return data.tobytes()
    return bytes(memoryview(data).cast("B"))


def decode_compressed(fmt: str, data, max_pixels: int) -> Tuple[np.ndarray, str]:
    """Decode the data of a ``sensor_msgs/CompressedImage`` into a frame.

    ``fmt``: its ``format``; ``data``: its bytes (bytes, array.array, memoryview or a
    uint8 array); ``max_pixels``: the largest width x height accepted, checked on the
    file's header before decoding.

    Returns ``(array, order)`` as :func:`satsam_ros.core.imaging.image_fields_to_array`:
    H x W uint8 / uint16 (order "mono") or H x W x 3 / 4 (order "bgr" / "bgra", or
    "rgb" / "rgba" when the file holds R, G, B; see :class:`CompressedFormat`), at the
    file's size and bit depth as stored (a 16-bit PNG stays uint16). Raises FrameError
    naming the problem: unknown format, empty or undecodable data, codec mismatch,
    size over ``max_pixels``, channel count not fitting the declared encoding.
    """
    form = parse_format(fmt)
    buf = _as_bytes(data)
    if not buf:
        raise FrameError(f"compressed frame (format {fmt!r}) has no data")
    found = sniff_codec(buf)
    if not found:
        raise FrameError(f"compressed frame data is neither PNG nor JPEG (it starts with {buf[:8].hex()}); "
                         f"format says {fmt!r}")
    if found != form.codec:
        raise FrameError(f"compressed frame data is a {found.upper()} file but its format says {fmt!r}")
    width, height = compressed_size(buf, found)
    if width * height > int(max_pixels):
        raise FrameError(f"compressed frame would decode to {width} x {height} = {width * height} pixels, over the "
                         f"limit of {int(max_pixels)} (parameter max_decoded_pixels)")
    import cv2

    image = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FrameError(f"compressed frame ({found.upper()} of {len(buf)} bytes, {width} x {height}) cannot be "
                         "decoded: corrupt or truncated data")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.shape[:2] != (height, width):
        raise FrameError(f"compressed frame decoded to {image.shape[1]} x {image.shape[0]}, its header says "
                         f"{width} x {height}")
    return image, _order(image, form, fmt)


def _order(image: np.ndarray, form: CompressedFormat, fmt: str) -> str:
    channels = 1 if image.ndim == 2 else int(image.shape[2])
    if channels not in (1, 3, 4):
        raise FrameError(f"compressed frame decoded to {channels} channels; expected 1, 3 or 4")
    if form.encoding in MONO_ENCODINGS and channels != 1:
        raise FrameError(f"compressed frame declares {form.encoding} (format {fmt!r}) but holds {channels} channels")
    if channels == 1:
        return "mono"
    order = "rgb" if form.rgb_inside else "bgr"
    return order + ("a" if channels == 4 else "")


def encode_compressed(image: np.ndarray, encoding: str, codec: str, jpeg_quality: int = DEFAULT_JPEG_QUALITY,
                      png_level: int = DEFAULT_PNG_LEVEL) -> Tuple[str, bytes]:
    """Compress a frame as image_transport's compressed publisher does: ``(format, data)``.

    ``image``: H x W uint8 (``encoding`` mono8) or uint16 (mono16, PNG only), or
    H x W x 3 uint8 in the channel order of ``encoding`` (bgr8 or rgb8; stored as B, G, R
    in the file, so the format reads e.g. ``"rgb8; jpeg compressed bgr8"``). ``codec``:
    "jpeg" (lossy, ``jpeg_quality`` 1..100) or "png" (lossless, ``png_level`` 0..9).
    ValueError for anything else.
    """
    import cv2

    arr = np.asarray(image)
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {', '.join(CODECS)}; got {codec!r}")
    layouts = {"mono8": (2, np.uint8), "mono16": (2, np.uint16), "bgr8": (3, np.uint8), "rgb8": (3, np.uint8)}
    if encoding not in layouts:
        raise ValueError(f"encoding must be one of {', '.join(layouts)} to compress; got {encoding!r}")
    ndim, dtype = layouts[encoding]
    if arr.ndim != ndim or arr.dtype != dtype or (ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"an image of shape {arr.shape} and dtype {arr.dtype} does not fit encoding {encoding}")
    if codec == "jpeg" and arr.dtype != np.uint8:
        raise ValueError(f"JPEG holds 8 bits per channel; compress {encoding} with png")
    target = encoding if ndim == 2 else "bgr8"
    pixels = np.ascontiguousarray(arr[:, :, ::-1] if encoding == "rgb8" else arr)
    if codec == "jpeg":
        if not 1 <= int(jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100]; got {jpeg_quality}")
        ok, out = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    else:
        if not 0 <= int(png_level) <= 9:
            raise ValueError(f"png_level must be in [0, 9]; got {png_level}")
        ok, out = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {arr.shape} {arr.dtype} image as {codec}")
    return f"{encoding}; {codec} compressed {target}", out.tobytes()
