"""Labelled frames on disk: the project's dataset format (COCO JSON) read, checked, decoded.

One reader for the runtime's tools (``satsam bag make``) and the training package
(which adds writers, YOLO import and the generators on top of it).

Dataset directory layout (one COCO JSON per split)::

    DIR/train.json  DIR/val.json  DIR/test.json
    DIR/images/<split>/<name>.png     file_name in the JSON is relative to DIR

COCO content read here:

* ``images``: ``id``, ``file_name`` (relative to the JSON's directory), ``width``,
  ``height``.
* ``annotations``: ``id``, ``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]``
  in pixels (``x, y`` the top-left pixel edge, ``w, h`` the extent, so a mask whose
  leftmost column is 10 and rightmost is 19 has ``x = 10, w = 10``: pycocotools'
  convention), optional ``segmentation`` as compressed RLE (``counts`` a string, as
  pycocotools writes it), uncompressed RLE (``counts`` a list of run lengths) or
  polygons (a list of ``[x0, y0, x1, y1, ...]`` lists). ``"segmentation": []`` counts
  as absent (bbox-only datasets often write it).
* ``categories``: only the ``satellite`` category is read (or the only one, whatever
  its name); a file without categories has all its annotations read.

A frame (image) with no annotation is an *empty frame*: no satellite in view. A frame
with an annotation that has no segmentation has an unknown mask (:meth:`Frame.mask`
returns None). Every error names the file and the offending entry. pycocotools is
imported only where masks are decoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import cv2
import numpy as np

from .core.imaging import read_image_file

SPLITS = ("train", "val", "test")
CATEGORY_NAME = "satellite"


class DatasetError(ValueError):
    """A dataset file that cannot be read; the message names the file and the entry."""


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (compressed/uncompressed RLE or polygons) -> H x W uint8 0/1.

    Raises ValueError when the segmentation's structure is not one of the three
    forms or its RLE ``size`` is not ``[height, width]``.
    """
    from pycocotools import mask as mask_utils

    check_segmentation(segmentation, height, width)
    if isinstance(segmentation, list):  # polygons
        rles = mask_utils.frPyObjects([[float(v) for v in poly] for poly in segmentation], height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation["counts"], list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        counts = segmentation["counts"]
        rle = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)


def check_segmentation(seg: Any, height: int, width: int) -> None:
    """Structure check of one segmentation; raises ValueError saying what is wrong."""
    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            raise ValueError("RLE segmentation needs 'size' and 'counts'")
        size = seg["size"]
        if not isinstance(size, (list, tuple)) or [int(v) for v in size] != [int(height), int(width)]:
            raise ValueError(f"RLE size {size} does not match the image's [height, width] = [{height}, {width}]")
        counts = seg["counts"]
        if isinstance(counts, list):
            if any(not isinstance(c, (int, float)) or c < 0 for c in counts):
                raise ValueError("uncompressed RLE counts must be non-negative numbers")
            if sum(int(c) for c in counts) != int(height) * int(width):
                raise ValueError(
                    f"uncompressed RLE counts sum to {sum(int(c) for c in counts)}, expected height * width = "
                    f"{int(height) * int(width)}"
                )
        elif not isinstance(counts, (str, bytes)):
            raise ValueError(f"RLE counts must be a string or a list, got {type(counts).__name__}")
        return
    if isinstance(seg, list):
        for i, poly in enumerate(seg):
            if not isinstance(poly, (list, tuple)) or len(poly) < 6 or len(poly) % 2:
                raise ValueError(f"polygon {i} must be a flat list [x0, y0, x1, y1, ...] of at least 3 points")
            if any(not isinstance(v, (int, float)) for v in poly):
                raise ValueError(f"polygon {i} holds a non-number")
        return
    raise ValueError(f"segmentation must be an RLE dict or a list of polygons, got {type(seg).__name__}")


def read_image(path: Path) -> np.ndarray:
    """Read a stored frame: H x W (uint8 or uint16) or H x W x 3/4 in RGB(A) order.

    FileNotFoundError naming the file when it is missing or not a readable image.
    """
    try:
        img, order = read_image_file(Path(path))
    except ValueError as exc:
        raise FileNotFoundError(f"cannot read image {path}: {exc}") from exc
    if order == "bgr":
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if order == "bgra":
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return img


# --------------------------------------------------------------------------- frames


@dataclass
class Frame:
    """One image of a dataset with its satellite labels.

    ``boxes`` are COCO ``[x, y, w, h]`` pixel boxes, one per annotation;
    ``segmentations`` the raw COCO segmentation of each annotation (None where the
    annotation has none). ``file_name`` is the image path relative to the dataset
    directory, as written in the JSON; ``source`` names where the frame was read from
    (for error messages); ``annotation_ids`` the annotations' ids.
    """

    id: int
    path: Path
    width: int
    height: int
    boxes: list = field(default_factory=list)
    segmentations: list = field(default_factory=list)
    file_name: Optional[str] = None
    source: str = ""
    annotation_ids: list = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        """True when the frame has no annotation (no satellite in view)."""
        return len(self.boxes) == 0

    @property
    def has_masks(self) -> bool:
        """True when every annotation has a segmentation (always true for an empty frame)."""
        return all(s is not None for s in self.segmentations)

    def image(self) -> np.ndarray:
        """The image as stored: H x W uint8 (or uint16, or H x W x 3 RGB)."""
        img = read_image(self.path)
        if img.shape[0] != self.height or img.shape[1] != self.width:
            raise DatasetError(
                f"{self.source or self.path}: image id {self.id} ({self.path}) is {img.shape[1]} x {img.shape[0]}"
                f" pixels but the labels say {self.width} x {self.height}"
            )
        return img

    def mask(self) -> Optional[np.ndarray]:
        """H x W uint8 0/255: union of the annotations' segmentations.

        Zeros for an empty frame; None if any annotation has no segmentation.
        """
        out = np.zeros((self.height, self.width), np.uint8)
        if not self.has_masks:
            return None
        for i, seg in enumerate(self.segmentations):
            try:
                out |= decode_segmentation(seg, self.height, self.width)
            except ValueError as exc:
                ann = self.annotation_ids[i] if i < len(self.annotation_ids) else i
                raise DatasetError(f"{self.source}: annotation {ann} of image {self.id}: {exc}") from exc
        out *= 255
        return out


# --------------------------------------------------------------------------- COCO


def _entry_name(kind: str, index: int, entry: Any) -> str:
    ident = entry.get("id") if isinstance(entry, dict) else None
    return f"{kind}[{index}]" + (f" (id {ident})" if ident is not None else "")


def _number(value: Any, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise DatasetError(f"{where}: {what} must be a finite number, got {value!r}")
    return float(value)


def _pick_category(data: dict, where: str, category: str) -> Optional[int]:
    """The category id to read; None reads all annotations (file without categories)."""
    cats = data.get("categories")
    if not cats:
        return None
    if not isinstance(cats, list) or any(not isinstance(c, dict) or "id" not in c for c in cats):
        raise DatasetError(f"{where}: 'categories' must be a list of objects with an 'id'")
    named = [c for c in cats if c.get("name") == category]
    if named:
        return named[0]["id"]
    if len(cats) == 1:
        return cats[0]["id"]
    names = ", ".join(repr(c.get("name")) for c in cats)
    raise DatasetError(f"{where}: no category named {category!r} among {names}")


def load_coco(json_path, category: str = CATEGORY_NAME) -> List[Frame]:
    """Read a COCO JSON into frames (sorted by image id).

    Image paths are resolved relative to the JSON's directory. Annotations of other
    categories are ignored (see the module docstring). Raises DatasetError naming the
    file and the offending entry for anything malformed: unreadable JSON, a missing
    key, a non-positive size, a duplicate id, an annotation pointing at an unknown
    image, a bad bbox or segmentation.
    """
    path = Path(json_path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path}: not a COCO file (no 'images' list)")
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise DatasetError(f"{path}: 'annotations' must be a list")
    frames = _read_images(path, data["images"])
    _add_annotations(path, annotations, frames, _pick_category(data, str(path), category))
    return [frames[k] for k in sorted(frames)]


def _read_images(path: Path, entries: List[Any]) -> Dict[int, Frame]:
    """The ``images`` of a COCO file as frames by id (no annotations yet), checked."""
    root = path.parent.resolve()
    frames: Dict[int, Frame] = {}
    for i, entry in enumerate(entries):
        where = f"{path}: {_entry_name('images', i, entry)}"
        if not isinstance(entry, dict):
            raise DatasetError(f"{where}: must be an object")
        for key in ("id", "file_name", "width", "height"):
            if key not in entry:
                raise DatasetError(f"{where}: missing {key!r}")
        image_id, width, height = entry["id"], entry["width"], entry["height"]
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise DatasetError(f"{where}: id must be an integer, got {image_id!r}")
        if image_id in frames:
            raise DatasetError(f"{where}: duplicate image id {image_id}")
        for name, value in (("width", width), ("height", height)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise DatasetError(f"{where}: {name} must be a positive integer, got {value!r}")
        file_name = entry["file_name"]
        if not isinstance(file_name, str) or not file_name:
            raise DatasetError(f"{where}: file_name must be a non-empty string, got {file_name!r}")
        frames[image_id] = Frame(
            id=image_id, path=(root / file_name).resolve(), width=width, height=height,
            file_name=file_name, source=str(path),
        )
    return frames


def _add_annotations(path: Path, annotations: List[Any], frames: Dict[int, Frame], cat_id: Optional[int]) -> None:
    """Attach each annotation of category ``cat_id`` (None: all) to its frame, checked."""
    seen_ann: set = set()
    for i, ann in enumerate(annotations):
        where = f"{path}: {_entry_name('annotations', i, ann)}"
        if not isinstance(ann, dict):
            raise DatasetError(f"{where}: must be an object")
        for key in ("image_id", "bbox"):
            if key not in ann:
                raise DatasetError(f"{where}: missing {key!r}")
        if cat_id is not None and ann.get("category_id") != cat_id:
            continue
        ann_id = ann.get("id", i)
        if ann_id in seen_ann:
            raise DatasetError(f"{where}: duplicate annotation id {ann_id}")
        seen_ann.add(ann_id)
        frame = frames.get(ann["image_id"])
        if frame is None:
            raise DatasetError(f"{where}: image_id {ann['image_id']!r} is not in 'images'")
        bbox = ann["bbox"]
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise DatasetError(f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
        x, y, w, h = (_number(v, "bbox value", where) for v in bbox)
        if w <= 0 or h <= 0:
            raise DatasetError(f"{where}: bbox width and height must be positive, got {bbox!r}")
        seg = ann.get("segmentation")
        if seg is not None and not (isinstance(seg, list) and len(seg) == 0):
            try:
                check_segmentation(seg, frame.height, frame.width)
            except ValueError as exc:
                raise DatasetError(f"{where}: segmentation: {exc}") from exc
        else:
            seg = None
        frame.boxes.append((x, y, w, h))
        frame.segmentations.append(seg)
        frame.annotation_ids.append(ann_id)


def load_split(dataset_dir, split: str, category: str = CATEGORY_NAME) -> List[Frame]:
    """Frames of ``DIR/<split>.json``; FileNotFoundError naming the file if it is missing."""
    path = Path(dataset_dir) / f"{split}.json"
    if not path.is_file():
        have = sorted(p.stem for p in Path(dataset_dir).glob("*.json")) if Path(dataset_dir).is_dir() else []
        raise FileNotFoundError(
            f"{path}: no such split file (dataset {dataset_dir} has: {', '.join(have) or 'no JSON files'})"
        )
    return load_coco(path, category=category)


def available_splits(dataset_dir) -> List[str]:
    """The standard splits (train, val, test) that ``dataset_dir`` has a JSON for, in that order."""
    return [s for s in SPLITS if (Path(dataset_dir) / f"{s}.json").is_file()]
