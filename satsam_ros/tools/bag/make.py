"""Datasets -> rosbag2: a COCO split or a folder of images, or synthetic frames.

Each frame becomes an Image message on the image topic with its stamp; a labelled frame
also gets its ground-truth mask (see :mod:`.io`). Frame i is stamped
``start + round(i * 1e9 / rate)`` ns, so the same data always gives the same bag.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .io import (
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

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pgm", ".ppm")


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
