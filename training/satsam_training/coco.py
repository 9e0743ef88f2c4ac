"""Dataset I/O: COCO JSON (the project's format) and YOLO txt labels.

Dataset directory layout (one COCO JSON per split)::

    DIR/train.json  DIR/val.json  DIR/test.json
    DIR/images/<split>/<name>.png     file_name in the JSON is relative to DIR

COCO content read and written here:

* ``images``: ``id``, ``file_name`` (relative to the JSON's directory), ``width``,
  ``height``.
* ``annotations``: ``id``, ``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]``
  in pixels (``x, y`` the top-left pixel edge, ``w, h`` the extent, so a mask whose
  leftmost column is 10 and rightmost is 19 has ``x = 10, w = 10``: pycocotools'
  convention), ``area``, ``iscrowd``, optional ``segmentation`` as compressed RLE
  (``counts`` a string, as pycocotools writes it), uncompressed RLE (``counts`` a list
  of run lengths) or polygons (a list of ``[x0, y0, x1, y1, ...]`` lists).
  ``"segmentation": []`` counts as absent (bbox-only datasets often write it).
* ``categories``: ``[{"id": 1, "name": "satellite"}]``. A file may hold other
  categories; only the ``satellite`` one is read (or the only one, whatever its name).

A frame (image) with no annotation is an *empty frame*: no satellite in view.

YOLO labels (``load_yolo`` / ``write_yolo``): one ``<image stem>.txt`` per image,
one object per line, ``class cx cy w h`` normalised to [0, 1] by the image width and
height, or a YOLO segment line ``class x0 y0 x1 y1 ...`` (normalised polygon, at
least three points). A missing or empty label file is an empty frame.

Every error names the file and the offending entry.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import cv2
import numpy as np

CATEGORY = {"id": 1, "name": "satellite"}
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pgm", ".ppm")

Box = tuple[float, float, float, float]


class DatasetError(ValueError):
    """A dataset file that cannot be read; the message names the file and the entry."""


# --------------------------------------------------------------------------- masks


def encode_mask(mask: np.ndarray) -> dict:
    """H x W mask (nonzero = foreground) -> compressed COCO RLE ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as mask_utils

    binary = np.asfortranarray((np.asarray(mask) > 0).astype(np.uint8))
    if binary.ndim != 2:
        raise ValueError(f"mask must be H x W, got shape {binary.shape}")
    rle = mask_utils.encode(binary)
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (compressed/uncompressed RLE or polygons) -> H x W uint8 0/1.

    Raises ValueError when the segmentation's structure is not one of the three
    forms or its RLE ``size`` is not ``[height, width]``.
    """
    from pycocotools import mask as mask_utils

    _check_segmentation(segmentation, height, width)
    if isinstance(segmentation, list):  # polygons
        rles = mask_utils.frPyObjects([[float(v) for v in poly] for poly in segmentation], height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation["counts"], list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        counts = segmentation["counts"]
        rle = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)


def _check_segmentation(seg: Any, height: int, width: int) -> None:
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


def mask_bbox(mask: np.ndarray) -> Optional[Box]:
    """Tight COCO box ``(x, y, w, h)`` of the nonzero pixels of an H x W mask; None if empty."""
    m = np.asarray(mask) > 0
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


def read_image(path: Path) -> np.ndarray:
    """Read an image file as stored: H x W (uint8 or uint16) or H x W x 3/4 (RGB/RGBA order)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    elif img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return img


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, read from its header (no pixel decoding)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"cannot read image {path}: {exc}") from exc
    return int(height), int(width)


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


def load_coco(json_path, category: str = "satellite") -> list[Frame]:
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
    cat_id = _pick_category(data, str(path), category)
    root = path.parent.resolve()

    frames: dict[int, Frame] = {}
    for i, entry in enumerate(data["images"]):
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
                _check_segmentation(seg, frame.height, frame.width)
            except ValueError as exc:
                raise DatasetError(f"{where}: segmentation: {exc}") from exc
        else:
            seg = None
        frame.boxes.append((x, y, w, h))
        frame.segmentations.append(seg)
        frame.annotation_ids.append(ann_id)
    return [frames[k] for k in sorted(frames)]


def load_split(dataset_dir, split: str, category: str = "satellite") -> list[Frame]:
    """Frames of ``DIR/<split>.json``; FileNotFoundError naming the file if it is missing."""
    path = Path(dataset_dir) / f"{split}.json"
    if not path.is_file():
        have = sorted(p.stem for p in Path(dataset_dir).glob("*.json")) if Path(dataset_dir).is_dir() else []
        raise FileNotFoundError(
            f"{path}: no such split file (dataset {dataset_dir} has: {', '.join(have) or 'no JSON files'})"
        )
    return load_coco(path, category=category)


def available_splits(dataset_dir) -> list[str]:
    """The standard splits (train, val, test) that ``dataset_dir`` has a JSON for, in that order."""
    return [s for s in SPLITS if (Path(dataset_dir) / f"{s}.json").is_file()]


def _json_segmentation(seg: Any) -> Any:
    if isinstance(seg, dict) and isinstance(seg.get("counts"), bytes):
        return {"size": list(seg["size"]), "counts": seg["counts"].decode("ascii")}
    return seg


def _segmentation_area(seg: Any, height: int, width: int) -> float:
    from pycocotools import mask as mask_utils

    if isinstance(seg, dict) and not isinstance(seg["counts"], list):
        counts = seg["counts"]
        rle = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        return float(mask_utils.area(rle))
    return float(decode_segmentation(seg, height, width).sum())


def coco_dict(frames: Iterable[Frame], root, info: Optional[dict] = None) -> dict:
    """Frames -> a COCO dict whose file_names are relative to ``root``.

    ``file_name`` is the frame's ``path`` relative to ``root`` (ValueError if the
    image lies outside it). ``area`` is the segmentation's pixel count when there is
    one, else ``w * h``. Annotation ids are numbered from 1 in order.
    """
    root = Path(root).resolve()
    images, annotations = [], []
    ann_id = 1
    for frame in frames:
        try:
            rel = Path(frame.path).resolve().relative_to(root)
        except ValueError:
            raise ValueError(f"image {frame.path} (id {frame.id}) is not inside the dataset directory {root}") from None
        images.append({"id": int(frame.id), "file_name": rel.as_posix(), "width": int(frame.width),
                       "height": int(frame.height)})
        segs = frame.segmentations or [None] * len(frame.boxes)
        if len(segs) != len(frame.boxes):
            raise ValueError(f"image id {frame.id}: {len(frame.boxes)} boxes but {len(segs)} segmentations")
        for box, seg in zip(frame.boxes, segs):
            x, y, w, h = (float(v) for v in box)
            ann = {"id": ann_id, "image_id": int(frame.id), "category_id": CATEGORY["id"], "bbox": [x, y, w, h],
                   "area": w * h, "iscrowd": 0}
            if seg is not None:
                try:
                    _check_segmentation(seg, frame.height, frame.width)
                except ValueError as exc:
                    raise ValueError(f"image id {frame.id}, annotation {ann_id}: segmentation: {exc}") from exc
                ann["segmentation"] = _json_segmentation(seg)
                ann["area"] = _segmentation_area(seg, frame.height, frame.width)
            annotations.append(ann)
            ann_id += 1
    out = {"images": images, "annotations": annotations, "categories": [dict(CATEGORY)]}
    if info:
        out["info"] = info
    return out


def write_json_atomic(path, data: Any, indent: Optional[int] = None) -> Path:
    """Write JSON to ``path`` via a temporary file and a rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=indent)
            fh.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_coco(json_path, frames: Iterable[Frame], info: Optional[dict] = None) -> dict:
    """Write frames as a COCO JSON at ``json_path`` (file_names relative to its directory).

    The frames' images must already lie under the JSON's directory. Returns the dict
    written. See :func:`coco_dict` for the content.
    """
    json_path = Path(json_path)
    data = coco_dict(frames, json_path.parent, info=info)
    write_json_atomic(json_path, data)
    return data


# --------------------------------------------------------------------------- YOLO


def _list_images(images_dir: Path) -> list[Path]:
    return sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_yolo(images_dir, labels_dir, classes: Optional[Sequence[int]] = None) -> list[Frame]:
    """Read YOLO txt labels (see the module docstring) into frames.

    Frames are the images of ``images_dir`` sorted by name, with ids 1, 2, ...;
    ``file_name`` is relative to ``images_dir``. ``classes`` keeps only those class
    ids (default: every class is a satellite). Box lines give bbox-only annotations;
    segment lines give polygon segmentations (in pixels) and their tight boxes.
    Raises DatasetError naming the label file and line for malformed lines and for
    label files that have no image.
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"YOLO images directory {images_dir} does not exist")
    if not labels_dir.is_dir():
        raise FileNotFoundError(f"YOLO labels directory {labels_dir} does not exist")
    images = _list_images(images_dir)
    stems = {p.stem for p in images}
    orphans = sorted(p.name for p in labels_dir.glob("*.txt") if p.stem not in stems and p.name != "classes.txt")
    if orphans:
        raise DatasetError(f"{labels_dir}: label file(s) without an image in {images_dir}: {', '.join(orphans[:5])}")
    keep = None if classes is None else {int(c) for c in classes}
    frames = []
    for index, img_path in enumerate(images):
        height, width = image_size(img_path)
        frame = Frame(id=index + 1, path=img_path.resolve(), width=width, height=height,
                      file_name=img_path.name, source=str(labels_dir / f"{img_path.stem}.txt"))
        label = labels_dir / f"{img_path.stem}.txt"
        if label.is_file():
            for line_no, line in enumerate(label.read_text().splitlines(), start=1):
                parsed = _parse_yolo_line(line, width, height, f"{label} line {line_no}")
                if parsed is None:
                    continue
                cls, box, seg = parsed
                if keep is not None and cls not in keep:
                    continue
                frame.boxes.append(box)
                frame.segmentations.append(seg)
                frame.annotation_ids.append(line_no)
        frames.append(frame)
    return frames


def _parse_yolo_line(line: str, width: int, height: int, where: str):
    parts = line.split()
    if not parts:
        return None
    try:
        values = [float(v) for v in parts]
    except ValueError:
        raise DatasetError(f"{where}: not numbers: {line.strip()!r}") from None
    if not values[0].is_integer() or values[0] < 0:
        raise DatasetError(f"{where}: class must be a non-negative integer, got {parts[0]!r}")
    cls, coords = int(values[0]), values[1:]
    if any(not np.isfinite(v) or v < -1e-6 or v > 1 + 1e-6 for v in coords):
        raise DatasetError(f"{where}: coordinates must be normalised to [0, 1]: {line.strip()!r}")
    if len(coords) == 4:
        cx, cy, w, h = coords
        if w <= 0 or h <= 0:
            raise DatasetError(f"{where}: box width and height must be positive: {line.strip()!r}")
        return cls, ((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height), None
    if len(coords) >= 6 and len(coords) % 2 == 0:
        xs = np.asarray(coords[0::2]) * width
        ys = np.asarray(coords[1::2]) * height
        poly = [float(v) for pair in zip(xs, ys) for v in pair]
        x0, y0 = float(xs.min()), float(ys.min())
        w, h = float(xs.max()) - x0, float(ys.max()) - y0
        if w <= 0 or h <= 0:
            raise DatasetError(f"{where}: degenerate polygon: {line.strip()!r}")
        return cls, (x0, y0, w, h), [poly]
    raise DatasetError(
        f"{where}: expected 'class cx cy w h' or 'class x0 y0 x1 y1 x2 y2 ...', got {len(parts)} values"
    )


def write_yolo(frames: Iterable[Frame], labels_dir, cls: int = 0) -> list[Path]:
    """Write one YOLO box label file per frame (``<image stem>.txt``; empty for empty frames).

    Boxes are clipped to the image and written as ``cls cx cy w h`` with 6 decimals.
    Returns the files written.
    """
    labels_dir = Path(labels_dir)
    labels_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for frame in frames:
        lines = []
        for x, y, w, h in frame.boxes:
            x0, y0 = max(0.0, x), max(0.0, y)
            x1, y1 = min(float(frame.width), x + w), min(float(frame.height), y + h)
            cx, cy = (x0 + x1) / 2 / frame.width, (y0 + y1) / 2 / frame.height
            lines.append(f"{cls} {cx:.6f} {cy:.6f} {(x1 - x0) / frame.width:.6f} {(y1 - y0) / frame.height:.6f}")
        out = labels_dir / f"{Path(frame.path).stem}.txt"
        out.write_text("".join(line + "\n" for line in lines))
        written.append(out)
    return written


def place_image(src: Path, dst: Path, link: bool = True) -> None:
    """Put a copy of ``src`` at ``dst``: a hard link when allowed and possible, else a copy."""
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)
