"""Datasets -> rosbag2: a COCO split or a folder of images, or synthetic frames.

Each frame becomes an Image message on the image topic with its stamp, or with
``compress`` a CompressedImage (PNG or JPEG) on ``<topic>/compressed`` as image_transport
records it; a labelled frame also gets its ground-truth mask (see :mod:`.io`). Frame i is
stamped ``start + round(i * 1e9 / rate)`` ns, so the same data always gives the same bag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np

from ...core.compressed import DEFAULT_JPEG_QUALITY
from ...core.imaging import IMAGE_SUFFIXES, read_image_file
from ...dataset import DatasetError, Frame, load_coco
from .io import (
    COMPRESSED_SUFFIX,
    DEFAULT_FRAME_ID,
    DEFAULT_START_NS,
    DEFAULT_TOPIC,
    GROUND_TRUTH_TOPIC,
    NS,
    BagError,
    BagFrame,
    BagSummary,
    write_bag,
)


@dataclass
class SourceImage:
    """One image to put in a bag: a dataset frame (its labels known) or a bare image
    file (``frame`` None: no labels, so no ground truth)."""

    path: Path
    frame: Optional[Frame] = None

    def read(self) -> Tuple[np.ndarray, Optional[np.ndarray], bool]:
        """(image as a bag stores it: H x W uint8/uint16 or H x W x 3 uint8 BGR, ground
        truth H x W uint8 0/255 or None, whether a labelled frame's mask is unknown)."""
        if self.frame is None:
            img, order = read_image_file(self.path)
            return _bgr(img, order), None, False
        try:
            img = self.frame.image()  # RGB(A), checked against the labels' size
            truth = self.frame.mask()
        except (DatasetError, FileNotFoundError) as exc:
            raise BagError(str(exc)) from exc
        order = "rgba" if img.ndim == 3 and img.shape[2] == 4 else "rgb"
        return _bgr(img, order), truth, truth is None


def _bgr(img: np.ndarray, order: str) -> np.ndarray:
    """An image in the layout bags store: one channel as is, colour as B, G, R (alpha dropped)."""
    if img.ndim == 2:
        return img
    rgb_first = order.startswith("rgb")
    out = img[:, :, :3]
    return np.ascontiguousarray(out[:, :, ::-1] if rgb_first else out)


def _coco_images(json_path: Path) -> List[SourceImage]:
    try:
        frames = load_coco(json_path)
    except DatasetError as exc:
        raise BagError(str(exc)) from exc
    except OSError as exc:
        raise BagError(f"{json_path}: cannot read COCO JSON: {exc}") from exc
    return [SourceImage(f.path, f) for f in frames]


def dataset_images(data, split: str = "test") -> Tuple[List[SourceImage], str]:
    """The images of ``data`` and a description of where they came from.

    ``data`` is a COCO dataset directory (``DATA/<split>.json``, read by
    :mod:`satsam_ros.dataset`), a COCO JSON file, or a directory of image files (sorted
    by name, no labels). BagError otherwise.
    """
    data = Path(data)
    if data.is_file() and data.suffix == ".json":
        return _coco_images(data), f"COCO {data}"
    if not data.is_dir():
        raise BagError(f"{data}: no such dataset directory, COCO JSON or image folder")
    coco = data / f"{split}.json"
    if coco.is_file():
        return _coco_images(coco), f"COCO {coco}"
    files = sorted(p for p in data.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if files:
        return [SourceImage(p) for p in files], f"image folder {data}"
    splits = sorted(p.stem for p in data.glob("*.json"))
    have = f" (it has {', '.join(splits)}.json: choose one with --split)" if splits else ""
    raise BagError(f"{data}: neither a COCO split {coco.name} nor image files ({', '.join(IMAGE_SUFFIXES)}){have}")


def image_topic(topic: str, compress: Optional[str]) -> str:
    """Where the frames go: ``topic``, or ``<topic>/compressed`` when compressed."""
    return topic + COMPRESSED_SUFFIX if compress else topic


def make_bag(data, out, storage: str = "mcap", rate: float = 10.0, topic: str = DEFAULT_TOPIC,
             split: str = "test", frame_id: str = DEFAULT_FRAME_ID, start: int = DEFAULT_START_NS,
             truth_topic: str = GROUND_TRUTH_TOPIC, progress: bool = True, compress: Optional[str] = None,
             jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> BagSummary:
    """A dataset (see :func:`dataset_images`) -> a rosbag2 at ``out``.

    Frame i gets header stamp (and bag time) ``start + round(i * 1e9 / rate)`` ns and
    ``frame_id``; labelled frames get their ground-truth mask on ``truth_topic``.
    ``compress`` ("png" lossless, "jpeg" lossy at ``jpeg_quality``): the frames go to
    ``<topic>/compressed`` as sensor_msgs/CompressedImage.
    """
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
        raise BagError(f"rate must be a positive number of frames per second; got {rate!r}")
    images, source = dataset_images(data, split)
    if not images:
        raise BagError(f"{source}: no images")
    unknown = [0]

    def frames() -> Iterator[BagFrame]:
        for i, item in enumerate(images):
            img, truth, truth_unknown = item.read()
            unknown[0] += int(truth_unknown)
            yield BagFrame(img, int(start) + int(round(i * NS / float(rate))), frame_id, truth)

    summary = write_bag(out, frames(), image_topic(topic, compress), storage, truth_topic, progress=progress,
                        total=len(images), compress=compress, jpeg_quality=jpeg_quality)
    summary.notes.append(f"from {source}, {rate:g} frames/s" + (f", {compress}-compressed" if compress else ""))
    if unknown[0]:
        summary.notes.append(f"{unknown[0]} labelled frame(s) have a bbox but no segmentation: no ground-truth "
                             "mask was written for them (they are replayed but not scored)")
    return summary


def make_synthetic_bag(out, count: int = 12, seed: int = 0, rate: float = 10.0, storage: str = "mcap",
                       topic: str = DEFAULT_TOPIC, empty_every: int = 4, progress: bool = False,
                       compress: Optional[str] = None) -> BagSummary:
    """A bag of ``count`` 512 x 641 mono8 frames from :func:`satsam_ros.core.synthetic.synthetic_frame`
    (seeds ``seed``, ``seed + 1``, ...) with their ground-truth masks, ``rate`` frames/s;
    every ``empty_every``-th frame (the 4th, 8th, ...) has no satellite. For demos and
    quick checks; the same arguments always give the same frames and stamps. ``compress``
    as in :func:`make_bag`."""
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

    summary = write_bag(out, frames(), image_topic(topic, compress), storage, progress=progress, total=int(count),
                        compress=compress)
    summary.notes.append(f"synthetic frames, seeds {seed}..{int(seed) + int(count) - 1}, {rate:g} frames/s")
    return summary
